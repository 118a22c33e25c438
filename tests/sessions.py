"""Deterministic saved sessions (TOML + raw JSONL) for the report, compare and export tests and the report's
screenshot: a closed-loop run of a made-up continuous-batching server, with a fixed seed, summarised by the
core's own code (summarize_level, summarize_gpus) and written as `bench` writes a session. No server, no clock.

`decode_speed` and `prefill_speed` scale the server: a session with decode_speed=2.0 streams its output twice
as fast, so its $/M output is about half and its ITL about half, while its TTFT (and so $/M input) is the same
— the "known differences" the compare tests check.
"""

from __future__ import annotations

import json
import random
from array import array
from pathlib import Path

from befori_tui.core.config import ApiPrice, PricingConfig
from befori_tui.core.loadgen import Level
from befori_tui.core.metrics import api_comparison, summarize_level
from befori_tui.core.records import RequestRecord
from befori_tui.core.results import SCHEMA_VERSION, write_toml_atomic
from befori_tui.core.telemetry import summarize_gpus
from befori_tui.core.telemetry.readings import GpuReading, TelemetrySample

T0_NS = 5_000_000_000_000


def _latency(c: int, n_in: int, rnd: random.Random, prefill_speed: float, decode_speed: float) -> tuple[float, float]:
    """(ttft_s, tpot_s): both grow with the batch."""
    ttft = (0.006 + n_in / 30_000 + 0.0009 * c) * rnd.uniform(0.85, 1.25) / prefill_speed
    tpot = (0.012 + 0.00013 * c) * rnd.uniform(0.97, 1.03) / decode_speed
    return ttft, tpot


