"""What the monitor knows, rebuilt from the run's events (core/events.py). Plain Python, no Textual: the widgets read it,
tests and the screenshot script fill it with fixed records.

Per request the UI does constant work (a start, a first token, an end): nothing per token.
"""

from __future__ import annotations

import copy
import queue
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import msgspec
import numpy as np

from befori_tui.core.config import PricingConfig
from befori_tui.core.loadgen import Level
from befori_tui.core.columns import CANCELLED, NONE_NS, RecordColumns
from befori_tui.core.gapcounts import WindowGaps
from befori_tui.core.ledger import OccupancyLedger, settle_run
from befori_tui.core.metrics import column_latency_stats, summarize_level
from befori_tui.core.records import RequestRecord
from befori_tui.core import events as ev
from befori_tui.core.runlink import LinkClosed

KEEP_S = 130.0  # the longest timeline window plus a margin; older bars are dropped
WINDOW_MARGIN_S = 10.0
RECENT_MAX = 4096  # finished requests kept as records (the rest are columns and aggregates in each level)


@dataclass(slots=True)
class Bar:
    """One request on the timeline. None: not yet (first token, end)."""

    t_send_ns: int
    t_first_ns: int | None = None
    t_end_ns: int | None = None
    failed: bool = False
    cancelled: bool = False  # stopped by the run (a stop, or a decrease with --on-decrease cancel): not a failure


@dataclass
class Summaries:
    """Numbers for the panels, computed off the UI thread at ~2 Hz."""

    levels: list[dict] = field(default_factory=list)
    window: dict = field(default_factory=dict)  # the current level, requests ended in the last window_s
    window_s: float = 60.0
    gpu: dict | None = None  # summarize_gpus over the current level
    computed_ns: int = 0

    @property
    def current(self) -> dict:
        return self.levels[-1] if self.levels else {}


