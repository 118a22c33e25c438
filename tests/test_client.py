"""The streaming client against a real HTTP server on 127.0.0.1 whose timing and bytes we script."""

from __future__ import annotations

import json
import socket

import pytest

from befori_tui.core.client import Endpoint, StreamClient, make_http_client
from befori_tui.core.prompts import Prompt
from befori_tui.core.records import RequestRecord
from tests.scripted_server import (
    DONE,
    Script,
    ScriptedServer,
    completion_chunk,
    timed_stream,
    usage_chunk,
)


@pytest.fixture(scope="module")
def server():
    with ScriptedServer() as s:
        yield s


async def send(base_url: str, api: str = "completions", timeout_s: float = 5.0, max_tokens: int = 8,
               api_key: str = "") -> RequestRecord:
    endpoint = Endpoint(base_url, api, "m", api_key)
    async with make_http_client(endpoint, 1, timeout_s, 2.0) as http:
        client = StreamClient(http, endpoint, ignore_eos=True, timeout_s=timeout_s)
        record = RequestRecord(0, 0, 0, 1)
        return await client.send(record, Prompt("hello", 5, 5, "estimate", max_tokens))


async def test_timing_matches_the_server(server):
    server.script = timed_stream(ttft_s=0.100, itl_s=0.020, n_tokens=6, prompt_tokens=42)
    r = await send(server.base_url)
    assert r.ok, r.error_message
    assert r.ttft_s == pytest.approx(0.100, abs=0.015)
    assert len(r.itl_ns) == 5
    assert all(0.012 < gap / 1e9 < 0.040 for gap in r.itl_ns)
    assert (r.output_tokens, r.output_tokens_source) == (6, "usage")
    assert (r.input_tokens, r.input_tokens_source) == (42, "usage")
    assert r.finish_reason == "length"
    assert r.tpot_s == pytest.approx((r.e2e_s - r.ttft_s) / 5)
    body = server.requests[-1]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["ignore_eos"] is True and body["max_tokens"] == 8 and body["prompt"] == "hello"


async def test_events_split_mid_line_comments_and_multiline_data(server):
    stream = (b": keep-alive\n\n" + completion_chunk("a") + b"data: {\"choices\": [{\"text\": \n"
              b"data: \"b\", \"finish_reason\": \"length\"}]}\n\n" + usage_chunk(3, 2) + DONE)
    # Split every 7 bytes, each piece its own write, so events straddle reads.
    server.script = Script([(0.002, stream[i:i + 7]) for i in range(0, len(stream), 7)])
    r = await send(server.base_url)
    assert r.ok, r.error_message
    assert r.content_chunks == 2 and r.output_tokens == 2 and r.finish_reason == "length"


async def test_missing_done_after_finish_reason_is_fine(server):
    server.script = Script([(0, completion_chunk("x")), (0, completion_chunk("y", "length"))])
    r = await send(server.base_url)
    assert r.ok, r.error_message
    assert (r.output_tokens, r.output_tokens_source) == (2, "estimate")


async def test_chat_role_chunk_is_not_the_first_token(server):
    def chat(delta, finish=None):
        obj = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return b"data: " + json.dumps(obj).encode() + b"\n\n"

    server.script = Script([(0, chat({"role": "assistant", "content": ""})), (0.08, chat({"content": "Hi"})),
                            (0.01, chat({"content": "!"}, "length")), (0, usage_chunk(9, 2)), (0, DONE)])
    r = await send(server.base_url, api="chat")
    assert r.ok, r.error_message
    assert r.ttft_s > 0.07
    assert r.content_chunks == 2
    assert server.requests[-1]["messages"] == [{"role": "user", "content": "hello"}]


@pytest.mark.parametrize(
    "script,kind,needle",
    [
        (Script(status=500, body=b'{"error": "engine died"}', content_type="application/json"), "http_status", "engine died"),
        (Script(status=429, body=b"slow down", content_type="text/plain", headers={"Retry-After": "3"}),
         "http_status", "Retry-After: 3"),
        (Script(body=b"<html><body>proxy login</body></html>", content_type="text/html"), "protocol", "text/html"),
        (Script([(0, completion_chunk("a")), (0, b"data: {not json\n\n")]), "protocol", "malformed JSON"),
        (Script([(0, completion_chunk("a"))], abort_after=True), "protocol", ""),
        (Script([(0, completion_chunk("a")), (0, b"data: \xff\xfe\n\n")]), "protocol", "malformed"),
        (Script([(0, usage_chunk(1, 0)), (0, DONE)]), "protocol", "without any token"),
        (Script([(0, completion_chunk("a"))] * 40), "protocol", "ran past"),
    ],
    ids=["500", "429", "html", "bad-json", "dropped", "not-utf8", "no-tokens", "endless"],
)
async def test_failures_are_recorded_by_kind(server, script, kind, needle):
    server.script = script
    r = await send(server.base_url)
    assert not r.ok
    assert r.error_kind == kind, r.error_message
    assert needle in r.error_message
    assert r.t_end_ns is not None


async def test_stall_longer_than_timeout(server):
    server.script = Script([(0, completion_chunk("a")), (3.0, completion_chunk("b", "length"))])
    r = await send(server.base_url, timeout_s=0.5)
    assert r.error_kind == "timeout"
    assert r.e2e_s < 2.0


async def test_connection_refused():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = await send(f"http://127.0.0.1:{port}/v1")
    assert r.error_kind == "connect"


async def test_api_key_is_sent_but_never_recorded(server):
    secret = "sk-test-PLANTED-0123456789"
    server.script = Script(status=401, body=f"bad key {secret}".encode(), content_type="text/plain")
    r = await send(server.base_url, api_key=secret)
    assert server.headers_seen[-1]["authorization"] == f"Bearer {secret}"
    assert secret not in json.dumps(r.to_json_dict())
    assert "***" in r.error_message


async def test_one_enormous_line_fails_with_bounded_memory(server):
    # 64 MiB in one line with no newline: the parser refuses it at its 4 MiB cap instead of buffering it all.
    piece = b"x" * (1 << 20)
    server.script = Script([(0, completion_chunk("a")), (0, b"data: ")] + [(0, piece)] * 64)
    import tracemalloc

    tracemalloc.start()
    r = await send(server.base_url)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert r.error_kind == "protocol" and "exceeded" in r.error_message
    assert peak < 24 * (1 << 20)


def test_prompts_reproducible_by_seed_but_distinct_across_runs():
    from befori_tui.core.config import WorkloadConfig
    from befori_tui.core.prompts import PromptSource

    a, b = PromptSource(WorkloadConfig(seed=7)), PromptSource(WorkloadConfig(seed=7))
    pa, pb = [a.next(i) for i in range(20)], [b.next(i) for i in range(20)]
    assert [p.max_tokens for p in pa] == [p.max_tokens for p in pb]
    assert [p.text.split("\n", 1)[1] for p in pa] == [p.text.split("\n", 1)[1] for p in pb]
    # Different first lines: a second run is not served from the first run's prefix cache.
    assert all(x.text.split("\n", 1)[0] != y.text.split("\n", 1)[0] for x, y in zip(pa, pb))
    assert len({p.text.split("\n", 1)[0] for p in pa}) == 20
