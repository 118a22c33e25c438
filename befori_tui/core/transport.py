"""A lean HTTP/1.1 transport for httpx: the load loop's requests without httpcore's per-read machinery.

Measured on a 2-core box (bench/README.md, "Transport choice"): httpx's own transport (httpcore, h11) added
tens to hundreds of milliseconds to TTFT from 64 streams up, and aiohttp, the maintained client nearest to
this one, was not within the noise of it either. So the load keeps this transport, but it writes no HTTP
parsing of its own: every reply is read by llhttp (through httptools, the parser uvicorn uses), which does
the status line, headers, 1xx interim replies, chunked / content-length / read-until-close framing and
keep-alive rules. What is left here is the part that makes the timing right:

- one asyncio Protocol per connection; the parser runs in `data_received`, and a read returns all body bytes
  that arrived since the last read (timestamps stay per network read); reading pauses above
  `HIGH_WATER_BYTES` so a fast server cannot fill memory;
- kept-alive connections reused LIFO, no limit (the slots bound the number in flight); a connection the
  server will not keep (`Connection: close`, HTTP/1.0 without keep-alive) is closed and forgotten at the end
  of its reply, and one idle past the server's `Keep-Alive: timeout` is not reused. A server that closes
  connections right after a reply without saying so is found by the first such connection's probation
  (`PROBATION_S`), and its connections are not reused after that kind of reply;
- a request is never sent twice (RFC 9112 §9.3.1: a POST is not idempotent). A kept-alive connection that the
  server has closed is found before the send: the loop has seen its end, or the kernel holds it (a poll of
  the socket before reuse); when the server closes it after the send and before any reply byte,
  `NoReplyError` says so and the caller records it;
- a body left unread when the response is closed (a stream left right after `[DONE]`) is drained for
  `DRAIN_S` so its connection can be kept, else the connection is closed;
- read timeouts with one timer per connection, re-armed per timeout period, not one per read;
- TLS (an `ssl.SSLContext` from core/client.py: CA bundle, client certificate, or no verification) with SNI;
- an HTTP proxy: absolute-form requests for http:// targets, a CONNECT tunnel (then TLS inside it) for
  https:// ones, Basic credentials from the proxy URL.

Not supported: HTTP/2, https:// proxy URLs (TLS to the proxy itself), HEAD requests (llhttp would wait for
the body a Content-Length announces), 100-continue, request bodies that are not in memory (httpx hands them over as a stream; it is joined first, fine for JSON requests).
"""

from __future__ import annotations

import asyncio
import base64
import math
import select
import ssl
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator

import httptools
import httpx

HIGH_WATER_BYTES = 1 << 20
MAX_HEAD_BYTES = 64 << 10
DRAIN_S = 0.2
KEEP_ALIVE_MARGIN_S = 1.0  # a connection is not reused this close to the server's Keep-Alive timeout
# A server's first kept-alive connection after each kind of reply (chunked, or not) waits this long before it
# is reused: still open then, the server keeps such connections; closed, it closes them after such replies
# without saying so (llama.cpp's server does after every streamed reply, ~2 ms later), and they are never
# reused. Without the wait, a request sent in those ~2 ms would be lost (bench/README.md, "Transport choice").
PROBATION_S = 0.05


class NoReplyError(httpx.RemoteProtocolError):
    """The server closed the connection after the request was sent and before any byte of a reply. The request
    may have been read, so it is not sent again."""


def environment_proxy(url: httpx.URL) -> str | None:
    """The proxy the environment names for `url`, read as curl and httpx read it (http_proxy / HTTP_PROXY,
    https_proxy / HTTPS_PROXY, all_proxy, no_proxy; the lower-case name first), or None."""
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if not proxy:
        return None
    host = url.host if url.port is None else f"{url.host}:{url.port}"
    if urllib.request.proxy_bypass_environment(host, proxies):
        return None
    if "://" not in proxy:
        proxy = "http://" + proxy
    return proxy


def proxy_display(proxy: str) -> str:
    """The proxy URL without its credentials, for the screen and the results."""
    parts = urllib.parse.urlsplit(proxy)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, "", "", ""))


class _Proxy:
    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http":
            raise httpx.ProxyError(f"proxy {proxy_display(url)}: only http:// proxies are supported")
        self.host = parts.hostname or ""
        self.port = parts.port or 80
        self.auth: bytes | None = None
        if parts.username is not None:
            creds = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            self.auth = b"Basic " + base64.b64encode(creds.encode())
        self.shown = proxy_display(url)


