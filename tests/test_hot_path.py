"""The client's hot path: the chunk fast path, the lean HTTP/1.1 transport, the loop-lag monitor."""

from __future__ import annotations

import asyncio
import json
import random
import time

import httpx
import pytest

from befori_tui.core.client import Endpoint, StreamClient, _chunk_text, fast_chunk_has_text, make_http_client
from befori_tui.core.health import CLIENT_BOUND_LAG_MS, LoopLagMonitor
from befori_tui.core.prompts import Prompt
from befori_tui.core.records import RequestRecord
from befori_tui.core.transport import PROBATION_S, LeanTransport
from tests.scripted_server import DONE, Script, ScriptedServer


def compact(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def cmpl(text, finish=None, **extra) -> bytes:
    return compact({"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m",
                    "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish,
                                 "stop_reason": None}], "usage": None, **extra})


def chat(delta, finish=None, **extra) -> bytes:
    return compact({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                    "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], **extra})


@pytest.mark.parametrize("data,chat_api,expected", [
    (cmpl(" the"), False, True),
    (cmpl(""), False, False),  # empty text: not a token
    (cmpl('"quoted"'), False, True),  # starts with an escaped quote
    (cmpl('\\'), False, True),  # a lone backslash
    (cmpl("é☃"), False, True),  # json.dumps writes \u00e9\u2603
    (json.dumps({"choices": [{"text": "é", "finish_reason": None}]}, ensure_ascii=False,
                separators=(",", ":")).encode(), False, True),  # raw UTF-8
    (cmpl("x", "length"), False, None),  # finish_reason must be read exactly
    (cmpl("x", usage={"prompt_tokens": 1, "completion_tokens": 1}), False, None),
    (cmpl("x", befori_sim={"t_received_ns": 1}), False, None),
    (compact({"error": {"message": "boom"}, "choices": [{"text": "x", "finish_reason": None}]}), False, None),
    (cmpl("a") + b" ", False, None),  # not ending in "}": unsure
    (cmpl("a")[:-3], False, None),  # cut off
    (json.dumps({"choices": [{"text": "x", "finish_reason": None}]}).encode(), False, None),  # spaced JSON
    (compact({"choices": [{"text": "a", "finish_reason": None}, {"text": "b", "finish_reason": None}]}), False, None),
    (compact({'a"text': "x", "finish_reason": None}), False, None),  # the marker inside a key
    (b"[DONE]", False, None),
    (chat({"role": "assistant", "content": ""}), True, False),  # role-only: not the first token
    (chat({"content": "Hi"}), True, True),
    (chat({"content": None}), True, None),
    (chat({"reasoning_content": "hmm", "content": ""}), True, None),  # reasoning counts: parse it
    (chat({"content": "!"}, "stop"), True, None),
    (compact({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}), True, None),  # usage-only
    (cmpl("x"), True, None),  # a completions chunk read as chat: no content key
])
def test_fast_path_cases(data, chat_api, expected):
    assert fast_chunk_has_text(data, chat_api) is expected


def test_fast_path_agrees_with_json_on_random_chunks():
    rng = random.Random(7)
    alphabet = ['a', ' ', '"', '\\', 'é', '\n', '"text":"', '"content":"', 'usage', 'null', '}', '{', '\u2028']
    for i in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6)))
        finish = rng.choice([None, None, None, "length", "stop"])
        extra = rng.choice([{}, {}, {"usage": None}, {"usage": {"completion_tokens": 1}}])
        is_chat = rng.random() < 0.5
        if is_chat:
            delta = rng.choice([{"content": text}, {"role": "assistant", "content": text}, {"content": None}])
            data = chat(delta, finish, **extra)
        else:
            data = cmpl(text, finish, **extra)
        if rng.random() < 0.3:
            data = json.dumps(json.loads(data), ensure_ascii=False, separators=(",", ":")).encode()
        fast = fast_chunk_has_text(data, is_chat)
        if fast is None:
            continue
        obj = json.loads(data)
        text_slow, finish_slow = _chunk_text(obj, is_chat)
        assert fast == bool(text_slow), data
        assert finish_slow is None and not obj.get("usage") and "befori_sim" not in obj, data


# --- end to end over a real server: the fast path and the transport together -------------------------------


@pytest.fixture(scope="module")
def server():
    with ScriptedServer() as s:
        yield s


def sse(data: bytes) -> bytes:
    return b"data: " + data + b"\n\n"


