"""``signpost bench channel``: the broker's transport cost per node, apart from everything else.

A client process holds N WebSocket channels over TLS to a few small server processes on loopback,
which answer each query frame (1.5 KB, as a signed query is) with a 200-byte frame (as a
``no_match`` is) after a random delay of up to ``spread`` ms, as a real fan-out's answers arrive.
The client's own CPU clock over F fan-outs, divided by F x N, is the transport's cost per node per
fan-out, for three clients in the same run:

* ``aiohttp``: aiohttp's WebSocket client over asyncio's TLS, one reader task per channel (the
  broker's client before decision 19);
* ``wsclient, at once``: ``broker.wsclient`` with each socket on the event loop;
* ``wsclient, together``: ``broker.wsclient`` with every socket in one ``Reading`` (what the
  broker runs: ready channels read together every ``hold`` ms while many answers are awaited).

No Signpost logic runs on either side: no signatures, no matching, no audit log.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from broker import wsclient
from federation.tools.ports import free_port
from trust import tls

PROTOCOL = "signpost.v2"
PATH = "/v1/channel"
REPLY = '{"v":1,"kind":"no_match","id":"%s","iss":"bench-node","aud":"broker","query_hash":"' + "a" * 64 \
    + '","iat":1765000000}'
ID_AT = REPLY.index("%s")  # where the query id sits in a reply


def serve(port: int, cert: str, key: str, spread: float) -> None:
    """One server process: answer each text frame after a random 0-``spread`` seconds."""

    async def handle(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(protocols=(PROTOCOL,))
        await ws.prepare(request)
        loop = asyncio.get_running_loop()
        sending: set[asyncio.Future[None]] = set()

        def answer(text: str) -> None:
            task = asyncio.ensure_future(ws.send_str(text))
            sending.add(task)
            task.add_done_callback(sending.discard)

        async for message in ws:
            if message.type is aiohttp.WSMsgType.TEXT:
                loop.call_later(random.random() * spread, answer, REPLY % message.data[:36])
        return ws

    app = web.Application()
    app.router.add_get(PATH, handle)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    web.run_app(app, host="127.0.0.1", port=port, ssl_context=context, print=None, access_log=None)


FanOut = Callable[[str, bytes], Awaitable[None]]


Close = Callable[[], Awaitable[None]]


async def _aiohttp_client(urls: list[str], context: ssl.SSLContext) -> tuple[FanOut, Close]:
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context, limit=0))
    sockets = [await session.ws_connect(url, protocols=(PROTOCOL,), heartbeat=20,
                                        server_hostname="bench-node") for url in urls]
    waiting: dict[str, list[Any]] = {}

    async def read(ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            _arrived(waiting, message.data)

    readers = [asyncio.create_task(read(ws)) for ws in sockets]

    async def fan_out(jti: str, payload: bytes) -> None:
        done = waiting[jti] = [asyncio.get_running_loop().create_future(), len(sockets)]
        text = payload.decode()
        for ws in sockets:
            await ws.send_str(text)
        try:
            await done[0]
        finally:
            del waiting[jti]

    async def close() -> None:
        for task in readers:  # no reader waits on a channel while it closes
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        for ws in sockets:
            await ws.close()
        await session.close()
        # TLS connections finish closing (close_notify both ways) a moment after close() returns;
        # aiohttp's guidance for a graceful shutdown is to let the loop run briefly.
        await asyncio.sleep(0.25)

    return fan_out, close


def _arrived(waiting: dict[str, list[Any]], text: str) -> None:
    entry = waiting.get(text[ID_AT:ID_AT + 36])
    if entry is not None:
        entry[1] -= 1
        if entry[1] == 0:
            entry[0].set_result(None)


async def _wsclient(urls: list[str], context: ssl.SSLContext,
                    hold: float | None) -> tuple[FanOut, Close]:
    waiting: dict[str, list[Any]] = {}
    reading = wsclient.Reading(hold, lambda: any(e[1] >= 8 for e in waiting.values())) \
        if hold is not None else None
    conns = [await wsclient.connect(url, protocols=(PROTOCOL,), context=context, server_hostname="bench-node",
                                    timeout=10, max_frame=1 << 16,
                                    on_text=lambda text: _arrived(waiting, text), on_lost=lambda _: None,
                                    reading=reading) for url in urls]

    async def fan_out(jti: str, payload: bytes) -> None:
        done = waiting[jti] = [asyncio.get_running_loop().create_future(), len(conns)]
        frame = wsclient.Frame.text(payload)
        for conn in conns:
            conn.send(frame)
        try:
            await done[0]
        finally:
            del waiting[jti]

    async def close() -> None:
        for conn in conns:
            await conn.close(1.0)
        if reading is not None:
            reading.close()

    return fan_out, close


async def _measure(name: str, urls: list[str], context: ssl.SSLContext, fanouts: int,
                   hold: float | None) -> dict[str, Any]:
    if name == "aiohttp":
        fan_out, close = await _aiohttp_client(urls, context)
    else:
        fan_out, close = await _wsclient(urls, context, hold)
    try:
        for _ in range(5):  # warm up
            jti = str(uuid.uuid4())
            await fan_out(jti, (jti + "x" * 1500).encode())
        cpu, wall = time.process_time(), time.monotonic()
        for _ in range(fanouts):
            jti = str(uuid.uuid4())
            await fan_out(jti, (jti + "x" * 1500).encode())
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    finally:
        await close()
    return {"client": name, "cpu_ms_per_fanout": 1000 * cpu / fanouts,
            "cpu_us_per_node": 1e6 * cpu / fanouts / len(urls), "wall_ms_per_fanout": 1000 * wall / fanouts}


def run(nodes: int = 152, fanouts: int = 30, servers: int = 4, spread_ms: float = 100.0,
        hold_ms: float = 10.0, out: Callable[[str], None] = print) -> dict[str, Any]:
    """Start the servers, measure the three clients one after another, stop the servers."""
    ports = [free_port() for _ in range(servers)]
    with tempfile.TemporaryDirectory(prefix="signpost-channel-bench-") as folder:
        base = Path(folder)
        tls.create_ca(base / "ca.pem", base / "ca.key", "bench")
        tls.issue_certificate(base / "ca.pem", base / "ca.key", "bench-node", base / "node.pem",
                              base / "node.key")
        processes = [subprocess.Popen(
            [sys.executable, "-m", "federation.tools.channelbench", str(port), str(base / "node.pem"),
             str(base / "node.key"), str(spread_ms / 1000)]) for port in ports]
        try:
            _wait_listening(ports)
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(base / "ca.pem"))
            urls = [f"https://127.0.0.1:{ports[i % servers]}{PATH}" for i in range(nodes)]
            load_before = os.getloadavg()
            results = []
            for name, hold in (("aiohttp", None), ("wsclient, at once", None),
                               ("wsclient, together", hold_ms / 1000)):
                result = asyncio.run(_measure(name, urls, context, fanouts, hold))
                out(f"  {name:20s} {result['cpu_us_per_node']:7.1f} µs per node per fan-out "
                    f"({result['cpu_ms_per_fanout']:.2f} ms CPU, {result['wall_ms_per_fanout']:.0f} ms wall)")
                results.append(result)
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(10)
    return {"nodes": nodes, "fanouts": fanouts, "servers": servers, "spread_ms": spread_ms,
            "hold_ms": hold_ms, "cpus": os.cpu_count(), "load_before": load_before,
            "load_after": os.getloadavg(), "clients": results}


def _wait_listening(ports: list[int], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    for port in ports:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"channel bench server on port {port} did not start") from None
                time.sleep(0.05)


if __name__ == "__main__":  # a server process: PORT CERT KEY SPREAD_SECONDS
    serve(int(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4]))
