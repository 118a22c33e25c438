"""The engine model in-process (no HTTP): batch cap, KV budget, chunked prefill, step times."""

from __future__ import annotations

import asyncio
import dataclasses
import time

from befori_tui.sim.engine import Engine, Seq
from befori_tui.sim.profile import Profile, load_profile


def small_profile(**engine: float) -> Profile:
    base = load_profile("llama-3.1-8b-1xh100")
    model = dataclasses.replace(base.model, max_model_len=20_000)
    eng = dataclasses.replace(base.engine, frontend_ms=0.0, **engine)
    return dataclasses.replace(base, model=model, engine=eng)


def seq(i: int, prompt: int, out: int) -> Seq:
    return Seq(f"r{i}", prompt, out, "length", time.perf_counter_ns(), 0.0)


async def run(engine: Engine, seqs: list[Seq]) -> list[tuple[int, int, int]]:
    """Submit all, then record (running, waiting, prefill-done) after every step until all finish."""
    engine.start()
    for s in seqs:
        engine.submit(s)
    trace = []
    try:
        while not all(s.finished for s in seqs):
            await asyncio.wait_for(engine.step_future, 5)
            trace.append((len(engine.running), len(engine.waiting), sum(s.generated > 0 for s in seqs)))
    finally:
        await engine.stop()
    return trace


async def test_batch_cap_queues_the_rest():
    engine = Engine(small_profile(max_num_seqs=2), time_scale=1000)
    seqs = [seq(i, 10, 5) for i in range(5)]
    trace = await run(engine, seqs)
    assert max(r for r, _, _ in trace) == 2
    assert trace[0][1] == 3  # three wait while two run
    assert seqs[2].t_admitted_ns >= seqs[0].t_first_gen_ns
    assert all(s.generated == 5 for s in seqs)
    assert engine.stats.generation_tokens_total == 25 and engine.stats.prompt_tokens_total == 50


async def test_kv_budget_limits_admission():
    # Each sequence needs 10 + 5 = 15 KV tokens; 40 fit two at a time although the seq cap is 256.
    engine = Engine(small_profile(kv_cache_tokens=40), time_scale=1000)
    engine.profile = dataclasses.replace(engine.profile, model=dataclasses.replace(engine.profile.model,
                                                                                  max_model_len=20))
    seqs = [seq(i, 10, 5) for i in range(4)]
    trace = await run(engine, seqs)
    assert max(r for r, _, _ in trace) == 2
    assert engine.kv_reserved_tokens == 0 and engine.kv_used_tokens == 0  # all given back


async def test_chunked_prefill_spreads_a_long_prompt_over_steps():
    engine = Engine(small_profile(), time_scale=1000)
    long, short = seq(0, 20_000 - 10, 3), seq(1, 100, 3)
    trace = await run(engine, [long, short])
    # 8192-token steps: the long prompt takes three steps; the short one waits behind it (FCFS) and
    # gets its first token in the third step, together with the long prompt's.
    assert [t[2] for t in trace[:3]] == [0, 0, 2]
    assert engine.stats.prompt_tokens_total == 20_000 - 10 + 100


async def test_step_time_grows_with_batch():
    prof = small_profile()
    engine = Engine(prof, time_scale=10)
    seqs = [seq(i, 1, 40) for i in range(200)]
    t0 = time.perf_counter()
    await run(engine, seqs)
    elapsed_s = time.perf_counter() - t0
    # One prefill step for 200 one-token prompts, then 39 decode steps at batch 200.
    expected_sim_s = (prof.step_ms(0, 200) + 39 * prof.step_ms(200, 0)) / 1000
    assert engine.stats.steps == 40
    assert abs(engine.stats.busy_sim_s - expected_sim_s) < 1e-9
    assert prof.step_ms(200, 0) > 2 * prof.step_ms(1, 0)
    # Never early; lateness is left to the timing tests (a loaded box only ever makes it late).
    assert elapsed_s >= expected_sim_s / 10


async def test_prefix_cache_skips_cached_prefill_and_forgets_past_its_capacity():
    from befori_tui.sim.engine import PREFIX_BLOCK_TOKENS, block_hashes

    # Room for 4 blocks (64 tokens): a 64-token prompt fits, a second different one pushes it out.
    engine = Engine(small_profile(prefix_cache_tokens=4 * PREFIX_BLOCK_TOKENS), time_scale=1000)
    a, b = list(range(64)), list(range(1000, 1064))

    def make(i: int, ids: list[int]) -> Seq:
        return Seq(f"r{i}", len(ids), 2, "length", time.perf_counter_ns(), 0.0, block_hashes(ids))

    first, again = make(0, a), make(1, a)
    await run(engine, [first])
    await run(engine, [again])
    assert first.cached_tokens == 0
    assert again.cached_tokens == 63  # all of it but the last token, which is always computed (as vLLM)
    longer = make(2, a[:32] + b[:32])  # shares the first two blocks only: chained hashes
    await run(engine, [longer])
    assert longer.cached_tokens == 32
    await run(engine, [make(3, b)])  # evicts the oldest blocks of `a`
    late = make(4, a)
    await run(engine, [late])
    assert late.cached_tokens < 63
    st = engine.stats
    assert st.prefix_cache_hits == 63 + 32 + late.cached_tokens and st.prefix_cache_queries == 5 * 64
    assert st.prompt_tokens_total == 5 * 64  # cached tokens count as prompt tokens, as in vLLM
