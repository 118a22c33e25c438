"""A lean HTTP/1.1 transport for httpx: the load loop's requests without httpcore's per-read machinery.

Measured on a 2-core box (bench/README.md, "Fidelity"): with httpcore, each network read of a stream went
through six async generators, h11 and an anyio cancel scope, and the pool rescanned every connection per
request; at 256 streams the client added hundreds of milliseconds to TTFT. This transport keeps httpx's
API (requests, responses, exceptions, content decoding stay httpx's) and does the wire work itself:

- one asyncio Protocol per connection; a read returns whatever arrived since the last one (timestamps stay
  per network read), with reading paused above `HIGH_WATER_BYTES` so a fast server cannot fill memory;
- chunked, content-length and read-until-close bodies; keep-alive connections reused LIFO, no limit (the
  slots bound the number in flight); a request on a reused connection that the server had closed is sent
  once more on a new one (nothing of it was read);
- a body left unread when the response is closed (a stream left right after `[DONE]`) is drained for
  `DRAIN_S` so its connection can be kept, else the connection is closed;
- read timeouts with one timer per connection, re-armed per timeout period, not one per read.

Not supported: HTTP/2, proxies, 100-continue, request bodies that are not in memory (httpx hands them over
as a stream; it is joined first, fine for JSON requests).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator

import httpx

HIGH_WATER_BYTES = 1 << 20
MAX_HEAD_BYTES = 64 << 10
DRAIN_S = 0.2


class _Conn(asyncio.Protocol):
    """Bytes in, one reader at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, key: tuple) -> None:
        self.loop = loop
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.eof = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future | None = None
        self.paused = False
        self.last_data_s = 0.0
        self.wait_since_s = 0.0
        self.read_timeout_s: float | None = None
        self.timer: asyncio.TimerHandle | None = None  # one per timeout period, re-armed, not one per read
        self.used = 0  # requests sent on this connection

    # --- protocol callbacks ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self.last_data_s = self.loop.time()
        if len(self.buf) > HIGH_WATER_BYTES and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self._wake()

    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    # --- reading --------------------------------------------------------------------------------------

    async def read(self, timeout_s: float | None) -> bytes:
        """What has arrived (at least one byte), or b"" at the end of the connection."""
        while not self.buf:
            if self.eof:
                return b""
            self.waiter = self.loop.create_future()
            self.read_timeout_s = timeout_s
            if timeout_s is not None:
                self.wait_since_s = self.loop.time()
                if self.timer is None:
                    self.timer = self.loop.call_at(self.wait_since_s + timeout_s, self._check_idle)
            try:
                await self.waiter
            finally:
                self.waiter = None
        data = bytes(self.buf)
        self.buf.clear()
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return data

    def _check_idle(self) -> None:
        """The read-timeout timer: fail a read that has waited `read_timeout_s` with no data, else re-arm."""
        self.timer = None
        timeout_s, w = self.read_timeout_s, self.waiter
        if timeout_s is None or self.eof or w is None or w.done():
            return  # no read waiting: the next read arms a new timer
        due = max(self.last_data_s, self.wait_since_s) + timeout_s
        if self.loop.time() >= due:
            w.set_exception(httpx.ReadTimeout(f"no data for {timeout_s:g} s"))
        else:
            self.timer = self.loop.call_at(due, self._check_idle)

    def unread(self, data: bytes) -> None:
        """Give back bytes read past what the caller needed."""
        if data:
            self.buf[:0] = data

    @property
    def usable(self) -> bool:
        return not self.eof and self.transport is not None and not self.transport.is_closing() and not self.buf

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.eof = True


