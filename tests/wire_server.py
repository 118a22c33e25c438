"""Small loopback servers for the wire tests: a handler gets each connection and writes whatever bytes it
wants, so replies that well-behaved servers never send (1xx, HTTP/1.0, a close after the request) can be
made exactly. A forward/CONNECT proxy too (tests/test_wire_proxy.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import Awaitable, Callable

Handler = Callable[["Conn"], Awaitable[None]]


class Conn:
    def __init__(self, server: WireServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server, self.reader, self.writer = server, reader, writer

    async def read_request(self) -> tuple[str, str, dict[str, str], bytes] | None:
        """One whole request (head and Content-Length body), or None when the client closed first."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        self.server.requests.append((method, target, headers, body))
        return method, target, headers, body

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


class WireServer:
    """`async with WireServer(handler) as srv`: srv.url, srv.requests (every request read, in order)."""

    def __init__(self, handler: Handler, ssl_context: ssl.SSLContext | None = None, host: str = "127.0.0.1") -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.host = host
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._tasks.add(asyncio.current_task())
        try:
            await self.handler(Conn(self, reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            self._tasks.discard(asyncio.current_task())
            writer.close()

    async def __aenter__(self) -> WireServer:
        self._server = await asyncio.start_server(self._serve, self.host, 0, ssl=self.ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2)

    def url(self, path: str = "/", host: str | None = None) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://{host or self.host}:{self.port}{path}"


def reply(status: int = 200, body: bytes = b"ok", headers: str = "", version: str = "1.1") -> bytes:
    return (f"HTTP/{version} {status} X\r\ncontent-length: {len(body)}\r\n{headers}\r\n").encode() + body


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def cmpl(text: str, finish: str | None = None) -> bytes:
    return json.dumps({"id": "c", "object": "text_completion", "model": "m",
                       "choices": [{"index": 0, "text": text, "finish_reason": finish}]}).encode()


SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


async def models_or(conn: Conn, on_completion: Callable[[Conn, dict, bytes], Awaitable[None]]) -> None:
    """Answer /v1/models, hand POSTs to `on_completion`, keep the connection for further requests."""
    while True:
        req = await conn.read_request()
        if req is None:
            return
        method, target, headers, body = req
        if method == "GET" and target.endswith("/models"):
            await conn.send(reply(200, json.dumps({"data": [{"id": "m"}]}).encode(),
                                  "content-type: application/json\r\n"))
        else:
            await on_completion(conn, headers, body)


class Proxy:
    """A forward proxy on loopback: CONNECT tunnels (https) and absolute-form requests (http), each request's
    line and Proxy-Authorization kept in `seen`."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []  # (request line, Proxy-Authorization or "")
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    async def __aenter__(self) -> Proxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._tasks.add(asyncio.current_task())
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
            self.seen.append((lines[0], headers.get("proxy-authorization", "")))
            method, target, version = lines[0].split(" ", 2)
            if method == "CONNECT":
                host, port = target.rsplit(":", 1)
                up_r, up_w = await asyncio.open_connection(host, int(port))
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await writer.drain()
            else:  # absolute form: http://host:port/path
                rest = target.split("://", 1)[1]
                authority, _, path = rest.partition("/")
                host, port = authority.rsplit(":", 1)
                up_r, up_w = await asyncio.open_connection(host, int(port))
                kept = [ln for ln in lines[1:] if ln and not ln.lower().startswith("proxy-")]
                up_w.write(f"{method} /{path} {version}\r\n".encode() + "\r\n".join(kept).encode() + b"\r\n\r\n")
            await asyncio.gather(self._pipe(reader, up_w), self._pipe(up_r, writer))
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            self._tasks.discard(asyncio.current_task())
            writer.close()
