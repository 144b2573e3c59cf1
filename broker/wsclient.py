"""A client WebSocket (RFC 6455) for the node channels, read and written straight off the event loop.

The broker keeps one channel open to every node and writes one small frame to each of them per
search, then reads one back from each. Through asyncio's TLS layer (Python code on 3.11) and
aiohttp's WebSocket client that cost about 0.1 ms of the broker's CPU per node per search, most
of the fan-out's price at 152 authorities. Here a channel is a non-blocking socket, wrapped by the
``ssl`` module (OpenSSL reads and writes the socket itself, in C), registered with the event
loop's selector: a readable socket calls one method that reads every TLS record waiting, splits
the frames and hands each text frame to a callback; a write is one ``send`` that only falls back
to buffering when the socket is full (decision 19).

What is implemented is the part of RFC 6455 a channel needs, and everything else is refused:

* the opening handshake (``Sec-WebSocket-Key``/``-Accept`` checked, one of the offered
  subprotocols required, no extensions), done once on a worker thread with a deadline, after
  which the TLS peer's certificate is available to the caller;
* text frames, fragmented or not, up to ``max_frame`` bytes (a longer message closes with 1009,
  text that is not UTF-8 with 1007); binary frames are ignored;
* ping (answered with a pong), pong, and close (answered, then the socket is shut);
* frames from the server must not be masked and must not set reserved bits (1002 otherwise);
* frames to the server are masked, as the RFC requires of a client. ``Frame.text`` masks a
  message once, so one query written to every node costs one masking; each search's frame has a
  fresh random key.

Heartbeats are the caller's: ``Connection.heard`` says when anything last arrived, ``ping`` asks.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import selectors
import socket
import ssl
import struct
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455, section 1.3
_READ_SIZE = 16 * 1024  # one TLS record's plaintext at most: what one read can return
_MAX_HEAD = 16 * 1024  # the handshake response's headers

TEXT, BINARY, CONTINUATION, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


class HandshakeError(Exception):
    """The channel could not be opened (connection, TLS or the WebSocket handshake)."""


class HandshakeRefused(HandshakeError):
    """The server answered the upgrade with an HTTP status other than 101."""

    def __init__(self, status: int) -> None:
        super().__init__(f"the server answered the upgrade with HTTP {status}")
        self.status = status


class CertificateRefused(HandshakeError):
    """The server's certificate failed verification (the CA chain, the name, or ``check_peer``)."""


class ConnectionLost(Exception):
    """The connection closed, or broke, or the server broke the protocol."""


@dataclass(frozen=True)
class Frame:
    """One masked client frame, ready to be written to any number of connections."""

    data: bytes

    @classmethod
    def text(cls, payload: bytes) -> Frame:
        return cls(_masked(TEXT, payload))

    @classmethod
    def control(cls, opcode: int, payload: bytes = b"") -> Frame:
        return cls(_masked(opcode, payload[:125]))