class LeanBody(httpx.AsyncByteStream):
    """A response body: raw bytes as they arrive, framing removed."""

    def __init__(self, transport: LeanTransport, conn: _Conn, mode: str, length: int, keep_alive: bool,
                 first: bytes, read_timeout_s: float | None) -> None:
        self._transport = transport
        self._conn = conn
        self._mode = mode  # "chunked" | "length" | "close" | "none"
        self._left = length  # bytes of the current chunk (chunked) or of the body (length)
        self._keep_alive = keep_alive
        self._timeout_s = read_timeout_s
        self._pending = bytearray(first)  # raw bytes not yet decoded
        self._state = "size"  # chunked: size | data | crlf | trailer
        self.complete = mode == "none" or (mode == "length" and length == 0)
        self._closed = False

    def _decode_chunked(self) -> bytes:
        p = self._pending
        out = []
        while p:
            if self._state == "data":
                if len(p) <= self._left:
                    self._left -= len(p)
                    out.append(bytes(p))
                    p.clear()
                    if self._left == 0:
                        self._state = "crlf"
                    break
                out.append(bytes(p[:self._left]))
                del p[:self._left]
                self._left = 0
                self._state = "crlf"
            elif self._state == "crlf":
                if len(p) < 2:
                    break
                if p[:2] != b"\r\n":
                    raise httpx.RemoteProtocolError("malformed chunked body: no CRLF after a chunk")
                del p[:2]
                self._state = "size"
            else:
                nl = p.find(b"\r\n")
                if nl < 0:
                    if len(p) > 4096:
                        raise httpx.RemoteProtocolError("malformed chunked body: chunk size line too long")
                    break
                line = bytes(p[:nl])
                del p[:nl + 2]
                if self._state == "trailer":
                    if not line:
                        self.complete = True
                        if p:
                            self._conn.unread(bytes(p))  # pipelining is not used: should not happen
                            p.clear()
                        break
                    continue
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise httpx.RemoteProtocolError(f"malformed chunk size {line[:40]!r}") from None
                if size == 0:
                    self._state = "trailer"
                else:
                    self._left, self._state = size, "data"
        return b"".join(out) if len(out) != 1 else out[0]

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        try:
            while not self.complete:
                if self._mode == "chunked":
                    data = self._decode_chunked() if self._pending else b""
                    if data:
                        yield data
                        continue
                    if self.complete:
                        break
                    raw = await conn.read(self._timeout_s)
                    if not raw:
                        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")
                    self._pending += raw
                    if len(self._pending) > HIGH_WATER_BYTES + 8192:
                        # A chunk's data goes out as it comes; only a size line can pile up, and that is capped.
                        raise httpx.RemoteProtocolError("malformed chunked body")
                    continue
                if self._pending:
                    raw, self._pending = bytes(self._pending), bytearray()
                else:
                    raw = await conn.read(self._timeout_s)
                if self._mode == "length":
                    if not raw:
                        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")
                    if len(raw) >= self._left:
                        conn.unread(raw[self._left:])
                        raw = raw[:self._left]
                    self._left -= len(raw)
                    self.complete = self._left == 0
                else:  # until the server closes
                    if not raw:
                        self.complete = True
                        break
                yield raw
        except (OSError, ConnectionError) as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__) from exc

    async def _drain(self) -> None:
        async for _ in self:
            pass

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        conn = self._conn
        task = asyncio.current_task()
        cancelling = task is not None and task.cancelling() > 0
        if (not self.complete and not cancelling and self._keep_alive and self._mode in ("chunked", "length")
                and not conn.eof):
            try:  # e.g. the stream was left right after [DONE]: the end of the body is about to arrive
                async with asyncio.timeout(DRAIN_S):
                    await self._drain()
            except (Exception, asyncio.CancelledError):  # noqa: BLE001 — anything: just do not reuse it
                pass
        if self.complete and self._keep_alive and conn.usable:
            self._transport._release(conn)
        else:
            conn.close()


