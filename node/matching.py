"""Finding the child a query describes among the node's records.

Everything the node does with identity goes through ``MatchIndex.match``: it returns at most one
record, or says the query is ambiguous (``possible_match``), or that nothing fits. This first
matcher compares exact, normalised values; it is the seam a fuzzy matcher replaces.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from federation.identity import Identity
from federation.protocol import Status
from node.store import Child


@dataclass(frozen=True)
class MatchResult:
    """The matcher's decision. ``record_id`` is set only when ``status`` is ``match``."""

    status: Status
    record_id: str | None = None
    candidates: int = 0


class MatchIndex:
    """In-memory indexes over the children a node may return."""

    def __init__(self, children: Iterable[Child]) -> None:
        self.children: dict[str, Child] = {}
        self._by_nhs: dict[str, list[str]] = defaultdict(list)
        self._by_upn: dict[str, list[str]] = defaultdict(list)
        self._by_name_dob: dict[tuple[str, str, date], list[str]] = defaultdict(list)
        for child in children:
            self.children[child.record_id] = child
            if child.nhs_number:
                self._by_nhs[child.nhs_number].append(child.record_id)
            if child.upn:
                self._by_upn[child.upn].append(child.record_id)
            names = [(child.given_name, child.family_name)]
            for alias in child.other_names:
                parts = alias.split(" ")
                if len(parts) >= 2:
                    names.append((" ".join(parts[:-1]), parts[-1]))
            for given, family in names:
                self._by_name_dob[(given, family, child.date_of_birth)].append(child.record_id)

    def __len__(self) -> int:
        return len(self.children)

    def _consistent(self, child: Child, query: Identity) -> bool:
        """No field given in the query contradicts the record."""
        if query.date_of_birth is not None and query.date_of_birth != child.date_of_birth:
            return False
        if query.nhs_number and child.nhs_number and query.nhs_number != child.nhs_number:
            return False
        if query.upn and child.upn and query.upn != child.upn:
            return False
        if query.sex and child.sex and query.sex != child.sex:
            return False
        return not (query.postcode and child.postcode and query.postcode != child.postcode
                    and query.nhs_number is None and query.upn is None)

    def match(self, query: Identity) -> MatchResult:
        found: set[str] = set()
        if query.nhs_number:
            found.update(self._by_nhs.get(query.nhs_number, ()))
        if query.upn:
            found.update(self._by_upn.get(query.upn, ()))
        if query.given_name and query.family_name and query.date_of_birth:
            found.update(self._by_name_dob.get(
                (query.given_name, query.family_name, query.date_of_birth), ()))
        fits = [rid for rid in found if self._consistent(self.children[rid], query)]
        if len(fits) == 1:
            return MatchResult(Status.MATCH, fits[0], 1)
        if len(fits) > 1:
            return MatchResult(Status.POSSIBLE_MATCH, None, len(fits))
        return MatchResult(Status.NO_MATCH)
