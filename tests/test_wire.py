"""The load's HTTP/1.1 transport on the wire, each case against a real loopback server writing exact bytes:
Connection: close, HTTP/1.0, never a second send, stale kept-alive connections, 1xx, the three body framings,
gzip'd error replies, and SSE as servers and gateways really write it."""

from __future__ import annotations

import asyncio
import gzip
import json

import httpx
import pytest

from befori_tui.core.client import Endpoint, StreamClient, make_http_client
from befori_tui.core.prompts import Prompt
from befori_tui.core.records import RequestRecord
from befori_tui.core.transport import PROBATION_S, LeanTransport, NoReplyError
from tests.wire_server import SSE_HEAD, WireServer, chunked, cmpl, models_or, reply
from tests.wire_server import chunked as chunked_body


def lean_client(**kw) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=LeanTransport(), timeout=httpx.Timeout(5.0, **kw))


async def past_probation() -> None:
    """A server's first kept-alive connection is reused only once it has stayed open PROBATION_S."""
    await asyncio.sleep(PROBATION_S + 0.05)


# --- connections ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("server_closes", [True, False])
async def test_connection_close_replies_leave_no_connection_behind(server_closes):
    """`Connection: close` is obeyed whether or not the server closes first: nothing is kept or listed."""
    async def handle(conn):
        while await conn.read_request() is not None:
            await conn.send(reply(body=b"ok", headers="connection: close\r\n"))
            if server_closes:
                return
            # else: the server keeps its side open; the client must still close and not reuse it

    async with WireServer(handle) as srv, lean_client() as http:
        transport = http._transport
        for _ in range(50):
            assert (await http.get(srv.url())).text == "ok"
            assert transport.open_connections == 0
        assert transport.connections_opened == 50
        assert sum(len(v) for v in transport._idle.values()) == 0


