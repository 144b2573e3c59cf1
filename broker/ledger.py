"""What the broker remembers of a search, so that a check can be asked only by the one who searched.

Per search id: who searched (issuer and subject), which authorities answered ``possible_match``,
and a digest of the identity searched for, keyed with a random key that lives only in this
process's memory (so a check is about the child that was searched, and nothing readable is
kept). No answer and no identity is kept. Entries last ``ttl_seconds`` (a check is asked soon
after the search, or the practitioner searches again), in memory, oldest dropped first when full
and as they expire.

Only searches that some authority answered ``possible_match`` are remembered: no check can be
asked about any other, and remembering every search grew the broker's memory by about 600 bytes
a search for a day (the soak in ``docs/performance.md``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from federation.canonical import canonical_json

MAX_SEARCHES = 100_000
DEFAULT_TTL_SECONDS = 24 * 3600


@dataclass(frozen=True)
class SearchRecord:
    """One search, as much as a later check needs."""

    issuer: str
    sub: str
    possible: frozenset[str]
    identity_digest: str
    expires: float


class SearchLedger:
    """Searches by id, in memory."""

    def __init__(self, ttl_seconds: float = DEFAULT_TTL_SECONDS, max_searches: int = MAX_SEARCHES) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_searches = max_searches
        self._key = secrets.token_bytes(32)
        self._searches: OrderedDict[str, SearchRecord] = OrderedDict()

    def digest(self, identity_wire: Mapping[str, Any]) -> str:
        return hmac.new(self._key, canonical_json(dict(identity_wire)), hashlib.sha256).hexdigest()

    def remember(self, search_id: str, issuer: str, sub: str, possible: Iterable[str],
                 identity_wire: Mapping[str, Any], now: float) -> None:
        """Remember a search whose ``possible`` authorities may be asked to check (none: forgotten)."""
        # Entries are kept in the order they expire (one lifetime for all): drop the expired first.
        while self._searches and next(iter(self._searches.values())).expires < now:
            self._searches.popitem(last=False)
        authorities = frozenset(possible)
        if not authorities:
            return
        while len(self._searches) >= self.max_searches:
            self._searches.popitem(last=False)
        self._searches[search_id] = SearchRecord(issuer, sub, authorities, self.digest(identity_wire),
                                                 now + self.ttl_seconds)

    def __len__(self) -> int:
        return len(self._searches)

    def get(self, search_id: str, now: float) -> SearchRecord | None:
        found = self._searches.get(search_id)
        if found is None:
            return None
        if now > found.expires:
            del self._searches[search_id]
            return None
        return found