class LeanTransport(httpx.AsyncBaseTransport):
    def __init__(self, verify: bool | ssl.SSLContext = True, max_idle: int = 1024) -> None:
        self._verify = verify
        self._ssl: ssl.SSLContext | None = None
        self._idle: dict[tuple, list[_Conn]] = {}
        self._all: set[_Conn] = set()
        self.max_idle = max_idle
        self.connections_opened = 0  # for tests and benchmarks: keep-alive should keep this near the slots

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            v = self._verify
            self._ssl = v if isinstance(v, ssl.SSLContext) else httpx.create_ssl_context(verify=v)
        return self._ssl

    async def _connect(self, key: tuple, timeout_s: float | None) -> _Conn:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        kw = {"ssl": self._ssl_context(), "server_hostname": host} if scheme == "https" else {}
        try:
            async with asyncio.timeout(timeout_s):
                _, conn = await loop.create_connection(lambda: _Conn(loop, key), host, port, **kw)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"no connection to {host}:{port} within {timeout_s:g} s") from None
        except OSError as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        self.connections_opened += 1
        self._all.add(conn)
        return conn

    def _release(self, conn: _Conn) -> None:
        idle = self._idle.setdefault(conn.key, [])
        if len(idle) < self.max_idle:
            idle.append(conn)
        else:
            conn.close()
            self._all.discard(conn)

    def _acquire_idle(self, key: tuple) -> _Conn | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()  # LIFO: the warmest connection
            if conn.usable:
                return conn
            conn.close()
            self._all.discard(conn)
        return None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.scheme
        if scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}")
        key = (scheme, url.host, url.port or (443 if scheme == "https" else 80))
        timeouts = request.extensions.get("timeout") or {}
        body = b"".join([part async for part in request.stream])  # type: ignore[union-attr]
        head = [f"{request.method} ".encode(), url.raw_path, b" HTTP/1.1\r\n"]
        has_length = False
        for name, value in request.headers.raw:
            lname = name.lower()
            if lname == b"content-length":
                has_length = True
            elif lname == b"transfer-encoding":
                continue  # the body is sent whole, with its length
            head += [name, b": ", value, b"\r\n"]
        if body and not has_length or request.method in ("POST", "PUT", "PATCH") and not has_length:
            head.append(b"Content-Length: %d\r\n" % len(body))
        head.append(b"\r\n")
        wire = b"".join(head) + body

        conn = self._acquire_idle(key)
        reused = conn is not None
        if conn is None:
            conn = await self._connect(key, timeouts.get("connect"))
        try:
            return await self._exchange(conn, wire, request, timeouts.get("read"))
        except _StaleConnection:
            if not reused:
                raise httpx.RemoteProtocolError("Server disconnected without sending a response.") from None
            conn = await self._connect(key, timeouts.get("connect"))  # the kept-alive one had been closed
            try:
                return await self._exchange(conn, wire, request, timeouts.get("read"))
            except _StaleConnection:
                raise httpx.RemoteProtocolError("Server disconnected without sending a response.") from None

    async def _exchange(self, conn: _Conn, wire: bytes, request: httpx.Request,
                        read_timeout_s: float | None) -> httpx.Response:
        conn.used += 1
        try:
            conn.transport.write(wire)  # type: ignore[union-attr]
            raw = bytearray()
            while True:
                data = await conn.read(read_timeout_s)
                if not data:
                    conn.close()
                    if not raw:
                        raise _StaleConnection
                    raise httpx.RemoteProtocolError("Server disconnected in the middle of the response head.")
                raw += data
                end = raw.find(b"\r\n\r\n")
                if end >= 0:
                    break
                if len(raw) > MAX_HEAD_BYTES:
                    conn.close()
                    raise httpx.RemoteProtocolError("response head too long")
        except (OSError, ConnectionError) as exc:
            conn.close()
            raise httpx.ReadError(str(exc) or type(exc).__name__) from exc
        except BaseException:
            conn.close()
            raise
        lines = bytes(raw[:end]).split(b"\r\n")
        rest = bytes(raw[end + 4:])
        status_line = lines[0].split(b" ", 2)
        try:
            version, status = status_line[0], int(status_line[1])
        except (IndexError, ValueError):
            conn.close()
            raise httpx.RemoteProtocolError(f"malformed status line {lines[0][:60]!r}") from None
        reason = status_line[2] if len(status_line) > 2 else b""
        headers = []
        chunked = False
        length = -1
        keep_alive = version == b"HTTP/1.1"
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                conn.close()
                raise httpx.RemoteProtocolError(f"malformed header line {line[:60]!r}")
            value = value.strip()
            headers.append((name, value))
            lname = name.lower()
            if lname == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif lname == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    conn.close()
                    raise httpx.RemoteProtocolError("malformed Content-Length") from None
            elif lname == b"connection":
                v = value.lower()
                keep_alive = b"close" not in v and (keep_alive or b"keep-alive" in v)
        if request.method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            mode = "none"
        elif chunked:
            mode = "chunked"
        elif length >= 0:
            mode = "length"
        else:
            mode, keep_alive = "close", False
        body = LeanBody(self, conn, mode, max(length, 0), keep_alive, rest, read_timeout_s)
        return httpx.Response(status, headers=headers, stream=body,
                              extensions={"http_version": version, "reason_phrase": reason})

    async def aclose(self) -> None:
        for conn in list(self._all):
            conn.close()
        self._all.clear()
        self._idle.clear()


class _StaleConnection(Exception):
    """The server closed the connection before any of the response: it did not read the request."""
