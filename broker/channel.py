"""The broker's end of the node channels: one warm WebSocket per node, many queries in flight.

Each node gets one ``NodeChannel``: a WebSocket to ``GET /v1/channel`` over the broker's mutual
TLS connector (the handshake checks the CA chain and the node's trust-list binding, as for
``POST /v1/query``), with WebSocket heartbeats that keep it warm through idle spells and find a
dead peer. Sending a query is one frame written to a socket that is already open; answers come
back on the channel's reader and are matched to the waiting search by query id, then verified
exactly as over HTTP (``fanout.judge``: signed by that node, for this broker, bound to the
query's ``jti`` and hash); on a channel over mutual TLS that agreed ``signpost.v2``, an unsigned
``no_match`` frame is checked by ``fanout.judge_no_match`` (that node, this broker, this query's
hash) and logged by the hash of its exact text (decision 6).

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
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import aiohttp

from broker.fanout import NodeResult, Query, ask_http, judge, judge_no_match, unavailable
from federation import frames
from federation.protocol import MessageError, QueryId, Status
from trust import tls
from trust.trustlist import Member, TrustList

log = logging.getLogger("signpost.broker")

HTTP_RETRY_SECONDS = 300.0  # how long a node without the channel is asked over HTTP before trying again
CLOSE_SECONDS = 1.0  # how long closing a channel waits for the node's close frame
RECONNECT_SECONDS = (0.2, 1.0, 5.0, 15.0)  # background reconnection back-off, then every last value


@dataclass(frozen=True)
class Heard:
    """A frame a node sent for a query the broker waits for: the frame, its exact text (whose hash
    is logged for an unsigned answer), and whether the channel agreed unsigned no_match frames."""

    frame: frames.Frame
    text: str
    unsigned: bool


class ChannelLost(Exception):
    """The channel closed while a query was waiting on it."""


class Gathering:
    """The frames one search waits for on the channels, by node index, and one future that is
    done when every node expected has sent one (or its channel failed). Delivering is a plain
    call from the channel's reader: no future or callback per node."""

    __slots__ = ("all_in", "left", "results", "sealed")

    def __init__(self, size: int) -> None:
        self.results: list[Heard | ChannelLost | None] = [None] * size
        self.left = 0
        self.sealed = False
        self.all_in: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def expect(self) -> None:
        self.left += 1

    def deliver(self, index: int, result: Heard | ChannelLost) -> bool:
        """Keep the first result for ``index``; False if it already had one."""
        if self.results[index] is not None:
            return False
        self.results[index] = result
        self.left -= 1
        if self.left <= 0 and self.sealed and not self.all_in.done():
            self.all_in.set_result(None)
        return True

    def seal(self) -> None:
        """Every frame expected has been asked for: ``all_in`` is done once they are in."""
        self.sealed = True
        if self.left <= 0 and not self.all_in.done():
            self.all_in.set_result(None)


WRITING: set[asyncio.Future[None]] = set()  # writes waiting for a full socket to drain (held here)


def write_now(ws: aiohttp.ClientWebSocketResponse, data: bytes,
              failed: Callable[[BaseException], None]) -> None:
    """Write one text frame at once, without a task: an uncompressed frame is written by the first
    step of ``send_frame``, which then waits only when the socket's buffer is full. Only then does
    the rest go to a task, so that a node that stops reading never holds up the others. (Python
    3.12's eager tasks do the same; this runs on 3.11.)"""
    step = ws.send_frame(data, aiohttp.WSMsgType.TEXT)
    try:
        blocked = step.send(None)
    except StopIteration:
        return
    except Exception as exc:  # the channel is closing: the node is unavailable for this search
        failed(exc)
        return
    if isinstance(blocked, asyncio.Future):
        blocked._asyncio_future_blocking = False  # taken at once, as asyncio.Task takes it
    finishing = asyncio.ensure_future(_finish(step, blocked))
    WRITING.add(finishing)

    def finished(done: asyncio.Future[None]) -> None:
        WRITING.discard(done)
        if done.cancelled():
            failed(ChannelLost("write cancelled"))
        elif done.exception() is not None:
            failed(done.exception() or ChannelLost("write failed"))

    finishing.add_done_callback(finished)


