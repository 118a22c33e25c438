"""The engine model: continuous batching with chunked prefill, as vLLM does it, in one asyncio task.

Each step: admit waiting requests while the running-sequence cap and the KV-cache budget allow, give every
running sequence past its prefill one decode token, fill the rest of the step's token budget with prefill
chunks, sleep the step time, then wake all streams at once (one shared future per step, never one per token).

    step_ms = base + k * decode_seqs + prefill_tokens_in_step / P        (divided by time_scale)

A sequence whose prefill completes in a step gets its first token at the end of that step. Steps follow
each other on an absolute timeline, so small delays in the loop do not add up; if the loop falls behind by
more than a step it starts afresh and counts the lag (`EngineStats`).

Prefix cache (as vLLM's automatic prefix caching): a prompt is hashed in blocks of PREFIX_BLOCK_TOKENS, each
hash chained to the one before, so a block matches only behind the same prefix. When a sequence is admitted,
its leading blocks found in the cache are not prefilled again (at least one token always is, as in vLLM);
once its prefill is done its blocks join the cache, least recently used dropped past the profile's
`prefix_cache_tokens`. Hits and queries are counted in tokens.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass

from befori_tui.sim.profile import Profile

# asyncio sleeps wake up to ~2 ms late: the selector rounds the timeout up to whole milliseconds, and epoll
# rounds the float up again (measured here: a 25.8 ms sleep took 1.9 ms longer at the median, 2.3 ms at most).
# So sleep until this close to the deadline and then yield in a loop: step times stay within tens of µs.
_SPIN_S = 0.0025

# vLLM's buckets for vllm:time_to_first_token_seconds.
TTFT_BUCKETS_S = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                  20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)


PREFIX_BLOCK_TOKENS = 16  # vLLM's default KV block size


def block_hashes(token_ids: Sequence[int]) -> tuple[int, ...]:
    """Chained hashes of the prompt's full blocks: block i's hash stands for all tokens up to its end."""
    out = []
    h = 0
    for i in range(0, len(token_ids) - PREFIX_BLOCK_TOKENS + 1, PREFIX_BLOCK_TOKENS):
        h = hash((h, tuple(token_ids[i:i + PREFIX_BLOCK_TOKENS])))
        out.append(h)
    return tuple(out)


async def sleep_until(deadline_s: float) -> None:
    """Sleep until time.perf_counter() >= deadline_s, without asyncio's millisecond oversleep."""
    while True:
        remaining = deadline_s - time.perf_counter()
        if remaining <= 0:
            return
        await asyncio.sleep(remaining - _SPIN_S if remaining > _SPIN_S else 0)


class Seq:
    """One request inside the engine. The HTTP handler reads `generated` and `finished` after each step."""

    __slots__ = ("request_id", "prompt_tokens", "target_tokens", "finish_reason", "ready_s", "t_received_ns",
                 "t_admitted_ns", "t_first_gen_ns", "prefilled", "generated", "finished", "aborted", "blocks",
                 "cached_tokens")

    def __init__(self, request_id: str, prompt_tokens: int, target_tokens: int, finish_reason: str,
                 t_received_ns: int, ready_s: float, blocks: tuple[int, ...] = ()) -> None:
        self.request_id = request_id
        self.prompt_tokens = prompt_tokens
        self.target_tokens = target_tokens  # output length, decided on arrival (max_tokens or a seeded EOS)
        self.finish_reason = finish_reason
        self.t_received_ns = t_received_ns
        self.ready_s = ready_s  # perf_counter() time after which the engine may admit it (frontend delay)
        self.t_admitted_ns = 0
        self.t_first_gen_ns = 0
        self.prefilled = 0
        self.generated = 0
        self.finished = False
        self.aborted = False
        self.blocks = blocks  # block_hashes() of the prompt, for the prefix cache
        self.cached_tokens = 0  # prompt tokens the prefix cache served: not prefilled


