"""Web sessions: the same behaviour in process and in a real redis-server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from broker.sessions import MemorySessionStore, RedisSessionStore, SessionStore, SessionStoreUnavailable
from tests.conftest_redis import RedisServer, redis_server
from trust.tokens import Practitioner

__all__ = ["redis_server"]


def _who(expires: int) -> Practitioner:
    return Practitioner("leeds-idp", "sam", "Sam", "Leeds", "practitioner", ("pwd", "otp"), "leeds", "j",
                        expires)


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[SessionStore]:
    """Each session store in turn (Redis on a fresh redis-server)."""
    made: SessionStore
    if request.param == "memory":
        made = MemorySessionStore(idle_seconds=900)
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        made = RedisSessionStore(server.url, idle_seconds=900)
    try:
        yield made
    finally:
        await made.close()


@pytest.mark.parametrize(("case", "age", "token_expires", "alive"), [
    ("fresh", 10, 10_000, True),
    ("idle too long", 901, 10_000, False),
    ("token expired", 10, 1_005, False),
])
async def test_sessions_end_when_idle_or_when_the_sign_in_expires(
        store: SessionStore, case: str, age: int, token_expires: int, alive: bool) -> None:
    """Proves the session store's two timeouts (idle, and the practitioner's sign-in lifetime)."""
    session = await store.sign_in(await store.new(1_000), _who(token_expires), 1_000)
    assert alive == (await store.get(session.id, 1_000 + age) is not None), case


async def test_signing_in_gives_a_new_session_id(store: SessionStore) -> None:
    """Proves a session id known before sign-in is worthless afterwards (no session fixation)."""
    before = await store.new(0)
    after = await store.sign_in(before, _who(10_000), 1)
    assert (None, True) == (await store.get(before.id, 2), await store.get(after.id, 2) is not None)


async def test_a_session_keeps_its_practitioner_and_csrf(store: SessionStore) -> None:
    """Proves what a session holds comes back whole (through JSON, for Redis)."""
    session = await store.sign_in(None, _who(10_000), 1, provider="leeds-idp")
    again = await store.get(session.id, 2)
    assert again is not None
    assert (_who(10_000), session.csrf, "leeds-idp") == (again.practitioner, again.csrf, again.provider)


async def test_a_pending_sign_in_is_taken_once(store: SessionStore) -> None:
    """Proves a sign-in in progress can be taken exactly once (a replayed callback finds nothing)."""
    await store.put_pending("tx", {"state": "s"}, 60)
    assert ({"state": "s"}, None) == (await store.take_pending("tx"), await store.take_pending("tx"))


async def test_redis_keys_hold_no_session_id(redis_server: RedisServer) -> None:
    """Proves Redis holds sessions under a hash of the cookie value, never the value itself."""
    store = RedisSessionStore(redis_server.url, idle_seconds=900)
    try:
        session = await store.new(0)
        keys = [k.decode() for k in await store.redis.keys("*")]
        assert (1, False) == (len(keys), any(session.id in k for k in keys))
    finally:
        await store.close()


async def test_a_stopped_redis_fails_closed(redis_server: RedisServer) -> None:
    """Proves that without its Redis the store raises rather than handing out sessions."""
    store = RedisSessionStore(redis_server.url, idle_seconds=900, timeout_seconds=0.2)
    try:
        redis_server.stop()
        with pytest.raises(SessionStoreUnavailable):
            await store.get("some-session", 0)
    finally:
        await store.close()
