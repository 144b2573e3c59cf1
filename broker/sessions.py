"""Server-side web sessions: a random cookie names a record held by the broker, never in the browser.

A session carries a CSRF token from the moment it exists, and a signed-in practitioner once the
identity provider has vouched for them. It ends on sign-out, after ``idle_seconds`` without a
request, or when the practitioner's sign-in expires, whichever comes first.

Two stores with the same behaviour. ``MemorySessionStore`` keeps sessions in the broker process
(one broker, or the demo). ``RedisSessionStore`` keeps them in Redis when the broker has a Redis
URL, so any replica behind a load balancer serves any request (no sticky sessions). Redis holds
no cookie value: each record is stored under the SHA-256 of the session id, so reading Redis
does not give anyone a session. If Redis cannot be asked, ``SessionStoreUnavailable`` is raised
and the pages answer 503 (fail closed: never a session without its store).

The stores also keep the short-lived records of OpenID Connect sign-ins in progress (state,
nonce, PKCE verifier), each taken exactly once (``take_pending``), so a replayed callback finds
nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from federation.errors import SignpostError
from trust.tokens import Practitioner

MAX_SESSIONS = 20_000
MAX_PENDING = 20_000


class SessionStoreUnavailable(SignpostError):
    """The shared session store could not be asked; the pages must refuse (fail closed)."""


@dataclass
class Session:
    """One browser's session (mutable: it is touched on every request)."""

    id: str
    csrf: str
    last_seen: float
    practitioner: Practitioner | None = None
    provider: str | None = None  # the token issuer whose OpenID provider signed this person in

    def csrf_ok(self, presented: str | None) -> bool:
        return isinstance(presented, str) and hmac.compare_digest(self.csrf, presented)

    def to_json(self) -> str:
        who = asdict(self.practitioner) if self.practitioner is not None else None
        return json.dumps({"csrf": self.csrf, "last_seen": self.last_seen, "practitioner": who,
                           "provider": self.provider}, separators=(",", ":"))

    @classmethod
    def from_json(cls, session_id: str, text: str | bytes) -> Session:
        data = json.loads(text)
        who = data.get("practitioner")
        practitioner = Practitioner(**{**who, "amr": tuple(who["amr"])}) if who is not None else None
        return cls(session_id, str(data["csrf"]), float(data["last_seen"]), practitioner,
                   data.get("provider"))


def _expired(session: Session, now: float, idle_seconds: int) -> bool:
    return now - session.last_seen > idle_seconds or (
        session.practitioner is not None and now >= session.practitioner.expires)


def _fresh(now: float) -> Session:
    return Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), now)


class SessionStore(Protocol):
    """What the pages need from a session store (in process or in Redis)."""

    idle_seconds: int

    async def new(self, now: float) -> Session: ...

    async def get(self, session_id: str | None, now: float) -> Session | None: ...

    async def sign_in(self, old: Session | None, who: Practitioner, now: float,
                      provider: str | None = None) -> Session: ...

    async def drop(self, session_id: str) -> None: ...

    async def put_pending(self, key: str, value: Mapping[str, str], ttl_seconds: int) -> None: ...

    async def take_pending(self, key: str) -> dict[str, str] | None: ...

    async def close(self) -> None: ...


def _check_idle(idle_seconds: int) -> None:
    if idle_seconds <= 0:
        raise ValueError(f"idle_seconds: expected more than 0, got {idle_seconds}")