def make_session(path: Path, concurrencies=(1, 8, 32, 64), seconds_per_level: float = 6.0, seed: int = 7,
                 prefill_speed: float = 1.0, decode_speed: float = 1.0, output_tokens: int = 60,
                 gpus: int = 8, optimum: dict | None = None, fail_every: int = 0,
                 api_compare: tuple[tuple[str, float, float], ...] = (("example-api", 1.20, 3.60),)) -> Path:
    """Write PATH (the session TOML) and PATH.jsonl; return PATH."""
    path = Path(path)
    rnd = random.Random(seed)
    pricing = PricingConfig(usd_per_hour=27.78, gpu_count=gpus, source="simulator",
                            compare=[ApiPrice(n, i, o) for n, i, o in api_compare])
    levels: list[Level] = []
    records: list[RequestRecord] = []
    t = T0_NS
    free_at: dict[int, int] = {}
    rid = 0
    for i, c in enumerate(concurrencies):
        start, end = t, t + int(seconds_per_level * 1e9)
        lv = Level(i, c, start, c, "start" if i == 0 else "sweep", t_end_ns=end)
        levels.append(lv)
        mine: list[RequestRecord] = []
        for slot in range(c):
            ts = max(start, free_at.get(slot, start)) + int(rnd.uniform(0, 0.02) * 1e9)
            while ts < end:
                n_in = max(50, int(rnd.gauss(550, 150)))
                ttft, tpot = _latency(c, n_in, rnd, prefill_speed, decode_speed)
                t_first = ts + int(ttft * 1e9)
                t_end = t_first + int(tpot * (output_tokens - 1) * 1e9)
                r = RequestRecord(rid, slot, i, c, t_send_ns=ts, input_tokens=n_in, input_tokens_source="tokenize",
                                  output_tokens=output_tokens, output_tokens_source="usage",
                                  content_chunks=output_tokens)
                rid += 1
                if fail_every and rid % fail_every == 0:
                    r.t_end_ns = ts + int(rnd.uniform(0.05, 0.5) * 1e9)
                    r.error_kind, r.error_message, r.http_status = "http_status", "HTTP 503", 503
                    r.output_tokens, r.content_chunks = None, 0
                else:
                    r.t_headers_ns = ts + int(ttft * 0.5e9)
                    r.t_first_token_ns = t_first
                    r.itl_ns = array("q", [int(tpot * 1e9 * rnd.uniform(0.9, 1.1)) for _ in range(output_tokens - 1)])
                    r.t_end_ns = t_end
                    r.finish_reason, r.http_status = "length", 200
                r.outlived_level = r.t_end_ns > end
                records.append(r)
                mine.append(r)
                lv.sent += 1
                ts = r.t_end_ns + int(rnd.uniform(0.0005, 0.002) * 1e9)
            free_at[slot] = ts
        for r in sorted(mine, key=lambda r: r.t_send_ns)[:c]:  # each slot's first request warms it up
            r.warmup = True
        lv.records.extend(mine)
        t = end
    samples = _samples(levels, t, gpus, rnd) if gpus else []
    summaries = []
    for lv in levels:
        s = summarize_level(lv, pricing, records, lv.t_end_ns)
        if samples:
            out_tokens = sum(r.output_tokens or 0 for r in records if r.ok and r.level == lv.index)
            s["gpu"] = summarize_gpus(samples, lv.t_start_ns, lv.t_end_ns, output_tokens=out_tokens)
        summaries.append(s)
    data = {
        "schema_version": SCHEMA_VERSION, "tool": "befori-tui", "version": "0.1.0",
        "started_at": "2026-01-01T00:00:00+00:00", "saved_at": "2026-01-01T00:01:00+00:00",
        "interrupted": False, "ended_by": "completed", "raw_records": path.with_suffix(".jsonl").name,
        "endpoint": {"url": "http://127.0.0.1:8000/v1", "api": "completions", "model": "sim/dbrx-instruct (simulated)"},
        "workload": {"input_tokens_mean": 550, "input_tokens_sd": 150.0, "output_tokens_mean": output_tokens,
                     "output_tokens_sd": 0.0, "ignore_eos": True, "prompt_source": "sonnets", "seed": seed},
        "load": {"concurrency": list(concurrencies), "seconds_per_level": seconds_per_level},
        "pricing": {"usd_per_hour": pricing.usd_per_hour, "source": pricing.source, "gpu_count": gpus,
                    "usd_per_gpu_hour": pricing.usd_per_hour / max(gpus, 1), "usd_per_kwh": 0.0,
                    "blend_input_per_output": pricing.blend_input_per_output},
        "api_compare": api_comparison(pricing),
        "telemetry": {"gpu_source": "dcgm:http://127.0.0.1:8000/metrics" if gpus else "none",
                      "note": "" if gpus else "--telemetry none"},
        "levels": summaries,
    }
    if optimum is not None:
        # $/M left out of the optimum: the level's own (what issue 10's search reports for the level it picks).
        at = next(lv for lv in summaries if lv["concurrency"] == optimum["concurrency"])
        data["optimum"] = {**{k: at[k] for k in ("usd_per_million_input", "usd_per_million_output")}, **optimum}
    write_toml_atomic(path, data)
    with open(path.with_suffix(".jsonl"), "w", encoding="utf-8") as f:
        for r in sorted(records, key=lambda r: r.t_end_ns):
            f.write(json.dumps(r.to_json_dict(), separators=(",", ":")) + "\n")
    return path


def _samples(levels: list[Level], t_end: int, gpus: int, rnd: random.Random) -> list[TelemetrySample]:
    out = []
    energy = [5.0e8 + g * 1e6 for g in range(gpus)]
    t = levels[0].t_start_ns - 10**9
    while t <= t_end + 10**9:
        c = next((lv.concurrency for lv in levels if lv.t_start_ns <= t < lv.t_end_ns), levels[-1].concurrency)
        readings = []
        for g in range(gpus):
            util = min(99.0, 35 + 60 * c / (c + 8)) + rnd.uniform(-2, 2)
            power = 80 + (660 - 80) * c / (c + 25) + rnd.uniform(-8, 8)
            energy[g] += power * 0.5
            readings.append(GpuReading(
                index=g, name="NVIDIA H100 80GB HBM3 (simulated)", util_pct=util, mem_util_pct=util * 0.6,
                mem_used_mib=38240 + 700 * c ** 0.5, mem_total_mib=81559.0, power_w=power, power_limit_w=700.0,
                temp_c=34 + power * 0.065, sm_clock_mhz=1980.0, energy_j=energy[g]))
        out.append(TelemetrySample(t, "dcgm", readings, None, simulated=True))
        t += 500_000_000
    return out
