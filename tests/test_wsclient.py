"""The broker's WebSocket client (``broker.wsclient``): against aiohttp's server for what a node
does, and against a raw socket server for what a hostile or broken node could send."""

from __future__ import annotations

import asyncio
import base64
import gc
import hashlib
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import WSMsgType, web

from broker import wsclient
from broker.channel import Counters, Link, NodeChannel
from federation import frames
from federation.tools.ports import free_port
from trust.trustlist import Member

PROTOCOLS = ("signpost.v2", "signpost.v1")


class Client:
    """One connection's callbacks, recorded."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.lost: list[BaseException | None] = []
        self.ended = asyncio.Event()
        self.got = asyncio.Event()

    def on_text(self, text: str) -> None:
        self.texts.append(text)
        self.got.set()

    def on_lost(self, error: BaseException | None) -> None:
        self.lost.append(error)
        self.ended.set()

    async def connect(self, url: str, protocols: tuple[str, ...] = PROTOCOLS,
                      max_frame: int = 1 << 20) -> wsclient.Connection:
        return await wsclient.connect(url, protocols=protocols, context=None, server_hostname=None,
                                      timeout=5, max_frame=max_frame, on_text=self.on_text,
                                      on_lost=self.on_lost)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def aiohttp_server(handle: Handler) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_get("/ws", handle)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}/ws"


async def test_text_frames_go_both_ways_and_pings_are_answered() -> None:
    """Proves a message sent is received whole, the server's messages reach ``on_text`` in order,
    the server's ping is answered with a pong carrying its payload, and a close this side asks for
    ends with ``on_lost(None)``."""
    pongs: list[bytes] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(protocols=PROTOCOLS, autoping=False)
        await ws.prepare(request)
        await ws.ping(b"are you there")
        async for message in ws:
            if message.type is WSMsgType.PONG:
                pongs.append(message.data)
            elif message.type is WSMsgType.TEXT:
                await ws.send_str("first:" + message.data)
                await ws.send_str("second")
        return ws

    runner, url = await aiohttp_server(handle)
    client = Client()
    try:
        conn = await client.connect(url)
        assert "signpost.v2" == conn.protocol
        conn.send(wsclient.Frame.text(("é" * 70_000).encode()))
        while len(client.texts) < 2:
            client.got.clear()
            await asyncio.wait_for(client.got.wait(), 5)
        await conn.close(1.0)
    finally:
        await runner.cleanup()
    assert ["first:" + "é" * 70_000, "second"] == client.texts
    assert [b"are you there"] == pongs
    assert [None] == client.lost


async def test_a_write_to_a_server_that_stops_reading_waits_alone_and_completes() -> None:
    """Proves ``send`` returns at once when the server stops reading and the socket fills (the rest
    waits for the socket), and that every frame arrives whole and in order once it reads again."""
    reading = asyncio.Event()
    received: list[int] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(protocols=PROTOCOLS, max_msg_size=0)
        await ws.prepare(request)
        await reading.wait()
        async for message in ws:
            received.append(len(message.data))
        return ws

    runner, url = await aiohttp_server(handle)
    sizes = [4 * 1024 * 1024 + i for i in range(6)]
    client = Client()
    try:
        conn = await client.connect(url)
        for size in sizes:
            conn.send(wsclient.Frame.text(b"x" * size))
        waited = conn.buffered
        reading.set()
        while len(received) < len(sizes) and not client.lost:
            await asyncio.sleep(0.05)
        await conn.close(1.0)
    finally:
        await runner.cleanup()
    assert (True, sizes, [None]) == (waited > 0, received, client.lost)


async def test_a_refused_upgrade_names_the_status() -> None:
    """Proves an upgrade answered 404 raises ``HandshakeRefused`` with status 404 (the broker then
    asks that node over HTTP), and one answered without an offered subprotocol is refused."""

    async def handle(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(protocols=("something.else",))
        await ws.prepare(request)
        await ws.receive()
        return ws

    runner, url = await aiohttp_server(handle)
    try:
        with pytest.raises(wsclient.HandshakeRefused) as refused:
            await Client().connect(url.replace("/ws", "/nowhere"))
        with pytest.raises(wsclient.HandshakeError, match="subprotocol"):
            await Client().connect(url)
    finally:
        await runner.cleanup()
    assert 404 == refused.value.status


Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def raw_server(script: Script, *, accept: str | None = None) -> AsyncIterator[str]:
    """A server that does the opening handshake by hand (with ``accept`` as the accept key if
    given), then runs ``script`` on the connection: it can send any bytes at all."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))
        digest = hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()  # noqa: S324
        answer = accept or base64.b64encode(digest).decode()
        writer.write(f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     f"Sec-WebSocket-Accept: {answer}\r\n"
                     f"Sec-WebSocket-Protocol: signpost.v2\r\n\r\n".encode())
        await writer.drain()
        try:
            await script(reader, writer)
        finally:
            writer.close()

    port = free_port()
    server = await asyncio.start_server(serve, "127.0.0.1", port)
    try:
        yield f"http://127.0.0.1:{port}/ws"
    finally:
        server.close()
        await server.wait_closed()


def frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = False, rsv: int = 0) -> bytes:
    size = len(payload)
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    flag = 0x80 if mask else 0
    if size < 126:
        head += bytes([flag | size])
    elif size < 1 << 16:
        head += bytes([flag | 126]) + struct.pack("!H", size)
    else:
        head += bytes([flag | 127]) + struct.pack("!Q", size)
    return head + (b"\0\0\0\0" if mask else b"") + payload


async def exchange(script: Script, *, accept: str | None = None, max_frame: int = 1 << 20) -> Client:
    """Connect to a raw server running ``script`` and wait until the connection ends."""
    client = Client()
    async for url in raw_server(script, accept=accept):
        await client.connect(url, max_frame=max_frame)
        await asyncio.wait_for(client.ended.wait(), 5)
    return client


def sends(*chunks: bytes) -> Script:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0.01)  # separate reads: frames split across and joined within reads
        await reader.read(1 << 16)  # until the client closes

    return script


async def test_fragmented_and_split_messages_are_joined() -> None:
    """Proves a message in three fragments, with a ping between them and frames split across
    reads, arrives as one text; a binary message is ignored."""
    whole = frame(0x1, b"one ", fin=False) + frame(0x9, b"p") + frame(0x0, b"two ", fin=False) \
        + frame(0x0, b"three") + frame(0x2, b"\xff\xfe") + frame(0x1, b"next") + frame(0x8, b"\x03\xe8")
    client = await exchange(sends(whole[:3], whole[3:11], whole[11:]))
    assert ["one two three", "next"] == client.texts
    assert isinstance(client.lost[0], wsclient.ConnectionLost)


@pytest.mark.parametrize(("case", "data", "reason"), [
    ("masked", frame(0x1, b"hi", mask=True), "masked"),
    ("reserved bits", frame(0x1, b"hi", rsv=0x40), "reserved"),
    ("too large", frame(0x1, b"x" * 2000), "too large"),
    ("too large in fragments", frame(0x1, b"x" * 800, fin=False) + frame(0x0, b"x" * 800), "too large"),
    ("not UTF-8", frame(0x1, b"\xff\xfe"), "UTF-8"),
    ("stray continuation", frame(0x0, b"x"), "continuation"),
    ("message inside a message", frame(0x1, b"a", fin=False) + frame(0x1, b"b"), "continuation"),
    ("unknown opcode", frame(0x3, b""), "opcode"),
    ("fragmented ping", frame(0x9, b"", fin=False), "control"),
])
async def test_a_server_that_breaks_the_protocol_is_dropped(case: str, data: bytes, reason: str) -> None:
    """Proves each way a server can break RFC 6455 ends the connection with ``ConnectionLost``
    naming it, and no text from the bad frame reaches the caller."""
    client = await exchange(sends(data), max_frame=1024)
    assert [] == client.texts, case
    assert isinstance(client.lost[0], wsclient.ConnectionLost)
    assert reason in str(client.lost[0])


async def test_a_handshake_with_the_wrong_accept_key_is_refused() -> None:
    """Proves a server whose ``Sec-WebSocket-Accept`` does not answer this client's key is not a
    WebSocket peer: ``HandshakeError``, and no connection."""
    async def idle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)

    async for url in raw_server(idle, accept=base64.b64encode(b"x" * 20).decode()):
        with pytest.raises(wsclient.HandshakeError, match="not a WebSocket handshake"):
            await Client().connect(url)


async def test_a_server_that_closes_mid_frame_is_lost() -> None:
    """Proves a connection that ends in the middle of a frame is reported lost, not half-read."""
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(frame(0x1, b"abcdef")[:4])
        await writer.drain()

    client = await exchange(cut)
    assert [] == client.texts
    assert "closed the connection" in str(client.lost[0])