async def test_compact_stream_counts_tokens_and_reads_the_rest_exactly(server):
    usage = compact({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 4}})
    server.script = Script([(0, sse(cmpl(""))), (0.01, sse(cmpl('"q"'))), (0.005, sse(cmpl("\u00e9"))),
                            (0.005, sse(cmpl("x"))), (0.005, sse(cmpl("y", "length"))), (0, sse(usage)), (0, DONE)])
    endpoint = Endpoint(server.base_url, "completions", "m", "")
    async with make_http_client(endpoint, 1, 5.0, 2.0) as http:
        client = StreamClient(http, endpoint, ignore_eos=True, timeout_s=5.0)
        records = [await client.send(RequestRecord(0, 0, 0, 1), Prompt("hi", 2, 2, "estimate", 4))]
        await asyncio.sleep(PROBATION_S + 0.05)  # the server's first connection is kept: reused from now on
        records += [await client.send(RequestRecord(i, 0, 0, 1), Prompt("hi", 2, 2, "estimate", 4)) for i in (1, 2)]
        opened = http._transport.connections_opened
    for r in records:
        assert r.ok, r.error_message
        assert r.content_chunks == 4 and len(r.itl_ns) == 3
        assert (r.output_tokens, r.output_tokens_source) == (4, "usage")
        assert (r.input_tokens, r.input_tokens_source) == (7, "usage")
        assert r.finish_reason == "length"
    assert opened == 1  # the stream is left at [DONE], yet its connection is kept and reused


async def test_transport_plain_requests_and_errors(server):
    async with httpx.AsyncClient(transport=LeanTransport(), timeout=5.0) as http:
        r = await http.get(server.base_url + "/models")
        assert r.status_code == 200 and r.json()["data"][0]["id"] == "scripted-model"
        await asyncio.sleep(PROBATION_S + 0.05)
        server.script = Script(status=500, body=b'{"error": "x"}', content_type="application/json")
        r = await http.post(server.base_url + "/completions", json={"prompt": "p"})
        assert r.status_code == 500 and r.json() == {"error": "x"}
        r = await http.get(server.base_url + "/nope")
        assert r.status_code == 404
        assert http._transport.connections_opened == 1


async def test_transport_drops_a_kept_alive_connection_the_server_closed_before_sending():
    """A server that closes every connection after one reply (without saying so): the second request finds
    the kept-alive connection closed before it is sent, and goes out once on a new one."""
    served = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        await reader.readuntil(b"\r\n\r\n")
        served += 1
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok")
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    async with srv, httpx.AsyncClient(transport=LeanTransport(), timeout=5.0) as http:
        assert (await http.get(f"http://127.0.0.1:{port}/")).text == "ok"
        await asyncio.sleep(0.05)  # the close has arrived: the idle connection is seen to be unusable
        assert (await http.get(f"http://127.0.0.1:{port}/")).text == "ok"
        assert served == 2


async def test_transport_body_cut_short_is_a_protocol_error():
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n3\r\nab")
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    async with srv, httpx.AsyncClient(transport=LeanTransport(), timeout=5.0) as http:
        got = b""
        with pytest.raises(httpx.RemoteProtocolError):
            async with http.stream("GET", f"http://127.0.0.1:{port}/") as resp:
                async for part in resp.aiter_raw():
                    got += part
        assert got == b"helloab"


# --- loop lag ------------------------------------------------------------------------------------------------


async def test_loop_lag_monitor_sees_a_blocked_loop():
    mon = LoopLagMonitor(interval_s=0.01)
    t0 = time.perf_counter_ns()
    mon.start()
    await asyncio.sleep(0.05)
    quiet = mon.summary(t0)
    time.sleep(0.03 + CLIENT_BOUND_LAG_MS / 1e3)  # block the loop: probes sent meanwhile wait for its end
    await asyncio.sleep(0.03)
    mon.stop()
    blocked = mon.summary(t0)
    assert quiet["client_loop_lag_ms_p50"] < 20  # generous: a shared CI box
    # The first probe due in the block comes at most one interval after it began.
    assert blocked["client_loop_lag_ms_max"] >= 30 + CLIENT_BOUND_LAG_MS - 10 - 1
    assert blocked["client_bound"] is True
    assert mon.summary(time.perf_counter_ns() + 10**9) == {}
    assert mon.live_p99_ms(t0) is None  # a handful of samples: no live figure yet (see below)


def test_the_live_warning_is_not_raised_by_one_late_wake_up_and_sees_only_the_current_level():
    """The screen's client-bound warning: lag p99 over the current level (less its first second), at most the
    last minute. A single late wake-up among 600 samples leaves it low (over the 10 s it once used, 100
    samples, the p99 was that wake-up itself); a lagging stretch raises it; the level before does not count;
    before 200 samples it says nothing."""
    mon = LoopLagMonitor()
    now = time.perf_counter_ns()
    start = now - 70 * 10**9  # the level began 70 s ago; before it, a level whose loop ran late throughout

    def samples(t0_s: float, t1_s: float, lag_ms: float, every_s: float = 0.1) -> None:
        t = t0_s
        while t < t1_s:
            mon.t_ns.append(now + int(t * 1e9))
            mon.lag_ns.append(int(lag_ms * 1e6))
            t += every_s

    samples(-100, -70, 50.0)  # the previous level
    samples(-70, 0, 0.5)
    mon.lag_ns[-5] = int(6e6)  # one late wake-up, 0.5 s ago
    assert mon.live_p99_ms(start) == 0.5
    assert mon.summary(start)["client_bound"] is False  # and the level's own figure agrees
    for k in range(2, 12):  # ten of them in the last minute: the loop is late, the warning shows
        mon.lag_ns[-k * 50] = int(9e6)
    assert mon.live_p99_ms(start) > CLIENT_BOUND_LAG_MS
    # Fewer than 200 samples in the level: no figure yet (their p99 would be their largest).
    young = LoopLagMonitor()
    for k in range(199):
        young.t_ns.append(now - (199 - k) * 100_000_000)
        young.lag_ns.append(int(20e6) if k == 5 else int(1e6))
    assert young.live_p99_ms(now - 30 * 10**9) is None
    young.t_ns.append(now)
    young.lag_ns.append(int(1e6))
    assert young.live_p99_ms(now - 30 * 10**9) == 1.0
    # The level's first second is left out once the level is longer than two (connections opening).
    assert young.live_p99_ms(now - 19_900_000_000) is None  # 199 samples after its first second


