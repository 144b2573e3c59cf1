"""The node's HTTP API: ``POST /v1/query`` takes a signed query and returns a signed answer.

Order of work for one query: verify the broker's signature against the trust list (fixed
algorithm, issuer must be a broker, ``kid`` only a hint), check expiry, refuse a ``jti`` seen
before, match, apply the disclosure policy, sign an answer bound to the query's ``jti`` and hash.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from aiohttp import web

from federation import identity
from federation.errors import FieldError, SignpostError, ValidationError
from federation.http import json_response, problem, read_json_object
from federation.protocol import ANSWER_LIFETIME_SECONDS, PROTOCOL_VERSION, Contact, Status
from node.config import NodeConfig
from node.matching import MatchIndex
from node.policy import Requester, decide, is_archived
from node.store import Store
from trust import envelope
from trust.errors import ExpiredError, TrustError
from trust.keys import load_private
from trust.store import TrustStore

log = logging.getLogger("signpost.node")


@dataclass
class IndexHolder:
    """The matcher's index and what it was built from; rebuilt when the store changes."""

    index: MatchIndex
    generation: int
    built_on: date


class Node:
    """A running node's state (one per app)."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.store = Store(config.database)
        self.trust = TrustStore(config.trust_root, config.trust_list)
        self.trust.load()
        self.key = load_private(config.key)
        me = self.trust.current.member(config.id, "node")
        self.name = me.name
        contact = dict(me.contact or {}) | dict(config.signposting_contact)
        self.contact = Contact(
            name=contact.get("name", f"{me.name} signposting team"),
            phone=contact.get("phone"),
            secure_email=contact.get("secure_email"),
            organisation=contact.get("organisation", me.name),
        )
        self._holder: IndexHolder | None = None
        self._lock = asyncio.Lock()

    def _build(self, today: date) -> IndexHolder:
        generation = self.store.generation()
        children = (c for c in self.store.children() if not is_archived(c, today))
        return IndexHolder(MatchIndex(children), generation, today)

    async def index(self, today: date) -> MatchIndex:
        """The current index, rebuilt (off the event loop) after an import or at midnight."""
        holder = self._holder
        if holder is not None and holder.generation == self.store.generation() and holder.built_on == today:
            return holder.index
        async with self._lock:
            holder = self._holder
            if holder is None or holder.generation != self.store.generation() or holder.built_on != today:
                self._holder = holder = await asyncio.to_thread(self._build, today)
                log.info("index built: %d children, generation %d", len(holder.index), holder.generation)
        return holder.index

    def answer(self, query_token: str, now: datetime, index: MatchIndex) -> dict[str, Any]:
        """Verify, match, decide; return the answer claims (raises on a bad query)."""
        claims, broker = envelope.verify(
            query_token, self.trust.current, role="broker", typ=envelope.QUERY_TYPE, now=now,
            audience=self.trust.current.federation,
        )
        if not self.store.remember_query(str(claims["jti"]), int(claims["exp"]) + 120, int(now.timestamp())):
            raise ReplayedQuery(f"query {claims['jti']} was already answered")
        practitioner = claims.get("practitioner")
        if not isinstance(practitioner, dict):
            raise FieldError("practitioner", "expected an object in the signed query")
        query_identity = identity.parse_identity(claims.get("identity"))
        today = now.date()
        identity.check_searchable(query_identity, today)
        result = index.match(query_identity)
        child = index.children.get(result.record_id) if result.record_id else None
        involvements = self.store.involvements(child.record_id) if child else []
        disclosure = decide(
            status=result.status,
            child=child,
            involvements=involvements,
            requester=Requester.from_claims(practitioner),
            authority_id=self.config.id,
            signposting_contact=self.contact,
            sensitive_categories=self.trust.current.policy.sensitive_categories,
            today=today,
        )
        iat = int(now.timestamp())
        return {
            "v": PROTOCOL_VERSION,
            "iss": self.config.id,
            "aud": broker.id,
            "iat": iat,
            "exp": iat + ANSWER_LIFETIME_SECONDS,
            "jti": str(uuid.uuid4()),
            "query_jti": claims["jti"],
            "query_hash": envelope.envelope_hash(query_token),
            "authority": {"id": self.config.id, "name": self.name},
            **disclosure.to_wire(),
        }

    def close(self) -> None:
        self.store.close()


class ReplayedQuery(SignpostError):
    """A query id arrived a second time within its lifetime."""


NODE = web.AppKey("node", Node)


async def handle_query(request: web.Request) -> web.Response:
    node = request.app[NODE]
    try:
        body = await read_json_object(request, node.config.body_limit)
        token = body.get("query")
        if not isinstance(token, str):
            raise FieldError("query", "expected a compact JWS string")
    except FieldError as exc:
        return problem(400, "Bad request", str(exc), errors=[exc])
    now = datetime.now(UTC)
    try:
        node.trust.current.check_current(now)
        index = await node.index(now.date())
        claims = node.answer(token, now, index)
    except ExpiredError as exc:
        return problem(401, "Expired", str(exc), kind="expired")
    except TrustError as exc:
        log.warning("query refused: %s", exc.__class__.__name__)
        return problem(401, "Query not trusted", str(exc), kind="untrusted-query")
    except ReplayedQuery as exc:
        return problem(409, "Replayed query", str(exc), kind="replayed-query")
    except ValidationError as exc:
        return problem(400, "Invalid query", str(exc), errors=exc.errors, kind="invalid-query")
    except FieldError as exc:
        return problem(400, "Invalid query", str(exc), errors=[exc], kind="invalid-query")
    log.info("query %s answered %s", claims["query_jti"], claims["status"])
    signed = envelope.sign(claims, node.key, envelope.ANSWER_TYPE)
    return json_response({"v": PROTOCOL_VERSION, "answer": signed})


async def handle_health(request: web.Request) -> web.Response:
    node = request.app[NODE]
    trust = node.trust.current
    return json_response({
        "status": "ok",
        "id": node.config.id,
        "role": "node",
        "trust_list_version": trust.version,
        "trust_list_expires": trust.expires.isoformat(),
    })


async def _trust_refresh(app: web.Application) -> AsyncIterator[None]:
    node = app[NODE]

    async def loop() -> None:
        while True:
            await asyncio.sleep(node.config.trust_refresh_seconds)
            try:
                node.trust.load()
            except TrustError as exc:
                log.error("trust list refresh refused: %s", exc)

    task = asyncio.create_task(loop())
    yield
    task.cancel()


def create_app(config: NodeConfig) -> web.Application:
    """The node's aiohttp application."""
    app = web.Application(client_max_size=config.body_limit)
    node = Node(config)
    app[NODE] = node
    app.router.add_post("/v1/query", handle_query)
    app.router.add_get("/healthz", handle_health)
    app.cleanup_ctx.append(_trust_refresh)

    async def close(_: web.Application) -> None:
        node.close()

    app.on_cleanup.append(close)
    return app


__all__ = ["NODE", "Node", "Status", "create_app"]
