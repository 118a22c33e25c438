"""The client's own health: how late the load loop runs what it was asked to run.

A task on the load loop sleeps `interval_s` again and again; how much later than asked it wakes (the
overshoot) is the loop's lag. Every token's timestamp is taken by that loop, so when the lag grows the
client, not the server, is adding time to what is measured. Cheap: one wake-up per interval.
"""

from __future__ import annotations

import asyncio
import bisect
import time

LAG_INTERVAL_S = 0.1
CLIENT_BOUND_LAG_MS = 5.0  # a level whose lag p99 passes this is flagged: the client may skew its numbers
CLIENT_BOUND_NOTE = "client-bound: numbers may be skewed"
# A level's first second (slots starting, connections opening) is left out of its lag figures, as its warm-up
# requests are left out of its latencies; a level shorter than twice that is taken whole.
LEVEL_SETTLE_S = 1.0


def _pct(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted, non-empty list."""
    return sorted_values[min(len(sorted_values) - 1, int(p / 100 * len(sorted_values)))]


class LoopLagMonitor:
    """Run `start()` on the loop to watch. Samples are (time woken ns, lag ns), appended in time order."""

    def __init__(self, interval_s: float = LAG_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.t_ns: list[int] = []
        self.lag_ns: list[int] = []
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        perf = time.perf_counter_ns
        interval_ns = int(self.interval_s * 1e9)
        while True:
            t0 = perf()
            await asyncio.sleep(self.interval_s)
            now = perf()
            # Appended together (list.append is atomic), so a reader on another thread sees matching pairs.
            self.lag_ns.append(max(0, now - t0 - interval_ns))
            self.t_ns.append(now)

    def _between(self, t0_ns: int, t1_ns: int | None) -> list[float]:
        n = min(len(self.t_ns), len(self.lag_ns))
        times = self.t_ns[:n]
        i = bisect.bisect_left(times, t0_ns)
        j = n if t1_ns is None else bisect.bisect_right(times, t1_ns)
        return sorted(lag / 1e6 for lag in self.lag_ns[i:j])

    def summary(self, t0_ns: int, t1_ns: int | None = None) -> dict[str, float | bool]:
        """`client_loop_lag_ms_p50/_p99/_max` and `client_bound` over [t0, t1] (less its first second when it
        is long enough, see LEVEL_SETTLE_S); {} without samples."""
        settle_ns = int(LEVEL_SETTLE_S * 1e9)
        end_ns = t1_ns if t1_ns is not None else (self.t_ns[-1] if self.t_ns else t0_ns)
        lags = self._between(t0_ns + settle_ns if end_ns - t0_ns > 2 * settle_ns else t0_ns, t1_ns)
        if not lags:
            return {}
        p99 = _pct(lags, 99)
        return {"client_loop_lag_ms_p50": _pct(lags, 50), "client_loop_lag_ms_p99": p99,
                "client_loop_lag_ms_max": lags[-1], "client_bound": p99 > CLIENT_BOUND_LAG_MS}

    def recent_p99_ms(self, window_s: float = 10.0) -> float | None:
        """Lag p99 over the last `window_s` (for a live warning); None before the first sample."""
        lags = self._between(time.perf_counter_ns() - int(window_s * 1e9), None)
        return _pct(lags, 99) if lags else None
