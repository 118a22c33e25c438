"""Known servers' streamed replies (tests/fixtures/servers/, see its README), replayed over loopback to the
client: tokens, finish reason, and where each token count came from."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from befori_tui.core.client import Endpoint, StreamClient, make_http_client
from befori_tui.core.prompts import Prompt
from befori_tui.core.records import RequestRecord
from tests.wire_server import WireServer, models_or

FIXTURES = Path(__file__).parent / "fixtures" / "servers"

# file → api, content chunks, finish_reason, (output tokens, source), (input tokens, source)
EXPECTED = {
    "vllm.http": ("completions", 6, "length", (6, "usage"), (11, "usage")),
    "sglang.http": ("chat", 5, "length", (5, "usage"), (21, "usage")),
    "tgi.http": ("chat", 4, "length", (4, "usage"), (15, "usage")),
    "llamacpp-captured-chat.http": ("chat", 5, "length", (5, "usage"), (31, "usage")),
    "llamacpp-captured-completions.http": ("completions", 5, "length", (5, "usage"), (9, "usage")),
    # No usage: output from timings.predicted_n; input stays the client's own count (prompt_n leaves out cache).
    "llamacpp-timings-only.http": ("completions", 3, "length", (3, "timings"), (5, "estimate")),
    "ollama.http": ("chat", 4, "length", (4, "usage"), (26, "usage")),
    "constructed-spaced-crlf.http": ("chat", 3, "length", (3, "usage"), (18, "usage")),
    "litellm-captured-chat.http": ("chat", 5, "length", (5, "usage"), (18, "usage")),
    "litellm-captured-completions.http": ("completions", 5, "length", (5, "usage"), (11, "usage")),
    "litellm-1.55-captured-chat.http": ("chat", 5, "length", (5, "usage"), (18, "usage")),
    # Zero usage on every chunk and never the real one: the counts are the client's own.
    "litellm-1.55-captured-completions.http": ("completions", 5, "length", (5, "estimate"), (5, "estimate")),
}


def test_every_fixture_is_checked():
    assert sorted(p.name for p in FIXTURES.glob("*.http")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_known_server_reply(name):
    api, chunks, finish, output, inp = EXPECTED[name]
    head, _, body = (FIXTURES / name).read_bytes().partition(b"\r\n\r\n")
    events = re.findall(rb".*?(?:\r\n\r\n|\n\n|\r\r)", body, re.S)  # one HTTP chunk per event, as servers flush
    assert b"".join(events) == body

    async def on_completion(conn, headers, request_body):
        await conn.send(head + b"\r\ntransfer-encoding: chunked\r\n\r\n")
        for event in events:
            await conn.send(b"%x\r\n%s\r\n" % (len(event), event))
        await conn.send(b"0\r\n\r\n")

    async with WireServer(lambda c: models_or(c, on_completion)) as srv:
        endpoint = Endpoint(srv.url("/v1"), api, "m", "")
        async with make_http_client(endpoint, 1, 5.0, 2.0) as http:
            client = StreamClient(http, endpoint, ignore_eos=True, timeout_s=5.0)
            rec = await client.send(RequestRecord(0, 0, 0, 1), Prompt("hi", 5, 5, "estimate", chunks))
    assert rec.ok, rec.error_message
    assert (rec.content_chunks, rec.finish_reason) == (chunks, finish)
    assert (rec.output_tokens, rec.output_tokens_source) == output
    assert (rec.input_tokens, rec.input_tokens_source) == inp
    assert len(rec.itl_ns) == chunks - 1