def _masked(opcode: int, payload: bytes) -> bytes:
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    key = os.urandom(4)
    if not size:
        return head + key
    # XOR with the key repeated: one big-integer operation instead of a loop over the bytes.
    repeated = (key * (size // 4 + 1))[:size]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(size, "big")
    return head + key + masked


@dataclass(frozen=True)
class Opened:
    """A connection after a successful opening handshake, before it is put on the event loop."""

    sock: socket.socket
    protocol: str
    peer_certificate: bytes | None
    rest: bytes  # frame bytes that arrived with the handshake's response


def open_blocking(url: str, *, protocols: tuple[str, ...], context: ssl.SSLContext | None,
                  server_hostname: str | None, timeout: float,
                  check_peer: Callable[[bytes | None], None] | None = None) -> Opened:
    """Connect, do TLS (for ``https:``/``wss:``) and the WebSocket handshake, blocking, within
    ``timeout`` seconds. ``check_peer`` sees the server's certificate after TLS and before the
    upgrade is sent; raising there refuses the server (``CertificateRefused``)."""
    parts = urlsplit(url)
    secure = parts.scheme in ("https", "wss")
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
        raise HandshakeError(f"channel URL: expected http(s)://host:port/path, got {url!r}")
    port = parts.port or (443 if secure else 80)
    try:
        raw = socket.create_connection((parts.hostname, port), timeout=timeout)
    except OSError as exc:
        raise HandshakeError(f"connect: {exc.__class__.__name__}") from exc
    sock: socket.socket = raw
    try:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        der = None
        if secure:
            tls = context if context is not None else ssl.create_default_context()
            try:
                sock = tls.wrap_socket(raw, server_hostname=server_hostname or parts.hostname)
            except ssl.SSLCertVerificationError as exc:
                raise CertificateRefused(exc.verify_message or str(exc)) from exc
            except (ssl.SSLError, OSError) as exc:
                raise HandshakeError(f"TLS: {exc.__class__.__name__}") from exc
            der = sock.getpeercert(binary_form=True)
            if check_peer is not None:
                try:
                    check_peer(der)
                except Exception as exc:
                    raise CertificateRefused(str(exc)) from exc
        key = base64.b64encode(os.urandom(16)).decode()
        host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                   f"Sec-WebSocket-Protocol: {', '.join(protocols)}\r\n\r\n")
        try:
            sock.sendall(request.encode("ascii"))
            status, headers, rest = _read_response(sock)
        except (OSError, ssl.SSLError) as exc:
            raise HandshakeError(f"upgrade: {exc.__class__.__name__}") from exc
        if status != 101:
            raise HandshakeRefused(status)
        expected = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()  # noqa: S324 (the RFC's choice)
        if headers.get("upgrade", "").lower() != "websocket" \
                or "upgrade" not in headers.get("connection", "").lower() \
                or headers.get("sec-websocket-accept") != expected:
            raise HandshakeError("upgrade: the server's answer is not a WebSocket handshake")
        if headers.get("sec-websocket-extensions"):
            raise HandshakeError("upgrade: the server chose an extension that was not offered")
        protocol = headers.get("sec-websocket-protocol", "")
        if protocol not in protocols:
            raise HandshakeError(f"upgrade: expected subprotocol {' or '.join(protocols)}")
        sock.setblocking(False)
        return Opened(sock, protocol, bytes(der) if der else None, rest)
    except BaseException:
        sock.close()
        raise


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """The status, headers (lower-case names) and any bytes after the headers."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        if len(buffer) > _MAX_HEAD:
            raise HandshakeError("upgrade: the response headers are too long")
        chunk = sock.recv(4096)
        if not chunk:
            raise HandshakeError("upgrade: the server closed the connection")
        buffer += chunk
    head, rest = buffer.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    fields = lines[0].split(" ", 2)
    if len(fields) < 2 or not fields[0].startswith("HTTP/1.") or not fields[1].isdigit():
        raise HandshakeError("upgrade: the response is not HTTP/1.1")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(fields[1]), headers, rest


class Reading:
    """Every channel's socket in one selector of its own, which the event loop watches as a single
    file descriptor.

    A fan-out's answers arrive one by one over tens or hundreds of milliseconds, and waking the
    event loop once per answer cost more than reading it (measured: 57-65 µs of CPU per node with
    replies spread over 100 ms, 35-41 µs when the ready ones were read together every 5 ms).
    So while ``busy()`` says many answers are awaited, the first ready socket starts a pause of
    ``hold`` seconds, after which every socket ready by then is read in one go; otherwise (the last
    few answers of a search, a ping, a close) a ready socket is read at once.
    """

    def __init__(self, hold: float, busy: Callable[[], bool]) -> None:
        self.loop = asyncio.get_running_loop()
        self.hold = hold
        self.busy = busy
        self._selector = selectors.DefaultSelector()
        self._fd = self._selector.fileno()
        self._watched = True
        self.loop.add_reader(self._fd, self._ready)

    def add(self, conn: Connection) -> None:
        self._selector.register(conn.sock.fileno(), selectors.EVENT_READ, conn)

    def remove(self, conn: Connection) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(conn.sock)

    def _ready(self) -> None:
        if self.busy():
            self.loop.remove_reader(self._fd)
            self._watched = False
            self.loop.call_later(self.hold, self._read_held)
        else:
            self._read()

    def _read_held(self) -> None:
        if self._selector.get_map() is None:  # closed meanwhile
            return
        try:
            self._read()
        finally:
            self.loop.add_reader(self._fd, self._ready)
            self._watched = True

    def _read(self) -> None:
        for key, _ in self._selector.select(0):
            key.data.readable()

    def close(self) -> None:
        if self._watched:
            self.loop.remove_reader(self._fd)
        self._selector.close()


class Connection:
    """One open channel on the running event loop.

    ``on_text`` is called with each text message, ``on_lost`` once when the connection ends
    (``ConnectionLost``, or None after a close this side asked for). Both run on the loop.
    """

    def __init__(self, opened: Opened, *, max_frame: int, on_text: Callable[[str], None],
                 on_lost: Callable[[BaseException | None], None], reading: Reading | None = None) -> None:
        self.sock = opened.sock
        self.protocol = opened.protocol
        self.peer_certificate = opened.peer_certificate
        self.max_frame = max_frame
        self.on_text = on_text
        self.on_lost = on_lost
        self.loop = asyncio.get_running_loop()
        self.heard = self.loop.time()
        self.closed = False
        self._fd = self.sock.fileno()
        self._tls = isinstance(self.sock, ssl.SSLSocket)
        self._in = bytearray(opened.rest)
        self._chunk = bytearray(_READ_SIZE)
        self._view = memoryview(self._chunk)
        self._kind: int | None = None  # the opcode of the message being read, while it is
        self._parts: list[bytes] = []  # its frames so far
        self._size = 0
        self._out: deque[memoryview] = deque()
        self._closing: asyncio.Future[None] | None = None
        self._reading = reading
        if reading is not None:
            reading.add(self)
        else:
            self.loop.add_reader(self._fd, self.readable)
        if self._in:
            self.loop.call_soon(self._frames)

    def send(self, frame: Frame) -> None:
        """Write ``frame`` now if the socket takes it, else keep it (in order) for when it can."""
        if self.closed:
            raise ConnectionLost("the channel is closed")
        if self._out:
            self._out.append(memoryview(frame.data))
            return
        try:
            written = self.sock.send(frame.data)
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError, InterruptedError):
            written = 0
        except OSError as exc:
            self._lose(ConnectionLost(f"write failed ({exc.__class__.__name__})"))
            raise ConnectionLost("the channel is closed") from exc
        if written < len(frame.data):
            self._out.append(memoryview(frame.data)[written:])
            self.loop.add_writer(self._fd, self._writable)

    @property
    def buffered(self) -> int:
        """Bytes waiting for the socket to take them."""
        return sum(len(part) for part in self._out)

    def abort(self, error: ConnectionLost) -> None:
        """Drop the connection at once (no close handshake): ``on_lost`` gets ``error``."""
        self._lose(error)

    def ping(self) -> None:
        self.send(Frame.control(PING))

    async def close(self, timeout: float) -> None:
        """Send a close frame and wait up to ``timeout`` seconds for the server's, then shut."""
        if self.closed:
            return
        self._closing = self.loop.create_future()
        with contextlib.suppress(ConnectionLost):
            self.send(Frame.control(CLOSE, struct.pack("!H", 1000)))
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._closing), timeout)
        finally:  # shut even when the wait is cancelled (a broker stopping while its channels close)
            self._lose(None)

    def _writable(self) -> None:
        while self._out:
            head = self._out[0]
            try:
                written = self.sock.send(head)
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._lose(ConnectionLost(f"write failed ({exc.__class__.__name__})"))
                return
            if written < len(head):
                self._out[0] = head[written:]
                return
            self._out.popleft()
        self.loop.remove_writer(self._fd)

    def readable(self) -> None:
        """Read what the socket holds and handle every whole frame (the socket is ready)."""
        try:
            while True:
                size = self.sock.recv_into(self._chunk)  # into one buffer: no allocation per read
                if not size:
                    closing = self._closing is not None  # after our close frame, the end we asked for
                    self._lose(None if closing else ConnectionLost("the server closed the connection"))
                    return
                self._in += self._view[:size]
                # More waits inside OpenSSL only if it says so; the kernel's buffer wakes us again.
                if not (self._tls and self.sock.pending()) and size < _READ_SIZE:  # type: ignore[attr-defined]
                    break
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError, InterruptedError):
            pass  # everything the socket held is read: handle the frames below
        except OSError as exc:
            self._lose(ConnectionLost(f"read failed ({exc.__class__.__name__})"))
            return
        self.heard = self.loop.time()
        self._frames()

    def _frames(self) -> None:
        """Split and handle every whole frame read so far."""
        data = self._in
        at = 0
        while not self.closed:
            if len(data) - at < 2:
                break
            first, second = data[at], data[at + 1]
            size = second & 0x7F
            start = at + 2
            if size == 126:
                if len(data) - at < 4:
                    break
                size = int.from_bytes(data[at + 2:at + 4], "big")
                start = at + 4
            elif size == 127:
                if len(data) - at < 10:
                    break
                size = int.from_bytes(data[at + 2:at + 10], "big")
                start = at + 10
            if first & 0x70 or second & 0x80:
                self._fail(1002, "reserved bits set or a masked frame from the server")
                return
            if size > self.max_frame:
                self._fail(1009, "frame too large")
                return
            end = start + size
            if len(data) < end:
                break
            self._frame(first & 0x80, first & 0x0F, bytes(data[start:end]))
            at = end
        if at:
            del data[:at]

    def _frame(self, fin: int, opcode: int, payload: bytes) -> None:
        if opcode == TEXT and fin and self._kind is None:  # a whole message in one frame: most of them
            self._text(payload)
            return
        if opcode in (TEXT, BINARY, CONTINUATION):
            if (opcode == CONTINUATION) != (self._kind is not None):
                self._fail(1002, "a continuation frame out of place")
                return
            if opcode != CONTINUATION:
                self._kind = opcode
            self._parts.append(payload)
            self._size += len(payload)
            if self._size > self.max_frame:
                self._fail(1009, "message too large")
                return
            if not fin:
                return
            kind, message = self._kind, b"".join(self._parts)
            self._kind, self._parts, self._size = None, [], 0
            if kind != BINARY:  # nothing on the channel is binary
                self._text(message)
        elif opcode == PING:
            if not fin or len(payload) > 125:
                self._fail(1002, "a fragmented or oversized control frame")
                return
            with contextlib.suppress(ConnectionLost):
                self.send(Frame.control(PONG, payload))
        elif opcode == PONG:
            return
        elif opcode == CLOSE:
            if self._closing is not None:  # the answer to our close: the handshake is done
                self._lose(None)
                return
            with contextlib.suppress(ConnectionLost):
                self.send(Frame.control(CLOSE, payload[:2]))
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self._lose(ConnectionLost(f"the server closed the channel ({code})"))
        else:
            self._fail(1002, f"unknown opcode {opcode}")

    def _text(self, message: bytes) -> None:
        try:
            text = message.decode("utf-8")
        except UnicodeDecodeError:
            self._fail(1007, "a text message that is not UTF-8")
            return
        self.on_text(text)

    def _fail(self, code: int, reason: str) -> None:
        with contextlib.suppress(ConnectionLost):
            self.send(Frame.control(CLOSE, struct.pack("!H", code) + reason.encode()[:100]))
        self._lose(ConnectionLost(f"protocol error: {reason}"))

    def _lose(self, error: ConnectionLost | None) -> None:
        if self.closed:
            return
        self.closed = True
        if self._reading is not None:
            self._reading.remove(self)
        else:
            self.loop.remove_reader(self._fd)
        self.loop.remove_writer(self._fd)
        self._out.clear()
        self.sock.close()
        if self._closing is not None and not self._closing.done():
            self._closing.set_result(None)
        self.on_lost(error)


