"""The labelled sets ``signpost eval-matching`` knows by name: FEBRL 1-4
(``federation.tools.febrl``) and ``synthetic``, seeded UK children in households
(``federation.tools.households``) with the errors people make and adversarial traps
(``federation.tools.trapset``)."""

from __future__ import annotations

import random

from federation.tools.febrl import load_febrl
from federation.tools.households import PATTERNS, Person, as_child, population, query_for
from federation.tools.labelled import EvaluationError, LabelledQuery, LabelledSet
from federation.tools.trapset import trap_queries

__all__ = ["DATASETS", "list_datasets", "load", "synthetic_set"]

DATASETS = ("febrl1", "febrl2", "febrl3", "febrl4", "synthetic")


def list_datasets() -> tuple[str, ...]:
    """Names accepted by ``eval_matching``."""
    return DATASETS


def load(dataset: str, *, with_identifier: bool, open_set: bool, seed: int = 0) -> LabelledSet:
    if dataset.startswith("febrl") and dataset[5:].isdigit():
        return load_febrl(int(dataset[5:]), with_identifier=with_identifier, open_set=open_set)
    if dataset == "synthetic":
        return synthetic_set(with_identifier=with_identifier, open_set=open_set, seed=seed)
    raise EvaluationError(f"dataset: expected one of {', '.join(DATASETS)}, got {dataset!r}")


def synthetic_set(*, with_identifier: bool, open_set: bool, households: int = 12_000,
                  queries: int = 6_000, seed: int = 0, traps: int = 200) -> LabelledSet:
    """Seeded synthetic children and queries carrying zero to two error patterns each.

    Closed set: the node holds every household, except that in some twin pairs only one twin
    is held (a node may know only one of them). Open set: only even-numbered households are held.
    Then ``traps`` queries of each adversarial category (``federation.tools.trapset``), all for
    children the node does not hold.
    """
    rng = random.Random(seed)
    homes = population(rng, households)
    people = [p for home in homes for p in home]
    held: dict[str, Person] = {}
    for n, home in enumerate(homes):
        if open_set and n % 2:
            continue
        for p in home:
            if p.twin and p.key > p.twin and rng.random() < 0.3:
                continue  # hold only one of these twins
            held[p.key] = p
    twins = [p for p in people if p.twin]
    chosen = rng.sample(people, min(queries, len(people)))
    # every twin is queried, held or not: the hardest case for confusing one child with another
    chosen_keys = {p.key for p in chosen}
    chosen.extend(p for p in twins if p.key not in chosen_keys)
    out: list[LabelledQuery] = []
    for p in chosen:
        count = rng.choices((0, 1, 2), (20, 55, 25))[0]
        patterns = tuple(rng.sample(PATTERNS, count))
        identity, applied = query_for(rng, p, with_identifier, patterns)
        twin_held = p.twin if p.twin in held else None
        truth = p.key if p.key in held else None
        out.append(LabelledQuery(identity, truth, applied, twin_held,
                                 "held" if truth else "absent"))
    if traps:
        # A generator of its own, so the ordinary queries stay the same with or without traps.
        out.extend(trap_queries(random.Random(seed * 7919 + 13), homes, held, traps))
    children = tuple(as_child(p) for p in held.values())
    return LabelledSet("synthetic", children, tuple(out))
