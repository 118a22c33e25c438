"""Timing fidelity and saturation, measured with the simulator's ground-truth fields."""

from __future__ import annotations

import asyncio
import statistics

import httpx

from befori_tui.sim.profile import load_profile
from tests.test_sim_api import make_client, stream

PROFILE = "llama-3.1-8b-1xh100"


async def test_timing_matches_profile_at_low_load(sim_factory):
    """At concurrency 1 and time_scale 1, TTFT and inter-token time are the profile's to within 1 ms.

    Medians over five requests: on a shared 2-core box the OS may deschedule the sim now and then, and that
    only ever makes it late.
    """
    prof = load_profile(PROFILE)
    # The same prompt six times: without the prefix cache, so each one is prefilled whole.
    sim = sim_factory(profile=PROFILE, time_scale=1.0, prefix_cache_tokens=0)
    prompt = "word " * 500
    n_out = 30
    async with make_client() as client:
        prompt_tokens = (await client.post(sim.root_url + "/tokenize", json={"prompt": prompt})).json()["count"]
        runs = [await stream(client, sim.base_url + "/completions",
                             {"prompt": prompt, "max_tokens": n_out, "ignore_eos": True}) for _ in range(6)]
    # Engine: the frontend delay, then one step with the whole prompt that also yields the first token,
    # then one decode step per further token.
    ttft_expected_ms = prof.engine.frontend_ms + prof.step_ms(0, prompt_tokens)
    decode_expected_ms = (n_out - 1) * prof.step_ms(1, 0)
    ttft_ms, decode_ms = [], []
    for s in runs[1:]:  # the first request warms the process up
        gt = s.ground_truth()
        ttft_ms.append((gt["t_first_token_ns"] - gt["t_received_ns"]) / 1e6)
        decode_ms.append((gt["t_last_token_ns"] - gt["t_first_token_ns"]) / 1e6)
    assert abs(statistics.median(ttft_ms) - ttft_expected_ms) < 1.0, (ttft_ms, ttft_expected_ms)
    # All 29 decode steps together within 1 ms: steps keep to an absolute timeline and do not drift.
    assert abs(statistics.median(decode_ms) - decode_expected_ms) < 1.0, (decode_ms, decode_expected_ms)


async def _ttfts(client: httpx.AsyncClient, url: str, concurrency: int) -> list[float]:
    payload = {"prompt": "lorem ipsum dolor sit amet " * 100, "max_tokens": 16, "ignore_eos": True}
    runs = await asyncio.gather(*[stream(client, url, payload) for _ in range(concurrency)])
    assert all(r.error is None and r.status == 200 for r in runs)
    return [(r.ground_truth()["t_first_token_ns"] - r.ground_truth()["t_received_ns"]) / 1e9 for r in runs]


async def test_ttft_grows_with_queueing(sim_factory):
    """256 concurrent streams: chunked prefill and the batch cap make TTFT far longer than at 1."""
    sim = sim_factory(profile=PROFILE, time_scale=20.0)
    url = sim.base_url + "/completions"
    async with make_client() as client:
        single = statistics.median([(await _ttfts(client, url, 1))[0] for _ in range(3)])
    # A fresh client: httpx's pool gets slow to hand out hundreds of kept-alive connections, which would
    # spread the arrivals out over seconds and hide the queue.
    async with make_client(30, limits=httpx.Limits(max_connections=300)) as client:
        crowd = statistics.median(await _ttfts(client, url, 256))
        engine = (await client.get(sim.root_url + "/debug/engine")).json()
    assert crowd > 8 * single, (crowd, single, engine)
    assert engine["requests_finished"] >= 259
