"""Each injected fault kind, over real loopback HTTP, and seeded determinism."""

from __future__ import annotations

import json

import httpx
import pytest

from befori_tui.sim.cli import main as sim_main
from tests.test_sim_api import make_client, stream

PAYLOAD = {"prompt": "Tell me a story.", "max_tokens": 8, "ignore_eos": True}


async def _stream_one(sim, timeout_s: float = 10.0):
    async with make_client(timeout_s) as client:
        return await stream(client, sim.base_url + "/completions", PAYLOAD)


@pytest.mark.parametrize("kind, status", [("http_500", 500), ("http_429", 429)])
async def test_http_errors(sim_factory, kind, status):
    sim = sim_factory(faults={kind: 1.0})
    async with make_client() as client:
        r = await client.post(sim.base_url + "/completions", json=PAYLOAD)
        s = await stream(client, sim.base_url + "/completions", PAYLOAD)
    assert r.status_code == status == s.status
    assert r.json()["code"] == status
    if kind == "http_429":
        assert int(r.headers["retry-after"]) >= 1
    else:
        assert "retry-after" not in r.headers


async def test_drop_aborts_the_stream(sim_factory):
    sim = sim_factory(faults={"drop": 1.0})
    s = await _stream_one(sim)
    assert s.status == 200
    assert isinstance(s.error, httpx.RemoteProtocolError)  # body ended without its final chunk
    assert 0 < len(s.events) < 8 and "[DONE]" not in s.events
    async with make_client() as client:  # the server lives on; non-streamed drops too
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post(sim.base_url + "/completions", json=PAYLOAD)


async def test_malformed_chunk(sim_factory):
    sim = sim_factory(faults={"malformed": 1.0})
    s = await _stream_one(sim)
    assert s.error is None and s.events[-1] == "[DONE]"
    bad = []
    for e in s.events[:-1]:
        try:
            json.loads(e)
        except ValueError:
            bad.append(e)
    assert len(bad) == 1 and len(s.events) == 8 + 2  # 8 tokens, one broken event, [DONE]


async def test_stall_until_client_gives_up(sim_factory):
    sim = sim_factory(faults={"stall": 1.0})
    s = await _stream_one(sim, timeout_s=0.5)
    assert isinstance(s.error, httpx.ReadTimeout)
    assert 0 < len(s.events) < 8
    async with make_client() as client:  # still serving, and it noticed the hang-up
        records = (await client.get(sim.root_url + "/debug/requests")).json()
    assert records[-1]["fault"] == "stall" and records[-1]["completed"] is False


async def test_no_done(sim_factory):
    sim = sim_factory(faults={"no_done": 1.0})
    s = await _stream_one(sim)
    assert s.error is None and "[DONE]" not in s.events
    chunks = s.chunks()
    assert len(chunks) == 8 and chunks[-1]["choices"][0]["finish_reason"] == "length"


async def _statuses(sim, n: int) -> list[int]:
    async with make_client() as client:
        return [(await client.post(sim.base_url + "/completions", json=PAYLOAD)).status_code for _ in range(n)]


async def test_faults_are_seeded(sim_factory):
    faults = {"http_500": 0.3, "http_429": 0.3}
    a = await _statuses(sim_factory(faults=faults, seed=7), 30)
    b = await _statuses(sim_factory(faults=faults, seed=7), 30)
    c = await _statuses(sim_factory(faults=faults, seed=8), 30)
    assert a == b != c
    assert {200, 429, 500} == set(a)


@pytest.mark.parametrize("argv, flag", [
    (["--port", "x"], "--port"),
    (["--port", "70000"], "--port"),
    (["--time-scale", "-1"], "--time-scale"),
    (["--fault", "stall"], "--fault-rate"),
    (["--fault", "boom", "--fault-rate", "0.1"], "--fault"),
    (["--fault", "stall", "--fault-rate", "1.5"], "--fault-rate"),
    (["--fault", "stall", "--fault-rate", "0.6", "--fault", "drop", "--fault-rate", "0.6"], "--fault-rate"),
    (["--profile", "nope"], "--profile"),
    (["--bogus"], "--bogus"),
])
def test_bad_flags(capsys, argv, flag):
    assert sim_main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and flag in err and "Traceback" not in err