def test_level_line_warns_when_the_client_is_the_bottleneck():
    from befori_tui.headless import level_line

    base = {"level": 0, "concurrency": 512, "requests_ok": 10, "requests_failed": 0, "errors": {}}
    quiet = level_line({**base, "client_loop_lag_ms_p99": 1.0, "client_bound": False})
    loud = level_line({**base, "client_loop_lag_ms_p99": 12.4, "client_bound": True})
    assert "client-bound" not in quiet
    assert "client-bound: numbers may be skewed (client loop lag p99 12 ms)" in loud


async def test_session_results_carry_the_loop_lag(sim, tmp_path):
    from befori_tui.core.config import Config
    from befori_tui.core.session import Session

    cfg = Config()
    cfg.endpoint.url = sim.base_url
    cfg.workload.input_tokens_mean, cfg.workload.output_tokens_mean = 40, 4
    session = Session(cfg, tmp_path / "s.toml")
    runner = await session.open()
    transport = session.runner.client.http._transport
    runner.start(4)
    await asyncio.sleep(0.2)
    opened = transport.connections_opened
    done = session.finished_count()
    await asyncio.sleep(0.3)
    opened_later = transport.connections_opened - opened
    done_later = session.finished_count() - done
    await session.close()
    lv = session.level_summaries()[0]
    assert 0 <= lv["client_loop_lag_ms_p50"] <= lv["client_loop_lag_ms_p99"] <= lv["client_loop_lag_ms_max"]
    assert isinstance(lv["client_bound"], bool)
    # Keep-alive: each slot's requests share a connection (once the server's first kept-alive connection after
    # a streamed reply has passed its 50 ms probation, in the run's first moments).
    assert done_later >= 4 and opened_later == 0


async def test_transport_read_timeout_counts_from_the_last_data():
    """Data every 0.1 s keeps a 0.3 s read timeout from firing; then 0.6 s of silence fires it."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(8):
            writer.write(b"1\r\nx\r\n")
            await writer.drain()
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.6)
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    async with srv, httpx.AsyncClient(transport=LeanTransport(), timeout=httpx.Timeout(5.0, read=0.3)) as http:
        got = b""
        t0 = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            async with http.stream("GET", f"http://127.0.0.1:{port}/") as resp:
                async for part in resp.aiter_raw():
                    got += part
        assert got == b"x" * 8
        assert 0.8 + 0.25 < time.monotonic() - t0 < 0.8 + 0.55


def test_record_json_dict_is_what_asdict_made():
    import dataclasses

    from array import array

    r = RequestRecord(1, 2, 3, 4, t_send_ns=10**18, itl_ns=array("q", [5, 6]), server_timing={"t_received_ns": 1},
                      error_kind="protocol", error_message="x")
    d = r.to_json_dict()
    assert d == {**dataclasses.asdict(r), "itl_ns": [5, 6]}  # gaps as a JSON list
    d["itl_ns"].append(7)
    d["server_timing"]["x"] = 1
    assert list(r.itl_ns) == [5, 6] and r.server_timing == {"t_received_ns": 1}  # a copy, as asdict made
    assert RequestRecord.from_json_dict(json.loads(json.dumps(r.to_json_dict()))) == r


async def test_an_idle_loops_lag_is_far_below_the_client_bound_threshold():
    """Nothing runs on the loop: the probe must not report lag of its own making (an asyncio timer as the
    probe adds up to ~2 ms of rounding to some samples; see bench/README.md, Client health). A probe that
    adds its own lag does so in every try; a box busy with other work (the suite's own servers) only now and
    then — so the best of three 2 s tries is held to the bound."""
    tries = []
    for _ in range(3):
        mon = LoopLagMonitor()  # every 100 ms, as in a run
        mon.start()
        await asyncio.sleep(2.05)
        mon.stop()
        lags_ms = sorted(x / 1e6 for x in mon.lag_ns)
        assert len(lags_ms) >= 19
        n = len(mon.lag_ns)
        await asyncio.sleep(0.15)
        assert len(mon.lag_ns) == n  # stopped: no probe thread, no reader left behind
        tries.append(lags_ms[int(0.9 * len(lags_ms))])
        if tries[-1] < CLIENT_BOUND_LAG_MS / 3:
            break
    assert min(tries) < CLIENT_BOUND_LAG_MS / 3, tries
