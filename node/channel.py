"""The node's end of the broker channel: ``GET /v1/channel``, one WebSocket per broker.

The upgrade is refused early exactly as ``POST /v1/query`` is (expired trust list, a client
certificate that is not a current broker's). Each ``query`` frame is handed to
``node.api.process_query``, the one unit that verifies, answers and logs a query whatever
carries it, and its response goes back as an ``answer`` or ``refused`` frame for the same id.
Frames are served concurrently; the broker's certificate is checked again against the trust
list in force for every frame, so a long-lived channel never outlives the broker's binding.

On a channel that agreed subprotocol ``signpost.v2`` an answer that discloses nothing
(``no_match``) goes back unsigned, as a ``no_match`` frame: the node logs the SHA-256 of that
frame's exact text as the answer's hash, and the broker logs the hash of the text it received
(decision 6). Every other answer is signed, on either subprotocol.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from aiohttp import WSMsgType, web

from federation import frames, safejson
from federation.canonical import JsonObject
from federation.http import problem
from federation.protocol import AnswerClaims, MessageError, QueryId, Status
from node.config import NodeConfig
from trust import tls
from trust.store import TrustStore
from trust.trustlist import TrustList

log = logging.getLogger("signpost.node")


class Host(Protocol):
    """What the channel needs of the node (``node.api.Node``, which wires this module in)."""

    @property
    def config(self) -> NodeConfig: ...

    @property
    def trust(self) -> TrustStore: ...


Node = TypeVar("Node", bound=Host)
Seal = Callable[[AnswerClaims], str | None]
"""Given an answer's claims, the exact unsigned text to send instead of a signed envelope, or None
to sign it (a ``signpost.v2`` channel passes one to ``node.api.process_query``, decision 6)."""


class Answered(Protocol):
    """What answering one query gives the channel (``node.answering.Reply``)."""

    @property
    def status(self) -> int: ...

    @property
    def text(self) -> str | None: ...  # the answer envelope, or the sealed no_match frame

    def problem_document(self) -> JsonObject: ...


Process = Callable[[Node, str, str | None, Seal | None], Awaitable[Answered]]


def add_route(app: web.Application, node: Node, *,
              process: Process[Node],
              refuse_early: Callable[[Node, web.Request, datetime], web.Response | None],
              tls_peer: web.RequestKey[str]) -> None:
    """Serve ``GET /v1/channel`` on ``app``: each query frame goes through ``process``
    (``node.api.process_query``), after the same early refusals as ``POST /v1/query``."""

    open_channels = _Open()

    async def handle(request: web.Request) -> web.StreamResponse:
        refused = refuse_early(node, request, datetime.now(UTC))
        if refused is not None:
            return refused
        return await _channel(node, request, request.get(tls_peer), process, open_channels)

    async def going_away(_: web.Application) -> None:
        # A channel never ends by itself: close them all (1001) so that shutdown does not wait,
        # and any whose upgrade is still under way as soon as it is open.
        open_channels.closing = True
        for ws in list(open_channels.sockets):
            await ws.close(code=1001, message=b"node shutting down")

    app.router.add_get(frames.CHANNEL_PATH, handle)
    app.on_shutdown.append(going_away)


async def _channel(node: Node, request: web.Request, peer: str | None,
                   process: Process[Node],
                   open_channels: _Open) -> web.StreamResponse:
    """The WebSocket that carries query and answer frames."""
    der = tls.peer_certificate(request.transport) if node.config.tls is not None else None
    # Unsigned no_match frames (signpost.v2) only where mutual TLS names the broker at both ends.
    offered = frames.SUBPROTOCOLS if der is not None else (frames.SUBPROTOCOL,)
    ws = web.WebSocketResponse(protocols=offered, heartbeat=frames.HEARTBEAT_SECONDS,
                               max_msg_size=node.config.body_limit)
    if not ws.can_prepare(request).ok:
        detail = f"expected a WebSocket upgrade with subprotocol {' or '.join(frames.SUBPROTOCOLS)}"
        return problem(400, "Bad request", detail, kind="not-a-channel")
    try:
        await ws.prepare(request)
    except ConnectionError:  # the broker went away during the upgrade: nothing to serve
        log.info("channel upgrade abandoned by %s", peer or "a broker")
        return ws
    if ws.ws_protocol not in offered:
        await ws.close(code=1002, message=f"expected subprotocol {' or '.join(offered)}".encode())
        return ws
    if open_channels.closing:  # upgraded while the node stops: the broker reopens elsewhere
        await ws.close(code=1001, message=b"node shutting down")
        return ws
    unsigned = ws.ws_protocol == frames.SUBPROTOCOL_V2
    log.info("channel opened by %s", peer or "a broker")
    serving: set[asyncio.Task[None]] = set()
    open_channels.sockets.add(ws)
    bound_in: TrustList | None = None  # the list in force when the certificate was last checked
    try:
        async for message in ws:
            if message.type is not WSMsgType.TEXT:
                continue  # pings and pongs are handled by aiohttp; binary frames mean nothing here
            if der is not None and node.trust.current is not bound_in:  # checked again per list
                bound_in = node.trust.current
                if not _still_bound(bound_in, der):
                    await ws.close(code=1008, message=b"client certificate no longer bound to a broker")
                    break
            task = asyncio.create_task(_serve(node, ws, message.data, peer, process, unsigned))
            serving.add(task)
            task.add_done_callback(serving.discard)
    finally:
        open_channels.sockets.discard(ws)
    # Queries already read are answered and logged even though the answers can no longer be sent.
    if serving:
        await asyncio.gather(*serving, return_exceptions=True)
    log.info("channel closed by %s", peer or "a broker")
    return ws


@dataclass
class _Open:
    """The node's open channels, and whether it is stopping (no new channel is kept open then)."""

    sockets: set[web.WebSocketResponse] = field(default_factory=set)
    closing: bool = False


