"""The closed-loop load generator.

N slots; each sends its next request the moment its last one ends. Concurrency can change while running:
new slots start at once, removed slots finish their request and stop (or, with load.on_decrease = "cancel",
their requests are cancelled). Every change opens a new level.

A lower level is measured once it has taken effect: until the removed slots' requests have ended (the level
"drains"), the server still carries the old load, so the new level's requests sent meanwhile are warm-up,
and its own warm-up count starts after the drain.
A request belongs to the level it was sent in. A level's first `warmup` requests, and any request still
running when its level ends, are recorded and counted but kept out of steady-state figures.

Runs on one asyncio loop and never draws anything: displays watch through a RunObserver.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import time
from dataclasses import dataclass, field

from befori_tui.core.client import StreamClient
from befori_tui.core.observer import NullObserver, RunObserver
from befori_tui.core.health import LoopLagMonitor
from befori_tui.core.prompts import PromptSource
from befori_tui.core.ledger import OccupancyLedger
from befori_tui.core.levelstats import LevelRecords
from befori_tui.core.records import RequestRecord

# A slot whose requests cannot connect (the server is down or restarting) waits before its next try, so the
# run neither spins on the CPU nor floods the raw records: 50 ms, doubling, at most 2 s; reset by a success.
CONNECT_BACKOFF_MIN_S = 0.05
CONNECT_BACKOFF_MAX_S = 2.0
RETRY_AFTER_CAP_S = 30.0  # a Retry-After honoured (load.retry_after) is never waited longer than this


# Past its size a level's figures come from its aggregates (core/levelstats.py). The run process draws no live
# window, so it keeps no columns past the size: each let-go of columns is a copy made beside the load loop.
RUN_RECENT_KEEP_S = 0.0


def next_backoff_s(previous_s: float) -> float:
    return min(CONNECT_BACKOFF_MAX_S, max(CONNECT_BACKOFF_MIN_S, 2 * previous_s))


@dataclass
class Level:
    index: int
    concurrency: int
    t_start_ns: int
    warmup_target: int
    reason: str = "start"  # start | sweep | user | new
    t_end_ns: int | None = None
    sent: int = 0
    # Finished requests sent in this level: columns, aggregates and sketches in bounded memory (core/levelstats.py).
    records: LevelRecords = field(default_factory=LevelRecords)
    measured_done: int = 0  # finished, not warm-up, finished before the level ended (any outcome)
    # The drain after a decrease: requests of removed slots still in flight, and when the last of them ended
    # (the level's start when there were none). Until then the server still carries the old load.
    draining: int = 0
    t_drained_ns: int | None = None
    sent_draining: int = 0  # requests sent during the drain: warm-up, and not counted in warmup_target

    def __post_init__(self) -> None:
        if not isinstance(self.records, LevelRecords):  # a list of fixed records (tests, screenshots)
            records, self.records = self.records, LevelRecords()
            self.records.extend(records)

    @property
    def drained(self) -> bool:
        return self.t_drained_ns is not None
    rate_per_s: float = 0.0  # open loop: the arrival rate asked for (0: closed loop, `concurrency` slots)
    delayed: int = 0  # open loop: arrivals that waited because `concurrency` (the cap) were in flight

    @property
    def open(self) -> bool:
        return self.t_end_ns is None

    @property
    def in_flight(self) -> int:
        return self.sent - len(self.records)

    def duration_s(self, now_ns: int | None = None) -> float:
        end = self.t_end_ns if self.t_end_ns is not None else (now_ns or time.perf_counter_ns())
        return (end - self.t_start_ns) / 1e9


class LoadRunner:
    """Owns the slots. Call its methods from the loop it runs on (the RunController does; commands from other threads hop onto its loop)."""

    def __init__(
        self,
        client: StreamClient,
        prompts: PromptSource,
        observer: RunObserver | None = None,
        warmup_requests: int = -1,
        honor_retry_after: bool = False,
        id_start: int = 0,
        id_step: int = 1,
        on_decrease: str = "finish",
        keep_records: bool = True,
    ) -> None:
        self.client = client
        # The run's figures come from the records kept here; a load process of several only sends them on.
        self.keep_records = keep_records
        self.occupancy = OccupancyLedger()  # every finished request of the run, for the occupancy method
        self.on_decrease = on_decrease  # finish | cancel: what becomes of removed slots' requests
        self.honor_retry_after = honor_retry_after  # else a 429's Retry-After is only recorded
        self.prompts = prompts
        self.observer = observer or NullObserver()
        self.warmup_requests = warmup_requests  # -1: one per slot
        self.levels: list[Level] = []
        self.in_flight: dict[int, RequestRecord] = {}
        self.concurrency = 0
        self.paused = False
        self.stopping = False
        # Request ids: 0, 1, 2, … — or, in one of several load processes, its own stride of them.
        self._ids = itertools.count(id_start, id_step)
        self._slots: dict[int, asyncio.Task] = {}
        self._resume = asyncio.Event()
        self._resume.set()
        self._changed = asyncio.Event()  # set whenever a request ends or a level changes
        self.t_start_ns = 0
        self.health = LoopLagMonitor()  # the loop's own lag: is the client the bottleneck?
        # Open loop (set_rate): arrivals at a rate, at most `max_in_flight` at once, each on the lowest free slot.
        self.rate_per_s = 0.0
        self.burstiness = 1.0  # gamma shape of the gaps between arrivals: 1 is Poisson, lower is burstier
        self.max_in_flight = 256
        self.arrival_seed = 0
        self._arrivals_task: asyncio.Task | None = None
        self._open_tasks: set[asyncio.Task] = set()
        self._free_slots: list[int] = []
        self._slot_freed = asyncio.Event()
        # Trace replay (core/trace.py): the arrivals are the trace's lines on its own clock, not drawn gaps.
        self.trace = None
        self.trace_speed = 1.0
        self.trace_sent = 0
        self.trace_late = 0  # sent more than trace.LATE_MS after their time (the in-flight cap, or the client)
        self.trace_done = asyncio.Event()  # every line sent, and every request of them ended
        self._trace_t0_ns = 0

    @property
    def level(self) -> Level:
        return self.levels[-1]

    def start(self, concurrency: int) -> None:
        self.t_start_ns = time.perf_counter_ns()
        self.health.start()
        self.set_concurrency(concurrency, reason="start")

    def _open_level(self, concurrency: int, reason: str, warmup_target: int | None = None,
                    rate_per_s: float = 0.0) -> None:
        now = time.perf_counter_ns()
        old = self.levels[-1] if self.levels else None
        if old is not None and old.t_end_ns is None:  # a paused level may have ended already
            old.t_end_ns = now
        warmup = warmup_target if warmup_target is not None else \
            concurrency if self.warmup_requests < 0 else self.warmup_requests
        new = Level(len(self.levels), concurrency, now, warmup, reason, rate_per_s=rate_per_s,
                    records=LevelRecords(keep=self.keep_records, recent_keep_s=RUN_RECENT_KEEP_S))
        self.levels.append(new)
        self.observer.on_level_change(old, new)
        over = self._old_load(new)
        if over:
            new.draining = over
            self.observer_drain(new)
        else:
            new.t_drained_ns = now
        self._wake()

    def _old_load(self, level: Level) -> int:
        """Requests in flight that the level does not carry: on a closed loop's decrease, those of removed
        slots; on a lower arrival rate, those sent at the higher one — the old load, still on the server."""
        if level.rate_per_s > 0:
            before = self.levels[level.index - 1] if level.index > 0 else None
            if before is None or not before.rate_per_s > level.rate_per_s:
                return 0  # the same or a higher rate: nothing to wait for
            return sum(1 for r in self.in_flight.values() if r.level < level.index)
        return removed_in_flight(self.in_flight.values(), level.concurrency)

    def observer_drain(self, level: Level) -> None:
        on_drain = getattr(self.observer, "on_drain", None)
        if on_drain is not None:
            on_drain(level)

    def _check_drain(self) -> None:
        """After a request ends: has the current level's drain ended?"""
        level = self.levels[-1] if self.levels else None
        if level is None or level.drained:
            return
        over = self._old_load(level)
        if over != level.draining:
            level.draining = over
            if not over:
                level.t_drained_ns = time.perf_counter_ns()
            self.observer_drain(level)

    def set_concurrency(self, concurrency: int, reason: str = "user", warmup_target: int | None = None,
                        cancel_removed: bool | None = None) -> None:
        """A new level at `concurrency` slots. 0 is allowed: a load process whose share of a level is none.
        Fewer slots than before: the removed slots' requests finish, or with `cancel_removed` (default: the
        runner's on_decrease) are cancelled, recorded as such."""
        if concurrency < 0:
            raise ValueError("concurrency must be ≥ 0")
        if self.stopping:
            return
        if self.trace is not None:
            return  # a trace says when requests arrive: no slots of a closed loop beside it
        self.concurrency = concurrency
        self._open_level(concurrency, reason, warmup_target)
        if cancel_removed if cancel_removed is not None else self.on_decrease == "cancel":
            for slot, task in self._slots.items():
                if slot >= concurrency and not task.done():
                    task.cancel()  # its request ends as cancelled; the slot's loop ends
        for slot in range(concurrency):
            task = self._slots.get(slot)
            if task is None or task.done():
                self._slots[slot] = asyncio.create_task(self._slot(slot), name=f"slot-{slot}")

    def new_level(self, reason: str = "new") -> None:
        """A new level at the same concurrency (e.g. after a change on the server)."""
        if self.rate_per_s > 0:
            self.set_rate(self.rate_per_s, reason)
            return
        if not self.stopping and self.levels:
            self._open_level(self.concurrency, reason)

    # --- open loop ---------------------------------------------------------------------------------------

    def start_rate(self, rate_per_s: float) -> None:
        self.t_start_ns = time.perf_counter_ns()
        self.health.start()
        self.set_rate(rate_per_s, reason="start")

    def set_rate(self, rate_per_s: float, reason: str = "user") -> None:
        """A new level of the open loop: requests arrive at `rate_per_s` (Poisson, or gamma with `burstiness`),
        whenever the last ended, at most `max_in_flight` at once (an arrival over the cap waits for one to end,
        and the schedule catches up after). Its warm-up: one second of arrivals (or `warmup_requests`)."""
        if not rate_per_s > 0:
            raise ValueError("rate must be > 0")
        if self.stopping:
            return
        if self.trace is not None and self.levels and reason == "user":
            return  # a trace says when requests arrive: a rate asked from the screen does not apply
        self.rate_per_s = rate_per_s
        self.concurrency = self.max_in_flight
        warmup = max(1, min(self.max_in_flight, round(rate_per_s))) if self.warmup_requests < 0 else None
        if self.trace is not None and warmup is not None:  # a short trace is not all warm-up: at most a tenth
            warmup = min(warmup, len(self.trace.entries) // 10)
        self._open_level(self.max_in_flight, reason, warmup, rate_per_s=rate_per_s)
        if not self._free_slots and not self._open_tasks:
            self._free_slots = list(range(self.max_in_flight))
        if self._arrivals_task is None:
            self._arrivals_task = asyncio.create_task(self._arrivals(), name="arrivals")

    def arrival_gaps_s(self, rng: random.Random, rate_per_s: float, n: int = 64) -> list[float]:
        """The next `n` gaps between arrivals: gamma(shape = burstiness, mean 1/rate) — exponential at 1 — each
        block scaled to the exact mean 1/rate, so the rate over a few hundred requests is the one asked, not
        off by the draw's own noise (±2% over 2,000 exponential gaps); each gap keeps its distribution's shape."""
        k = self.burstiness
        gaps = [rng.gammavariate(k, 1.0 / (k * rate_per_s)) for _ in range(n)]
        scale = n / rate_per_s / sum(gaps)
        return [g * scale for g in gaps]

    def start_trace(self, trace, speed: float = 1.0) -> None:
        """Replay `trace` (core/trace.py): one level of the open loop, whose rate is the trace's mean; each line
        sent at its time divided by `speed`, from now."""
        self.trace, self.trace_speed = trace, speed
        self.start_rate(trace.mean_rate_per_s(speed))

    async def _trace_arrivals(self) -> None:
        from befori_tui.core.trace import LATE_MS

        t0_ns = self._trace_t0_ns = time.perf_counter_ns()
        for entry in self.trace.entries:
            due_ns = t0_ns + round(entry.t_ms * 1e6 / self.trace_speed)
            delay = (due_ns - time.perf_counter_ns()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
            while self.paused and not self.stopping:  # the trace's clock stops while paused
                t_pause = time.perf_counter_ns()
                await self._resume.wait()
                t0_ns += time.perf_counter_ns() - t_pause
                due_ns += time.perf_counter_ns() - t_pause
            if self.stopping:
                return
            slot = await self._free_slot()
            if slot is None:
                return
            self.trace_sent += 1
            if (time.perf_counter_ns() - due_ns) / 1e6 > LATE_MS:
                self.trace_late += 1
            task = asyncio.create_task(self._open_request(slot, self.level, entry), name=f"request-{slot}")
            self._open_tasks.add(task)
            task.add_done_callback(self._open_tasks.discard)
        while self._open_tasks and not self.stopping:  # the trace ends when its last request has
            await asyncio.gather(*list(self._open_tasks), return_exceptions=True)
        self.trace_done.set()
        self._wake()

    async def _arrivals(self) -> None:
        if self.trace is not None:
            await self._trace_arrivals()
            return
        rng = random.Random(self.arrival_seed)
        gaps: list[float] = []
        rate = 0.0
        next_s = time.perf_counter()
        while not self.stopping:
            if self.paused:
                await self._resume.wait()
                next_s = time.perf_counter()
                continue
            if self.rate_per_s != rate:  # a new rate: a new schedule from now
                rate, gaps, next_s = self.rate_per_s, [], time.perf_counter()
            if not gaps:
                gaps = self.arrival_gaps_s(rng, rate)
            next_s += gaps.pop()
            delay = next_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.stopping or self.paused or self.rate_per_s != rate:
                continue
            slot = await self._free_slot()
            if slot is None:
                break
            task = asyncio.create_task(self._open_request(slot, self.level), name=f"request-{slot}")
            self._open_tasks.add(task)
            task.add_done_callback(self._open_tasks.discard)

    async def _free_slot(self) -> int | None:
        """The lowest free slot, waiting (and counting the arrival as delayed by the cap) while none is; None
        once the run stops."""
        if not self._free_slots:
            self.level.delayed += 1
            while not self._free_slots and not self.stopping:
                self._slot_freed.clear()
                await self._slot_freed.wait()
            if self.stopping:
                return None
        return heapq.heappop(self._free_slots)

    async def _open_request(self, slot: int, level: Level, entry=None) -> None:
        rid = next(self._ids)
        record = RequestRecord(rid, slot, level.index, level.concurrency)
        level.sent += 1
        if not level.drained:
            level.sent_draining += 1
        # Sent while the higher rate's requests drain: warm-up; the level's own warm-up count starts after.
        record.warmup = not level.drained or level.sent - level.sent_draining <= level.warmup_target
        if entry is None:
            prompt = self.prompts.next(rid)
        else:
            record.trace_line = entry.line
            prompt = self.prompts.for_trace(rid, entry)
        try:
            await self._send(record, prompt, level)
        finally:
            heapq.heappush(self._free_slots, slot)
            self._slot_freed.set()

    async def _send(self, record: RequestRecord, prompt, level: Level) -> None:
        """One request, from the moment it is sent to its record in its level (both loops)."""
        record.t_send_ns = time.perf_counter_ns()  # the client sets the exact time again
        self.in_flight[record.request_id] = record
        self.observer.on_request_start(record)
        try:
            await self.client.send(record, prompt, self.observer.on_first_token)
        finally:
            self.in_flight.pop(record.request_id, None)
            self._finish(record, level, prompt)

    def pause(self) -> None:
        """No new requests; those in flight finish, and then the level ends, so that the pause is not billed
        to it as idle time. Resuming opens a new level at the same concurrency."""
        self.paused = True
        self._resume.clear()
        self._end_if_drained()

    def resume(self, open_level: bool = True) -> None:
        """Requests again; a level that ended while paused is followed by a new one (unless whoever drives
        several load processes opens it itself: open_level=False)."""
        self.paused = False
        self._resume.set()
        if open_level and self.levels and not self.level.open and not self.stopping:
            if self.rate_per_s > 0:
                self.set_rate(self.rate_per_s, "resume")
                return
            self._open_level(self.concurrency, "resume")

    def _end_if_drained(self) -> None:
        level = self.levels[-1] if self.levels else None
        if self.paused and level is not None and level.open and level.in_flight <= 0:
            level.t_end_ns = time.perf_counter_ns()
            self.observer.on_level_end(level)
            self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _slot(self, slot: int) -> None:
        backoff_s = 0.0
        while not self.stopping and slot < self.concurrency:
            if self.paused:
                await self._resume.wait()
                continue
            rid = next(self._ids)
            # The workload (core/prompts.py) says what this slot sends: its conversation's next turn, after
            # the think time, or a request on its own. Asked before the record exists, so a stop while
            # waiting leaves nothing half-sent.
            prompt = await self.prompts.next_for_slot(slot, rid)
            if prompt.think_s > 0:
                await asyncio.sleep(prompt.think_s)  # cancelled at once by stop()
                if self.paused:
                    continue  # the turn is sent again after the pause
            if self.stopping or slot >= self.concurrency:
                break
            level = self.level
            record = RequestRecord(rid, slot, level.index, level.concurrency)
            record.turn = prompt.turn
            level.sent += 1
            if not level.drained:
                level.sent_draining += 1
            # Sent while the old load drains: warm-up, and the level's own warm-up count starts after it.
            record.warmup = not level.drained or level.sent - level.sent_draining <= level.warmup_target
            await self._send(record, prompt, level)
            backoff_s = next_backoff_s(backoff_s) if record.error_kind == "connect" else 0.0
            wait_s = backoff_s
            retry_after_s = getattr(self.client, "retry_after_s", {}).pop(rid, None)
            if retry_after_s is not None and self.honor_retry_after:
                wait_s = max(wait_s, min(retry_after_s, RETRY_AFTER_CAP_S))
            if wait_s > 0:
                await asyncio.sleep(wait_s)  # cancelled at once by stop()

    def _finish(self, record: RequestRecord, level: Level, prompt) -> None:
        if not level.open:
            record.outlived_level = True
        if record.input_tokens_source == "usage" and record.input_tokens:
            self.prompts.observe_usage(prompt, record.input_tokens)
        self.prompts.ended(record.slot, prompt, record.ok)
        level.records.append(record)
        if self.keep_records:
            self.occupancy.append(record)
        if not record.warmup and not record.outlived_level:
            level.measured_done += 1
        self.observer.on_record(record)
        self._check_drain()
        self._end_if_drained()
        self._wake()

    async def wait_level(self, requests: int = 0, seconds: float = 0.0) -> bool:
        return await wait_level(self, requests, seconds)

    async def stop(self, drain_s: float = 0.0) -> None:
        """Stop sending. Requests in flight get `drain_s` to finish, then are cancelled (recorded as such)."""
        if self.stopping:
            return
        self.stopping = True
        self.health.stop()
        if self.levels and self.level.open:
            self.level.t_end_ns = time.perf_counter_ns()
        self._resume.set()
        if self._arrivals_task is not None:  # open loop: no more arrivals; those in flight drain as slots do
            self._arrivals_task.cancel()
            self._slot_freed.set()
            await asyncio.gather(self._arrivals_task, return_exceptions=True)
        tasks = [t for t in self._slots.values() if not t.done()] + [t for t in self._open_tasks if not t.done()]
        if tasks and drain_s > 0:
            await asyncio.wait(tasks, timeout=drain_s)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._wake()
        self.observer.on_finish()


def removed_in_flight(in_flight, concurrency: int) -> int:
    """Requests in flight on slots a level of `concurrency` does not have: the old load, still on the server."""
    return sum(1 for r in in_flight if r.slot >= concurrency)


async def wait_level(runner, requests: int = 0, seconds: float = 0.0) -> bool:
    """Wait until `runner`'s current level has `requests` measured requests or has run `seconds`. `runner` is a
    LoadRunner or a LoadPool (core/pool.py): both replace their `_changed` event on every change.

    True when the condition was met; False when the level was ended by another caller first
    (the user changed concurrency) or the run is stopping.
    """
    level = runner.level
    while True:
        if runner.stopping or runner.level is not level:
            return False
        if requests and level.measured_done >= requests:
            return True
        # Seconds count once the level has taken effect (after a decrease: from the end of its drain), so a
        # level is never all drain and no measurement.
        t_from = getattr(level, "t_drained_ns", level.t_start_ns)
        remaining = None
        if seconds and t_from is not None:
            remaining = seconds - (time.perf_counter_ns() - t_from) / 1e9
            if remaining <= 0:
                return True
        try:
            await asyncio.wait_for(runner._changed.wait(), timeout=remaining)
        except TimeoutError:
            pass
