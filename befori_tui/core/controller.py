"""The run controller: one run's plan, levels, pauses, stops and saves — the same for `bench` and the monitor.

It owns a Session (client, prompts, load runner, raw records) on one asyncio loop and turns what happens
into typed events (core/events.py) that any number of observers read: `bench` prints some of them, a
RunServer (core/runserver.py) sends them all to viewers, who send commands back. Front ends never touch
the load runner; they observe the run and ask it things. docs/architecture.md has the whole picture.

The plan: levels of concurrency, each lasting a number of measured requests, a number of seconds, or until
both $/M intervals have settled (±3%, capped by the seconds when given); then the run stops (`bench`),
pauses (a monitor's sweep: the user may go on) or holds its level until told otherwise (a monitor without a
sweep). A user who steps in (a viewer's +, -, c, n) gets a level measured by the same rule, and a sweep goes
on from there. `load.max_seconds` bounds every run.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import msgspec

from befori_tui.core import events as ev
from befori_tui.core.client import ClientSetupError, wire_note
from befori_tui.core.config import Config, redact_url
from befori_tui.core.loadgen import Level
from befori_tui.core.levelstats import LevelRecords
from befori_tui.core.metrics import SETTLED_REL, AggregateFigures
from befori_tui.core.observer import NullObserver
from befori_tui.core.records import RequestRecord
from befori_tui.core.session import Session

# Exit codes, shared by every front end (README, "Exit codes").
EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130

THEN = ("stop", "pause", "hold")


def exit_code_for(ended_by: str) -> int:
    return EXIT_INTERRUPTED if ended_by in ("signal", "hangup") else EXIT_ERROR if ended_by == "error" else \
        EXIT_BAD_INPUT if ended_by == "setup" else EXIT_OK

FIRST_REQUEST_WAIT = "the first request's first byte"
SETTLE_EVERY_S = 1.0


@dataclass
class RunPlan:
    """Levels the run steps through by itself, and what it does after the last one (`then`)."""

    concurrencies: list[int]
    requests: int = 0  # measured requests per level
    seconds: float = 0.0  # seconds per level (with until_settled: the cap)
    until_settled: bool = False
    min_settle_requests: int = 16  # never call a level settled on fewer steady requests than this (or c)
    then: str = "stop"  # stop | pause | hold
    # The optimum search (core/search.py): it decides each next level from the finished ones; `concurrencies`
    # is then only where it starts.
    search: Any = None
    max_requests: int = 0  # with until_settled: also end a level after this many measured requests (0: no cap)
    rates: list = field(default_factory=list)  # open loop: the levels are these arrival rates, not concurrencies

    def __post_init__(self) -> None:
        if not self.concurrencies or min(self.concurrencies) < 1:
            raise ValueError("a plan needs at least one concurrency, each ≥ 1")
        if self.then not in THEN:
            raise ValueError(f"then must be one of {THEN}")

    @property
    def has_rule(self) -> bool:
        """Whether a level ends by itself; without a rule the first level holds until told otherwise."""
        return bool(self.requests or self.seconds or self.until_settled or self.search)


SEARCH_LEVEL_CAP_S = 60.0  # a search level that has not settled in this long moves on (--seconds-per-level)


def search_plan(cfg: Config, start: float, max_requests: int = 0, then: str = "stop") -> RunPlan:
    """The optimum search from `start` (core/search.py) — a concurrency, or in the open loop (`load.rate`) an
    arrival rate: each level until its $/M has settled (±3%), or `load.seconds_per_level` (default 60 s), or
    `max_requests` measured requests when that is given."""
    from befori_tui.core.search import OptimumSearch

    open_loop = bool(cfg.load.rate)
    search = OptimumSearch(start=start, max_concurrency=10**6 if open_loop else cfg.load.max_concurrency,
                           slo=list(cfg.slo), by=cfg.search.by, tolerance=cfg.search.tolerance,
                           factor=cfg.search.factor, blend_input_per_output=cfg.pricing.blend_input_per_output,
                           x="rate_per_s" if open_loop else "concurrency")
    return RunPlan([cfg.load.max_in_flight if open_loop else int(search.start)],
                   seconds=cfg.load.seconds_per_level or SEARCH_LEVEL_CAP_S, until_settled=True, then=then,
                   search=search, max_requests=max_requests, rates=[float(start)] if open_loop else [])


def level_settled(records: LevelRecords, concurrency: int, usd_per_hour: float, min_requests: int) -> bool:
    """Both befori $/M 95% intervals within ±SETTLED_REL of the point estimate (as in metrics).

    The delta method's interval, from the level's running co-moments (core/levelstats.py), at any size: this
    test runs every half second in the load's own process, and a bootstrap (300 resamplings, milliseconds of
    numpy holding the GIL) delayed its token reads: in the demo at c=1 the loop lag p99 was 9.4 ms; with the
    delta method and a 0.5 ms switch interval, 1.3–2.5 ms."""
    agg = records.absorb().agg
    if agg.counts["steady"] < max(min_requests, concurrency, 5) or usd_per_hour <= 0:
        return False
    iv = AggregateFigures(agg).interval(concurrency, usd_per_hour)
    rate = usd_per_hour / 3600.0 * 1e6
    for name, m in (("input", agg.moments_in), ("output", agg.moments_out)):
        lo, hi = iv.get(f"usd_per_million_{name}_lo"), iv.get(f"usd_per_million_{name}_hi")
        if lo is None or hi is None:
            return False
        mid = rate * m.mean_t / (concurrency * m.mean_n)
        if not mid > 0 or max(hi - mid, mid - lo) > SETTLED_REL * mid:
            return False
    return True


class _EventObserver(NullObserver):
    """On the load loop: one small event per request start, first token and end — nothing per token."""

    def __init__(self, emit: Callable[[Any], None]) -> None:
        self.emit = emit

    def on_request_start(self, record: RequestRecord) -> None:
        self.emit(ev.RequestStarted(record.request_id, record.slot, record.level, record.t_send_ns))

    def on_first_token(self, record: RequestRecord) -> None:
        self.emit(ev.FirstToken(record.request_id, record.slot, record.t_first_token_ns))

    def on_record(self, record: RequestRecord) -> None:
        self.emit(ev.RequestEnded(ev.record_to_wire(record)))

    def on_level_change(self, old: Level | None, new: Level) -> None:
        self.emit(level_opened(new))

    def on_level_end(self, level: Level) -> None:
        self.emit(ev.LevelEnded(level.index, level.t_end_ns))

    def on_drain(self, level: Level) -> None:
        self.emit(level_draining(level))


def level_draining(level: Level) -> ev.Draining:
    return ev.Draining(level.index, level.draining, level.t_drained_ns or time.perf_counter_ns())


def level_opened(level: Level) -> ev.LevelOpened:
    return ev.LevelOpened(level.index, level.concurrency, level.t_start_ns, level.warmup_target, level.reason,
                          level.rate_per_s)


class RunController:
    """One run. `await run()` returns its exit code; everything else may be called from any thread."""

    def __init__(self, cfg: Config, out_path: Path, raw_path: Path | None = None, plan: RunPlan | None = None,
                 telemetry: str | None = None, telemetry_interval_s: float = 1.0, drain_s: float = 0.0,
                 simulated: bool = False, max_slots: int = 1024, wait_for_screen_s: float = 0.0) -> None:
        self.cfg = cfg
        self.plan = plan or RunPlan(list(cfg.load.concurrency), cfg.load.requests_per_level,
                                    cfg.load.seconds_per_level)
        self.telemetry = telemetry
        self.telemetry_interval_s = telemetry_interval_s
        self.drain_s = drain_s
        self.simulated = simulated
        # A monitor's run waits (at most this long) for its viewer's first screen before it sends (ScreenReady).
        self.wait_for_screen_s = wait_for_screen_s
        self.screen_ready = threading.Event()
        self.session = Session(cfg, Path(out_path), raw_path,
                               max_slots=max([max_slots, *self.plan.concurrencies]))
        # Events waiting for the publisher, each with its sequence number (a viewer that attaches gets a
        # snapshot up to some number, then the events after it). deque: append and popleft are thread-safe.
        self.pending: deque[tuple[int, Any]] = deque()
        self.seq = 0
        self.listeners: list[Callable[[Any], None]] = []  # called with each event, on the emitting thread
        self.level_done: list[Callable[[Level, dict], None]] = []  # after a level of the plan ends and is saved
        self.loop: asyncio.AbstractEventLoop | None = None
        self.ended_by = ""
        self.exit_code: int | None = None
        self.error: str | None = None
        self.finished = threading.Event()
        self.ready: dict[str, Any] | None = None
        self.connecting: ev.Connecting | None = None  # the setup wait under way, until ready
        self.paused_by: str | None = None  # "sweep" | "user" while paused
        self.sweep_text = ""
        self.last_saved: ev.Saved | None = None
        self.on_stop_at_once: Callable[[], None] | None = None  # the process's way out after Stop(at_once)
        self._seq_lock = threading.Lock()
        self._save_lock = threading.Lock()
        self._stop: asyncio.Event | None = None
        self._stop_reason: str | None = None  # a stop asked before the loop existed is not lost
        self._user_stepped = False
        self._capped = ""  # what ended the last level before it settled: "60 s", "200 requests"
        self._reports: set[asyncio.Task] = set()  # level summaries being saved off the loop
        self._frozen = False  # after a stop at once: no more saves
        self._plan_changed: asyncio.Event | None = None  # set when a viewer starts a search: the plan is replaced
        self.search_levels: list[dict] = []  # the summaries the search decided from, in order

    # --- events ----------------------------------------------------------------------------------------

    def emit(self, event: Any) -> None:
        if type(event) is ev.Connecting:
            self.connecting = event  # a viewer that attaches while the run waits is told what for
        with self._seq_lock:  # the load loop and the telemetry thread both emit
            self.seq += 1
            self.pending.append((self.seq, event))
        for listener in self.listeners:
            listener(event)

    # --- the run -------------------------------------------------------------------------------------------

    async def run(self) -> int:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self._stop_reason is not None:
            self._stop.set()
        session = self.session
        try:
            code = await self._run(session)
        except BaseException as exc:  # noqa: BLE001 — report, save, never lose the reason
            self.error = self.error or f"{type(exc).__name__}: {exc}"
            self.ended_by = "error"
            self.emit(ev.Failed(self.error))
            code = EXIT_ERROR
            await self._close_and_save()
            if not isinstance(exc, Exception):
                raise
        self.exit_code = code
        self.emit(ev.Finished(self.ended_by, code))
        self.finished.set()
        return code

    async def _wait_for_the_screen(self) -> None:
        """A monitor's run sends nothing until its viewer has drawn its first screen (`ScreenReady`), or for at
        most `wait_for_screen_s`: a viewer starting up (its first layout and paint, a few hundred ms of CPU)
        while the slots opened spread the warm-up sends, and so shaped the wave of requests after them that
        makes a short level's TTFT p99 (bench/README.md, UI)."""
        deadline = time.monotonic() + self.wait_for_screen_s
        while not self.screen_ready.is_set() and not self._stop.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def _run(self, session: Session) -> int:
        url = redact_url(self.cfg.endpoint.url)
        # Setup may wait on a server that never answers: a stop must end that wait too, and still save a
        # session that says why nothing was measured.
        opening = asyncio.create_task(session.open(_EventObserver(self.emit),
                                                   on_phase=lambda what: self.emit(ev.Connecting(what, url)),
                                                   on_note=lambda text: self.emit(ev.Note(text, "error")),
                                                   on_empty=lambda: self.stop("error")))
        stopping = asyncio.create_task(self._stop.wait())
        await asyncio.wait({opening, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not opening.done():
            opening.cancel()
            await asyncio.gather(opening, return_exceptions=True)
            self.ended_by = self._stop_reason or "quit"
            self.error = "stopped while connecting: nothing was measured"
            self.emit(ev.Note(self.error, "warning"))
            await self._close_and_save()
            return exit_code_for(self.ended_by)
        try:
            runner = opening.result()
        except ClientSetupError as exc:
            self.error = str(exc)
            self.ended_by = "setup"
            self.emit(ev.Failed(self.error))
            await session.close()
            return EXIT_BAD_INPUT
        self.ready = {"url": session.endpoint.base_url, "model": session.endpoint.model,
                      "api": self.cfg.endpoint.api, "prompt_count_source": session.prompt_count_source,
                      "simulated": self.simulated, "wire": wire_note(session.endpoint)}
        self.emit(ev.Ready(**self.ready))
        self._start_telemetry()
        await self._wait_for_the_screen()
        plan = self.plan
        plan_task = None
        watch = None
        settler = None
        if not self._stop.is_set():  # stopped while connecting: send nothing
            if getattr(runner, "trace", None) is not None:
                runner.start_trace(runner.trace, runner.trace_speed)
            elif plan.rates:
                runner.start_rate(plan.rates[0])
            else:
                runner.start(plan.concurrencies[0])
            plan_task = asyncio.create_task(self._drive_plans())
            watch = asyncio.create_task(self._watch_first_request(runner, url))
            settler = asyncio.create_task(self._settle_records())
        stopper = asyncio.create_task(self._stop.wait())
        waiting = {stopper} | ({plan_task} if plan_task else set())
        max_s = self.cfg.load.max_seconds
        done, _ = await asyncio.wait(waiting, timeout=max_s, return_when=asyncio.FIRST_COMPLETED)
        if stopper in done:
            self.ended_by = self._stop_reason or "quit"
        elif plan_task is not None and plan_task in done:
            plan_task.result()  # an error in the plan is the run's error
            self.ended_by = "completed"
        else:
            self.ended_by = "max_seconds"
            self.emit(ev.Note(f"stopped after load.max_seconds ({max_s:g} s); the session is saved", "warning"))
        stopper.cancel()
        if settler is not None:
            settler.cancel()
        if watch is not None and not watch.done():
            watch.cancel()
        if plan_task is not None and not plan_task.done():
            plan_task.cancel()
            await asyncio.gather(plan_task, return_exceptions=True)
        results = await self._close_and_save()
        if self.ended_by == "completed" and results and results["levels"]:
            for hook in self.level_done:  # the plan's last level ends with the run
                hook(runner.level, results["levels"][-1])
        return exit_code_for(self.ended_by)

    async def _settle_records(self) -> None:
        """Every second, off the load loop: the records handed over become figures, and what is no longer
        needed is let go (core/levelstats.py, core/ledger.py) — so memory stays flat between saves too."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SETTLE_EVERY_S)
            await loop.run_in_executor(None, self.session.settle_records)

    async def _watch_first_request(self, runner, url: str) -> None:
        """The first request is a setup call too: a server that lists its models and then never answers a
        completion is named within load.setup_timeout_s (not the per-request timeout), and the run ends
        (exit 2) with a session that says why. Any byte of an answer — headers, a token, an error — ends the
        wait."""
        self.emit(ev.Connecting(FIRST_REQUEST_WAIT, url))
        limit_s = self.cfg.load.setup_timeout_s
        t0 = time.monotonic()
        while not runner.stopping:
            if any(lv.records for lv in runner.levels) or any(
                    r.t_headers_ns is not None or r.t_first_token_ns is not None for r in list(runner.in_flight.values())):
                self.connecting = None
                return
            if time.monotonic() - t0 >= limit_s:
                self.error = (f"{url}: no answer to the first request within {limit_s:g} s (load.setup_timeout_s): "
                              "the server lists its models but sent nothing back for a completion")
                self.emit(ev.Failed(self.error))
                self.stop("setup")
                return
            await asyncio.sleep(0.1)

    async def _close_and_save(self) -> dict | None:
        session = self.session
        session.ended_by = self.ended_by
        session.interrupted = self.ended_by in ("signal", "hangup")
        try:
            await session.stop(self.drain_s)
        finally:
            try:
                await session.close()  # also stops the telemetry sampler and flushes the raw records
            finally:
                # A level's report still being saved must not land after (and over) the final save.
                await asyncio.gather(*self._reports, return_exceptions=True)
                results = await asyncio.to_thread(self._save_results)
        return results

    def _start_telemetry(self) -> None:
        if self.telemetry:
            self.cfg.telemetry = self.telemetry
        try:
            note = self.session.start_telemetry(lambda s: self.emit(ev.Sample(s)) if s is not None else None,
                                                self.telemetry_interval_s)
        except ValueError as exc:
            self.emit(ev.Note(f"telemetry off: {exc}"))
            return
        if note:
            self.emit(ev.Note(note, "information"))

    # --- the plan ----------------------------------------------------------------------------------------

    async def _drive_plans(self) -> None:
        """Run the plan; when a viewer replaces it (a search started from the monitor), run the new one from the
        level the run is at."""
        while True:
            self._plan_changed = asyncio.Event()
            task = asyncio.create_task(self._run_plan(self.plan))
            changed = asyncio.create_task(self._plan_changed.wait())
            done, _ = await asyncio.wait({task, changed}, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                changed.cancel()
                return task.result()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def start_search(self) -> None:
        """On the run's loop: search for the optimum from the current level (the monitor's `o`)."""
        runner = self.session.runner
        if runner is None or runner.stopping or not runner.levels or self._plan_changed is None:
            return
        if getattr(runner, "trace", None) is not None:
            self._sweep("no search while a trace is replayed: the trace sets the arrivals")
            return
        self.search_levels = []
        old = self.plan
        start = runner.rate_per_s if getattr(runner, "rate_per_s", 0) > 0 else runner.concurrency
        self.plan = search_plan(self.cfg, start, old.max_requests, then="pause")
        if old.seconds and not old.search:  # the monitor's own cap on a level (--seconds-per-level) holds
            self.plan.seconds = old.seconds
        if runner.paused:
            runner.resume()
            self.paused_by = None
            self.emit(ev.Resumed())
        else:
            runner.new_level("search")  # measured afresh, by the search's rule
        self._sweep("searching for the cheapest " + (f"rate from {start:g} req/s" if self.plan.rates
                                                     else f"concurrency from c={start}"))
        self._plan_changed.set()

    async def _level_summary(self, level: Level) -> dict:
        """The finished level's figures, as the session will save them, computed off the load loop."""
        from befori_tui.core.metrics import summarize_level

        def summarize() -> dict:
            self.session.settle_records()
            return summarize_level(level, self.cfg.pricing, self.session.runner.occupancy, slo=self.cfg.slo)

        return await asyncio.to_thread(summarize)

    async def _next_of_search(self, plan: RunPlan, level: Level) -> list[int]:
        summary = await self._level_summary(level)
        self.search_levels.append(summary)
        nxt = plan.search.next(self.search_levels)
        self.session.search_info = {"levels_measured": len(self.search_levels),
                                    "ended_because": plan.search.done_reason or "running"}
        return [] if nxt is None else [nxt]

    async def _run_plan(self, plan: RunPlan) -> None:
        """Returns when the plan is done and `then` is "stop"; otherwise pauses or holds until cancelled."""
        runner = self.session.runner
        if getattr(runner, "trace", None) is not None:
            # A trace is one level, which ends when the trace's last request has (or load.max_seconds).
            await runner.trace_done.wait()
            if plan.then == "stop":
                return
            self._sweep("trace done")
            self._report_level(runner.level)
            await asyncio.Event().wait()  # the monitor holds the finished run on screen until stopped
        if not plan.has_rule:
            await asyncio.Event().wait()  # hold: only a viewer, a signal or max_seconds ends this run
        i = 0
        while True:
            level = runner.level
            done = await self._wait_level(plan, level)
            if runner.stopping:
                return
            if not done:
                continue  # the user stepped in: measure their level by the same rule, then go on from there
            nxt_from_user = self._user_stepped
            self._user_stepped = False
            if plan.search is not None:  # the search decides, from every level it saw end (a user's too)
                nxt = await self._next_of_search(plan, level)
                if runner.stopping:
                    return
                step = i + 1
            elif nxt_from_user:  # go on from the first planned level above where the user left it
                values, now = (plan.rates, runner.rate_per_s) if plan.rates else (plan.concurrencies, runner.concurrency)
                ahead = [j for j, c in enumerate(values) if c > now]
                nxt = values[ahead[0]:] if ahead else []
                step = ahead[0] if ahead else len(values)
            else:
                nxt = (plan.rates or plan.concurrencies)[i + 1:]
                step = i + 1
            how = ""
            if plan.until_settled:
                how = f"not settled in {self._capped}" if self._capped else "settled"
            if not nxt and plan.search is not None:
                self._sweep(f"search done: {plan.search.done_reason}")
            if not nxt:
                if plan.then == "stop":
                    # The last level ends here; its summary comes with the final save.
                    return
                text = ("search done" if plan.search is not None else "sweep done") + \
                    (" · paused (p to resume)" if plan.then == "pause" else "")
                self._sweep(text)
                if plan.then == "pause":
                    runner.pause()
                    self.paused_by = "sweep"
                    self.emit(ev.Paused("sweep"))
                self._report_level(level)
                await asyncio.Event().wait()  # paused or holding: until stopped
            i = step  # by position: a plan may hold a concurrency twice (2,2: the same level measured again)
            if plan.rates:
                self._sweep((f"level {how} · " if how else "") + f"sweep to {nxt[0]:g} req/s")
                runner.set_rate(nxt[0], reason="sweep")
            else:
                self._sweep((f"level {how} · " if how else "") + f"sweep to c={nxt[0]}")
                runner.set_concurrency(nxt[0], reason="sweep")
            self._report_level(level)

    def _sweep(self, text: str) -> None:
        self.sweep_text = text
        self.emit(ev.SweepNote(text))

    def _report_level(self, level: Level) -> None:
        """Summarise and save a finished level off the load loop (numpy work would delay token reads)."""
        async def report() -> None:
            results = await asyncio.to_thread(self._save_results)
            if results is not None and level.index < len(results["levels"]):
                for hook in self.level_done:
                    hook(level, results["levels"][level.index])
        task = asyncio.create_task(report())
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)

    async def _wait_level(self, plan: RunPlan, level: Level) -> bool:
        runner = self.session.runner
        if not plan.until_settled:
            return await runner.wait_level(plan.requests, plan.seconds)
        loop = asyncio.get_running_loop()
        checked = -1
        self._capped = ""
        while not runner.stopping and runner.level is level:
            if plan.seconds > 0 and level.duration_s() >= plan.seconds and not runner.paused:
                self._capped = f"{plan.seconds:g} s"  # not settled in the time allowed: move on, and say so
                return True
            if plan.max_requests and level.measured_done >= plan.max_requests and not runner.paused:
                self._capped = f"{plan.max_requests} requests"
                return True
            if level.measured_done != checked and not runner.paused:
                checked = level.measured_done
                # Numpy work (the records handed over become columns and moments): off the load loop.
                records = level.records
                # Open loop: R only scales the $/M, not the interval's relative width; 1 keeps the minimum count low.
                r = 1 if level.rate_per_s else level.concurrency
                if await loop.run_in_executor(None, level_settled, records, r,
                                              self.cfg.pricing.usd_per_hour, plan.min_settle_requests):
                    return runner.level is level
            await asyncio.sleep(0.5)
        return False

    # --- commands, from any thread ------------------------------------------------------------------------

    def submit(self, command: Any) -> None:
        """Do what a viewer asks, on the run's loop. Commands after the end are ignored."""
        if isinstance(command, ev.ScreenReady):
            self.screen_ready.set()
            return
        if isinstance(command, ev.Stop):
            self.stop(command.ended_by, command.at_once)
            return
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._apply, command)
        except RuntimeError:  # the loop closed in between
            pass

    def _apply(self, command: Any) -> None:
        runner = self.session.runner
        if isinstance(command, ev.Save):
            if not self.finished.is_set():
                asyncio.ensure_future(asyncio.to_thread(self.save))
            return
        if runner is None or runner.stopping or not runner.levels:
            return
        if isinstance(command, ev.SetConcurrency):
            if command.concurrency >= 1:
                self._user_stepped = True
                runner.set_concurrency(command.concurrency, reason="user")
        elif isinstance(command, ev.SetRate):
            if command.rate_per_s > 0 and hasattr(runner, "set_rate"):
                self._user_stepped = True
                runner.set_rate(command.rate_per_s, reason="user")
        elif isinstance(command, ev.NewLevel):
            self._user_stepped = True
            runner.new_level("new")
        elif isinstance(command, ev.FindOptimum):
            self.start_search()
        elif isinstance(command, ev.Pause):
            if not runner.paused:
                runner.pause()
                self.paused_by = "user"
                self.emit(ev.Paused("user"))
        elif isinstance(command, ev.Resume):
            if runner.paused:
                runner.resume()
                self.paused_by = None
                if self.sweep_text.startswith("sweep done"):
                    self.sweep_text = ""
                self.emit(ev.Resumed())

    def stop(self, ended_by: str = "quit", at_once: bool = False) -> None:
        """Stop sending, cancel what is in flight (after drain_s), flush, save. Watch `finished`.
        `at_once`: flush the raw lines, write the TOML and leave through `on_stop_at_once` now."""
        if at_once:
            self._stop_at_once(ended_by)
            return
        if self._stop_reason is None:
            self._stop_reason = ended_by
        if self._stop is not None and self.loop is not None and not self.loop.is_closed():
            try:
                self.loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:
                pass

    def _stop_at_once(self, ended_by: str) -> None:
        session = self.session
        self.ended_by = session.ended_by = ended_by
        session.interrupted = ended_by in ("signal", "hangup")
        try:
            session.writer.flush_sync()
            self.save()
        finally:
            self._frozen = True  # this save is the last: a drain that ends meanwhile must not write over it
            self.exit_code = EXIT_INTERRUPTED
            self.emit(ev.Finished(ended_by, EXIT_INTERRUPTED))
            if self.on_stop_at_once is not None:
                self.on_stop_at_once()
            else:
                os._exit(EXIT_INTERRUPTED)

    # --- saving ------------------------------------------------------------------------------------------

    def _save_results(self) -> dict | None:
        with self._save_lock:
            if self._frozen:
                return None
            results = self.session.results()
            self._saved(self.session.save(results))
            return results

    def save(self) -> Path:
        """Write the session TOML now (any thread; saves never overlap)."""
        with self._save_lock:
            if self._frozen:
                return self.session.out_path
            return self._saved(self.session.save())

    def _saved(self, path: Path) -> Path:
        s = self.session
        recorded = sum(len(lv.records) for lv in list(s.runner.levels)) if s.runner else 0
        self.last_saved = ev.Saved(str(path), str(s.raw_path), recorded)
        self.emit(self.last_saved)
        return path

    # --- for a viewer that attaches ----------------------------------------------------------------------

    def snapshot(self) -> tuple[int, list]:
        """Call on the run's loop: (the last event number it covers, events that rebuild the run so far): each
        level as the run holds it (columns, aggregates, sketches), not every request since the start."""
        with self._seq_lock:
            seq = self.seq
        out: list[Any] = []
        runner = self.session.runner
        if self.ready is not None:
            out.append(ev.Ready(**self.ready))
        if self.connecting is not None and (self.ready is None or self.connecting.what == FIRST_REQUEST_WAIT):
            out.append(self.connecting)  # after Ready: the first request's wait, still under way
        if runner is not None:
            for lv in runner.levels:
                out.append(level_opened(lv))
                out.append(ev.LevelState(lv.index, lv.sent, lv.measured_done,
                                         msgspec.msgpack.encode(lv.records.to_state())))
            out.append(ev.LedgerState(msgspec.msgpack.encode(runner.occupancy.to_state())))
            last = runner.levels[-1] if runner.levels else None
            if last is not None and not last.drained:
                out.append(level_draining(last))
            if last is not None and last.t_end_ns is not None and not runner.stopping:
                out.append(ev.LevelEnded(last.index, last.t_end_ns))
            for r in list(runner.in_flight.values()):
                out.append(ev.RequestStarted(r.request_id, r.slot, r.level, r.t_send_ns))
                if r.t_first_token_ns is not None:
                    out.append(ev.FirstToken(r.request_id, r.slot, r.t_first_token_ns))
        sampler = self.session.sampler
        if sampler is not None:
            out.extend(ev.Sample(s) for s in sampler.samples_between(time.perf_counter_ns() - 900 * 10**9,
                                                                     time.perf_counter_ns()) if s is not None)
        if self.paused_by:
            out.append(ev.Paused(self.paused_by))
        if self.sweep_text:
            out.append(ev.SweepNote(self.sweep_text))
        if self.last_saved is not None:
            out.append(self.last_saved)
        return seq, out

    def loop_lag_ms_p99(self) -> float | None:
        runner = self.session.runner
        if runner is None:
            return None
        return runner.health.live_p99_ms(runner.level.t_start_ns if runner.levels else None)

    def worker_health(self) -> list:
        """Each load process's lag (as the live warning's) and CPU (the last 10 s), with several processes or Ray
        actors; [] else."""
        runner = self.session.runner
        return runner.worker_health() if hasattr(runner, "worker_health") else []
