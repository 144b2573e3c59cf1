"""The broker's end of the node channels: one warm WebSocket per node, many queries in flight.

Each node gets one ``NodeChannel``: a WebSocket to ``GET /v1/channel`` over mutual TLS with the
broker's client context (the handshake checks the CA chain and the node's trust-list binding, as
for ``POST /v1/query``), read and written straight off the event loop (``broker.wsclient``,
decision 19), with heartbeats that keep it warm through idle spells and find a dead peer. Sending
a query is one frame, masked once for every node, written to a socket that is already open;
answers come back through the channel's read callback and are matched to the waiting search by
query id, then verified
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
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from broker import wsclient
from broker.fanout import NodeResult, Query, ask_http, judge, judge_no_match, unavailable
from federation import frames
from federation.canonical import sha256_hex
from federation.protocol import MessageError, QueryId, Status
from trust import tls
from trust.trustlist import Member, TrustList

log = logging.getLogger("signpost.broker")

HTTP_RETRY_SECONDS = 300.0  # how long a node without the channel is asked over HTTP before trying again
CLOSE_SECONDS = 1.0  # how long closing a channel waits for the node's close frame
RECONNECT_SECONDS = (0.2, 1.0, 5.0, 15.0)  # background reconnection back-off, then every last value
READ_HOLD_SECONDS = 0.01  # while many answers are awaited, ready channels are read together this often
HOLD_WHILE_AWAITING = 8  # "many": a search still waiting for at least this many answers


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

    __slots__ = ("all_in", "left", "no_match", "results", "sealed", "started")

    def __init__(self, size: int, no_match: tuple[str, str] | None = None, started: float = 0.0) -> None:
        self.results: list[Heard | NodeResult | ChannelLost | None] = [None] * size
        self.no_match = no_match  # the exact text a no_match for this search has, around iss and iat
        self.started = started
        self.left = 0
        self.sealed = False
        self.all_in: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def expect(self) -> None:
        self.left += 1

    def deliver(self, index: int, result: Heard | NodeResult | ChannelLost) -> bool:
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


@dataclass
class Counters:
    """What the channels count for ``/metrics`` (callbacks into the broker's registry)."""

    opened: Callable[[str], None]
    dropped: Callable[[str], None]


class NodeChannel:
    """One node's WebSocket: opened on demand, kept open, reopened after a break."""

    def __init__(self, node: Member, link: Link, counters: Counters, max_frame: int,
                 reading: wsclient.Reading | None = None) -> None:
        self.node_id = node.id
        self.node_name = node.name
        self.reading = reading
        self.endpoint = node.endpoint or ""
        self.link = link
        self.counters = counters
        self.max_frame = max_frame
        self.conn: wsclient.Connection | None = None
        self.pending: dict[str, tuple[Gathering, int]] = {}  # query id -> where its answer goes
        self.http_until = 0.0
        self._bound_version: int | None = None
        self._opening: asyncio.Task[None] | None = None
        self._reconnect: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def open(self) -> bool:
        return self.conn is not None and not self.conn.closed

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
        secure = url.startswith("https:")
        server_hostname = self.node_id if secure else None

        def check_peer(der: bytes | None) -> None:
            # The trust-list binding, checked in the handshake before the upgrade is sent.
            if self.link.trust is not None and self.link.context is not None:
                tls.peer_member(self.link.trust(), der, "node", expected=self.node_id)

        def heard(text: str) -> None:
            self._heard(text, _unsigned_agreed(conn))

        try:
            conn = await wsclient.connect(
                url, protocols=frames.SUBPROTOCOLS, context=self.link.context,
                server_hostname=server_hostname, timeout=self.link.connect_seconds,
                max_frame=self.max_frame, on_text=heard,
                on_lost=lambda error: self._lost(conn, error), check_peer=check_peer,
                reading=self.reading)
        except wsclient.HandshakeRefused as exc:
            if exc.status in (404, 405):
                log.info("node %s has no channel (HTTP %d): asked over HTTP", self.node_id, exc.status)
                self.http_until = time.monotonic() + HTTP_RETRY_SECONDS
                return
            raise
        der = conn.peer_certificate
        if secure and not der:
            # Fail closed: over TLS a channel whose node certificate cannot be re-checked is not used.
            await conn.close(CLOSE_SECONDS)
            raise wsclient.HandshakeError("channel: the node's certificate is not available")
        if self._closed:  # the broker stopped while this channel was opening
            await conn.close(CLOSE_SECONDS)
            return
        self._bound_version = None
        self.conn = conn
        self.counters.opened(self.node_id)
        log.info("channel to %s open", self.node_id)

    def bound(self, trust: TrustList) -> bool:
        """The open channel's certificate is still bound to this node in the list in force
        (checked again only when the trust-list version changes)."""
        der = self.conn.peer_certificate if self.conn is not None else None
        if der is None or self._bound_version == trust.version:
            return True
        try:
            tls.peer_member(trust, der, "node", expected=self.node_id)
        except tls.CertificateError as exc:
            log.warning("node %s: %s", self.node_id, exc)
            return False
        self._bound_version = trust.version
        return True

    def _heard(self, text: str, unsigned: bool) -> None:
        """Hand one frame to the search waiting for it (``unsigned``: what this very connection
        agreed, whatever a later one agrees)."""
        if unsigned and text.startswith(frames.NO_MATCH_HEAD) and self._exact_no_match(text):
            return
        try:
            frame = frames.parse(text)
        except MessageError as exc:
            log.warning("node %s sent a bad frame: %s", self.node_id, exc.field)
            self.counters.dropped(self.node_id)
            return
        waiting = self.pending.pop(frame.id, None)
        if (waiting is None or isinstance(frame, frames.QueryFrame)
                or not waiting[0].deliver(waiting[1], Heard(frame, text, unsigned))):
            # Late (the search stopped waiting), replayed, or never asked for.
            self.counters.dropped(self.node_id)

    def _exact_no_match(self, text: str, head_size: int = len(frames.NO_MATCH_HEAD)) -> bool:
        """Most answers: a no_match frame with exactly the text this node had to send for a search
        under way (its id, this node, this broker, that query's hash; any ``iat``). It is judged
        here, by comparing strings, with no parse; False leaves any other frame to the full path
        (``frames.parse`` and ``fanout.judge_no_match``), which gives the same result for these."""
        query_id = text[head_size:text.find('"', head_size)]
        waiting = self.pending.get(query_id)
        if waiting is None:
            return False
        gathering, index = waiting
        if gathering.no_match is None or not frames.is_exact_no_match(text, gathering.no_match, self.node_id):
            return False
        del self.pending[query_id]
        gathering.deliver(index, NodeResult(
            self.node_id, self.node_name, Status.NO_MATCH, answer_hash=sha256_hex(text.encode("utf-8")),
            seconds=time.monotonic() - gathering.started))
        return True

    def _lost(self, conn: wsclient.Connection, error: BaseException | None) -> None:
        """``conn`` ended: fail the searches waiting on it, and reopen unless the broker stops."""
        if self.conn is not conn:
            return
        self.conn = None
        lost = ChannelLost(f"channel to {self.node_id} closed")
        for gathering, index in self.pending.values():
            gathering.deliver(index, lost)
        self.pending.clear()
        if not self._closed:
            log.info("channel to %s closed (%s); reopening", self.node_id, error or "closed")
            self._reconnect = asyncio.create_task(self._reopen())

    async def _reopen(self) -> None:
        """Reopen in the background so that the next search finds the channel warm."""
        for attempt in range(1_000_000):
            await asyncio.sleep(RECONNECT_SECONDS[min(attempt, len(RECONNECT_SECONDS) - 1)])
            if self._closed or self.open or self.over_http:
                return
            with contextlib.suppress(Exception):  # any failure: try again after the next pause
                await self.ensure_open()

    def send(self, query_id: str, frame: wsclient.Frame, gathering: Gathering, index: int) -> bool:
        """Write one query frame (the same bytes for every node) to the open channel; the node's
        frame goes to ``gathering`` at ``index``. False if the channel is not open."""
        conn = self.conn
        if conn is None or conn.closed:
            return False
        self.pending[query_id] = (gathering, index)
        gathering.expect()
        try:
            conn.send(frame)
        except wsclient.ConnectionLost:  # the channel broke: _lost failed what waited on it
            waiting = self.pending.pop(query_id, None)
            if waiting is not None:
                waiting[0].deliver(waiting[1], ChannelLost("query not written (channel closed)"))
        return True

    def forget(self, jti: str) -> None:
        """Stop waiting for ``jti`` (its deadline passed): a later answer is counted as dropped."""
        self.pending.pop(jti, None)

    def keep_warm(self, now: float) -> None:
        """Ping a channel that has been quiet for a heartbeat; drop one silent for two (its node
        is gone without closing): it is reopened in the background."""
        conn = self.conn
        if conn is None or conn.closed:
            return
        quiet = now - conn.heard
        if quiet > 2 * frames.HEARTBEAT_SECONDS:
            conn.abort(wsclient.ConnectionLost("no heartbeat from the node"))
        elif quiet > frames.HEARTBEAT_SECONDS:
            with contextlib.suppress(wsclient.ConnectionLost):
                conn.ping()

    async def close(self) -> None:
        """Close the channel and wait for every task it started (reopening, opening)."""
        self._closed = True
        stopping = [t for t in (self._reconnect, self._opening) if t is not None]
        for task in stopping:
            task.cancel()
        for task in stopping:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.conn is not None:
            await self.conn.close(CLOSE_SECONDS)


@dataclass(frozen=True)
class Link:
    """How channels reach nodes: the broker's TLS client context (None: plain connections, for a
    federation without TLS) and the trust list in force for the handshake's binding check."""

    context: ssl.SSLContext | None
    trust: Callable[[], TrustList] | None = None
    connect_seconds: float = 5.0  # a connection, its TLS handshake, the upgrade: each step at most this


class Channels:
    """Every node's channel, and the fan-out over them."""

    def __init__(self, session: aiohttp.ClientSession, link: Link, broker_id: str, counters: Counters,
                 max_frame: int = 256 * 1024) -> None:
        self.session = session  # for nodes without a channel (POST /v1/query)
        self.link = link
        self.broker_id = broker_id
        self.counters = counters
        self.max_frame = max_frame
        self._by_node: dict[str, NodeChannel] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._version: int | None = None
        self._warming: asyncio.Task[None] | None = None
        self._reading: wsclient.Reading | None = None
        self._gathering: set[Gathering] = set()  # the fan-outs under way

    def _busy(self) -> bool:
        """Many answers are awaited: reading them together is cheaper than one wake-up each."""
        return any(g.left >= HOLD_WHILE_AWAITING for g in self._gathering)

    def channel(self, node: Member) -> NodeChannel:
        found = self._by_node.get(node.id)
        if found is None or found.endpoint != (node.endpoint or ""):
            if found is not None:
                task = asyncio.create_task(found.close())  # the node moved: the old channel goes
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
            if self._reading is None:
                self._reading = wsclient.Reading(READ_HOLD_SECONDS, self._busy)
                self._warming = asyncio.create_task(self._heartbeats())
            found = self._by_node[node.id] = NodeChannel(node, self.link, self.counters, self.max_frame,
                                                         self._reading)
        return found

    async def _heartbeats(self) -> None:
        """Keep every channel warm: a ping after a quiet heartbeat, a silent one dropped."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(frames.HEARTBEAT_SECONDS / 4)
            now = loop.time()
            for channel in list(self._by_node.values()):
                channel.keep_warm(now)

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
        data = _query_frame(query)  # the same bytes for every node
        results: list[NodeResult | None] = [None] * len(nodes)
        exact = frames.no_match_text(query.jti, self.broker_id, query.hash)
        gathering = Gathering(len(nodes), exact, started)
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
            self._gathering.add(gathering)
            try:
                await asyncio.wait(waiting, timeout=max(0.0, deadline - (time.monotonic() - started)))
            finally:
                self._gathering.discard(gathering)
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

    def _judge(self, node: Member, heard: Heard | NodeResult | ChannelLost | None, query: Query,
               trust: TrustList, deadline: float, started: float) -> NodeResult:
        if isinstance(heard, NodeResult):  # an exact no_match, judged as it was read
            return heard
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
            except wsclient.CertificateRefused as exc:
                log.warning("node %s: certificate refused: %s", node.id, exc)
                return unavailable(node, "node certificate refused (CA or trust-list binding)", started,
                                   integrity=True)
            except wsclient.HandshakeRefused as exc:
                return unavailable(node, f"node refused the channel (HTTP {exc.status})", started)
            except (wsclient.HandshakeError, OSError, ValueError) as exc:
                return unavailable(node, f"not reachable ({_cause(exc)})", started)
        if channel.over_http or not channel.open:
            return await ask_http(self.session, node, query, trust, self.broker_id,
                                  max(0.001, deadline - (time.monotonic() - started)))
        gathering = Gathering(1)
        if not channel.send(query.jti, _query_frame(query), gathering, 0):
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
        if self._warming is not None:
            self._warming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._warming
        await asyncio.gather(*(c.close() for c in self._by_node.values()), *self._closing,
                             return_exceptions=True)
        if self._reading is not None:
            self._reading.close()


def _unsigned_agreed(conn: wsclient.Connection) -> bool:
    """Unsigned no_match frames are believed only on a channel that agreed them (``signpost.v2``)
    over mutual TLS (the node's certificate is known): what this very connection agreed."""
    return conn.protocol == frames.SUBPROTOCOL_V2 and conn.peer_certificate is not None


def _query_frame(query: Query) -> wsclient.Frame:
    return wsclient.Frame.text(frames.QueryFrame(QueryId(query.jti), query.token).to_text().encode())


def _cause(exc: BaseException) -> str:
    """What went wrong opening a channel, in a word or two (never the exception's own text)."""
    cause = exc.__cause__ if isinstance(exc, wsclient.HandshakeError) else None
    return (cause or exc).__class__.__name__


def _quiet(task: asyncio.Task[None]) -> None:
    """Retrieve a background opening's exception (a node that is down is found again later)."""
    if not task.cancelled():
        task.exception()


__all__ = ["ChannelLost", "Channels", "Counters", "Gathering", "Heard", "Link", "NodeChannel", "Status"]