async def connect(url: str, *, protocols: tuple[str, ...], context: ssl.SSLContext | None,
                  server_hostname: str | None, timeout: float, max_frame: int,
                  on_text: Callable[[str], None], on_lost: Callable[[BaseException | None], None],
                  check_peer: Callable[[bytes | None], None] | None = None,
                  reading: Reading | None = None) -> Connection:
    """Open a channel (the blocking handshake on a worker thread) and put it on the running loop.

    Cancelled while the thread is still at work (a broker stopping, a node removed), the thread
    goes on to its deadline; whichever of the two ends second closes the socket it opened."""
    handoff = _Handoff()

    def work() -> Opened:
        opened = open_blocking(url, protocols=protocols, context=context, server_hostname=server_hostname,
                               timeout=timeout, check_peer=check_peer)
        return handoff.give(opened)

    try:
        opened = await asyncio.to_thread(work)
    except asyncio.CancelledError:
        handoff.abandon()
        raise
    handoff.take()
    try:
        return Connection(opened, max_frame=max_frame, on_text=on_text, on_lost=on_lost, reading=reading)
    except BaseException:
        opened.sock.close()
        raise


class _Handoff:
    """A handshake's result passed from its worker thread to a caller that may have gone: given
    by the thread, then taken by the caller, or closed by whichever of ``give`` and ``abandon``
    comes second, or, if the caller was dropped without either (its event loop closed under it),
    when the hand-off itself is collected."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._abandoned = False
        self._opened: Opened | None = None

    def give(self, opened: Opened) -> Opened:
        with self._lock:
            if not self._abandoned:
                self._opened = opened
                return opened
        opened.sock.close()
        raise HandshakeError("abandoned: the caller stopped waiting")

    def take(self) -> None:
        with self._lock:
            self._opened = None  # the caller has it now

    def abandon(self) -> None:
        with self._lock:
            self._abandoned = True
            opened, self._opened = self._opened, None
        if opened is not None:
            opened.sock.close()

    def __del__(self) -> None:
        if self._opened is not None:
            self._opened.sock.close()


__all__ = ["CertificateRefused", "Connection", "ConnectionLost", "Frame", "HandshakeError",
           "HandshakeRefused", "Reading", "connect", "open_blocking"]