async def _finish(step: Coroutine[Any, Any, None], blocked: Any) -> None:
    """Drive ``step`` on from where ``write_now`` left it, as a task would."""
    try:
        while True:
            if isinstance(blocked, asyncio.Future):
                await asyncio.wait([blocked])
            else:
                await asyncio.sleep(0)
            blocked = step.send(None)
            if isinstance(blocked, asyncio.Future):
                blocked._asyncio_future_blocking = False
    except StopIteration:
        return
    finally:
        step.close()


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
        self.pending: dict[str, tuple[Gathering, int]] = {}  # query id -> where its answer goes
        self.http_until = 0.0
        self.unsigned = False  # the open channel carries unsigned no_match frames (signpost.v2, mutual TLS)
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
                url, protocols=frames.SUBPROTOCOLS, heartbeat=frames.HEARTBEAT_SECONDS,
                max_msg_size=self.max_frame, server_hostname=server_hostname,
                # A broker that stops does not wait on a node that does not answer its close.
                timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_SECONDS))
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in (404, 405):
                log.info("node %s has no channel (HTTP %d): asked over HTTP", self.node_id, exc.status)
                self.http_until = time.monotonic() + HTTP_RETRY_SECONDS
                return
            raise
        if ws.protocol not in frames.SUBPROTOCOLS:
            await ws.close()
            raise aiohttp.ClientError(f"channel: expected subprotocol {' or '.join(frames.SUBPROTOCOLS)}")
        ssl_object = ws.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if server_hostname is not None and not der:
            # Fail closed: over TLS a channel whose node certificate cannot be re-checked is not used.
            await ws.close()
            raise aiohttp.ClientError("channel: the node's certificate is not available")
        self._der = bytes(der) if der else None
        self._bound_version = None
        # Unsigned no_match frames are believed only on a channel that agreed them, over mutual TLS.
        self.unsigned = ws.protocol == frames.SUBPROTOCOL_V2 and self._der is not None
        self.ws = ws
        self.counters.opened(self.node_id)
        self._reader = asyncio.create_task(self._read(ws, self.unsigned))
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

    async def _read(self, ws: aiohttp.ClientWebSocketResponse, unsigned: bool) -> None:
        """Hand each frame on ``ws`` to the search waiting for it (``unsigned``: what this very
        connection agreed, whatever a later one agrees)."""
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
                if (waiting is None or isinstance(frame, frames.QueryFrame)
                        or not waiting[0].deliver(waiting[1], Heard(frame, message.data, unsigned))):
                    # Late (the search stopped waiting), replayed, or never asked for.
                    self.counters.dropped(self.node_id)
        finally:
            if self.ws is ws:
                self.ws = None
            lost = ChannelLost(f"channel to {self.node_id} closed")
            for gathering, index in self.pending.values():
                gathering.deliver(index, lost)
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

    def send(self, query_id: str, data: bytes, gathering: Gathering, index: int) -> bool:
        """Write one query frame (``data``, the same bytes for every node) to the open channel; the
        node's frame goes to ``gathering`` at ``index``. False if the channel is not open."""
        ws = self.ws
        if ws is None or ws.closed:
            return False
        self.pending[query_id] = (gathering, index)
        gathering.expect()
        write_now(ws, data, lambda error: self._unwritten(query_id, error))
        return True

    def _unwritten(self, query_id: str, error: BaseException) -> None:
        waiting = self.pending.pop(query_id, None)
        if waiting is not None:
            waiting[0].deliver(waiting[1], ChannelLost(f"query not written ({error.__class__.__name__})"))

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
        data = frames.QueryFrame(QueryId(query.jti), query.token).to_text().encode()  # the same for all
        results: list[NodeResult | None] = [None] * len(nodes)
        gathering = Gathering(len(nodes))
        on_channel: list[int] = []
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
            if channel.open and channel.send(query.jti, data, gathering, i):
                on_channel.append(i)
            else:
                others[asyncio.create_task(self._ask_slowly(channel, node, query, trust, deadline))] = i
        gathering.seal()
        if on_channel or others:
            waiting: list[asyncio.Future[Any]] = [gathering.all_in, *others]
            await asyncio.wait(waiting, timeout=max(0.0, deadline - (time.monotonic() - started)))
        for task, i in others.items():
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                results[i] = unavailable(nodes[i], f"no answer within {deadline:g} s", started,
                                         abandoned=True)
            else:
                results[i] = task.result()
        for i in on_channel:
            results[i] = self._judge(nodes[i], gathering.results[i], query, trust, deadline, started)
        return [r for r in results if r is not None]

    def _judge(self, node: Member, heard: Heard | ChannelLost | None, query: Query, trust: TrustList,
               deadline: float, started: float) -> NodeResult:
        if heard is None:
            self.channel(node).forget(query.jti)
            return unavailable(node, f"no answer within {deadline:g} s", started, abandoned=True)
        if isinstance(heard, ChannelLost):
            return unavailable(node, "not reachable (channel closed)", started, abandoned=True)
        frame = heard.frame
        if isinstance(frame, frames.NoMatchFrame):
            if not heard.unsigned:
                return unavailable(node, "unsigned answer on a channel that did not agree them", started,
                                   integrity=True)
            return judge_no_match(node, frame, heard.text, query, self.broker_id, started)
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
        gathering = Gathering(1)
        data = frames.QueryFrame(QueryId(query.jti), query.token).to_text().encode()
        if not channel.send(query.jti, data, gathering, 0):
            return unavailable(node, "not reachable (channel closed)", started)
        gathering.seal()
        try:
            with contextlib.suppress(TimeoutError):
                left = max(0.001, deadline - (time.monotonic() - started))
                await asyncio.wait_for(asyncio.shield(gathering.all_in), left)
        finally:
            if gathering.results[0] is None:  # cancelled at the search's deadline: a later answer is dropped
                channel.forget(query.jti)
        return self._judge(node, gathering.results[0], query, trust, deadline, started)

    async def close(self) -> None:
        """Close every channel, including those already closing (a node moved or removed)."""
        await asyncio.gather(*(c.close() for c in self._by_node.values()), *self._closing,
                             return_exceptions=True)


def _quiet(task: asyncio.Task[None]) -> None:
    """Retrieve a background opening's exception (a node that is down is found again later)."""
    if not task.cancelled():
        task.exception()


__all__ = ["ChannelLost", "Channels", "Counters", "Gathering", "Heard", "NodeChannel", "Status"]
