"""What the live screen's summaries cost as a session grows.

Twice a second the monitor summarises the current level (percentiles, both cost methods, the bootstrap
interval) in a worker thread, which holds the GIL that the load loop needs. Finished levels are cached, so
the cost that matters is the *current* level's as it grows. This builds deterministic sessions
(`befori_tui/ui/fixed.py`: one open level at 64 slots, ~150 output tokens per request) of rising length and
times one `SummaryCache.compute` on each (median of repeats), with its peak Python memory (tracemalloc).

    .venv/bin/python bench/summary_cost.py                 # level lengths 300, 1200, 3600 s; 5 repeats
    .venv/bin/python bench/summary_cost.py --seconds 600 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from befori_tui.ui.fixed import FixedRun, fixed_config, fixed_model  # noqa: E402
from befori_tui.ui.model import SummaryCache  # noqa: E402


def measure(seconds: float, repeats: int) -> dict:
    cfg = fixed_config()
    model = fixed_model(FixedRun(levels=((64, seconds),), error_every=10**9), cfg)
    levels, records, samples = model.snapshot()
    now_ns = model.clock()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        SummaryCache().compute(levels, records, samples, cfg.pricing, now_ns, 60.0)
        times.append(time.perf_counter() - t0)
    tracemalloc.start()
    SummaryCache().compute(levels, records, samples, cfg.pricing, now_ns, 60.0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"seconds": seconds, "records": len(levels[-1].records), "ms": 1000 * statistics.median(times),
            "peak_mib": peak / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, nargs="+", default=[300.0, 1200.0, 3600.0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, Python {sys.version.split()[0]}, median of {args.repeats}")
    print("| level length | records | one summary | share of a core at 2 Hz | peak memory |")
    print("|---|---|---|---|---|")
    for s in args.seconds:
        m = measure(s, args.repeats)
        print(f"| {m['seconds']:.0f} s | {m['records']:,} | {m['ms']:.1f} ms | {m['ms'] * 2 / 10:.0f}% "
              f"| {m['peak_mib']:.0f} MiB |", flush=True)


if __name__ == "__main__":
    main()
