"""Is the client-health probe measuring the loop, or itself?

Runs headless load against the sim (dbrx-8xh100, time scale 1) and watches the same load loop with two probes
at once: the socket probe befori-tui uses (`core/health.py`) and a plain asyncio timer (sleep 100 ms, measure
the overshoot), the way the first version did. Same loop, same moments: any difference is the probe's own.

    .venv/bin/python bench/lag_probe.py [--concurrency 1 64] [--seconds 12]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from befori_tui.core.config import Config  # noqa: E402
from befori_tui.core.health import LoopLagMonitor  # noqa: E402
from befori_tui.core.session import Session  # noqa: E402
from befori_tui.sim.launch import start_sim  # noqa: E402


class TimerProbe:
    """The baseline: how late an asyncio.sleep(0.1) wakes."""

    def __init__(self) -> None:
        self.lag_ns: list[int] = []
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        self._task.cancel()

    async def _run(self) -> None:
        while True:
            t0 = time.perf_counter_ns()
            await asyncio.sleep(0.1)
            self.lag_ns.append(max(0, time.perf_counter_ns() - t0 - 100_000_000))


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


async def run(url: str, c: int, seconds: float) -> None:
    cfg = Config()
    cfg.endpoint.url = url
    cfg.workload.input_tokens_mean, cfg.workload.output_tokens_mean = 550, 64
    with tempfile.TemporaryDirectory() as d:
        session = Session(cfg, Path(d) / "x.toml", None)
        await session.open()
        timer, socket_probe = TimerProbe(), LoopLagMonitor()
        timer.start()
        socket_probe.start()
        session.runner.start(c)
        await asyncio.sleep(seconds)
        timer.stop()
        socket_probe.stop()
        await session.close()
    for name, probe in (("asyncio timer", timer), ("socket probe (ours)", socket_probe)):
        lags = [x / 1e6 for x in probe.lag_ns[10:]]  # the first second: slots starting
        print(f"| {c} | {name} | {len(lags)} | {pct(lags, 50):.2f} | {pct(lags, 90):.2f} | {pct(lags, 99):.2f} "
              f"| {max(lags):.2f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--seconds", type=float, default=12.0)
    args = ap.parse_args()
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, Python {sys.version.split()[0]}")
    print("| c | probe | samples | lag p50 ms | p90 | p99 | max |")
    print("|---|---|---|---|---|---|---|")
    with start_sim(profile="dbrx-8xh100", time_scale=1.0) as sim:
        for c in args.concurrency:
            asyncio.run(run(sim.base_url, c, args.seconds))


if __name__ == "__main__":
    main()