@dataclass(slots=True)
class EngineStats:
    steps: int = 0
    busy_sim_s: float = 0.0  # summed step time in simulated seconds
    busy_energy_j: float = 0.0  # per-GPU energy of busy steps, simulated seconds (see gpu.py)
    prompt_tokens_total: int = 0
    generation_tokens_total: int = 0
    requests_finished: int = 0
    requests_aborted: int = 0
    late_steps: int = 0  # steps that began more than one step late: the sim could not keep its timing
    lag_s_total: float = 0.0
    max_lag_s: float = 0.0
    gc_pauses: int = 0  # Python's cyclic GC stops the loop; counted so capacity runs can tell
    gc_pause_s_total: float = 0.0
    gc_pause_s_max: float = 0.0
    prefix_cache_queries: int = 0  # prompt tokens looked up in the prefix cache (vLLM's counter of that name)
    prefix_cache_hits: int = 0  # of those, tokens found there


class Engine:
    def __init__(self, profile: Profile, time_scale: float = 1.0) -> None:
        self.profile = profile
        self.time_scale = time_scale
        self.waiting: deque[Seq] = deque()
        self.running: list[Seq] = []
        self.kv_reserved_tokens = 0  # admission budget: prompt + output of every running sequence
        self.kv_used_tokens = 0  # what the running sequences hold now
        self.last_decode_seqs = 0
        self.stats = EngineStats()
        self.ttft_bucket_counts = [0] * (len(TTFT_BUCKETS_S) + 1)
        self.ttft_sum_s = 0.0
        self.prefix_cache: OrderedDict[int, None] = OrderedDict()  # block hash → (), least recently used first
        self.prefix_cache_blocks = profile.engine.prefix_cache_tokens // PREFIX_BLOCK_TOKENS
        self._work = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self.step_future: asyncio.Future[None] = self._loop.create_future()
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sim-engine")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def submit(self, seq: Seq) -> None:
        self.waiting.append(seq)
        self._work.set()

    def kick(self) -> None:
        """Wake every stream now (a client went away), as if a step had ended."""
        fut, self.step_future = self.step_future, self._loop.create_future()
        fut.set_result(None)

    def stats_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self.stats)

    # -- the loop ----------------------------------------------------------------------------------------
    def _admit(self, now_s: float) -> None:
        e = self.profile.engine
        while self.waiting and len(self.running) < e.max_num_seqs:
            seq = self.waiting[0]
            if seq.aborted:
                self.waiting.popleft()
                self._finish(seq)
                continue
            if seq.ready_s > now_s:
                break
            need = seq.prompt_tokens + seq.target_tokens
            if self.kv_reserved_tokens + need > e.kv_cache_tokens:
                break  # FCFS: the head waits for KV space, as vLLM's scheduler does
            self.waiting.popleft()
            self.kv_reserved_tokens += need
            seq.t_admitted_ns = time.perf_counter_ns()
            self._lookup(seq)
            self.running.append(seq)

    def _lookup(self, seq: Seq) -> None:
        """The prompt's leading blocks that are cached are not prefilled again."""
        if not self.prefix_cache_blocks:
            return
        cache, hits = self.prefix_cache, 0
        for h in seq.blocks:
            if h not in cache:
                break
            cache.move_to_end(h)
            hits += 1
        seq.cached_tokens = min(hits * PREFIX_BLOCK_TOKENS, seq.prompt_tokens - 1)
        seq.prefilled = seq.cached_tokens
        self.stats.prefix_cache_queries += seq.prompt_tokens
        self.stats.prefix_cache_hits += seq.cached_tokens
        self.stats.prompt_tokens_total += seq.cached_tokens  # vLLM counts a prompt's cached tokens there too

    def _remember(self, seq: Seq) -> None:
        if not self.prefix_cache_blocks:
            return
        cache = self.prefix_cache
        for h in seq.blocks:
            cache[h] = None
            cache.move_to_end(h)
        while len(cache) > self.prefix_cache_blocks:
            cache.popitem(last=False)

    def _finish(self, seq: Seq) -> None:
        seq.finished = True
        if seq.aborted:
            self.stats.requests_aborted += 1
        else:
            self.stats.requests_finished += 1

    def _observe_ttft(self, ttft_s: float) -> None:
        self.ttft_bucket_counts[bisect.bisect_left(TTFT_BUCKETS_S, ttft_s)] += 1
        self.ttft_sum_s += ttft_s

    async def _run(self) -> None:
        e = self.profile.engine
        busy_w = self._busy_power_w
        scale = self.time_scale
        last_deadline: float | None = None  # end of the previous step, if the engine has been busy since
        while True:
            if not self.running:
                last_deadline = None
                if not self.waiting:
                    self._work.clear()
                    await self._work.wait()
                    continue
                head = self.waiting[0]
                if not head.aborted and head.ready_s > time.perf_counter():
                    await sleep_until(head.ready_s)
                    # The first step starts when the head became ready, not when this loop got round to it.
                    last_deadline = head.ready_s
            now = time.perf_counter()
            self._admit(now)
            if not self.running:
                continue  # the head is still waiting for its frontend delay or was aborted

            # Plan: decode tokens first (one per sequence past prefill), then prefill chunks in admission order.
            budget = e.max_num_batched_tokens
            decode = [s for s in self.running if s.prefilled >= s.prompt_tokens]
            budget -= len(decode)
            prefill: list[tuple[Seq, int]] = []
            prefill_tokens = 0
            for s in self.running:
                if budget <= 0:
                    break
                left = s.prompt_tokens - s.prefilled
                if left > 0:
                    chunk = min(left, budget)
                    prefill.append((s, chunk))
                    budget -= chunk
                    prefill_tokens += chunk
            n_decode = len(decode)
            step_sim_s = self.profile.step_ms(n_decode, prefill_tokens) / 1000.0
            step_s = step_sim_s / scale

            start = now
            if last_deadline is not None:
                lag = now - last_deadline
                if lag <= step_s:
                    start = last_deadline  # absorb the loop's own work into the timeline
                else:
                    self.stats.late_steps += 1
                    self.stats.lag_s_total += lag
                    self.stats.max_lag_s = max(self.stats.max_lag_s, lag)
            deadline = start + step_s
            await sleep_until(deadline)
            last_deadline = deadline
            t_end_ns = time.perf_counter_ns()

            # Apply the step.
            for s in decode:
                s.generated += 1
            emitted = n_decode
            for s, chunk in prefill:
                s.prefilled += chunk
                if s.prefilled >= s.prompt_tokens:
                    self._remember(s)
                    s.generated = 1
                    s.t_first_gen_ns = t_end_ns
                    emitted += 1
                    self._observe_ttft((t_end_ns - s.t_received_ns) / 1e9)
            st = self.stats
            st.steps += 1
            st.busy_sim_s += step_sim_s
            st.busy_energy_j += busy_w(n_decode, prefill_tokens) * step_sim_s
            st.prompt_tokens_total += prefill_tokens
            st.generation_tokens_total += emitted
            self.kv_used_tokens += prefill_tokens + emitted
            self.last_decode_seqs = n_decode

            still: list[Seq] = []
            for s in self.running:
                if s.generated >= s.target_tokens or s.aborted:
                    self.kv_reserved_tokens -= s.prompt_tokens + s.target_tokens
                    self.kv_used_tokens -= s.prefilled + s.generated
                    self._finish(s)
                else:
                    still.append(s)
            self.running = still

            self.kick()  # one future wakes every stream

    def _busy_power_w(self, decode_seqs: int, prefill_tokens: int) -> float:
        """Per-GPU power while a step runs: rises with the batch, prefill counts as compute-bound batch."""
        g = self.profile.gpu
        b = decode_seqs + prefill_tokens / g.prefill_tokens_per_seq
        x = max(0.0, b - 1.0)
        return min(g.power_limit_w, g.batch1_w + (g.max_busy_w - g.batch1_w) * x / (x + g.power_half_batch))

    def expected_step_ms(self, decode_seqs: int, prefill_tokens: int = 0) -> float:
        """Real (scaled) step duration; tests compare ground-truth timings with it."""
        return self.profile.step_ms(decode_seqs, prefill_tokens) / self.time_scale