async def test_channels_read_together_while_busy_lose_no_frame() -> None:
    """Proves that with the channels' sockets in one ``Reading`` that holds ready sockets while
    busy, every frame of several connections is delivered, in order per connection, both while
    busy and after, and a closed connection leaves the others readable."""
    busy = True

    async def handle(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(protocols=PROTOCOLS)
        await ws.prepare(request)
        async for message in ws:
            for n in range(3):
                await ws.send_str(f"{message.data}-{n}")
        return ws

    runner, url = await aiohttp_server(handle)
    reading = wsclient.Reading(0.01, lambda: busy)
    clients = [Client() for _ in range(3)]
    try:
        conns = [await wsclient.connect(url, protocols=PROTOCOLS, context=None, server_hostname=None,
                                        timeout=5, max_frame=1 << 16, on_text=c.on_text,
                                        on_lost=c.on_lost, reading=reading) for c in clients]
        for i, conn in enumerate(conns):
            conn.send(wsclient.Frame.text(f"c{i}".encode()))
        while sum(len(c.texts) for c in clients) < 9:
            await asyncio.sleep(0.01)
        await conns[0].close(1.0)
        busy = False
        conns[1].send(wsclient.Frame.text(b"again"))
        while len(clients[1].texts) < 6:
            await asyncio.sleep(0.01)
        for conn in conns[1:]:
            await conn.close(1.0)
    finally:
        reading.close()
        await runner.cleanup()
    assert [[f"c{i}-{n}" for n in range(3)] for i in range(3)] == [c.texts[:3] for c in clients]
    assert ["again-0", "again-1", "again-2"] == clients[1].texts[3:]
    assert [[None]] * 3 == [c.lost for c in clients]


async def test_a_quiet_channel_is_pinged_and_a_silent_one_dropped_and_reopened() -> None:
    """Proves the broker's heartbeat (`NodeChannel.keep_warm`): a channel quiet for a heartbeat is
    pinged, one silent for two heartbeats (a node gone without closing) is dropped, and it is
    opened again in the background, so the next search finds it warm."""
    opcodes: list[int] = []

    async def deaf(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1 << 16):  # reads frames, never answers a ping
            opcodes.append(data[0] & 0x0F)

    opened: list[str] = []
    async for url in raw_server(deaf):
        member = Member("gamma", "Gamma", frozenset({"node"}), (), endpoint=url.removesuffix("/ws"))
        node = NodeChannel(member, Link(None), Counters(opened=opened.append, dropped=lambda _: None),
                           max_frame=1 << 16)
        try:
            await node.ensure_open()
            first = node.conn
            assert first is not None
            node.keep_warm(first.heard + frames.HEARTBEAT_SECONDS + 1)
            while wsclient.PING not in opcodes:
                await asyncio.sleep(0.01)
            assert node.conn is first
            node.keep_warm(first.heard + 2 * frames.HEARTBEAT_SECONDS + 1)
            assert first.closed and node.conn is None
            while node.conn is None:
                await asyncio.sleep(0.05)
        finally:
            await node.close()
    assert ["gamma", "gamma"] == opened


class HeldHandshake:
    """A server that reads the opening handshake, holds its answer until ``answer`` is set, then
    answers it properly and sets ``closed`` when the client shuts the connection."""

    def __init__(self) -> None:
        self.asked = asyncio.Event()
        self.answer = asyncio.Event()
        self.closed = asyncio.Event()
        self.url = ""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.asked.set()
        await self.answer.wait()
        key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))
        accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())  # noqa: S324
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + accept + b"\r\nSec-WebSocket-Protocol: signpost.v2\r\n\r\n")
        await writer.drain()
        if await reader.read(1 << 16) == b"":
            self.closed.set()
        writer.close()


async def held_handshake() -> AsyncIterator[HeldHandshake]:
    held = HeldHandshake()
    port = free_port()
    server = await asyncio.start_server(held.serve, "127.0.0.1", port)
    held.url = f"http://127.0.0.1:{port}/ws"
    try:
        yield held
    finally:
        server.close()
        await server.wait_closed()


async def test_a_handshake_abandoned_by_its_caller_closes_its_socket() -> None:
    """Proves a connect cancelled while its worker thread still waits for the server (a broker
    stopping mid-handshake) leaves no open socket behind: the server sees the client close."""
    async for held in held_handshake():
        task = asyncio.create_task(Client().connect(held.url))
        await asyncio.wait_for(held.asked.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        held.answer.set()  # the thread now completes a handshake nobody waits for
        await asyncio.wait_for(held.closed.wait(), 5)


async def test_a_close_cancelled_while_it_waits_for_the_server_still_shuts_the_socket() -> None:
    """Proves a close whose wait for the server's close frame is cancelled (the broker stopping
    while its channels close) still shuts the connection: the server sees it end."""
    ended = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(1 << 16):  # never answers the close frame
            pass
        ended.set()

    async for url in raw_server(silent):
        connection = await Client().connect(url)
        closing = asyncio.create_task(connection.close(timeout=30))
        await asyncio.sleep(0.1)
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        await asyncio.wait_for(ended.wait(), 5)
        assert connection.closed


async def test_a_handshake_whose_caller_is_dropped_uncancelled_closes_its_socket() -> None:
    """Proves a connect that is neither resumed nor cancelled (its event loop closed under it)
    still leaves no open socket once its worker thread has finished: the hand-off closes it."""
    async for held in held_handshake():
        connecting = Client().connect(held.url)
        waiting_on = connecting.send(None)  # runs until it waits for the worker thread
        await asyncio.wait_for(held.asked.wait(), 5)
        connecting.close()  # dropped: neither resumed nor cancelled
        del connecting, waiting_on
        held.answer.set()
        for _ in range(100):  # the thread finishes its handshake, then lets go of the hand-off
            gc.collect()
            if held.closed.is_set():
                break
            await asyncio.sleep(0.05)
        assert held.closed.is_set()