class _Conn(asyncio.Protocol):
    """One connection: bytes in, llhttp's events out, one reply at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, key: tuple, owner: LeanTransport) -> None:
        self.loop = loop
        self.key = key
        self.owner = owner
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.eof = False
        self.closed = False
        self.error: BaseException | None = None  # a parse error or the connection's own
        self.waiter: asyncio.Future | None = None
        self.paused = False
        self.last_data_s = 0.0
        self.wait_since_s = 0.0
        self.read_timeout_s: float | None = None
        self.timer: asyncio.TimerHandle | None = None  # one per timeout period, re-armed, not one per read
        self.used = 0  # requests sent on this connection
        self.reusable_until_s = math.inf  # from the server's Keep-Alive: timeout=N
        # The reply in progress.
        self.busy = False  # a request is out and its reply not complete: bytes are expected
        self.any_reply = False  # a byte of a reply has come since the request was sent
        self.interim = False  # the head being read is a 1xx: skipped
        self.head_done = False
        self.status = 0
        self.version = b"HTTP/1.1"
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_bytes = 0
        self.framed = False  # Content-Length or chunked: the end of the body is known without the close
        self.chunked = False
        self.keep_alive = False
        self.body = bytearray()
        self.done = False  # the reply is complete

    def begin(self) -> None:
        self.busy, self.any_reply, self.interim, self.head_done, self.done = True, False, False, False, False
        self.headers, self.head_bytes, self.status = [], 0, 0
        self.body.clear()
        self.used += 1

    # --- protocol callbacks ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.busy:
            # Bytes nobody asked for (after a complete reply, or on an idle connection): it cannot carry
            # another request safely.
            self.close()
            return
        self.any_reply = True
        self.last_data_s = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.error = httpx.RemoteProtocolError("the server switched protocols (HTTP upgrade), not requested")
            self.close()
        except httptools.HttpParserError as exc:
            if self.error is None:
                self.error = httpx.RemoteProtocolError(f"malformed HTTP reply: {exc}")
            self.close()
        if len(self.body) > HIGH_WATER_BYTES and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        if exc is not None and self.error is None:
            self.error = httpx.ReadError(str(exc) or type(exc).__name__)
        self._forget()
        self._wake()

    # --- llhttp callbacks (httptools) -----------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > MAX_HEAD_BYTES:
            self.error = httpx.RemoteProtocolError("response head too long")
            raise ValueError("head too long")  # stops the parser
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self.interim = True  # 100 Continue, 103 Early Hints…: the real reply follows
            self.headers, self.head_bytes = [], 0
            return
        self.status = status
        self.version = b"HTTP/" + self.parser.get_http_version().encode()
        self.keep_alive = self.parser.should_keep_alive()
        self.framed = status in (204, 304)
        self.chunked = False
        for name, value in self.headers:
            lname = name.lower()
            if lname in (b"content-length", b"transfer-encoding"):
                self.framed = True
                self.chunked = self.chunked or b"chunked" in value.lower()
            elif lname == b"keep-alive":
                for part in value.split(b","):
                    k, _, v = part.strip().partition(b"=")
                    if k.strip().lower() == b"timeout":
                        try:
                            self.reusable_until_s = self.loop.time() + float(v) - KEEP_ALIVE_MARGIN_S
                        except ValueError:
                            pass
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        self.done = True
        self.busy = False

    # --- waiting --------------------------------------------------------------------------------------

    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def _wait(self, timeout_s: float | None) -> None:
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

    async def read_head(self, timeout_s: float | None) -> None:
        while not self.head_done:
            if self.error is not None:
                raise self.error
            if self.eof:
                if not self.any_reply:
                    raise NoReplyError("the server closed the connection after the request was sent, before "
                                       "any reply (not sent again: it may have been read)")
                raise httpx.RemoteProtocolError("Server disconnected in the middle of the response head.")
            await self._wait(timeout_s)

    async def read_body(self, timeout_s: float | None) -> bytes | None:
        """The body bytes that have arrived (at least one), or None at the end of the body."""
        while not self.body:
            if self.done:
                return None
            if self.error is not None:
                raise self.error
            if self.eof:
                if not self.framed:  # read until close: the close is the end
                    self.done, self.busy, self.keep_alive = True, False, False
                    return None
                raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")
            await self._wait(timeout_s)
        data = bytes(self.body)
        self.body.clear()
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return data

    @property
    def usable(self) -> bool:
        return (not self.eof and not self.closed and self.transport is not None and not self.transport.is_closing()
                and not self.busy and self.loop.time() < self.reusable_until_s)

    def readable_now(self) -> bool:
        """Bytes or the peer's close waiting in the kernel for this idle connection, not yet seen by the loop:
        either way it cannot carry the next request (as urllib3 checks a pooled connection before reuse)."""
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if sock is None or sock.fileno() < 0:
            return sock is not None  # a socket already closed: as good as readable
        poller = select.poll()  # poll, not select: a busy run has descriptors above FD_SETSIZE
        poller.register(sock.fileno(), select.POLLIN)
        return bool(poller.poll(0))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.eof = True
        self._forget()

    def _forget(self) -> None:
        self.owner._forget(self)


class LeanBody(httpx.AsyncByteStream):
    """A response body: raw bytes as they arrive, framing removed by llhttp."""

    direct_reads = True  # core/client.py iterates it directly (no httpx layers per network read)

    def __init__(self, transport: LeanTransport, conn: _Conn, read_timeout_s: float | None) -> None:
        self._transport = transport
        self._conn = conn
        self._timeout_s = read_timeout_s
        self._closed = False

    @property
    def complete(self) -> bool:
        return self._conn.done and not self._conn.body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn, timeout_s = self._conn, self._timeout_s
        try:
            while True:
                data = await conn.read_body(timeout_s)
                if data is None:
                    return
                yield data
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
        if not conn.done and not cancelling and conn.keep_alive and conn.framed and not conn.eof:
            try:  # e.g. the stream was left right after [DONE]: the end of the body is about to arrive
                async with asyncio.timeout(DRAIN_S):
                    await self._drain()
            except (Exception, asyncio.CancelledError):  # noqa: BLE001 — anything: just do not reuse it
                pass
        if conn.done and conn.keep_alive and conn.usable:
            conn.body.clear()
            self._transport._release(conn)
        else:
            conn.close()


class LeanTransport(httpx.AsyncBaseTransport):
    direct_requests = True  # core/client.py hands it the streamed POST without AsyncClient.send's layers

    def __init__(self, verify: bool | ssl.SSLContext = True, max_idle: int = 1024,
                 proxy_from_env: bool = False) -> None:
        """`proxy_from_env`: the environment's proxy for each URL (environment_proxy), else none."""
        self._verify = verify
        self._ssl: ssl.SSLContext | None = None
        self._idle: dict[tuple, list[_Conn]] = {}
        self._all: set[_Conn] = set()
        self.max_idle = max_idle
        # (scheme, host, port, chunked) → whether the server keeps a connection after such a reply; absent:
        # not known yet (the first such connection is on probation: PROBATION_S).
        self._reuse: dict[tuple, bool] = {}
        self._probation: dict[tuple, _Conn] = {}  # kind → the connection that tells whether the server keeps it
        self._shut = False
        self.proxy_from_env = proxy_from_env
        self._proxies: dict[tuple, _Proxy | None] = {}
        self.connections_opened = 0  # for tests and benchmarks: keep-alive should keep this near the slots

    @property
    def open_connections(self) -> int:
        """Connections this transport still holds (in use or idle); for tests and bench/conn_close.py."""
        return len(self._all)

    def proxy_for(self, url: httpx.URL) -> str | None:
        """The proxy URL (with any credentials) that carries requests to `url`, or None."""
        return environment_proxy(url) if self.proxy_from_env else None

    def _proxy(self, key: tuple, url: httpx.URL) -> _Proxy | None:
        if key not in self._proxies:  # the environment is read once per scheme, host and port
            proxy = self.proxy_for(url)
            self._proxies[key] = _Proxy(proxy) if proxy else None
        return self._proxies[key]

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            v = self._verify
            self._ssl = v if isinstance(v, ssl.SSLContext) else httpx.create_ssl_context(verify=v)
        return self._ssl

    async def _connect(self, key: tuple, proxy: _Proxy | None, timeout_s: float | None) -> _Conn:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        tls = scheme == "https"
        kw = {"ssl": self._ssl_context(), "server_hostname": host} if tls and proxy is None else {}
        to_host, to_port = (proxy.host, proxy.port) if proxy else (host, port)
        conn: _Conn | None = None
        try:
            async with asyncio.timeout(timeout_s):
                _, conn = await loop.create_connection(lambda: _Conn(loop, key, self), to_host, to_port, **kw)
                self._all.add(conn)
                if proxy is not None and tls:
                    await self._tunnel(conn, proxy, host, port, timeout_s)
        except TimeoutError:
            if conn is not None:
                conn.close()
            raise httpx.ConnectTimeout(f"no connection to {to_host}:{to_port} within {timeout_s:g} s") from None
        except ssl.SSLError as exc:
            if conn is not None:
                conn.close()
            raise httpx.ConnectError(f"TLS: {exc.reason or exc}") from exc
        except OSError as exc:
            if conn is not None:
                conn.close()
            via = f" (through the proxy {proxy.shown})" if proxy else ""
            raise httpx.ConnectError(f"{str(exc) or type(exc).__name__}{via}") from exc
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        self.connections_opened += 1
        return conn

    async def _tunnel(self, conn: _Conn, proxy: _Proxy, host: str, port: int, timeout_s: float | None) -> None:
        """CONNECT through the proxy, then TLS to the server inside the tunnel (SNI: the server's name)."""
        authority = f"{host}:{port}".encode()
        head = [b"CONNECT ", authority, b" HTTP/1.1\r\nHost: ", authority, b"\r\n"]
        if proxy.auth:
            head += [b"Proxy-Authorization: ", proxy.auth, b"\r\n"]
        conn.begin()
        conn.transport.write(b"".join(head) + b"\r\n")  # type: ignore[union-attr]
        try:
            await conn.read_head(timeout_s)
        except httpx.HTTPError as exc:
            raise httpx.ProxyError(f"proxy {proxy.shown}: no answer to CONNECT ({exc})") from None
        if not 200 <= conn.status < 300:
            raise httpx.ProxyError(f"proxy {proxy.shown} refused CONNECT {authority.decode()}: HTTP {conn.status}")
        # The tunnel is open: what follows is TLS, and then a fresh HTTP exchange for the parser.
        conn.parser = httptools.HttpResponseParser(conn)
        conn.busy, conn.used = False, 0
        loop = asyncio.get_running_loop()
        conn.transport = await loop.start_tls(conn.transport, conn, self._ssl_context(),  # type: ignore[arg-type]
                                              server_hostname=host)

    def _forget(self, conn: _Conn) -> None:
        self._all.discard(conn)

    def _release(self, conn: _Conn) -> None:
        kind = (*conn.key, conn.chunked)
        keeps = self._reuse.get(kind)
        if keeps:
            self._pool(conn)
        elif keeps is False:
            conn.close()
        elif kind not in self._probation:  # not known yet: this one waits, and tells
            self._probation[kind] = conn
            asyncio.get_running_loop().call_later(PROBATION_S, self._end_probation, conn, kind)
        else:  # one is on probation already: closed, not pooled (requests in these 50 ms open their own)
            conn.close()

    def _end_probation(self, conn: _Conn, kind: tuple) -> None:
        self._probation.pop(kind, None)
        if self._shut:
            return  # the transport was closed meanwhile: nothing learnt
        if conn.eof or conn.readable_now():  # the server closed it (or sent what was not asked for)
            self._reuse[kind] = False  # never reused after this kind of reply
            conn.close()
        elif not conn.usable:  # e.g. past a Keep-Alive timeout under 1 s: nothing learnt
            conn.close()
        else:
            self._reuse[kind] = True
            self._pool(conn)

    def _pool(self, conn: _Conn) -> None:
        idle = self._idle.setdefault(conn.key, [])
        if len(idle) < self.max_idle:
            idle.append(conn)
        else:
            conn.close()

    def _acquire_idle(self, key: tuple) -> _Conn | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()  # LIFO: the warmest connection
            if conn.usable and not conn.readable_now():
                return conn
            conn.close()
        return None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.scheme
        if scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}")
        key = (scheme, url.host, url.port or (443 if scheme == "https" else 80))
        proxy = self._proxy(key, url)
        timeouts = request.extensions.get("timeout") or {}
        body = b"".join([part async for part in request.stream])  # type: ignore[union-attr]
        # Through a proxy without a tunnel, the request names the whole URL (RFC 9112 §3.2.2).
        target = str(url).encode() if proxy is not None and scheme == "http" else url.raw_path
        head = [f"{request.method} ".encode(), target, b" HTTP/1.1\r\n"]
        has_length = False
        for name, value in request.headers.raw:
            lname = name.lower()
            if lname == b"content-length":
                has_length = True
            elif lname == b"transfer-encoding":
                continue  # the body is sent whole, with its length
            head += [name, b": ", value, b"\r\n"]
        if proxy is not None and scheme == "http" and proxy.auth:
            head += [b"Proxy-Authorization: ", proxy.auth, b"\r\n"]
        if body and not has_length or request.method in ("POST", "PUT", "PATCH") and not has_length:
            head.append(b"Content-Length: %d\r\n" % len(body))
        head.append(b"\r\n")
        wire = b"".join(head) + body

        # A kept-alive connection whose end the loop has seen is dropped here, before anything is sent; one
        # closed by the server after the send is NoReplyError, never a second send.
        conn = self._acquire_idle(key)
        if conn is None:
            conn = await self._connect(key, proxy, timeouts.get("connect"))
        read_timeout_s = timeouts.get("read")
        try:
            conn.begin()
            conn.transport.write(wire)  # type: ignore[union-attr]
            await conn.read_head(read_timeout_s)
        except (OSError, ConnectionError) as exc:
            conn.close()
            raise httpx.ReadError(str(exc) or type(exc).__name__) from exc
        except BaseException:
            conn.close()
            raise
        return httpx.Response(conn.status, headers=conn.headers, stream=LeanBody(self, conn, read_timeout_s),
                              extensions={"http_version": conn.version})

    async def aclose(self) -> None:
        self._shut = True
        for conn in list(self._all):
            conn.close()
        self._all.clear()
        self._idle.clear()
