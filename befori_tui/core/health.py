"""The client's own health: how late the load loop runs what it was asked to run.

A probe wakes the load loop through a socket every `interval_s`; how long the loop takes to notice is its
lag (see LoopLagMonitor). Every token's timestamp is taken by that loop, so when the lag grows the
client, not the server, is adding time to what is measured. Cheap: one wake-up per interval.
"""

from __future__ import annotations

import asyncio
import bisect
from array import array
import socket
import threading
import time

LAG_INTERVAL_S = 0.1
CLIENT_BOUND_LAG_MS = 5.0  # a level whose lag p99 passes this is flagged: the client may skew its numbers
CLIENT_BOUND_NOTE = "client-bound: numbers may be skewed"
# A level's first second (slots starting, connections opening) is left out of its lag figures, as its warm-up
# requests are left out of its latencies; a level shorter than twice that is taken whole.
LEVEL_SETTLE_S = 1.0
# The live warning's lag p99 is over the current level (less its first second, as its summary) and at most the
# last minute: 600 samples, so it takes six late wake-ups to raise it. Over 10 s (100 samples) the p99 was the
# largest one: in the demo at c=8 a single 6 ms wake-up put "client-bound" on screen for 10 s while the level's
# p99 (its TOML's, its flag's) was 1.6 ms.
LIVE_WINDOW_S = 60.0
# ... and it says nothing before 200 samples (20 s): the p99 of fewer is their largest one or two, and each new
# level's first seconds (its warm-up ending, every slot sending again at once) put one there.
LIVE_MIN_SAMPLES = 200


def _pct(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted, non-empty list."""
    return sorted_values[min(len(sorted_values) - 1, int(p / 100 * len(sorted_values)))]


class LoopLagMonitor:
    """Run `start()` on the loop to watch. Samples are (time noticed ns, lag ns), appended in time order.

    A probe thread sends a small datagram at fixed times (every `interval_s`) through a socket pair that the
    loop watches like any connection; the lag is how long after that time the loop ran the reader: exactly the
    delay a token's timestamp would carry. (An asyncio timer would add the selector's millisecond rounding of
    sleeps, 1.5-2.3 ms here, and report it as lag.) The probe stamps the time it *meant* to send, so a probe
    that waited for the GIL counts that wait too: whoever held it was holding up the loop as well.
    """

    def __init__(self, interval_s: float = LAG_INTERVAL_S) -> None:
        self.interval_s = interval_s
        # Packed int64 (16 bytes a sample where two lists of ints took ~72): a day at 10 samples a second is
        # 14 MB, the one figure of a run that still grows with its length (docs/results.md, "Bounded memory").
        self.t_ns = array("q")
        self.lag_ns = array("q")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sockets: tuple[socket.socket, socket.socket] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        r, w = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        r.setblocking(False)
        w.setblocking(False)  # a loop that stopped reading must not block the probe: its probes are dropped
        self._sockets = (r, w)
        self._loop.add_reader(r.fileno(), self._on_readable)
        self._stop.clear()
        self._thread = threading.Thread(target=self._probe, args=(w,), name="befori-lag-probe", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(1.0)
        self._thread = None
        r, w = self._sockets
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(r.fileno())
        r.close()
        w.close()

    def _probe(self, w: socket.socket) -> None:
        interval_ns = int(self.interval_s * 1e9)
        due = time.perf_counter_ns() + interval_ns
        while not self._stop.wait(max(0.0, (due - time.perf_counter_ns()) / 1e9)):
            try:
                w.send(due.to_bytes(8, "little"))
            except BlockingIOError:
                pass
            except OSError:  # the loop's side is gone
                return
            due += interval_ns
            now = time.perf_counter_ns()
            if due < now:  # this thread fell behind (a suspended process): no burst of stale probes
                due = now + interval_ns

    def _on_readable(self) -> None:
        now = time.perf_counter_ns()
        r = self._sockets[0]
        while True:
            try:
                data = r.recv(16)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if len(data) == 8:
                # Appended together (array.append is atomic), so a reader on another thread sees matching pairs.
                self.lag_ns.append(max(0, now - int.from_bytes(data, "little")))
                self.t_ns.append(now)

    def _between(self, t0_ns: int, t1_ns: int | None) -> list[float]:
        return lags_between_ms(self.t_ns, self.lag_ns, t0_ns, t1_ns)

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

    def live_p99_ms(self, level_start_ns: int | None) -> float | None:
        return live_lag_p99_ms(self.t_ns, self.lag_ns, level_start_ns)


def lags_between_ms(t_ns, lag_ns, t0_ns: int, t1_ns: int | None) -> list[float]:
    """The lags (ms, sorted) of the samples taken in [t0, t1]; `t_ns` in time order. Another thread may be
    appending: only the pairs both arrays hold so far are read."""
    n = min(len(t_ns), len(lag_ns))
    times = t_ns[:n]
    i = bisect.bisect_left(times, t0_ns)
    j = n if t1_ns is None else bisect.bisect_right(times, t1_ns)
    return sorted(lag / 1e6 for lag in lag_ns[i:j])


def lag_p99_ms(t_ns, lag_ns, t0_ns: int, t1_ns: int | None, min_samples: int = 1) -> float | None:
    """Lag p99 (ms) of the samples taken in [t0, t1]; None with fewer than `min_samples`."""
    lags = lags_between_ms(t_ns, lag_ns, t0_ns, t1_ns)
    return _pct(lags, 99) if lags and len(lags) >= min_samples else None


def live_lag_p99_ms(t_ns, lag_ns, level_start_ns: int | None) -> float | None:
    """Lag p99 for the live warning (the run's, or one load process's), over live_window_start_ns on; None
    before LIVE_MIN_SAMPLES samples."""
    return lag_p99_ms(t_ns, lag_ns, live_window_start_ns(time.perf_counter_ns(), level_start_ns), None,
                      LIVE_MIN_SAMPLES)


def live_window_start_ns(now_ns: int, level_start_ns: int | None, window_s: float = LIVE_WINDOW_S) -> int:
    """Where the live lag figures begin: the current level's start — after its first second, once the level is
    long enough, as in its summary — and at most `window_s` ago."""
    t0 = now_ns - int(window_s * 1e9)
    if level_start_ns is None:
        return t0
    settle_ns = int(LEVEL_SETTLE_S * 1e9)
    return max(t0, level_start_ns + settle_ns if now_ns - level_start_ns > 2 * settle_ns else level_start_ns)
