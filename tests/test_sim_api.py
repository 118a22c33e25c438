"""The simulator's endpoints over real loopback HTTP (shared fast sim from conftest)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from befori_tui.sim.tokenizer import count_text


# -- a tiny streaming client, also used by the other test_sim modules (kept apart from the app's client)

@dataclass
class Streamed:
    status: int
    headers: httpx.Headers
    events: list[str] = field(default_factory=list)  # raw `data:` payloads, [DONE] included
    t_send_ns: int = 0
    t_first_content_ns: int | None = None
    error: BaseException | None = None

    def chunks(self) -> list[dict[str, Any]]:
        return [json.loads(e) for e in self.events if e != "[DONE]"]

    def ground_truth(self) -> dict[str, Any]:
        return next(c["befori_sim"] for c in reversed(self.chunks()) if "befori_sim" in c)


def make_client(timeout_s: float = 10.0, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=timeout_s, **kwargs)


def _has_content(chunk: dict[str, Any]) -> bool:
    for c in chunk.get("choices", []):
        if c.get("text") or (c.get("delta") or {}).get("content"):
            return True
    return False


async def stream(client: httpx.AsyncClient, url: str, payload: dict[str, Any]) -> Streamed:
    """POST with stream=true; collects events; transport errors are stored, not raised."""
    t_send = time.perf_counter_ns()
    out = Streamed(status=0, headers=httpx.Headers(), t_send_ns=t_send)
    try:
        async with client.stream("POST", url, json={**payload, "stream": True}) as resp:
            out.status, out.headers = resp.status_code, resp.headers
            async for line in resp.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if out.t_first_content_ns is None and data != "[DONE]":
                    try:
                        if _has_content(json.loads(data)):
                            out.t_first_content_ns = time.perf_counter_ns()
                    except ValueError:
                        pass
                out.events.append(data)
    except (httpx.TransportError, httpx.StreamError) as exc:
        out.error = exc
    return out


PROMPT = "Explain continuous batching in two sentences, please."


@pytest.fixture
async def client():
    async with make_client() as c:
        yield c


async def _metrics(client: httpx.AsyncClient, root: str) -> dict[str, list]:
    text = (await client.get(root + "/metrics")).text
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


async def test_health_models_version(sim, client):
    assert (await client.get(sim.root_url + "/health")).status_code == 200
    models = (await client.get(sim.base_url + "/models")).json()
    assert models["object"] == "list"
    [m] = models["data"]
    assert "simulated" in m["id"] and m["max_model_len"] == 131072
    assert (await client.get(sim.root_url + "/version")).json()["profile"] == "llama-3.1-8b-1xh100"


async def test_no_delayed_ack_stall(sim, client):
    """Headers and body are separate writes; without TCP_NODELAY each response would wait ~40 ms."""
    url = sim.base_url + "/completions"
    await client.post(url, json={"prompt": PROMPT, "max_tokens": 1})
    for _ in range(3):
        t0 = time.perf_counter()
        r = await client.post(url, json={"prompt": PROMPT, "max_tokens": 1})
        assert r.status_code == 200 and time.perf_counter() - t0 < 0.025


async def test_tokenize_agrees_with_usage(sim, client):
    tok = (await client.post(sim.root_url + "/tokenize", json={"prompt": PROMPT})).json()
    assert set(tok) >= {"count", "max_model_len", "tokens"}
    assert tok["count"] == len(tok["tokens"]) == count_text(PROMPT) + 1  # + BOS
    r = (await client.post(sim.base_url + "/completions",
                           json={"prompt": PROMPT, "max_tokens": 5, "ignore_eos": True})).json()
    assert r["usage"]["prompt_tokens"] == tok["count"]

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": PROMPT}]
    tok_chat = (await client.post(sim.root_url + "/tokenize", json={"messages": messages})).json()
    r = (await client.post(sim.base_url + "/chat/completions",
                           json={"messages": messages, "max_tokens": 3, "ignore_eos": True})).json()
    assert r["usage"]["prompt_tokens"] == tok_chat["count"] > tok["count"]
    bad = await client.post(sim.root_url + "/tokenize", json={"nothing": 1})
    assert bad.status_code == 400


async def test_completion_non_streamed(sim, client):
    r = await client.post(sim.base_url + "/completions", json={"prompt": PROMPT, "max_tokens": 12, "ignore_eos": True})
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    [choice] = body["choices"]
    assert choice["finish_reason"] == "length"
    assert count_text(choice["text"]) == 12 == body["usage"]["completion_tokens"]
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + 12
    gt = body["befori_sim"]
    assert gt["request_id"] == body["id"]
    assert gt["t_received_ns"] < gt["t_first_token_ns"] < gt["t_last_token_ns"]


async def test_completion_stream_with_usage(sim, client):
    s = await stream(client, sim.base_url + "/completions",
                     {"prompt": PROMPT, "max_tokens": 10, "ignore_eos": True,
                      "stream_options": {"include_usage": True}})
    assert s.status == 200 and s.error is None
    assert s.headers["content-type"].startswith("text/event-stream")
    assert s.events[-1] == "[DONE]"
    chunks = s.chunks()
    content, usage = chunks[:-1], chunks[-1]
    assert len(content) == 10  # one chunk per token
    assert all(c["object"] == "text_completion" and c["usage"] is None for c in content)
    assert all(c["choices"][0]["finish_reason"] is None for c in content[:-1])
    assert content[-1]["choices"][0]["finish_reason"] == "length"
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 10
    assert "".join(c["choices"][0]["text"] for c in content) != ""
    gt = usage["befori_sim"]
    assert gt == content[-1]["befori_sim"] and gt["request_id"] == usage["id"]
    # Same clock as ours: the server got the request after we sent it and wrote the first token before we read it.
    assert s.t_send_ns <= gt["t_received_ns"] < gt["t_first_token_ns"] <= s.t_first_content_ns


async def test_chat_stream_and_non_streamed(sim, client):
    messages = [{"role": "user", "content": PROMPT}]
    s = await stream(client, sim.base_url + "/chat/completions", {"messages": messages, "max_tokens": 4,
                                                                  "ignore_eos": True})
    chunks = s.chunks()
    assert s.events[-1] == "[DONE]"
    assert all(c["object"] == "chat.completion.chunk" and "usage" not in c for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [c["choices"][0]["delta"]["content"] for c in chunks[1:]]
    assert len(deltas) == 4 and all(deltas)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length" and "befori_sim" in chunks[-1]

    r = (await client.post(sim.base_url + "/chat/completions", json={"messages": messages, "max_tokens": 4,
                                                                    "ignore_eos": True})).json()
    assert r["object"] == "chat.completion"
    assert r["choices"][0]["message"]["role"] == "assistant"
    assert count_text(r["choices"][0]["message"]["content"]) == 4


async def test_eos_stops_early_when_not_ignored(sim, client):
    reasons = []
    for _ in range(3):
        r = (await client.post(sim.base_url + "/completions", json={"prompt": PROMPT, "max_tokens": 5000})).json()
        reasons.append((r["choices"][0]["finish_reason"], r["usage"]["completion_tokens"]))
    # Mean output is 200 tokens, so 5000 is (almost surely, and deterministically with the seed) never reached.
    assert all(reason == "stop" and 1 <= n < 5000 for reason, n in reasons)


@pytest.mark.parametrize("payload, status", [
    ({"prompt": "x", "model": "no-such-model"}, 404),
    ({"prompt": "x", "max_tokens": 131072}, 400),
    ({"prompt": "x", "max_tokens": 0}, 400),
    ({"prompt": 42}, 400),
    ({"prompt": "x", "n": 2}, 400),
])
async def test_bad_requests(sim, client, payload, status):
    r = await client.post(sim.base_url + "/completions", json=payload)
    assert r.status_code == status
    assert r.json()["object"] == "error" and r.json()["code"] == status


async def test_bad_json(sim, client):
    r = await client.post(sim.base_url + "/completions", content=b"{not json")
    assert r.status_code == 400


async def test_metrics_move_with_load(sim, client):
    before = await _metrics(client, sim.root_url)
    r = await client.post(sim.base_url + "/completions", json={"prompt": PROMPT, "max_tokens": 7, "ignore_eos": True})
    prompt_tokens = r.json()["usage"]["prompt_tokens"]
    after = await _metrics(client, sim.root_url)

    def value(m: dict, name: str, sample: str | None = None) -> float:
        return sum(s.value for s in m[name] if s.name == (sample or name))

    assert value(after, "vllm:generation_tokens", "vllm:generation_tokens_total") \
        - value(before, "vllm:generation_tokens", "vllm:generation_tokens_total") == 7
    assert value(after, "vllm:prompt_tokens", "vllm:prompt_tokens_total") \
        - value(before, "vllm:prompt_tokens", "vllm:prompt_tokens_total") == prompt_tokens
    count = "vllm:time_to_first_token_seconds_count"
    assert value(after, "vllm:time_to_first_token_seconds", count) \
        == value(before, "vllm:time_to_first_token_seconds", count) + 1
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"):
        assert name in after
    assert {s.labels["gpu"] for s in after["DCGM_FI_DEV_POWER_USAGE"]} == {"0"}


async def test_gpu_series_follow_load(sim_factory):
    sim = sim_factory()  # a fresh sim so the shared one's history does not matter
    async with make_client() as client:
        idle = await _metrics(client, sim.root_url)
        # 64 sequences x 3000 tokens: ~1.7 s of real time at time_scale 20; scrape while they run.
        payload = {"prompt": PROMPT * 20, "max_tokens": 3000, "ignore_eos": True}
        load = asyncio.gather(*[client.post(sim.base_url + "/completions", json=payload) for _ in range(64)])
        await asyncio.sleep(1.2)  # past at least one whole GPU tick (0.5 s) under load
        busy = await _metrics(client, sim.root_url)
        await load

    def gpu0(m: dict, name: str) -> float:
        return next(s.value for s in m[name] if s.labels["gpu"] == "0")

    assert gpu0(idle, "DCGM_FI_DEV_POWER_USAGE") == pytest.approx(80, abs=5)
    assert gpu0(busy, "DCGM_FI_DEV_POWER_USAGE") > 300
    assert gpu0(busy, "DCGM_FI_DEV_GPU_UTIL") > 50
    assert gpu0(busy, "DCGM_FI_DEV_SM_CLOCK") > gpu0(idle, "DCGM_FI_DEV_SM_CLOCK")
    assert gpu0(busy, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION") > gpu0(idle, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION")
    assert gpu0(busy, "DCGM_FI_DEV_GPU_TEMP") > gpu0(idle, "DCGM_FI_DEV_GPU_TEMP")
    used, free = gpu0(idle, "DCGM_FI_DEV_FB_USED"), gpu0(idle, "DCGM_FI_DEV_FB_FREE")
    assert used == pytest.approx(15350 + 5400, abs=1) and used + free == pytest.approx(81559, abs=1)


async def test_dbrx_has_eight_gpus(sim_factory):
    sim = sim_factory(profile="dbrx-8xh100")
    async with make_client() as client:
        m = await _metrics(client, sim.root_url)
        names = (await client.get(sim.base_url + "/models")).json()["data"][0]["id"]
    assert "dbrx" in names and "simulated" in names
    for name in ("DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE", "DCGM_FI_DEV_POWER_USAGE",
                 "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_SM_CLOCK", "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"):
        samples = m[name]
        assert sorted(s.labels["gpu"] for s in samples) == [str(i) for i in range(8)]
        assert all("simulated" in s.labels["modelName"] for s in samples)


async def test_debug_requests(sim, client):
    r = (await client.post(sim.base_url + "/completions", json={"prompt": PROMPT, "max_tokens": 3,
                                                               "ignore_eos": True})).json()
    records = (await client.get(sim.root_url + "/debug/requests", params={"limit": 5})).json()
    assert 1 <= len(records) <= 5
    mine = next(x for x in records if x["request_id"] == r["id"])
    for key in ("t_received_ns", "t_first_token_ns", "t_last_token_ns"):
        assert mine[key] == r["befori_sim"][key]
    assert mine["completion_tokens"] == 3 and mine["completed"] is True
    json.dumps(records)
