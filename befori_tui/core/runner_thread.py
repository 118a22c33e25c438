"""The load loop on its own thread and asyncio loop, so a display on another thread never slows it (docs/architecture.md).

The display talks to it only through thread-safe calls (each hops onto the runner's loop with
`call_soon_threadsafe` / `run_coroutine_threadsafe`) and hears from it only through `events`, a
`queue.SimpleQueue` that the observer appends plain tuples to — no locks, no work per token.

Event tuples (first item is the kind):
    (EV_START, request_id, slot, level, t_send_ns)
    (EV_FIRST, request_id, slot, t_first_token_ns)
    (EV_END, record)                       finished RequestRecord; the runner never touches it again
    (EV_LEVEL, level_snapshot)             a new Level (copied: index, concurrency, t_start_ns, warmup, reason)
    (EV_LEVEL_END, index, t_end_ns)        a paused level drained and ended, with no new level yet
    (EV_PAUSED,)                           the runner paused itself (a sweep ended): p resumes
    (EV_SAMPLE, TelemetrySample)
    (EV_READY, info dict)                  connected: endpoint, model, api, prompt count source, simulated
    (EV_SAVED, path, requests_written)
    (EV_SWEEP, text)                       the sweep moved on, or finished
    (EV_NOTE, text)                        something the user should know (e.g. telemetry off)
    (EV_ERROR, text)                       setup failed; the thread is ending
    (EV_FINISH,)                           stopped, closed and saved; nothing follows
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from befori_tui.core.client import ClientSetupError
from befori_tui.core.config import Config
from befori_tui.core.loadgen import Level
from befori_tui.core.metrics import SETTLED_REL, befori_interval
from befori_tui.core.observer import NullObserver
from befori_tui.core.records import RequestRecord
from befori_tui.core.session import Session

EV_START, EV_FIRST, EV_END, EV_LEVEL, EV_SAMPLE = "start", "first", "end", "level", "sample"
EV_LEVEL_END, EV_PAUSED = "level_end", "paused"
EV_READY, EV_SAVED, EV_SWEEP, EV_NOTE = "ready", "saved", "sweep", "note"
EV_ERROR, EV_FINISH = "error", "finish"


class QueueObserver(NullObserver):
    """Runs on the load loop: one `put` of a small tuple per request event, nothing else."""

    def __init__(self, events: queue.SimpleQueue) -> None:
        self.events = events

    def on_request_start(self, record: RequestRecord) -> None:
        self.events.put((EV_START, record.request_id, record.slot, record.level, record.t_send_ns))

    def on_first_token(self, record: RequestRecord) -> None:
        self.events.put((EV_FIRST, record.request_id, record.slot, record.t_first_token_ns))

    def on_record(self, record: RequestRecord) -> None:
        self.events.put((EV_END, record))

    def on_level_change(self, old: Level | None, new: Level) -> None:
        # A copy: the runner keeps appending to new.records; the display keeps its own list.
        self.events.put((EV_LEVEL, Level(new.index, new.concurrency, new.t_start_ns, new.warmup_target, new.reason)))

    def on_level_end(self, level: Level) -> None:
        self.events.put((EV_LEVEL_END, level.index, level.t_end_ns))

    def on_sample(self, sample: Any) -> None:
        self.events.put((EV_SAMPLE, sample))


@dataclass
class SweepPlan:
    """Levels the runner steps through by itself. Each lasts `requests` measured requests or `seconds`
    (whichever the config sets), or — with `until_settled` — until both $/M intervals are within ±3%, or
    `seconds` have passed if that is set (then the sweep says the level did not settle)."""

    concurrencies: list[int]
    requests: int = 0
    seconds: float = 0.0
    until_settled: bool = False
    min_settle_requests: int = 16  # never call a level settled on fewer steady requests than this (or c)
    pause_when_done: bool = True


@dataclass
class RunnerOptions:
    initial_concurrency: int = 1
    sweep: SweepPlan | None = None
    telemetry: str | None = None  # open_gpu_source spec; None: auto
    telemetry_interval_s: float = 1.0
    max_slots: int = 1024  # sizes the HTTP connection pool
    drain_s: float = 0.0  # on stop: time for requests in flight to finish before they are cancelled
    extra: dict[str, Any] = field(default_factory=dict)


def level_settled(records: list[RequestRecord], concurrency: int, usd_per_hour: float, min_requests: int) -> bool:
    """Both befori $/M bootstrap intervals within ±SETTLED_REL of the point estimate (as in metrics)."""
    steady = [r for r in records if r.steady]
    if len(steady) < max(min_requests, concurrency, 5) or usd_per_hour <= 0:
        return False
    iv = befori_interval(steady, concurrency, usd_per_hour)
    rate = usd_per_hour / 3600.0 * 1e6
    for name, num, den in (("input", "ttft", "n_in"), ("output", "decode", "n_out")):
        lo, hi = iv.get(f"usd_per_million_{name}_lo"), iv.get(f"usd_per_million_{name}_hi")
        if lo is None or hi is None:
            return False
        if name == "input":
            mid = rate * _mean([r.ttft_s for r in steady]) / (concurrency * _mean([r.input_tokens or 0 for r in steady]))
        else:
            mid = rate * _mean([r.e2e_s - r.ttft_s for r in steady]) / (
                concurrency * _mean([r.output_tokens or 0 for r in steady]))
        if not mid > 0 or max(hi - mid, mid - lo) > SETTLED_REL * mid:
            return False
    return True


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


class RunnerThread:
    """Owns a Session and its LoadRunner on a private thread and event loop.

    Every public method may be called from any thread. `start()` returns at once; watch `events`.
    """

    def __init__(self, cfg: Config, out_path: Path, raw_path: Path | None = None,
                 options: RunnerOptions | None = None) -> None:
        self.cfg = cfg
        self.options = options or RunnerOptions()
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.observer = QueueObserver(self.events)
        max_slots = max([self.options.max_slots, self.options.initial_concurrency,
                         *(self.options.sweep.concurrencies if self.options.sweep else [])])
        self.session = Session(cfg, Path(out_path), raw_path, max_slots=max_slots)
        self.session.extra.update(self.options.extra)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.sampler = None
        self.sweep_active = False
        self.error: str | None = None
        self.finished = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._thread_main, name="befori-load", daemon=True)
        self._stop_requested: asyncio.Event | None = None
        self._stop_asked = threading.Event()  # a stop that came before the loop existed is not lost
        self._stop_future: concurrent.futures.Future | None = None
        self._sweep_task: asyncio.Task | None = None
        self._user_stepped = False
        self._capped = False  # the last level's settle wait ran out of time

    # --- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def wait_ready(self, timeout_s: float = 30.0) -> bool:
        """True once connected and loading (False on a setup error or timeout)."""
        return self._ready.wait(timeout_s) and self.error is None

    def join(self, timeout_s: float | None = None) -> bool:
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 — report, never lose the reason
            self.error = self.error or f"{type(exc).__name__}: {exc}"
            self.events.put((EV_ERROR, self.error))
        finally:
            self._ready.set()
            self.finished.set()
            self.events.put((EV_FINISH,))

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        if self._stop_asked.is_set():
            self._stop_requested.set()
        session = self.session
        try:
            runner = await session.open(self.observer)
        except ClientSetupError as exc:
            self.error = str(exc)
            self.events.put((EV_ERROR, self.error))
            await session.close()
            return
        self.events.put((EV_READY, {
            "url": session.endpoint.base_url, "model": session.endpoint.model, "api": self.cfg.endpoint.api,
            "prompt_count_source": session.prompt_count_source,
        }))
        self._start_telemetry()  # after READY: the UI learns the endpoint before the first sample
        sweep = self.options.sweep
        if not self._stop_requested.is_set():  # stopped while connecting: send nothing
            runner.start(sweep.concurrencies[0] if sweep else self.options.initial_concurrency)
        self._ready.set()
        if sweep and runner.levels:
            self._sweep_task = asyncio.create_task(self._run_sweep(sweep))
        try:
            max_s = self.cfg.load.max_seconds
            try:
                await asyncio.wait_for(self._stop_requested.wait(), max_s)
                session.ended_by = session.ended_by or ("signal" if session.interrupted else "quit")
            except TimeoutError:  # the run is bounded in time even when nobody is watching
                session.ended_by = "max_seconds"
                self.events.put((EV_NOTE, f"stopped after load.max_seconds ({max_s:g} s); the session is saved"))
        finally:
            if self._sweep_task is not None:
                self._sweep_task.cancel()
                await asyncio.gather(self._sweep_task, return_exceptions=True)
            await session.stop(self.options.drain_s)
            await session.close()  # also stops the telemetry sampler
            self._save_now()

    def _start_telemetry(self) -> None:
        # The session owns the sampler (and summarises it per level when it saves); samples also go on the queue.
        if self.options.telemetry:
            self.cfg.telemetry = self.options.telemetry
        try:
            note = self.session.start_telemetry(self.observer.on_sample, self.options.telemetry_interval_s)
        except ValueError as exc:
            self.events.put((EV_NOTE, f"telemetry off: {exc}"))
            return
        self.sampler = self.session.sampler
        if note:
            self.events.put((EV_NOTE, note))

    # --- sweep ---------------------------------------------------------------------------------------

    async def _run_sweep(self, plan: SweepPlan) -> None:
        runner = self.session.runner
        self.sweep_active = True
        i = 0
        try:
            while True:
                level = runner.level
                done = await self._wait_level(plan, level)
                if runner.stopping:
                    return
                if not done:
                    # The user stepped in: measure their level by the same rule, then go on from there.
                    continue
                self._save_now()
                if self._user_stepped:  # go on from where the user left it
                    nxt = [c for c in plan.concurrencies if c > runner.concurrency]
                else:
                    nxt = plan.concurrencies[i + 1:]
                self._user_stepped = False
                if not nxt:
                    self.events.put((EV_SWEEP, "sweep done" + (" · paused (p to resume)" if plan.pause_when_done else "")))
                    if plan.pause_when_done:
                        self.events.put((EV_PAUSED,))
                        runner.pause()
                    return
                i = plan.concurrencies.index(nxt[0])
                if plan.until_settled:
                    done_how = f"not settled in {plan.seconds:g} s" if self._capped else "settled"
                    self.events.put((EV_SWEEP, f"level {done_how} · sweep to c={nxt[0]}"))
                else:
                    self.events.put((EV_SWEEP, f"sweep to c={nxt[0]}"))
                runner.set_concurrency(nxt[0], reason="sweep")
        finally:
            self.sweep_active = False

    async def _wait_level(self, plan: SweepPlan, level: Level) -> bool:
        runner = self.session.runner
        if not plan.until_settled:
            return await runner.wait_level(plan.requests, plan.seconds)
        loop = asyncio.get_running_loop()
        checked = -1
        self._capped = False
        while not runner.stopping and runner.level is level:
            if plan.seconds > 0 and level.duration_s() >= plan.seconds and not runner.paused:
                self._capped = True  # not settled in the time allowed: move on, and say so
                return True
            if level.measured_done != checked and not runner.paused:
                checked = level.measured_done
                # The bootstrap is numpy work: do it off the load loop on a copy of the finished records.
                records = list(level.records)
                if await loop.run_in_executor(None, level_settled, records, level.concurrency,
                                              self.cfg.pricing.usd_per_hour, plan.min_settle_requests):
                    return runner.level is level
            await asyncio.sleep(0.5)
        return False

    # --- thread-safe controls ------------------------------------------------------------------------

    def _call(self, fn, *args) -> None:
        if self.loop is not None and not self.loop.is_closed():
            try:
                self.loop.call_soon_threadsafe(fn, *args)
            except RuntimeError:  # loop closed in between
                pass

    def _guard(self, fn):
        def call(*args):
            runner = self.session.runner
            if runner is not None and not runner.stopping:
                fn(runner, *args)
        return call

    def set_concurrency(self, concurrency: int) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be ≥ 1")

        def do(runner, c):
            self._user_stepped = True
            runner.set_concurrency(c, reason="user")
        self._call(self._guard(do), concurrency)

    def new_level(self) -> None:
        def do(runner):
            self._user_stepped = True
            runner.new_level("new")
        self._call(self._guard(do))

    def pause(self) -> None:
        self._call(self._guard(lambda runner: runner.pause()))

    def resume(self) -> None:
        self._call(self._guard(lambda runner: runner.resume()))

    def save(self) -> concurrent.futures.Future:
        """Save the session now (on the load loop, where the records are consistent). Future → Path."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        if self.loop is None or self.loop.is_closed() or self.finished.is_set():
            fut.set_exception(RuntimeError("the run has ended"))
            return fut

        def do() -> None:
            try:
                fut.set_result(self._save_now())
            except BaseException as exc:  # noqa: BLE001
                fut.set_exception(exc)
        self._call(do)
        return fut

    def stop(self) -> None:
        """Stop sending, let the loop cancel what is in flight, flush records, save. Watch `finished`."""
        self._stop_asked.set()
        if self._stop_requested is not None:
            self._call(self._stop_requested.set)

    # --- on the loop ---------------------------------------------------------------------------------

    def _save_now(self) -> Path:
        s = self.session
        path = s.save()
        recorded = sum(len(lv.records) for lv in s.runner.levels) if s.runner else 0
        self.events.put((EV_SAVED, str(path), recorded))
        return path