class LiveModel:
    def __init__(self, pricing: PricingConfig, clock: Callable[[], int] = time.perf_counter_ns) -> None:
        self.pricing = pricing
        self.clock = clock
        self.levels: list[Level] = []
        # The last finished requests as records (for tests and diagnostics), bounded; every request is in its
        # level's columns and aggregates (core/levelstats.py) and in the occupancy ledger.
        self.records: deque[RequestRecord] = deque(maxlen=RECENT_MAX)
        self.finished_count = 0
        self.occupancy = OccupancyLedger()
        self.slots: dict[int, deque[Bar]] = {}
        self.in_flight: dict[int, tuple[int, Bar]] = {}  # request_id -> (slot, bar)
        self.samples: deque = deque(maxlen=900)
        self.info: dict[str, Any] = {}
        self.notes: list[tuple[str, str]] = []  # (kind, text) for the app to show, then clear
        self.t_start_ns: int | None = None
        self.paused = False  # the run's state: every viewer sees the same
        self.paused_by: str | None = None  # "sweep" | "user"
        self.sweep_text = ""
        self.finished = False
        self.ended_by: str | None = None
        self.ended_ns: int | None = None
        self.exit_code: int | None = None
        self.link_closed: str | None = None  # the run's socket closed: why
        self.connecting: str | None = None  # what the run is waiting for during setup
        self.connecting_since_ns = 0
        self.loop_lag_ms_p99: float | None = None  # the run's load loop: its level, at most the last minute
        self.workers: list = []  # each load process's lag and CPU (ev.WorkerHealth), with several of them
        self.hello = None
        self.error: str | None = None
        self.last_saved: tuple[str, int] | None = None
        self.raw_path: str | None = None
        self.version = 0  # bumped on every event, so the app redraws only when something happened
        self.gpu_version = 0

    # --- events --------------------------------------------------------------------------------------

    def drain(self, events: queue.SimpleQueue, limit: int = 200_000) -> int:
        n = 0
        while n < limit:
            try:
                event = events.get_nowait()
            except queue.Empty:
                break
            self.apply(event)
            n += 1
        return n

    def apply(self, event) -> None:
        """One event of the run (core/events.py), in the order the run sent them."""
        self.version += 1
        t = type(event)
        if t is ev.RequestStarted:
            bar = Bar(event.t_send_ns)
            self.slots.setdefault(event.slot, deque()).append(bar)
            self.in_flight[event.request_id] = (event.slot, bar)
            if self.levels and self.levels[-1].index == event.level:
                self.levels[-1].sent += 1
            else:
                for lv in self.levels:
                    if lv.index == event.level:
                        lv.sent += 1
        elif t is ev.FirstToken:
            self.connecting = None  # the first request's answer began: no setup wait is left
            entry = self.in_flight.get(event.request_id)
            if entry is not None:
                entry[1].t_first_ns = event.t_first_token_ns
        elif t is ev.RequestEnded:
            self.connecting = None
            self.add_record(ev.record_from_wire(event.record))
        elif t is ev.LevelOpened:
            self.open_level(Level(event.index, event.concurrency, event.t_start_ns, event.warmup_target,
                                  event.reason, rate_per_s=event.rate_per_s))
        elif t is ev.Draining:
            for lv in reversed(self.levels):
                if lv.index == event.level:
                    lv.draining = event.in_flight
                    lv.t_drained_ns = None if event.in_flight else event.t_ns
                    break
        elif t is ev.LevelEnded:
            for lv in self.levels:
                if lv.index == event.index and lv.t_end_ns is None:
                    lv.t_end_ns = event.t_end_ns
        elif t is ev.Paused:
            self.paused = True
            self.paused_by = event.by
        elif t is ev.Resumed:
            self.paused = False
            self.paused_by = None
            if self.sweep_text.startswith("sweep done"):
                self.sweep_text = ""  # resumed after the sweep: its last word is no longer the news
        elif t is ev.Sample:
            self.samples.append(event.sample)
            self.gpu_version += 1
        elif t is ev.Health:
            self.loop_lag_ms_p99 = event.loop_lag_ms_p99
            self.workers = list(event.workers)
        elif t is ev.Connecting:
            self.connecting = event.what
            self.connecting_since_ns = time.perf_counter_ns()  # this process's clock: only for the display
        elif t is ev.Ready:
            self.connecting = None
            self.info.update({"url": event.url, "model": event.model, "api": event.api,
                              "prompt_count_source": event.prompt_count_source, "wire": event.wire})
            self.info["simulated"] = self.info.get("simulated") or event.simulated
        elif t is ev.Saved:
            self.last_saved = (event.path, event.requests_written)
            self.raw_path = event.raw_path
        elif t is ev.SweepNote:
            self.sweep_text = event.text
            self.notes.append(("sweep", event.text))
        elif t is ev.Note:
            self.notes.append(("note", event.text))
        elif t is ev.Failed:
            self.error = event.text
            self.notes.append(("error", event.text))
        elif t is ev.Finished:
            self.finished = True
            self.ended_ns = self.clock()  # the timeline stops here: nothing after it will come
            self.ended_by = event.ended_by
            self.exit_code = event.exit_code
        elif t is ev.LevelState:
            self._load_level(event)
        elif t is ev.LedgerState:
            self.occupancy.load_state(msgspec.msgpack.decode(event.state))
        elif t is ev.Hello:
            self.hello = event
        elif t is LinkClosed:
            self.link_closed = event.reason

    def open_level(self, level: Level) -> None:
        if self.levels and self.levels[-1].t_end_ns is None:
            self.levels[-1].t_end_ns = level.t_start_ns
        if self.t_start_ns is None:
            self.t_start_ns = level.t_start_ns
        self.levels.append(level)

    def add_record(self, r: RequestRecord) -> None:
        """A finished request (also the way to feed the model fixed data)."""
        entry = self.in_flight.pop(r.request_id, None)
        if entry is not None:
            bar = entry[1]
        else:  # fed directly, without a start event
            bar = Bar(r.t_send_ns)
            self.slots.setdefault(r.slot, deque()).append(bar)
        bar.t_send_ns = r.t_send_ns  # the client's exact send time
        bar.t_first_ns = r.t_first_token_ns
        bar.t_end_ns = r.t_end_ns if r.t_end_ns is not None else self.clock()
        bar.failed = r.error_kind is not None and r.error_kind != "cancelled"
        bar.cancelled = r.error_kind == "cancelled"
        self.records.append(r)
        self.finished_count += 1
        self.occupancy.append(r)
        for lv in reversed(self.levels):
            if lv.index == r.level:
                lv.records.append(r)
                if entry is None:
                    lv.sent += 1
                if not r.warmup and not r.outlived_level:
                    lv.measured_done += 1
                break

    def _load_level(self, event: ev.LevelState) -> None:
        """A level's history as the run holds it (a viewer that attaches); its recent requests become bars."""
        for lv in self.levels:
            if lv.index == event.index:
                break
        else:
            return
        lv.sent, lv.measured_done = event.sent, event.measured_done
        lv.records.load_state(msgspec.msgpack.decode(event.state))
        self.finished_count += len(lv.records)
        cols = lv.records.cols
        cutoff = self.clock() - int(KEEP_S * 1e9)
        recent = (cols.end != NONE_NS) & (cols.end >= cutoff)
        for i in np.flatnonzero(recent).tolist():
            bar = Bar(int(cols.send[i]), None if cols.first[i] == NONE_NS else int(cols.first[i]), int(cols.end[i]),
                      failed=bool(cols.kind[i] != 0 and cols.kind[i] != CANCELLED), cancelled=bool(cols.kind[i] == CANCELLED))
            self.slots.setdefault(int(cols.slot[i]), deque()).append(bar)
        for slot, bars in self.slots.items():  # levels come one after another: keep each row in send order
            self.slots[slot] = deque(sorted(bars, key=lambda b: b.t_send_ns))

    # --- views ---------------------------------------------------------------------------------------

    @property
    def level(self) -> Level | None:
        return self.levels[-1] if self.levels else None

    @property
    def concurrency(self) -> int:
        return self.levels[-1].concurrency if self.levels else 0

    @property
    def slot_count(self) -> int:
        """Rows on the timeline: every slot used so far (slots above the concurrency drain, then idle)."""
        return max(self.concurrency, (max(self.slots) + 1) if self.slots else 0)

    def slot_states(self) -> tuple[int, int, int]:
        """(waiting for a first token, decoding, idle) over the current concurrency's slots."""
        waiting = decoding = 0
        for _slot, bar in self.in_flight.values():
            if bar.t_first_ns is None:
                waiting += 1
            else:
                decoding += 1
        return waiting, decoding, max(0, self.concurrency - waiting - decoding)

    def now(self) -> int:
        """Now on the run's clock — or, once the run has ended, its end: its figures stand still there."""
        return self.ended_ns if self.ended_ns is not None else self.clock()

    def elapsed_s(self, now_ns: int | None = None) -> float:
        if self.t_start_ns is None:
            return 0.0
        return ((now_ns or self.now()) - self.t_start_ns) / 1e9

    def prune(self, now_ns: int | None = None, keep_s: float = KEEP_S) -> None:
        """Drop bars that ended before the longest window (the records themselves are kept)."""
        cutoff = (now_ns or self.clock()) - int(keep_s * 1e9)
        for bars in self.slots.values():
            while bars and bars[0].t_end_ns is not None and bars[0].t_end_ns < cutoff:
                bars.popleft()

    def snapshot(self) -> tuple[list[Level], tuple[OccupancyLedger, list[int]], list]:
        """What the summary worker reads while events keep arriving on the UI thread: copies of the levels
        (sharing their LevelRecords, which take records from this thread and give figures to that one), the
        occupancy ledger with the send times of the requests in flight, and the telemetry samples."""
        levels = [copy.copy(lv) for lv in self.levels]
        sends = [bar.t_send_ns for _slot, bar in list(self.in_flight.values())]
        return levels, (self.occupancy, sends), list(self.samples)