def _still_bound(trust: TrustList, der: bytes) -> bool:
    try:
        tls.peer_member(trust, der, "broker")
    except tls.CertificateError as exc:
        log.warning("channel closed: %s", exc)
        return False
    return True


async def _serve(node: Node, ws: web.WebSocketResponse, data: str, peer: str | None,
                 process: Process[Node], unsigned: bool) -> None:
    try:
        frame = frames.parse(data)
    except MessageError as exc:
        frame_id = _claimed_id(data)
        if frame_id is not None:
            await _send(ws, frames.RefusedFrame(QueryId(frame_id), 400, _bad_frame(str(exc))))
        return
    if not isinstance(frame, frames.QueryFrame):
        refusal = _bad_frame("kind: a node accepts only query frames")
        await _send(ws, frames.RefusedFrame(frame.id, 400, refusal))
        return
    sealed: list[str] = []

    def seal(claims: AnswerClaims) -> str | None:
        """The unsigned frame for an answer that discloses nothing (on the store's thread)."""
        if claims.status is not Status.NO_MATCH or claims.involvements or claims.contact or claims.assessment:
            return None
        text = frames.NoMatchFrame(frame.id, claims.iss, claims.aud, claims.query_hash, claims.iat).to_text()
        sealed.append(text)
        return text

    reply = await process(node, frame.query, peer, seal if unsigned else None)
    if reply.status == 200 and reply.text is not None:
        if sealed and reply.text == sealed[0]:
            await _send_text(ws, frame.id, sealed[0])  # logged by the hash of exactly this text
        else:
            await _send(ws, frames.AnswerFrame(frame.id, reply.text))
    else:
        status = reply.status if reply.status >= 400 else 500
        await _send(ws, frames.RefusedFrame(frame.id, status, reply.problem_document()))


def _bad_frame(detail: str) -> JsonObject:
    return {"title": "Bad frame", "status": 400, "detail": detail}


def _claimed_id(data: str) -> str | None:
    """The id a frame that failed ``frames.parse`` claims, to address the refusal (never trusted)."""
    try:
        value: Any = safejson.parse(data, "frame", frames.FRAME_LIMITS)
    except safejson.JsonError:
        return None
    frame_id = value.get("id") if isinstance(value, dict) else None
    return frame_id if isinstance(frame_id, str) and frame_id else None


async def _send(ws: web.WebSocketResponse, frame: frames.Frame) -> None:
    await _send_text(ws, frame.id, frame.to_text())


async def _send_text(ws: web.WebSocketResponse, frame_id: str, text: str) -> None:
    if ws.closed:
        return
    try:
        await ws.send_str(text)
    except ConnectionError:
        log.info("answer frame %s not sent: the channel closed", frame_id)
