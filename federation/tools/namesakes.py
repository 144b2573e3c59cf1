"""Namesakes elsewhere: how a node answers searches for children it does not hold who share a
held child's given name, family name and date of birth, and live elsewhere.

No typed field but the postcode tells such a namesake from the held child, and without a
postcode nothing does: whether ``match`` is right then depends on how likely a child of those
names born that day exists elsewhere in England. This measures it for held children whose names
are both common in the node (each held by more than ``COMMON`` of its children: the Oliver
Smiths and Muhammad Khans of a large authority), typed three ways: with another home, with no
postcode but the sex, and with neither. Every ``match`` here names the held child for a search
meant for someone else.

    python -m federation.tools.namesakes [--children N] [--sample N] [--seed N]
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter

from federation.identity import normalise_name, parse_identity
from federation.tools import households, synthetic
from node.matching import MatchIndex

COMMON = 0.004
"""A name held by more than this share of the node's children counts as common (0.4%: the
share of Oliver among England's births, or of Khan among its surnames, is of this order)."""
WAYS = ("another home", "no postcode, sex typed", "neither postcode nor sex")


def namesakes_elsewhere(children: int, sample: int = 2000, seed: int = 5) -> dict[str, Counter[str]]:
    """Answers, by the way the namesake was typed, for up to ``sample`` common-named held
    children of a synthetic node of ``children`` children."""
    rng = random.Random(seed)
    people = [p for home in households.population(rng, children // 2) for p in home][:children]
    index = MatchIndex(households.as_child(p) for p in people)
    first = Counter(normalise_name(p.given).split()[0] for p in people)
    family = Counter(normalise_name(p.family) for p in people)
    n = len(people)
    common = [p for p in people if first[normalise_name(p.given).split()[0]] / n > COMMON
              and family[normalise_name(p.family)] / n > COMMON]
    answers: dict[str, Counter[str]] = {way: Counter() for way in WAYS}
    for p in rng.sample(common, min(sample, len(common))):
        for way in WAYS:
            raw = {"given_name": p.given.split()[0], "family_name": p.family,
                   "date_of_birth": p.dob.isoformat()}
            if way == "another home":
                raw["postcode"] = synthetic.postcode(rng, rng.choice(("bristol", "kent", "haringey")))
            if way != "neither postcode nor sex":
                raw["sex"] = p.sex
            answers[way][index.match(parse_identity(raw)).status.value] += 1
    return answers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--children", type=int, default=20_000)
    parser.add_argument("--sample", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    answers = namesakes_elsewhere(args.children, args.sample, args.seed)
    print(f"namesakes elsewhere of common-named held children, node of {args.children} "
          f"({time.perf_counter() - started:.0f} s):")
    for way, counts in answers.items():
        total = sum(counts.values())
        print(f"  {way:26} {total:5} searches: match {counts['match']:5}, possible_match "
              f"{counts['possible_match']:5}, no_match {counts['no_match']:5}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
