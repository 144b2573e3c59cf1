"""Server-side web sessions: a random cookie names a record held in memory, never in the browser.

A session carries a CSRF token from the moment it exists, and a signed-in practitioner once the
identity provider has vouched for them. It ends on sign-out, after ``idle_seconds`` without a
request, or when the practitioner's token expires, whichever comes first. Sessions are per
broker process: behind a load balancer, pin a practitioner to one replica (or sign in again).
"""

from __future__ import annotations

import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass

from trust.tokens import Practitioner

MAX_SESSIONS = 20_000


@dataclass
class Session:
    """One browser's session (mutable: it is touched on every request)."""

    id: str
    csrf: str
    last_seen: float
    practitioner: Practitioner | None = None

    def csrf_ok(self, presented: str | None) -> bool:
        return isinstance(presented, str) and hmac.compare_digest(self.csrf, presented)


class SessionStore:
    """Sessions in memory, oldest dropped first when full."""

    def __init__(self, idle_seconds: int, max_sessions: int = MAX_SESSIONS) -> None:
        if idle_seconds <= 0:
            raise ValueError(f"idle_seconds: expected more than 0, got {idle_seconds}")
        self.idle_seconds = idle_seconds
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def new(self, now: float) -> Session:
        while len(self._sessions) >= self.max_sessions:
            self._sessions.popitem(last=False)
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), now)
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None, now: float) -> Session | None:
        """The live session named by the cookie, touched; ``None`` if absent, idle or expired."""
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        expired = now - session.last_seen > self.idle_seconds or (
            session.practitioner is not None and now >= session.practitioner.expires)
        if expired:
            del self._sessions[session_id]
            return None
        session.last_seen = now
        self._sessions.move_to_end(session_id)
        return session

    def sign_in(self, old: Session, who: Practitioner, now: float) -> Session:
        """A fresh session for a signed-in practitioner (a new id: no session fixation)."""
        self.drop(old.id)
        session = self.new(now)
        session.practitioner = who
        return session

    def drop(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)
