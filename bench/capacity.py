"""How many concurrent streams and streamed tokens/s one befori-tui process ingests before its own timing slips.

For each step time (one token per stream per step, so tokens/s ≈ streams × 1000 / step_ms) and each stream
count, the simulator (flat profile, pinned to one core) is driven alternately by bench/reference_client.py
and by befori-tui headless (pinned to the other core), as in bench/fidelity.py. A point passes while
befori-tui's TTFT excess over the server's own figure is within `--limit-ms` (default 1 ms) of the
reference client's at p50. Also reported: the tokens/s befori-tui actually received, its CPU use (of one
core), and its load-loop lag.

    .venv/bin/python bench/capacity.py                                   # 128..1024 streams, 20 and 10 ms steps
    .venv/bin/python bench/capacity.py --streams 512 --step-ms 20 --runs 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fidelity as F  # noqa: E402


def _tokens_per_s(records: list[dict], t_from_ns: int, t_to_ns: int) -> float:
    """Tokens of requests sent in [t_from, t_to) per second of that window (a closed loop's steady rate)."""
    n = sum(r["tokens"] for r in records if r["ok"] and t_from_ns <= r["t_send_ns"] < t_to_ns)
    return n / ((t_to_ns - t_from_ns) / 1e9)


def point(sim, model: str, streams: int, seconds: float, warmup_s: float, runs: int, tmp: str) -> dict:
    out: dict[str, list] = {"ref": [], "ours": [], "tok_s": [], "cpu_pct": [], "lag_p99": []}
    for i in range(runs):
        t0 = time.perf_counter_ns()
        recs, _ = F.run_ref(sim.root_url, model, streams, seconds)
        out["ref"].append(F.excess(recs, warmup_s)["ttft_ms_p50"])
        t0 = time.perf_counter_ns()
        cpu0 = time.process_time()
        recs, health = F.run_headless(sim.base_url, streams, seconds, Path(tmp) / f"cap-{streams}-{i}.toml")
        cpu_s = time.process_time() - cpu0
        t_end = t0 + int(seconds * 1e9)
        out["ours"].append(F.excess(recs, warmup_s)["ttft_ms_p50"])
        # Requests sent in the last ~E2E of the run were cut off: count a window that ends a second early.
        out["tok_s"].append(_tokens_per_s(recs, t0 + int(warmup_s * 1e9), t_end - 10**9))
        out["cpu_pct"].append(100 * cpu_s / seconds)
        out["lag_p99"].append(health.get("client_loop_lag_ms_p99", float("nan")))
    med = {k: statistics.median(v) for k, v in out.items()}
    med["over_ref_ms"] = med["ours"] - med["ref"]
    return med


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--streams", type=int, nargs="+", default=[128, 256, 512, 768, 1024])
    p.add_argument("--step-ms", type=float, nargs="+", default=[20.0, 10.0])
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--warmup-s", type=float, default=3.0)
    p.add_argument("--limit-ms", type=float, default=1.0)
    p.add_argument("--json", help="also write every point here")
    args = p.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
          f"load average {os.getloadavg()[0]:.2f}; medians of {args.runs} runs of {args.seconds:g} s", flush=True)
    print("| step | streams | tokens/s received | TTFT − server p50, ref | befori-tui | over ref | CPU (of one core) "
          "| loop lag p99 | within limit |")
    print("|---|---|---|---|---|---|---|---|---|", flush=True)
    points = []
    with tempfile.TemporaryDirectory() as tmp:
        for step in args.step_ms:
            profile = F.flat_profile(tmp, max(1024, 2 * max(args.streams)), step_ms=step)
            with F.start_sim(profile=profile) as sim:
                if len(cpus) >= 2:
                    os.sched_setaffinity(sim.pid, {cpus[0]})
                    os.sched_setaffinity(0, {cpus[1]})
                try:
                    with urllib.request.urlopen(sim.base_url + "/models", timeout=10) as resp:
                        model = json.loads(resp.read())["data"][0]["id"]
                    for n in args.streams:
                        m = point(sim, model, n, args.seconds, args.warmup_s, args.runs, tmp)
                        ok = m["over_ref_ms"] <= args.limit_ms
                        points.append({"step_ms": step, "streams": n, **m, "within": ok})
                        print(f"| {step:g} ms | {n} | {m['tok_s']:,.0f} | {m['ref']:.2f} ms | {m['ours']:.2f} ms "
                              f"| {m['over_ref_ms']:+.2f} ms | {m['cpu_pct']:.0f}% | {m['lag_p99']:.1f} ms "
                              f"| {'yes' if ok else 'no'} |", flush=True)
                finally:
                    os.sched_setaffinity(0, set(cpus))
    best = max((pt for pt in points if pt["within"]), key=lambda pt: pt["tok_s"], default=None)
    if best:
        print(f"# most within {args.limit_ms:g} ms: {best['streams']} streams, {best['tok_s']:,.0f} tokens/s "
              f"(step {best['step_ms']:g} ms)")
    print(f"# load average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(points, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