async def test_http_1_0_replies():
    """HTTP/1.0 with no length: the body runs to the close; HTTP/1.0 with keep-alive and a length is kept."""
    async def handle(conn):
        await conn.read_request()
        if len(conn.server.requests) == 1:
            await conn.send(b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nhello, ")
            await conn.send(b"world")
            return  # the close ends the body
        await conn.send(reply(body=b"kept", headers="connection: keep-alive\r\n", version="1.0"))
        await conn.read_request()
        await conn.send(reply(body=b"again", headers="connection: keep-alive\r\n", version="1.0"))

    async with WireServer(handle) as srv, lean_client() as http:
        r = await http.get(srv.url())
        assert (r.http_version, r.text) == ("HTTP/1.0", "hello, world")
        assert http._transport.open_connections == 0
        assert (await http.get(srv.url())).text == "kept"
        await past_probation()
        assert (await http.get(srv.url())).text == "again"
        assert http._transport.connections_opened == 2


async def test_a_request_is_never_sent_twice():
    """The server reads the second request on a kept-alive connection and closes without a reply: the request
    is not sent again (the server read it), the failure is NoReplyError, and the next request goes out."""
    async def handle(conn):
        await conn.read_request()
        await conn.send(reply(body=b"first"))
        await conn.read_request()  # read, then gone: as a server that restarts or drops it
        conn.writer.transport.abort()
        await asyncio.sleep(0)

    async def handle_next(conn):
        await conn.read_request()
        await conn.send(reply(body=b"third"))

    async with WireServer(handle) as srv, lean_client() as http:
        assert (await http.get(srv.url())).text == "first"
        await past_probation()
        with pytest.raises(NoReplyError):
            await http.post(srv.url(), content=b'{"n": 2}')
        assert len(srv.requests) == 2  # two requests sent, two read: nothing re-sent
        srv.handler = handle_next
        assert (await http.post(srv.url(), content=b'{"n": 3}')).text == "third"
        assert len(srv.requests) == 3


async def test_no_reply_is_recorded_as_its_own_kind_and_the_slot_goes_on():
    served = []

    async def on_completion(conn, headers, body):
        served.append(body)
        if len(served) == 2:
            conn.writer.transport.abort()
            return
        await conn.send(SSE_HEAD + chunked(b"data: " + cmpl("a") + b"\n\n", b"data: " + cmpl("b", "length") + b"\n\n",
                                           b"data: [DONE]\n\n"))

    async with WireServer(lambda c: models_or(c, on_completion)) as srv:
        endpoint = Endpoint(srv.url("/v1"), "completions", "m", "")
        async with make_http_client(endpoint, 1, 5.0, 2.0) as http:
            client = StreamClient(http, endpoint, ignore_eos=True, timeout_s=5.0)
            recs = [await client.send(RequestRecord(i, 0, 0, 1), Prompt("hi", 2, 2, "estimate", 2)) for i in range(3)]
    assert [r.error_kind for r in recs] == [None, "no_reply", None]
    assert "not sent again" in recs[1].error_message
    assert len(served) == 3


async def test_a_kept_alive_connection_the_server_closed_is_dropped_before_the_send():
    """The server closes each connection after its reply without saying so: once the close has arrived, the
    next request goes out on a new connection, sent once."""
    async def handle(conn):
        await conn.read_request()
        await conn.send(reply(body=b"ok"))

    async with WireServer(handle) as srv, lean_client() as http:
        for _ in range(3):
            assert (await http.get(srv.url())).text == "ok"
            await asyncio.sleep(0.05)  # the close arrives while the connection is idle
        assert len(srv.requests) == 3 and http._transport.connections_opened == 3


async def test_keep_alive_timeout_is_honoured_before_the_send():
    """`Keep-Alive: timeout=1`: the server may close at any moment after 1 s; the client does not reuse the
    connection that close to the end (it would race the server's close), though the server never closed it."""
    async def handle(conn):
        while await conn.read_request() is not None:
            await conn.send(reply(body=b"ok", headers="keep-alive: timeout=1\r\n"))

    async with WireServer(handle) as srv, lean_client() as http:
        assert (await http.get(srv.url())).text == "ok"
        assert (await http.get(srv.url())).text == "ok"
        assert http._transport.connections_opened == 2


async def test_keep_alive_connections_are_reused():
    async def handle(conn):
        while await conn.read_request() is not None:
            await conn.send(reply(body=b"ok", headers="keep-alive: timeout=30\r\n"))

    async with WireServer(handle) as srv, lean_client() as http:
        assert (await http.get(srv.url())).text == "ok"
        await past_probation()
        for _ in range(5):
            assert (await http.get(srv.url())).text == "ok"
        assert http._transport.connections_opened == 1 and srv.connections == 1


# --- replies ----------------------------------------------------------------------------------------------


async def test_interim_1xx_replies_are_skipped():
    async def handle(conn):
        await conn.read_request()
        await conn.send(b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n")
        await asyncio.sleep(0.02)
        await conn.send(b"HTTP/1.1 100 Continue\r\n\r\n" + reply(201, b"the answer", "x-real: 1\r\n"))

    async with WireServer(handle) as srv, lean_client() as http:
        r = await http.post(srv.url(), content=b"{}")
        assert (r.status_code, r.text, r.headers.get("x-real")) == (201, "the answer", "1")
        assert "link" not in r.headers


@pytest.mark.parametrize("framing", ["content-length", "chunked", "until-close"])
async def test_body_framings_in_pieces(framing):
    """Each framing, written a few bytes at a time (pieces split inside the chunk size lines too)."""
    body = b"".join(b"line %d\n" % i for i in range(40))
    if framing == "content-length":
        wire = reply(body=body, headers="content-type: text/plain\r\n")
    elif framing == "chunked":
        parts = [body[i:i + 37] for i in range(0, len(body), 37)]
        wire = (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                + b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\nx-trailer: t\r\n\r\n")
    else:
        wire = b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n" + body

    async def handle(conn):
        await conn.read_request()
        for i in range(0, len(wire), 11):
            await conn.send(wire[i:i + 11])
            await asyncio.sleep(0)

    async with WireServer(handle) as srv, lean_client() as http:
        async with http.stream("GET", srv.url()) as r:
            got = b"".join([part async for part in r.aiter_raw()])
        assert got == body


async def test_malformed_reply_is_a_protocol_error():
    async def handle(conn):
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n")

    async with WireServer(handle) as srv, lean_client() as http:
        with pytest.raises(httpx.RemoteProtocolError, match="malformed"):
            await http.get(srv.url())


async def test_gzipped_error_reply_from_a_gateway_is_read():
    """A gateway's 502, gzip'd: the record holds its text, not compressed bytes."""
    page = json.dumps({"error": {"message": "upstream connect error or disconnect/reset before headers"}}).encode()

    async def on_completion(conn, headers, body):
        await conn.send(reply(502, gzip.compress(page), "content-type: application/json\r\ncontent-encoding: gzip\r\n"))

    async with WireServer(lambda c: models_or(c, on_completion)) as srv:
        endpoint = Endpoint(srv.url("/v1"), "completions", "m", "")
        async with make_http_client(endpoint, 1, 5.0, 2.0) as http:
            client = StreamClient(http, endpoint, ignore_eos=True, timeout_s=5.0)
            rec = await client.send(RequestRecord(0, 0, 0, 1), Prompt("hi", 2, 2, "estimate", 2))
            # The same through the plain httpx API (a non-stream JSON reply).
            r = await http.post(srv.url("/v1/completions"), content=b"{}")
    assert rec.error_kind == "http_status" and "upstream connect error" in rec.error_message
    assert r.json() == json.loads(page)


# --- SSE as servers write it ------------------------------------------------------------------------------


def _events(sep: bytes) -> bytes:
    """A stream with comments, event: lines, data: without a space, and a final chunk that carries only usage."""
    usage = json.dumps({"id": "c", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 3}}).encode()
    lines = [b": ping", b"", b"event: message", b"data:" + cmpl("a"), b"", b"id: 2", b"data: " + cmpl("b"), b"",
             b": keep-alive", b"retry: 1000", b"data:" + cmpl("c", "stop"), b"", b"data: " + usage, b"",
             b"data: [DONE]", b"", b""]
    return sep.join(lines)


@pytest.mark.parametrize("sep", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
@pytest.mark.parametrize("piece", [1, 7, 4096])
async def test_sse_line_ends_comments_event_lines_and_usage_only_chunk(sep, piece):
    stream = _events(sep)

    async def on_completion(conn, headers, body):
        await conn.send(SSE_HEAD)
        for i in range(0, len(stream), piece):  # split anywhere, even between a CR and its LF
            await conn.send(chunked(stream[i:i + piece])[:-5])  # one HTTP chunk per piece
        await conn.send(b"0\r\n\r\n")

    async with WireServer(lambda c: models_or(c, on_completion)) as srv:
        endpoint = Endpoint(srv.url("/v1"), "completions", "m", "")
        async with make_http_client(endpoint, 1, 5.0, 2.0) as http:
            client = StreamClient(http, endpoint, ignore_eos=True, timeout_s=5.0)
            rec = await client.send(RequestRecord(0, 0, 0, 1), Prompt("hi", 2, 2, "estimate", 3))
    assert rec.ok, rec.error_message
    assert rec.content_chunks == 3 and rec.finish_reason == "stop"
    assert (rec.output_tokens, rec.output_tokens_source) == (3, "usage")
    assert (rec.input_tokens, rec.input_tokens_source) == (9, "usage")


async def test_a_close_still_in_the_kernel_is_seen_before_the_send():
    """The server's close has arrived in the kernel but the loop has not read it (here: reading is paused, as
    when the loop has not polled since): the poll before reuse finds it, so the request goes out once on a new
    connection instead of failing as no_reply."""
    close_now = asyncio.Event()

    async def handle(conn):
        await conn.read_request()
        await conn.send(reply(body=b"ok"))
        if len(conn.server.requests) == 1:
            await close_now.wait()

    async with WireServer(handle) as srv, lean_client() as http:
        assert (await http.get(srv.url())).text == "ok"
        await past_probation()
        transport = http._transport
        (conn,) = [c for idle in transport._idle.values() for c in idle]
        conn.transport.pause_reading()
        assert not conn.readable_now()
        close_now.set()
        await asyncio.sleep(0.05)  # the FIN is in the kernel; the loop does not read it
        assert conn.usable and conn.readable_now()
        assert (await http.get(srv.url())).text == "ok"
        assert len(srv.requests) == 2 and transport.connections_opened == 2


@pytest.mark.parametrize("chunked", [True, False])
async def test_a_server_that_closes_right_after_each_reply_loses_no_request(chunked):
    """As llama.cpp's server does after every streamed reply: it closes ~2 ms after the reply without saying
    so. Requests sent back to back never go out on such a connection: the first one after a reply waits on
    probation, is seen to close, and the server's connections are not reused after such replies."""
    async def handle(conn):
        await conn.read_request()
        if chunked:
            await conn.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunked_body(b"ok"))
        else:
            await conn.send(reply(body=b"ok", headers="keep-alive: timeout=5, max=100\r\n"))
        await asyncio.sleep(0.002)
        # (returns: the connection is closed, without Connection: close and without reading more)

    async with WireServer(handle) as srv, lean_client() as http:
        for _ in range(30):
            assert (await http.get(srv.url())).text == "ok"
        await asyncio.sleep(0.1)
        for _ in range(30):
            assert (await http.get(srv.url())).text == "ok"
        assert len(srv.requests) == 60 and http._transport.connections_opened == 60


async def test_a_server_that_keeps_connections_is_reused_after_the_probation():
    async def handle(conn):
        while await conn.read_request() is not None:
            await conn.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunked_body(b"ok"))

    async with WireServer(handle) as srv, lean_client() as http:
        assert (await http.get(srv.url())).text == "ok"
        await asyncio.sleep(0.1)  # the first connection's probation ends: the server keeps it
        for _ in range(20):
            assert (await http.get(srv.url())).text == "ok"
        assert http._transport.connections_opened == 1
