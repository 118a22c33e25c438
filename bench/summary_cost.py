"""What the live screen's summaries cost as a session grows.

Twice a second the monitor summarises the current level (percentiles, both cost methods, the bootstrap
interval) in a worker thread, which holds the GIL that the load loop needs. Finished levels are cached, so
the cost that matters is the *current* level's as it grows. This builds deterministic sessions
(`befori_tui/ui/fixed.py`: one open level at 64 slots, ~150 output tokens per request) of rising length and
times `SummaryCache.compute` on each (median of repeats): the first summary of the level, and the one half a
second later, with the cache the screen keeps between the two, and that one's peak Python memory (tracemalloc).

    .venv/bin/python bench/summary_cost.py                 # level lengths 300, 1200, 3600 s; 5 repeats
    .venv/bin/python bench/summary_cost.py --seconds 600 --repeats 3
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from befori_tui.ui.fixed import FixedRun, fixed_config, fixed_model  # noqa: E402
from befori_tui.core.ledger import OccupancyLedger  # noqa: E402
from befori_tui.core.levelstats import LevelRecords  # noqa: E402
from befori_tui.ui import model as model_module  # noqa: E402
from befori_tui.ui.model import SummaryCache  # noqa: E402


def measure(seconds: float, repeats: int) -> dict:
    cfg = fixed_config()
    model_module.RECENT_MAX = 10**8  # keep every fixed record, to feed the levels below
    model = fixed_model(FixedRun(levels=((64, seconds),), error_every=10**9), cfg)
    _levels, _occupancy, samples = model.snapshot()
    records = list(model.records)
    now_ns = model.clock()
    level = model.levels[-1]
    # The live case: the level has absorbed its requests up to half a second ago; this summary adds what
    # finished since.
    per_half_s = max(1, int(len(records) / seconds / 2))

    def fed(upto: int):
        lv = copy.copy(level)
        lv.records = LevelRecords()
        lv.records.extend(records[:upto])
        return lv, OccupancyLedger.of(records[:upto])

    def cold() -> None:
        lv, ledger = fed(len(records))
        SummaryCache().compute([lv], (ledger, []), samples, cfg.pricing, now_ns, 60.0)

    def warm_cache():
        lv, ledger = fed(len(records) - per_half_s)
        cache = SummaryCache()
        cache.compute([lv], (ledger, []), samples, cfg.pricing, now_ns - 500_000_000, 60.0)
        for r in records[-per_half_s:]:
            lv.records.append(r)
            ledger.append(r)
        return cache, lv, ledger

    cold_s, warm_s = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        cold()
        cold_s.append(time.perf_counter() - t0)
        cache, lv, ledger = warm_cache()
        t0 = time.perf_counter()
        cache.compute([lv], (ledger, []), samples, cfg.pricing, now_ns, 60.0)
        warm_s.append(time.perf_counter() - t0)
    cache, lv, ledger = warm_cache()
    tracemalloc.start()
    tracemalloc.reset_peak()
    cache.compute([lv], (ledger, []), samples, cfg.pricing, now_ns, 60.0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"seconds": seconds, "records": len(records), "new": per_half_s,
            "cold_ms": 1000 * statistics.median(cold_s), "warm_ms": 1000 * statistics.median(warm_s),
            "peak_mib": peak / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, nargs="+", default=[300.0, 1200.0, 3600.0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, Python {sys.version.split()[0]}, median of {args.repeats}")
    print("| level length | records | first summary | a summary 0.5 s later (new records) | its share of a core at 2 Hz "
          "| its peak memory |")
    print("|---|---|---|---|---|---|")
    for s in args.seconds:
        m = measure(s, args.repeats)
        print(f"| {m['seconds']:.0f} s | {m['records']:,} | {m['cold_ms']:.1f} ms | {m['warm_ms']:.1f} ms ({m['new']}) "
              f"| {m['warm_ms'] * 2 / 10:.0f}% | {m['peak_mib']:.0f} MiB |", flush=True)

if __name__ == "__main__":
    main()
