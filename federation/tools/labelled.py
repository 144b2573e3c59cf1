"""Labelled sets for measuring the matcher: a node's records, and queries that each name the
record they should find (``None`` when the node does not hold that child, so that any ``match``
is a wrong child)."""

from __future__ import annotations

from dataclasses import dataclass

from federation.errors import SignpostError
from federation.identity import Identity
from node.store import Child

__all__ = ["EvaluationError", "LabelledQuery", "LabelledSet"]


class EvaluationError(SignpostError):
    """An evaluation set cannot be loaded (unknown name, missing package)."""


@dataclass(frozen=True)
class LabelledQuery:
    """A query, the record it should find (``None``: not held), and what was done to it."""

    identity: Identity
    truth: str | None
    patterns: tuple[str, ...] = ()
    twin_of: str | None = None  # the record id of a held twin of the child searched for
    # ``held``, ``absent``, or the trap the query was built as (``federation.tools.traps``)
    category: str = ""


@dataclass(frozen=True)
class LabelledSet:
    name: str
    children: tuple[Child, ...]
    queries: tuple[LabelledQuery, ...]

