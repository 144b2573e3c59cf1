"""The broker's end of the node channels: one warm WebSocket per node, many queries in flight.

Each node gets one ``NodeChannel``: a WebSocket to ``GET /v1/channel`` over the broker's mutual
TLS connector (the handshake checks the CA chain and the node's trust-list binding, as for
``POST /v1/query``), with WebSocket heartbeats that keep it warm through idle spells and find a
dead peer. Sending a query is one frame written to a socket that is already open; answers come
back on the channel's reader and are matched to the waiting search by query id, then verified
exactly as over HTTP (``fanout.judge``: signed by that node, for this broker, bound to the
query's ``jti`` and hash).

A channel that breaks fails the searches waiting on it (that node is ``unavailable`` for them)
and is opened again in the background and, at the latest, by the next search. A node that
refuses the upgrade with 404 or 405 (an older node) is asked over ``POST /v1/query`` instead,
and the channel is tried again after ``HTTP_RETRY_SECONDS``.

Frames for a query the broker is no longer waiting for (it timed out, or a frame nobody asked
for) are dropped and counted; a forged or misrouted answer fails ``judge``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from broker.fanout import NodeResult, Query, ask_http, judge, unavailable
from federation import frames
from federation.protocol import MessageError, QueryId, Status
from trust import tls
from trust.trustlist import Member, TrustList

log = logging.getLogger("signpost.broker")

HTTP_RETRY_SECONDS = 300.0  # how long a node without the channel is asked over HTTP before trying again
CLOSE_SECONDS = 1.0  # how long closing a channel waits for the node's close frame
RECONNECT_SECONDS = (0.2, 1.0, 5.0, 15.0)  # background reconnection back-off, then every last value


class ChannelLost(Exception):
    """The channel closed while a query was waiting on it."""


@dataclass
class Counters:
    """What the channels count for ``/metrics`` (callbacks into the broker's registry)."""

    opened: Callable[[str], None]
    dropped: Callable[[str], None]


class NodeChannel:
    """One node's WebSocket: opened on demand, kept open, reopened after a break."""

    def __init__(self, node: Member, session: aiohttp.ClientSession, counters: Counters,
                 max_frame: int) -> None:
        self.node_id = node.id
        self.endpoint = node.endpoint or ""
        self.session = session
        self.counters = counters
        self.max_frame = max_frame
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.pending: dict[str, asyncio.Future[frames.Frame]] = {}
        self.http_until = 0.0
        self._der: bytes | None = None
        self._bound_version: int | None = None
        self._opening: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._reconnect: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def open(self) -> bool:
        return self.ws is not None and not self.ws.closed

    @property
    def over_http(self) -> bool:
        """True while this node is asked over ``POST /v1/query`` (it has no channel)."""
        return time.monotonic() < self.http_until

    def ensure_open(self) -> asyncio.Task[None]:
        """The task opening the channel (one at a time), started if needed."""
        if self._opening is None or self._opening.done():
            self._opening = asyncio.create_task(self._open())
        return self._opening

    async def _open(self) -> None:
        url = self.endpoint.rstrip("/") + frames.CHANNEL_PATH
        server_hostname = self.node_id if url.startswith("https:") else None
        try:
            ws = await self.session.ws_connect(
                url, protocols=(frames.SUBPROTOCOL,), heartbeat=frames.HEARTBEAT_SECONDS,
                max_msg_size=self.max_frame, server_hostname=server_hostname,
                # A broker that stops does not wait on a node that does not answer its close.
                timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_SECONDS))
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in (404, 405):
                log.info("node %s has no channel (HTTP %d): asked over HTTP", self.node_id, exc.status)
                self.http_until = time.monotonic() + HTTP_RETRY_SECONDS
                return
            raise
        if ws.protocol != frames.SUBPROTOCOL:
            await ws.close()
            raise aiohttp.ClientError(f"channel: expected subprotocol {frames.SUBPROTOCOL}")
        ssl_object = ws.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if server_hostname is not None and not der:
            # Fail closed: over TLS a channel whose node certificate cannot be re-checked is not used.
            await ws.close()
            raise aiohttp.ClientError("channel: the node's certificate is not available")
        self._der = bytes(der) if der else None
        self._bound_version = None
        self.ws = ws
        self.counters.opened(self.node_id)
        self._reader = asyncio.create_task(self._read(ws))
        log.info("channel to %s open", self.node_id)

    def bound(self, trust: TrustList) -> bool:
        """The open channel's certificate is still bound to this node in the list in force
        (checked again only when the trust-list version changes)."""
        if self._der is None or self._bound_version == trust.version:
            return True
        try:
            tls.peer_member(trust, self._der, "node", expected=self.node_id)
        except tls.CertificateError as exc:
            log.warning("node %s: %s", self.node_id, exc)
            return False
        self._bound_version = trust.version
        return True

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            async for message in ws:
                if message.type is not aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    frame = frames.parse(message.data)
                except MessageError as exc:
                    log.warning("node %s sent a bad frame: %s", self.node_id, exc.field)
                    self.counters.dropped(self.node_id)
                    continue
                waiting = self.pending.pop(frame.id, None)
                if waiting is None or waiting.done() or isinstance(frame, frames.QueryFrame):
                    # Late (the search stopped waiting), replayed, or never asked for.
                    self.counters.dropped(self.node_id)
                    continue
                waiting.set_result(frame)
        finally:
            if self.ws is ws:
                self.ws = None
            for waiting in self.pending.values():
                if not waiting.done():
                    waiting.set_exception(ChannelLost(f"channel to {self.node_id} closed"))
            self.pending.clear()
            if not self._closed:
                log.info("channel to %s closed; reopening", self.node_id)
                self._reconnect = asyncio.create_task(self._reopen())

    async def _reopen(self) -> None:
        """Reopen in the background so that the next search finds the channel warm."""
        for attempt in range(1_000_000):
            await asyncio.sleep(RECONNECT_SECONDS[min(attempt, len(RECONNECT_SECONDS) - 1)])
            if self._closed or self.open or self.over_http:
                return
            with contextlib.suppress(Exception):  # any failure: try again after the next pause
                await self.ensure_open()

    def send(self, query: Query, text: str | None = None) -> asyncio.Future[frames.Frame] | None:
        """Write ``query`` (its frame ``text``, made once per search) to the open channel; the future
        gets the node's frame. None if the channel is not open."""
        ws = self.ws
        if ws is None or ws.closed:
            return None
        waiting: asyncio.Future[frames.Frame] = asyncio.get_running_loop().create_future()
        self.pending[query.jti] = waiting
        text = text or frames.QueryFrame(QueryId(query.jti), query.token).to_text()
        # One small task per node, so that a node that stops reading never holds up the others.
        writing = asyncio.ensure_future(ws.send_str(text))
        writing.add_done_callback(lambda done: self._written(done, query.jti))
        return waiting

    def _written(self, done: asyncio.Future[None], jti: str) -> None:
        error = None if done.cancelled() else done.exception()
        if done.cancelled() or error is not None:
            waiting = self.pending.pop(jti, None)
            if waiting is not None and not waiting.done():
                waiting.set_exception(ChannelLost(f"query not written ({error.__class__.__name__})"))

    def forget(self, jti: str) -> None:
        """Stop waiting for ``jti`` (its deadline passed): a later answer is counted as dropped."""
        self.pending.pop(jti, None)

    async def close(self) -> None:
        """Close the channel and wait for every task it started (reopening, opening, reading)."""
        self._closed = True
        stopping = [t for t in (self._reconnect, self._opening) if t is not None]
        for task in stopping:
            task.cancel()
        for task in stopping:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader


class Channels:
    """Every node's channel, and the fan-out over them."""

    def __init__(self, session: aiohttp.ClientSession, broker_id: str, counters: Counters,
                 max_frame: int = 256 * 1024) -> None:
        self.session = session
        self.broker_id = broker_id
        self.counters = counters
        self.max_frame = max_frame
        self._by_node: dict[str, NodeChannel] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._version: int | None = None

    def channel(self, node: Member) -> NodeChannel:
        found = self._by_node.get(node.id)
        if found is None or found.endpoint != (node.endpoint or ""):
            if found is not None:
                task = asyncio.create_task(found.close())  # the node moved: the old channel goes
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
            found = self._by_node[node.id] = NodeChannel(node, self.session, self.counters, self.max_frame)
        return found

    def _prune(self, current: set[str]) -> None:
        """Close the channels of nodes the trust list in force no longer names."""
        for node_id in [n for n in self._by_node if n not in current]:
            task = asyncio.create_task(self._by_node.pop(node_id).close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def warm(self, nodes: list[Member]) -> None:
        """Open every node's channel in the background (at start, and after a trust-list change)."""
        for node in nodes:
            if node.endpoint:
                channel = self.channel(node)
                if not channel.open and not channel.over_http:
                    channel.ensure_open().add_done_callback(_quiet)

    async def fan_out(self, nodes: list[Member], query: Query, trust: TrustList,
                      deadline: float) -> list[NodeResult]:
        """Ask every node at once, each within ``deadline`` seconds; results in node order.

        Nodes with an open channel get one frame each, written without a task per node; the rest
        (channel to open, or HTTP) get a task each.
        """
        started = time.monotonic()
        if trust.version != self._version:
            self._prune({n.id for n in nodes})
            self._version = trust.version
        text = frames.QueryFrame(QueryId(query.jti), query.token).to_text()  # the same frame for every node
        results: list[NodeResult | None] = [None] * len(nodes)
        waiting: dict[asyncio.Future[frames.Frame], int] = {}
        others: dict[asyncio.Task[NodeResult], int] = {}
        for i, node in enumerate(nodes):
            if not node.endpoint:
                results[i] = unavailable(node, "no endpoint in the trust list", started)
                continue
            channel = self.channel(node)
            if channel.open and not channel.bound(trust):
                results[i] = unavailable(node, "node certificate is not bound to it in the trust list",
                                         started, integrity=True)
                continue
            sent = channel.send(query, text) if channel.open else None
            if sent is not None:
                waiting[sent] = i
            else:
                others[asyncio.create_task(self._ask_slowly(channel, node, query, trust, deadline))] = i
        if waiting or others:
            pending: list[asyncio.Future[frames.Frame] | asyncio.Task[NodeResult]] = [*waiting, *others]
            await asyncio.wait(pending, timeout=max(0.0, deadline - (time.monotonic() - started)))
        for task, i in others.items():
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                results[i] = unavailable(nodes[i], f"no answer within {deadline:g} s", started,
                                         abandoned=True)
            else:
                results[i] = task.result()
        for future, i in waiting.items():
            results[i] = self._judge(nodes[i], future, query, trust, deadline, started)
        return [r for r in results if r is not None]

    def _judge(self, node: Member, future: asyncio.Future[frames.Frame], query: Query, trust: TrustList,
               deadline: float, started: float) -> NodeResult:
        if not future.done() or future.cancelled():
            self.channel(node).forget(query.jti)
            future.cancel()
            return unavailable(node, f"no answer within {deadline:g} s", started, abandoned=True)
        error = future.exception()
        if error is not None:
            return unavailable(node, "not reachable (channel closed)", started, abandoned=True)
        frame = future.result()
        if isinstance(frame, frames.RefusedFrame):
            log.warning("node %s refused query %s (%d)", node.id, query.jti, frame.status)
            return unavailable(node, f"node refused the query (HTTP {frame.status})", started)
        if not isinstance(frame, frames.AnswerFrame):
            return unavailable(node, "answer is not a signed envelope", started, integrity=True)
        return judge(node, frame.answer, query, trust, self.broker_id, started)

    async def _ask_slowly(self, channel: NodeChannel, node: Member, query: Query, trust: TrustList,
                          deadline: float) -> NodeResult:
        """Open the channel first (or use HTTP for a node without one), then ask."""
        started = time.monotonic()
        if not channel.over_http:
            try:
                await asyncio.shield(channel.ensure_open())
            except aiohttp.ClientConnectorCertificateError as exc:
                log.warning("node %s: certificate refused: %s", node.id, exc.certificate_error)
                return unavailable(node, "node certificate refused (CA or trust-list binding)", started,
                                   integrity=True)
            except (aiohttp.ClientError, OSError, ValueError) as exc:
                return unavailable(node, f"not reachable ({exc.__class__.__name__})", started)
        if channel.over_http or not channel.open:
            return await ask_http(self.session, node, query, trust, self.broker_id,
                                  max(0.001, deadline - (time.monotonic() - started)))
        future = channel.send(query)
        if future is None:
            return unavailable(node, "not reachable (channel closed)", started)
        try:
            with contextlib.suppress(TimeoutError, ChannelLost):
                left = max(0.001, deadline - (time.monotonic() - started))
                await asyncio.wait_for(asyncio.shield(future), left)
        finally:
            if not future.done():  # cancelled at the search's deadline: a later answer is dropped
                channel.forget(query.jti)
                future.cancel()
        return self._judge(node, future, query, trust, deadline, started)

    async def close(self) -> None:
        """Close every channel, including those already closing (a node moved or removed)."""
        await asyncio.gather(*(c.close() for c in self._by_node.values()), *self._closing,
                             return_exceptions=True)


def _quiet(task: asyncio.Task[None]) -> None:
    """Retrieve a background opening's exception (a node that is down is found again later)."""
    if not task.cancelled():
        task.exception()


__all__ = ["ChannelLost", "Channels", "Counters", "NodeChannel", "Status"]