class MemorySessionStore:
    """Sessions in the broker process, oldest dropped first when full."""

    def __init__(self, idle_seconds: int, max_sessions: int = MAX_SESSIONS) -> None:
        _check_idle(idle_seconds)
        self.idle_seconds = idle_seconds
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._pending: OrderedDict[str, tuple[float, dict[str, str]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    async def new(self, now: float) -> Session:
        while len(self._sessions) >= self.max_sessions:
            self._sessions.popitem(last=False)
        session = _fresh(now)
        self._sessions[session.id] = session
        return session

    async def get(self, session_id: str | None, now: float) -> Session | None:
        """The live session named by the cookie, touched; ``None`` if absent, idle or expired."""
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if _expired(session, now, self.idle_seconds):
            del self._sessions[session_id]
            return None
        session.last_seen = now
        self._sessions.move_to_end(session_id)
        return session

    async def sign_in(self, old: Session | None, who: Practitioner, now: float,
                      provider: str | None = None) -> Session:
        """A fresh session for a signed-in practitioner (a new id: no session fixation)."""
        if old is not None:
            await self.drop(old.id)
        session = await self.new(now)
        session.practitioner = who
        session.provider = provider
        return session

    async def drop(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    async def put_pending(self, key: str, value: Mapping[str, str], ttl_seconds: int) -> None:
        while len(self._pending) >= MAX_PENDING:
            self._pending.popitem(last=False)
        self._pending[key] = (time.time() + ttl_seconds, dict(value))

    async def take_pending(self, key: str) -> dict[str, str] | None:
        found = self._pending.pop(key, None)
        if found is None or found[0] < time.time():
            return None
        return found[1]

    async def close(self) -> None:
        self._sessions.clear()
        self._pending.clear()


def _hashed(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class RedisSessionStore:
    """Sessions in Redis, shared by every broker replica; each record expires after ``idle_seconds``."""

    def __init__(self, url: str, idle_seconds: int, *, prefix: str = "signpost:session",
                 timeout_seconds: float = 0.5) -> None:
        _check_idle(idle_seconds)
        self.idle_seconds = idle_seconds
        self.prefix = prefix
        self._timeout = timeout_seconds
        self.redis = Redis.from_url(
            url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds,
            retry=Retry(NoBackoff(), 0), health_check_interval=0,
        )

    def _key(self, kind: str, name: str) -> str:
        return f"{self.prefix}:{kind}:{_hashed(name)}"

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            async with asyncio.timeout(self._timeout * 2):
                return await getattr(self.redis, method)(*args, **kwargs)
        except (RedisError, OSError, TimeoutError) as exc:
            raise SessionStoreUnavailable(
                f"session store: Redis did not answer ({exc.__class__.__name__})") from exc

    async def _save(self, session: Session) -> None:
        await self._call("set", self._key("s", session.id), session.to_json(), ex=self.idle_seconds)

    async def new(self, now: float) -> Session:
        session = _fresh(now)
        await self._save(session)
        return session

    async def get(self, session_id: str | None, now: float) -> Session | None:
        if not session_id or len(session_id) > 100:
            return None
        text = await self._call("get", self._key("s", session_id))
        if text is None:
            return None
        session = Session.from_json(session_id, text)
        if _expired(session, now, self.idle_seconds):
            await self.drop(session_id)
            return None
        session.last_seen = now
        await self._save(session)
        return session

    async def sign_in(self, old: Session | None, who: Practitioner, now: float,
                      provider: str | None = None) -> Session:
        if old is not None:
            await self.drop(old.id)
        session = _fresh(now)
        session.practitioner = who
        session.provider = provider
        await self._save(session)
        return session

    async def drop(self, session_id: str) -> None:
        await self._call("delete", self._key("s", session_id))

    async def put_pending(self, key: str, value: Mapping[str, str], ttl_seconds: int) -> None:
        await self._call("set", self._key("p", key), json.dumps(dict(value)), ex=ttl_seconds)

    async def take_pending(self, key: str) -> dict[str, str] | None:
        """The pending record, removed in the same step (GETDEL): a second take finds nothing."""
        if not key or len(key) > 100:
            return None
        text = await self._call("getdel", self._key("p", key))
        if text is None:
            return None
        data = json.loads(text)
        return {str(k): str(v) for k, v in data.items()}

    async def close(self) -> None:
        await self.redis.aclose()


def create_store(redis_url: str | None, idle_seconds: int, *, prefix: str = "signpost:session",
                 timeout_seconds: float = 0.5) -> SessionStore:
    """A Redis store when a URL is configured, otherwise the in-process one."""
    if redis_url:
        return RedisSessionStore(redis_url, idle_seconds, prefix=prefix, timeout_seconds=timeout_seconds)
    return MemorySessionStore(idle_seconds)