class SummaryCache:
    """Closed levels whose requests have all finished do not change: summarise them once."""

    def __init__(self) -> None:
        self._done: dict[int, tuple[int, dict]] = {}
        self._window: tuple[int, WindowGaps] | None = None  # the current level's window's gaps, kept up to date

    def compute(self, levels: list[Level], occupancy: tuple[OccupancyLedger, list[int]], samples: list,
                pricing: PricingConfig, now_ns: int, window_s: float, slo: list | None = None) -> Summaries:
        out = Summaries(window_s=window_s, computed_ns=now_ns)
        ledger, in_flight_sends = occupancy
        for lv in levels:  # past its size a level keeps columns only for the window shown (and a margin)
            lv.records.recent_keep_s = window_s + WINDOW_MARGIN_S
        settle_run(levels, ledger, in_flight_sends, now_ns, slo)
        settled_before = True
        for lv in levels:
            final = settled_before and lv.t_end_ns is not None and lv.in_flight <= 0
            cached = self._done.get(lv.index)
            if final and cached is not None and cached[0] == len(lv.records):
                out.levels.append(cached[1])
                continue
            s = summarize_level(lv, pricing, ledger, now_ns, slo=slo)
            if final:
                self._done[lv.index] = (len(lv.records), s)
            out.levels.append(s)
            settled_before = final
        if levels:
            current = levels[-1]
            if self._window is None or self._window[0] != current.index:
                self._window = (current.index, WindowGaps())
            out.window = window_stats(current, current.records.cols, now_ns, window_s, self._window[1])
            out.gpu = gpu_stats(samples, levels[-1], now_ns, pricing)
        return out


