"""What Ray adds: the same workload at the same total concurrency with 1 local load process, 2 local load
processes and 2 Ray actors (core/raypool.py) against the simulator.

One simulator with the flat profile of bench/fidelity.py (every engine step 20 ms, an 80 ms front end; 64
input / 32 output tokens) and one local Ray cluster (started here on 127.0.0.1, its services on loopback)
serve every run. Each run is `befori-tui bench` as a child process, as a user runs it, for `--seconds` at one
concurrency, in turn: `local1` (--workers 1), `local2` (--workers 2), `ray2` (--ray ADDRESS --workers 2),
repeated `--runs` times alternately so that the box's load falls on all three alike. Per run, from the raw
JSONL (requests sent in the first `--warmup-s` left out): the client's TTFT p50/p99 and ITL p99, and the same
as excess over the simulator's own figures (its ground truth, same CLOCK_MONOTONIC): what the client added.
Also each run's wall time (start-up and shut-down included beside the seconds of load), and the load average.
Medians of the runs are printed, and every run as JSON lines.

    .venv/bin/python bench/ray_overhead.py                                # c = 64 256, 3 runs × 8 s
    .venv/bin/python bench/ray_overhead.py --concurrency 64 --runs 1 --seconds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import fidelity as F  # noqa: E402
import ui_pty  # noqa: E402
from befori_tui.sim.launch import start_sim  # noqa: E402

MODES = ("local1", "local2", "ray2")


def _pct(values: list[float], p: float) -> float:
    return F._pct(values, p)


def figures(path: Path, warmup_s: float) -> dict[str, float]:
    """Client TTFT p50/p99 and ITL p99, and their excess over the server's figures, in ms."""
    raw = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    ok = [r for r in raw if r["error_kind"] is None and r["t_first_token_ns"] is not None and r["server_timing"]]
    if not ok:
        return {"n": 0}
    t_from = min(r["t_send_ns"] for r in ok) + int(warmup_s * 1e9)
    ttft, itl, ttft_x, itl_x = [], [], [], []
    for r in ok:
        if r["t_send_ns"] < t_from:
            continue
        gt = r["server_timing"]
        t = (r["t_first_token_ns"] - r["t_send_ns"]) / 1e6
        ttft.append(t)
        ttft_x.append(t - (gt["t_first_token_ns"] - gt["t_received_ns"]) / 1e6)
        itl.extend(g / 1e6 for g in r["itl_ns"])
        n = r["content_chunks"]
        if n > 1:
            client = sum(r["itl_ns"])
            server = gt["t_last_token_ns"] - gt["t_first_token_ns"]
            itl_x.append((client - server) / (n - 1) / 1e6)
    return {"n": len(ttft), "ttft_ms_p50": _pct(ttft, 50), "ttft_ms_p99": _pct(ttft, 99), "itl_ms_p99": _pct(itl, 99),
            "ttft_excess_ms_p50": _pct(ttft_x, 50), "ttft_excess_ms_p99": _pct(ttft_x, 99),
            "itl_excess_ms_p99": _pct(itl_x, 99),
            "workers": len({(r["worker"] or {}).get("pid") for r in raw})}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--warmup-s", type=float, default=2.0)
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    args = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # the cluster on 127.0.0.1 only
    from befori_tui.core.raypool import RayOwner

    import ray

    befori = [str(Path(sys.executable).with_name("befori-tui"))]
    print(f"load average before: {os.getloadavg()}", flush=True)
    owner = RayOwner.start(num_cpus=4, include_dashboard=False)
    address = ray.get_runtime_context().gcs_address
    results: dict[tuple[str, int], list[dict]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            profile = F.flat_profile(tmp, max(args.concurrency) + 8)
            with start_sim(profile=profile, time_scale=1.0) as sim:
                for c in args.concurrency:
                    for i in range(args.runs):
                        for mode in args.modes:
                            extra = list(F.CLI_FLAGS)
                            extra += {"local1": ["--workers", "1"], "local2": ["--workers", "2"],
                                      "ray2": ["--ray", address, "--workers", "2"]}[mode]
                            out = Path(tmp) / f"{mode}-{c}-{i}.toml"
                            load_before = os.getloadavg()[0]
                            res = ui_pty.run_headless(befori, sim.base_url, c, args.seconds, out, extra, None,
                                                      output_tokens=F.OUTPUT_TOKENS)
                            if res.get("exit_code") != 0:
                                print(f"  !! {mode} c={c}: exit {res.get('exit_code')}\n{res.get('log_tail')}",
                                      file=sys.stderr, flush=True)
                                continue
                            levels = tomllib.loads(out.read_text()).get("levels") or [{}]
                            # The load processes' own CPU (Ray actors are not this benchmark's children).
                            cpu = sum(w.get("cpu_pct", 0) for w in levels[0].get("workers", []))
                            row = {"mode": mode, "c": c, "run": i, **figures(out.with_suffix(".jsonl"), args.warmup_s),
                                   "load_cpu_pct": round(cpu, 1) if cpu else None,
                                   "wall_s": res["wall_s"], "cpu_s": res.get("cpu_s"), "load1": load_before}
                            print(json.dumps(row), flush=True)
                            results.setdefault((mode, c), []).append(row)
    finally:
        owner.stop()
    print(f"load average after: {os.getloadavg()}", flush=True)
    keys = ["ttft_ms_p50", "ttft_ms_p99", "itl_ms_p99", "ttft_excess_ms_p50", "ttft_excess_ms_p99",
            "itl_excess_ms_p99", "wall_s"]
    print("\nmedians of the runs (ms; wall in s)")
    print("| c | mode | runs | " + " | ".join(keys) + " |")
    for (mode, c), rows in sorted(results.items(), key=lambda kv: (kv[0][1], MODES.index(kv[0][0]))):
        med = [statistics.median(r[k] for r in rows) for k in keys]
        print(f"| {c} | {mode} | {len(rows)} | " + " | ".join(f"{v:.2f}" for v in med) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
