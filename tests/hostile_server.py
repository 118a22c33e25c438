"""A hostile OpenAI-style server on 127.0.0.1 for fault tests: raw HTTP/1.1 over asyncio, so it can send what
no well-behaved framework would (cut chunked bodies, bytes that are not UTF-8, a line of many megabytes).

Each POST to /v1/completions (or /v1/chat/completions) takes the next mode from `modes`, round-robin, so a
run sees every fault in a known proportion. Runs in a background thread; every connection closes after one
reply. Modes:

    ok          a good stream: `tokens` chunks, finish_reason, usage, [DONE]
    http_500    500 with a JSON error body          http_429   429 with Retry-After: 1 and a text body
    echo_auth   401 whose body echoes the Authorization header and the request target back
    html_200    200 text/html (a login page from a proxy)
    drop        a few chunks, then the connection is reset mid-body
    malformed   a chunk whose JSON is cut off       not_utf8   a data line of bytes that are not UTF-8
    huge_line   one `data:` line of 32 MiB with no newline
    stall       headers and one chunk, then silence for 30 s
    endless     content chunks without end
    no_done     chunks without finish_reason, then a clean end of body without [DONE]
    silent      reads the request and sends nothing at all for 30 s (not even headers)
"""

from __future__ import annotations

import asyncio
import json
import threading

MODES = ("ok", "http_500", "http_429", "echo_auth", "html_200", "drop", "malformed", "not_utf8", "huge_line",
         "stall", "endless", "no_done", "silent")
DEFAULT_MODES = MODES[:-1]  # every fault but silent (a test asks for that one by name)
STALL_S = 30.0


def _chunk(text: str, finish: str | None = None) -> bytes:
    obj = {"id": "h", "object": "text_completion", "model": "hostile",
           "choices": [{"index": 0, "text": text, "finish_reason": finish}]}
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def _usage(n: int) -> bytes:
    obj = {"id": "h", "object": "text_completion", "model": "hostile", "choices": [],
           "usage": {"prompt_tokens": 10, "completion_tokens": n, "total_tokens": 10 + n}}
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


class HostileServer:
    def __init__(self, modes: list[str] | tuple[str, ...] = DEFAULT_MODES, tokens: int = 8) -> None:
        for m in modes:
            if m not in MODES:
                raise ValueError(f"unknown mode {m!r}")
        self.modes = list(modes)
        self.tokens = tokens
        self.served: list[str] = []  # the mode of each completion request, in order
        self.gateway_key_seen: list[str] = []  # X-Gateway-Key as received (tests/test_secrets.py's --header)
        self.auth_seen: list[str] = []  # Authorization headers as received (Basic auth would show here)
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="hostile-server")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> HostileServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("hostile server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._shutdown)
        self._thread.join(5)

    def _shutdown(self) -> None:
        for task in asyncio.all_tasks(self._loop):  # e.g. a stall still sleeping
            task.cancel()
        self._server.close()
        self._loop.call_later(0.05, self._loop.stop)

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
            length = int(headers.get("content-length", "0"))
            if length:
                await reader.readexactly(length)
            if method == "GET" and target.endswith("/v1/models"):
                await self._whole(writer, 200, "application/json",
                                  json.dumps({"object": "list", "data": [{"id": "hostile"}]}).encode())
            elif method == "POST" and target.endswith("/completions"):
                mode = self.modes[len(self.served) % len(self.modes)]
                self.served.append(mode)
                self.auth_seen.append(headers.get("authorization", ""))
                self.gateway_key_seen.append(headers.get("x-gateway-key", ""))
                await self._completion(writer, mode, target, headers)
            else:
                await self._whole(writer, 404, "text/plain", b"not here")
        except (ConnectionError, asyncio.IncompleteReadError, ValueError, asyncio.CancelledError):
            pass  # the client went away, or the server is shutting down
        finally:
            writer.close()

    async def _whole(self, writer: asyncio.StreamWriter, status: int, ctype: str, body: bytes,
                     extra: str = "") -> None:
        writer.write(f"HTTP/1.1 {status} X\r\ncontent-type: {ctype}\r\ncontent-length: {len(body)}\r\n{extra}"
                     "connection: close\r\n\r\n".encode() + body)
        await writer.drain()

    async def _piece(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(b"%x\r\n%s\r\n" % (len(data), data))  # one HTTP chunk
        await writer.drain()

    async def _completion(self, writer: asyncio.StreamWriter, mode: str, target: str, headers: dict) -> None:
        if mode == "silent":
            await asyncio.sleep(STALL_S)
            return
        if mode == "http_500":
            return await self._whole(writer, 500, "application/json", b'{"error": {"message": "engine died"}}')
        if mode == "http_429":
            return await self._whole(writer, 429, "text/plain", b"slow down", "retry-after: 1\r\n")
        if mode == "echo_auth":
            body = (f"unauthorized: you sent {headers.get('authorization', '')!r} to {target}"
                    + (f" with key {headers['x-gateway-key']!r}" if "x-gateway-key" in headers else "")).encode()
            return await self._whole(writer, 401, "text/plain", body)
        if mode == "html_200":
            return await self._whole(writer, 200, "text/html", b"<html><body><form>proxy login</form></body></html>")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
                     b"connection: close\r\n\r\n")
        n = self.tokens
        if mode == "ok":
            for i in range(n):
                await self._piece(writer, _chunk("tok", "length" if i == n - 1 else None))
            await self._piece(writer, _usage(n) + b"data: [DONE]\n\n")
        elif mode == "drop":
            await self._piece(writer, _chunk("tok") + _chunk("tok"))
            writer.transport.abort()  # reset, no terminating chunk
            return
        elif mode == "malformed":
            await self._piece(writer, _chunk("tok") + b'data: {"choices": [{"text": "to\n\n')
        elif mode == "not_utf8":
            await self._piece(writer, _chunk("tok") + b"data: \xff\xfe\xc3\x28 {}\n\n")
        elif mode == "huge_line":
            await self._piece(writer, _chunk("tok") + b"data: ")
            block = b"x" * (1 << 20)
            for _ in range(32):
                await self._piece(writer, block)
        elif mode == "stall":
            await self._piece(writer, _chunk("tok"))
            await asyncio.sleep(STALL_S)
        elif mode == "endless":
            while True:
                await self._piece(writer, _chunk("tok") * 4)
                await asyncio.sleep(0.001)
        elif mode == "no_done":
            for _ in range(n // 2):
                await self._piece(writer, _chunk("tok"))
        writer.write(b"0\r\n\r\n")
        await writer.drain()