def window_stats(level: Level, cols: RecordColumns, now_ns: int, window_s: float,
                 gaps: WindowGaps | None = None) -> dict:
    """The current level's requests that ended in the last `window_s` (warm-up included: it is 'now').
    `cols`: the level's records as columns, up to date (past its size a level keeps the last
    levelstats.RECENT_KEEP_S of them, longer than any window). `gaps`: the window's gaps as the last call left
    them, brought up to date here (the same object each second: only the requests that came or left cost)."""
    t0 = max(level.t_start_ns, now_ns - int(window_s * 1e9))
    cut_by = "level" if t0 == level.t_start_ns else "window"
    kept_since = level.records.kept_since_ns
    if kept_since is not None and kept_since > t0:
        t0 = kept_since  # a longer window than the level kept (just widened, or just attached): what it holds
        cut_by = "kept"
    recent = (cols.end != NONE_NS) & (cols.end >= t0)
    ok = recent & cols.ok()
    counts = None if gaps is None else gaps.update(cols, ok & (cols.first != NONE_NS))
    out: dict = dict(column_latency_stats(cols, ok, counts))
    span_s = (now_ns - t0) / 1e9
    out["span_s"] = span_s
    out["span_cut_by"] = cut_by  # level: the level began within the window; kept: the level kept less
    out["requests_ok"] = int(ok.sum())
    out["requests_failed"] = int((recent & (cols.kind != 0) & (cols.kind != CANCELLED)).sum())
    if span_s > 0:
        out["input_tok_per_s_total"] = float(cols.n_in[ok].sum()) / span_s
        out["output_tok_per_s_total"] = float(cols.n_out[ok].sum()) / span_s
        out["requests_per_s"] = int(ok.sum()) / span_s
    out["errors"] = cols.error_counts(recent)
    out["error_groups"] = cols.error_groups(recent)
    return out


def gpu_stats(samples: list, level: Level, now_ns: int, pricing: PricingConfig) -> dict | None:
    """Energy over the current level, for joules per output token (None without samples)."""
    if not samples:
        return None
    from befori_tui.core.telemetry import summarize_gpus

    t1 = level.t_end_ns or now_ns
    out_tokens = int(level.records.ok_output_tokens())
    return summarize_gpus(samples, level.t_start_ns, t1, out_tokens or None, pricing.usd_per_kwh or None)
