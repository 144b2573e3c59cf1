"""The node's end of the broker channel: ``GET /v1/channel``, one WebSocket per broker.

The upgrade is refused early exactly as ``POST /v1/query`` is (expired trust list, a client
certificate that is not a current broker's). Each ``query`` frame is handed to
``node.api.process_query``, the one unit that verifies, answers and logs a query whatever
carries it, and its response goes back as an ``answer`` or ``refused`` frame for the same id.
Frames are served concurrently; the broker's certificate is checked again against the trust
list in force for every frame, so a long-lived channel never outlives the broker's binding.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from aiohttp import WSMsgType, web

from federation import frames, safejson
from federation.canonical import JsonObject
from federation.http import problem
from federation.protocol import MessageError, QueryId
from node.config import NodeConfig
from trust import tls
from trust.store import TrustStore

log = logging.getLogger("signpost.node")


class Host(Protocol):
    """What the channel needs of the node (``node.api.Node``, which wires this module in)."""

    @property
    def config(self) -> NodeConfig: ...

    @property
    def trust(self) -> TrustStore: ...


Node = TypeVar("Node", bound=Host)


def add_route(app: web.Application, node: Node, *,
              process: Callable[[Node, str, str | None], Awaitable[web.Response]],
              refuse_early: Callable[[Node, web.Request, datetime], web.Response | None],
              tls_peer: web.RequestKey[str]) -> None:
    """Serve ``GET /v1/channel`` on ``app``: each query frame goes through ``process``
    (``node.api.process_query``), after the same early refusals as ``POST /v1/query``."""

    open_channels = OpenChannels()

    async def handle(request: web.Request) -> web.StreamResponse:
        refused = refuse_early(node, request, datetime.now(UTC))
        if refused is not None:
            return refused
        return await _channel(node, request, request.get(tls_peer), process, open_channels)

    async def going_away(_: web.Application) -> None:
        # A channel never ends by itself: close them all (1001) so that shutdown does not wait,
        # and any still being opened as soon as it is (see ``_channel``).
        open_channels.closing = True
        for ws in list(open_channels.sockets):
            await ws.close(code=1001, message=b"node shutting down")

    app.router.add_get(frames.CHANNEL_PATH, handle)
    app.on_shutdown.append(going_away)


class OpenChannels:
    """The channels open now, and whether the node has begun shutting down."""

    def __init__(self) -> None:
        self.sockets: set[web.WebSocketResponse] = set()
        self.closing = False


async def _channel(node: Node, request: web.Request, peer: str | None,
                   process: Callable[[Node, str, str | None], Awaitable[web.Response]],
                   open_channels: OpenChannels) -> web.StreamResponse:
    """The WebSocket that carries query and answer frames."""
    der = tls.peer_certificate(request.transport) if node.config.tls is not None else None
    ws = web.WebSocketResponse(protocols=(frames.SUBPROTOCOL,), heartbeat=frames.HEARTBEAT_SECONDS,
                               max_msg_size=node.config.body_limit)
    if not ws.can_prepare(request).ok:
        detail = f"expected a WebSocket upgrade with subprotocol {frames.SUBPROTOCOL}"
        return problem(400, "Bad request", detail, kind="not-a-channel")
    await ws.prepare(request)
    if ws.ws_protocol != frames.SUBPROTOCOL:
        await ws.close(code=1002, message=f"expected subprotocol {frames.SUBPROTOCOL}".encode())
        return ws
    if open_channels.closing:
        # Opened while the node was shutting down, after the open channels were closed: without
        # this it would hold the shutdown until the broker's heartbeat gave up on it.
        await ws.close(code=1001, message=b"node shutting down")
        return ws
    log.info("channel opened by %s", peer or "a broker")
    serving: set[asyncio.Task[None]] = set()
    open_channels.sockets.add(ws)
    try:
        async for message in ws:
            if message.type is not WSMsgType.TEXT:
                continue  # pings and pongs are handled by aiohttp; binary frames mean nothing here
            if der is not None and not _still_bound(node, der):
                await ws.close(code=1008, message=b"client certificate no longer bound to a broker")
                break
            task = asyncio.create_task(_serve(node, ws, message.data, peer, process))
            serving.add(task)
            task.add_done_callback(serving.discard)
    finally:
        open_channels.sockets.discard(ws)
    # Queries already read are answered and logged even though the answers can no longer be sent.
    if serving:
        await asyncio.gather(*serving, return_exceptions=True)
    log.info("channel closed by %s", peer or "a broker")
    return ws


def _still_bound(node: Host, der: bytes) -> bool:
    try:
        tls.peer_member(node.trust.current, der, "broker")
    except tls.CertificateError as exc:
        log.warning("channel closed: %s", exc)
        return False
    return True


async def _serve(node: Node, ws: web.WebSocketResponse, data: str, peer: str | None,
                 process: Callable[[Node, str, str | None], Awaitable[web.Response]]) -> None:
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
    response = await process(node, frame.query, peer)
    body = json.loads(response.body) if isinstance(response.body, bytes) else {}
    if response.status == 200 and isinstance(body.get("answer"), str):
        await _send(ws, frames.AnswerFrame(frame.id, body["answer"]))
    else:
        status = response.status if response.status >= 400 else 500
        await _send(ws, frames.RefusedFrame(frame.id, status, body))


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
    if ws.closed:
        return
    try:
        await ws.send_str(frame.to_text())
    except ConnectionError:
        log.info("answer frame %s not sent: the channel closed", frame.id)
