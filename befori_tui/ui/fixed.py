"""Deterministic data for snapshot tests and screenshots: a made-up but plausible run (a DBRX-like server at
rising concurrency, eight simulated GPUs), fed to a LiveModel with a frozen clock. No server, no threads."""

from __future__ import annotations

import random
from array import array
from dataclasses import dataclass

from befori_tui.core.config import ApiPrice, Config
from befori_tui.core.loadgen import Level
from befori_tui.core.records import RequestRecord
from befori_tui.core import events as ev
from befori_tui.core.telemetry.readings import GpuReading, ServerReading, TelemetrySample
from befori_tui.ui.model import LiveModel

T0_NS = 1_000_000_000_000  # an arbitrary perf_counter origin


@dataclass
class FixedRun:
    levels: tuple[tuple[int, float], ...] = ((1, 20.0), (8, 20.0), (32, 25.0), (64, 45.0))
    seed: int = 7
    gpus: int = 8
    error_every: int = 97  # roughly one failed request in this many, in the last level


def fixed_config() -> Config:
    cfg = Config()
    cfg.endpoint.url = "http://127.0.0.1:8000/v1"
    cfg.pricing.source = "simulator"  # the demo's simulated 8×H100, priced as `befori-tui` prices it
    cfg.pricing.compare = [ApiPrice("example-api", 1.20, 3.60)]
    return cfg


def _latency(c: int, n_in: int, n_out: int, rnd: random.Random) -> tuple[float, float]:
    """(ttft_s, tpot_s) of a continuous-batching server: both grow with the batch."""
    ttft = (0.006 + n_in / 30_000 + 0.0009 * c) * rnd.uniform(0.85, 1.25)
    tpot = (0.012 + 0.00013 * c) * rnd.uniform(0.97, 1.03)
    return ttft, tpot


def fixed_model(run: FixedRun | None = None, cfg: Config | None = None) -> LiveModel:
    run = run or FixedRun()
    cfg = cfg or fixed_config()
    rnd = random.Random(run.seed)
    t = T0_NS
    bounds = []
    for c, dur in run.levels:
        bounds.append((c, t, t + int(dur * 1e9)))
        t += int(dur * 1e9)
    now_ns = t
    model = LiveModel(cfg.pricing, clock=lambda: now_ns)
    model.info.update({"url": cfg.endpoint.url, "model": "sim/dbrx-instruct (simulated)", "api": "completions",
                       "simulated": True, "prompt_count_source": "tokenize"})
    for i, (c, start, _end) in enumerate(bounds):
        model.open_level(Level(i, c, start, c, "start" if i == 0 else "user"))
    model.levels[-1].t_end_ns = None

    rid = 0
    finished: list[RequestRecord] = []
    in_flight: list[tuple[RequestRecord, int | None]] = []
    free_at: dict[int, int] = {}
    for i, (c, start, end) in enumerate(bounds):
        sent = 0
        for slot in range(c):
            ts = max(start, free_at.get(slot, start)) + int(rnd.uniform(0, 0.02) * 1e9)
            while ts < end:
                n_in = max(50, int(rnd.gauss(550, 150)))
                n_out = 150
                ttft, tpot = _latency(c, n_in, n_out, rnd)
                t_first = ts + int(ttft * 1e9)
                t_end = t_first + int(tpot * (n_out - 1) * 1e9)
                r = RequestRecord(rid, slot, i, c, t_send_ns=ts, input_tokens=n_in, input_tokens_source="tokenize",
                                  output_tokens=n_out, output_tokens_source="usage", content_chunks=n_out)
                rid += 1
                sent += 1
                r.warmup = False
                failed = i == len(bounds) - 1 and rid % run.error_every == 0
                if failed:
                    t_end = ts + int(rnd.uniform(0.05, 2.0) * 1e9)
                    r.error_kind, r.error_message = ("http_status", "HTTP 503") if rid % 2 else ("timeout", "read")
                    r.http_status = 503 if rid % 2 else None
                    r.output_tokens = None
                if t_end > now_ns:  # still running at the frozen "now"
                    r.t_first_token_ns = t_first if t_first <= now_ns else None
                    in_flight.append((r, r.t_first_token_ns))
                    break
                if not failed:
                    r.t_first_token_ns = t_first
                    r.itl_ns = array("q", [int(tpot * 1e9 * rnd.uniform(0.9, 1.1)) for _ in range(n_out - 1)])
                    r.finish_reason = "length"
                    r.http_status = 200
                r.t_end_ns = t_end
                r.outlived_level = t_end > end and i < len(bounds) - 1
                finished.append(r)
                ts = t_end + int(rnd.uniform(0.0005, 0.002) * 1e9)
            free_at[slot] = ts
    # Each level's first c requests (by send time) are its warm-up, as the runner marks them.
    for i, (c, _s, _e) in enumerate(bounds):
        mine = sorted((r for r in finished if r.level == i), key=lambda r: r.t_send_ns)
        for r in mine[:c]:
            r.warmup = True
    for r in sorted(finished, key=lambda r: r.t_end_ns):
        model.add_record(r)
    for r, t_first in in_flight:
        model.apply(ev.RequestStarted(r.request_id, r.slot, r.level, r.t_send_ns))
        if t_first is not None:
            model.apply(ev.FirstToken(r.request_id, r.slot, t_first))
    for s in _samples(bounds, now_ns, run.gpus, rnd):
        model.samples.append(s)
        model.gpu_version += 1
    return model


def _samples(bounds, now_ns: int, gpus: int, rnd: random.Random) -> list[TelemetrySample]:
    out = []
    energy = [5.0e8 + g * 1e6 for g in range(gpus)]
    t = bounds[0][1]
    while t <= now_ns:
        c = next((c for c, s, e in bounds if s <= t < e), bounds[-1][0])
        readings = []
        for g in range(gpus):
            util = min(99.0, 35 + 60 * c / (c + 8)) + rnd.uniform(-2, 2)
            power = 80 + (660 - 80) * c / (c + 25) + rnd.uniform(-8, 8)
            energy[g] += power
            readings.append(GpuReading(
                index=g, name="NVIDIA H100 80GB HBM3 (simulated)", util_pct=util, mem_util_pct=util * 0.6,
                mem_used_mib=38240 + 700 * c ** 0.5 + g * 3, mem_total_mib=81559.0, power_w=power,
                power_limit_w=700.0, temp_c=34 + power * 0.065, sm_clock_mhz=1980 - max(0, power - 600) * 2,
                energy_j=energy[g]))
        out.append(TelemetrySample(t, "dcgm", readings, ServerReading("vllm", float(c), 0.0, 0.02 * c ** 0.5),
                                   simulated=True))
        t += 1_000_000_000
    return out
