"""A run's slots spread over several load processes (core/worker.py), with the face of a LoadRunner.

The controller keeps owning concurrency and levels: a level opens here, and every load process is told its
share of the slots (slot s goes to the s-th process in turn). Each process takes its own timestamps on its
own clock and sends them; here they are mapped onto this process's clock (`ClockOffset`, as a viewer does),
so nothing assumes the processes share one. Records, counts and the raw JSONL are kept here, as with one
process; so the controller, the summaries and the viewers do not know how many processes carry the load.

A load process that dies: its requests in flight are recorded as `lost` (once each), the run says so, and a
new level at the same concurrency starts on the others.
"""

from __future__ import annotations

import asyncio
import bisect
import os
import pickle
import socket
import subprocess
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from befori_tui.core import events as ev
from befori_tui.core.childproc import child_env, module_command
from befori_tui.core.client import ClientSetupError
from befori_tui.core.health import LoopLagMonitor, lag_p99_ms, live_lag_p99_ms
from befori_tui.core.ledger import OccupancyLedger
from befori_tui.core.levelstats import LevelRecords
from befori_tui.core.loadgen import RUN_RECENT_KEEP_S, Level, removed_in_flight, wait_level
from befori_tui.core.observer import NullObserver, RunObserver
from befori_tui.core.records import RequestRecord
from befori_tui.core.worker import WorkerSpec

START_TIMEOUT_S = 30.0  # a fresh interpreter, its imports and its HTTP client
# Streams one load process carries within 1 ms of excess TTFT on the 2-core development box (bench/README.md,
# Capacity: at least 512 at 10 ms steps); more streams than this per process get another process, while there
# are cores for it.
STREAMS_PER_PROCESS = 512


def auto_processes(max_concurrency: int, cpus: int | None = None) -> int:
    """How many load processes for this many streams: one per STREAMS_PER_PROCESS, at most one per core
    that the run itself and the server do not need (a one- or two-core box: always one)."""
    cpus = cpus or os.cpu_count() or 1
    wanted = -(-max_concurrency // STREAMS_PER_PROCESS)
    return max(1, min(wanted, cpus - 1))


class MergedLag(LoopLagMonitor):
    """The loop lag of several load processes, on this process's clock, for the same summaries."""

    def start(self) -> None:  # the probes run in the load processes
        pass

    def stop(self) -> None:
        pass

    def add(self, t_ns: list[int], lag_ns: list[int], offset_ns: int) -> None:
        for t, lag in zip(t_ns, lag_ns):
            t += offset_ns
            i = bisect.bisect_right(self.t_ns, t)  # samples of several processes interleave in time
            self.t_ns.insert(i, t)
            self.lag_ns.insert(i, lag)


@dataclass
class _Process:
    index: int
    proc: subprocess.Popen
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    clock: ev.ClockOffset = field(default_factory=ev.ClockOffset)
    alive: bool = True
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    error: str | None = None
    task: asyncio.Task | None = None
    log_path: Path | None = None  # its stdout and stderr; removed when it exits cleanly
    # Who it is (from its Ready): the raw records name it, the TOML lists it.
    worker: dict | None = None
    where: dict = field(default_factory=dict)  # more about its place (a Ray node), for the TOML
    # Its own health, on this process's clock: loop-lag samples, and (time, CPU time so far) pairs.
    lag_t_ns: array = field(default_factory=lambda: array("q"))
    lag_ns: array = field(default_factory=lambda: array("q"))
    cpu: list = field(default_factory=list)
    requests_lost: int = 0
    lost: bool = False

    def map(self, t_ns: int | None) -> int | None:
        return None if t_ns is None else t_ns + (self.clock.offset_ns or 0)

    @property
    def name(self) -> str:
        return f"{self.worker['host']}:{self.worker['pid']}" if self.worker else f"load process {self.index}"

    def cpu_pct(self, t0_ns: int, t1_ns: int | None) -> float | None:
        """Its CPU time over wall time between the first and last readings in [t0, t1]; 100 = one core."""
        times = [t for t, _ in self.cpu]
        i = bisect.bisect_left(times, t0_ns)
        j = len(times) if t1_ns is None else bisect.bisect_right(times, t1_ns)
        if j - i < 2 or times[j - 1] <= times[i]:
            return None
        return 100.0 * (self.cpu[j - 1][1] - self.cpu[i][1]) / (times[j - 1] - times[i])


class LoadPool:
    """Call its methods on the run's loop, as a LoadRunner's."""

    def __init__(self, specs: list[WorkerSpec], observer: RunObserver | None = None, warmup_requests: int = -1,
                 on_note: Callable[[str], None] | None = None, log_dir: Path | None = None,
                 on_empty: Callable[[], None] | None = None, on_decrease: str = "finish") -> None:
        self.specs = specs
        self.on_decrease = on_decrease  # finish | cancel: what becomes of removed slots' requests
        self.observer = observer or NullObserver()
        self.warmup_requests = warmup_requests
        self.on_note = on_note or (lambda text: None)
        self.on_empty = on_empty or (lambda: None)
        self.log_dir = log_dir
        self.levels: list[Level] = []
        self.in_flight: dict[int, RequestRecord] = {}
        self.occupancy = OccupancyLedger()  # every finished request of the run, for the occupancy method
        self.concurrency = 0
        self.paused = False
        self.stopping = False
        self.t_start_ns = 0
        self.health = MergedLag()
        self.processes: list[_Process] = []
        self.processes_lost = 0
        self._drained: dict[int, set[int]] = {}  # level → processes whose share of it drained (while paused)
        self._changed = asyncio.Event()

    @property
    def level(self) -> Level:
        return self.levels[-1]

    @property
    def alive(self) -> list[_Process]:
        return [p for p in self.processes if p.alive]

    # --- processes -------------------------------------------------------------------------------------------

    async def open(self) -> None:
        """Start every load process and wait until each has its client; ClientSetupError otherwise."""
        for spec in self.specs:
            self.processes.append(await self._spawn(spec))
        await self._wait_ready("a load process")

    async def _wait_ready(self, what: str) -> None:
        """Every process has its client, or the pool closes and the setup fails, naming `what` did not start."""
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                await asyncio.gather(*(p.ready.wait() for p in self.processes))
        except TimeoutError:
            await self.close()
            raise ClientSetupError(f"{what} did not start within {START_TIMEOUT_S:g} s") from None
        failed = [p.error or "it ended" for p in self.processes if p.error or not p.alive]
        if failed:
            await self.close()
            raise ClientSetupError(f"{what} failed to start: {failed[0]}")

    async def _spawn(self, spec: WorkerSpec) -> _Process:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        log_path = self.log_dir / f"load-{os.getpid()}-{spec.index}.log" if self.log_dir else None
        log = open(log_path, "wb") if log_path else subprocess.DEVNULL
        fd = theirs.fileno()  # the same number in the child (pass_fds keeps it)
        try:
            proc = subprocess.Popen(module_command("befori_tui.core.worker"), stdin=subprocess.PIPE,
                                    stdout=log, stderr=log, pass_fds=(fd,), close_fds=True, env=child_env())
        finally:
            theirs.close()
            if log is not subprocess.DEVNULL:
                log.close()
        proc.stdin.write(pickle.dumps((spec, fd)))
        proc.stdin.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        p = _Process(spec.index, proc, reader, writer, log_path=log_path)
        p.task = asyncio.create_task(self._read(p), name=f"load-process-{spec.index}")
        return p

    def _send(self, p: _Process, command) -> None:
        if p.alive and not p.writer.is_closing():
            p.writer.write(ev.encode_command(command))

    async def _read(self, p: _Process) -> None:
        try:
            while True:
                payload = await ev.read_frame_async(p.reader)
                if payload is None:
                    break
                batch = ev.decode_batch(payload)
                p.clock.observe(batch.sent_ns, time.perf_counter_ns())
                for event in batch.events:
                    self._on_event(p, event)
        except (ev.ProtocolError, ConnectionError, OSError) as exc:
            p.error = p.error or str(exc)
        if not p.ready.is_set():  # it ended before it was ready: a start-up failure, not a loss
            p.alive = False
            p.error = p.error or f"it exited with code {p.proc.wait()} (its log: {self.log_dir})"
            p.ready.set()
            return
        if not p.finished.is_set():
            self._lost(p)

    # --- what the processes say -----------------------------------------------------------------------------

    def _on_event(self, p: _Process, event) -> None:
        t = type(event)
        if t is ev.RequestStarted:
            level = self.levels[event.level]
            r = RequestRecord(event.request_id, event.slot, event.level, level.concurrency,
                              t_send_ns=p.map(event.t_send_ns), worker=p.worker)
            self.in_flight[r.request_id] = r
            level.sent += 1
            self.observer.on_request_start(r)
            if event.level != self.levels[-1].index:  # a removed slot's last request, heard of late
                self._check_drain(late_start=True)
        elif t is ev.FirstToken:
            r = self.in_flight.get(event.request_id)
            if r is not None:
                r.t_first_token_ns = p.map(event.t_first_token_ns)
                self.observer.on_first_token(r)
        elif t is ev.RequestEnded:
            r = ev.record_from_wire(event.record)
            r.worker = p.worker
            for name in ("t_send_ns", "t_headers_ns", "t_first_token_ns", "t_end_ns"):
                setattr(r, name, p.map(getattr(r, name)))
            self.in_flight.pop(r.request_id, None)  # its start came first: one ordered stream per process
            self._finish(r)
            self._check_drain()
        elif t is ev.LevelEnded:
            self._drained.setdefault(event.index, set()).add(p.index)
            self._end_if_drained()
        elif t is ev.LagSamples:
            offset = p.clock.offset_ns or 0
            self.health.add(event.t_ns, event.lag_ns, offset)
            p.lag_t_ns.extend(t + offset for t in event.t_ns)  # one process's samples come in time order
            p.lag_ns.extend(event.lag_ns)
            if event.cpu_t_ns:
                p.cpu.append((event.cpu_t_ns + offset, event.cpu_ns))
        elif t is ev.Ready:
            if event.host:
                p.worker = {"host": event.host, "pid": event.pid}
            p.ready.set()
        elif t is ev.Failed:
            p.error = event.text
            p.ready.set()
        elif t is ev.Finished:
            p.finished.set()

    def _finish(self, r: RequestRecord) -> None:
        level = self.levels[r.level]
        r.concurrency = level.concurrency
        if level.t_end_ns is not None and r.t_end_ns is not None and r.t_end_ns > level.t_end_ns:
            r.outlived_level = True  # the level ended here before its process heard of it
        if level.t_drained_ns is None or r.t_send_ns < level.t_drained_ns:
            # Sent while the old load was still on the server (each process only sees its own share of the
            # drain; the run sees all of it): warm-up.
            r.warmup = True
        level.records.append(r)
        self.occupancy.append(r)
        if not r.warmup and not r.outlived_level:
            level.measured_done += 1
        self.observer.on_record(r)
        self._wake()

    def _lost(self, p: _Process) -> None:
        """A process died: its requests in flight are recorded once, as lost; the others carry the load."""
        if not p.alive:
            return
        p.alive = False
        p.finished.set()
        mine = [r for rid, r in self.in_flight.items() if rid % len(self.specs) == p.index]
        p.requests_lost = len(mine)
        now = time.perf_counter_ns()
        for r in mine:
            del self.in_flight[r.request_id]
            r.t_end_ns = now
            r.error_kind, r.error_message = "lost", "its load process ended before the request did"
            self._finish(r)
        self._check_drain()
        if self.stopping:
            return
        p.lost = True
        self.processes_lost += 1
        others = len(self.alive)
        code = p.proc.poll()
        where = f", {p.name}" if p.worker else ""
        self.on_note(f"load process {p.index} ended (exit {code if code is not None else '?'}{where}): "
                     f"{len(mine)} requests in flight counted as lost; "
                     + (f"the load goes on in {others} process{'es' if others != 1 else ''}, from a new level"
                        if others else "no load process is left"))
        if others and self.levels:
            self._open(self.concurrency, "lost-process")
        elif not others:
            self.on_empty()  # nothing can carry the load any more: the run ends (and saves) rather than idle

    # --- each load process: where it ran and how it kept up ------------------------------------------------

    def worker_health(self, cpu_window_s: float = 10.0) -> list[ev.WorkerHealth]:
        """Each process's loop-lag p99 over the same span as the run's live warning (health.live_lag_p99_ms)
        and its CPU over the last `cpu_window_s`, for the screen (`Health`)."""
        level_start = self.level.t_start_ns if self.levels else None
        t_cpu = time.perf_counter_ns() - int(cpu_window_s * 1e9)
        return [ev.WorkerHealth(p.name, live_lag_p99_ms(p.lag_t_ns, p.lag_ns, level_start), p.cpu_pct(t_cpu, None),
                                p.alive) for p in self.processes]

    def worker_summary(self, t0_ns: int, t1_ns: int | None) -> list[dict]:
        """Each process's loop-lag p99 and CPU over a level, for its summary (docs/results.md)."""
        out = []
        for p in self.processes:
            row = {"worker": p.name}
            lag, cpu = lag_p99_ms(p.lag_t_ns, p.lag_ns, t0_ns, t1_ns), p.cpu_pct(t0_ns, t1_ns)
            if lag is not None:
                row["loop_lag_ms_p99"] = lag
            if cpu is not None:
                row["cpu_pct"] = cpu
            if len(row) > 1:
                out.append(row)
        return out

    def workers_table(self) -> list[dict]:
        """Where each process ran and how it ended, for the TOML (`[[cluster.workers]]`)."""
        return [{"index": p.index, "host": (p.worker or {}).get("host", ""), "pid": (p.worker or {}).get("pid", 0),
                 **p.where, "lost": p.lost, "requests_lost": p.requests_lost} for p in self.processes]

    def cluster_summary(self) -> dict:
        """How many load processes ran where (the TOML's `[cluster]`, docs/results.md)."""
        table = self.workers_table()
        hosts: dict[str, int] = {}
        for w in table:
            hosts[w["host"]] = hosts.get(w["host"], 0) + 1
        return {"engine": "local", "workers": len(table), "workers_lost": self.processes_lost,
                "hosts": [{"host": h, "workers": n} for h, n in hosts.items()], "worker": table}

    # --- the LoadRunner face ------------------------------------------------------------------------------

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _check_drain(self, late_start: bool = False) -> None:
        """Has the current level's drain (removed slots' requests, in every process) begun, changed or ended?
        A removed slot's request heard of late (`late_start`: sent before its process heard of the level)
        reopens it. A drained level costs nothing here: this runs on every request's end."""
        level = self.levels[-1] if self.levels else None
        if level is None or (level.drained and not late_start):
            return
        over = removed_in_flight(self.in_flight.values(), level.concurrency)
        if over == level.draining and (over or level.drained):
            return
        level.draining = over
        level.t_drained_ns = None if over else time.perf_counter_ns()
        on_drain = getattr(self.observer, "on_drain", None)
        if on_drain is not None:
            on_drain(level)

    def _open(self, concurrency: int, reason: str, cancel_removed: bool = False) -> None:
        now = time.perf_counter_ns()
        old = self.levels[-1] if self.levels else None
        if old is not None and old.t_end_ns is None:
            old.t_end_ns = now
        warmup = concurrency if self.warmup_requests < 0 else self.warmup_requests
        new = Level(len(self.levels), concurrency, now, warmup, reason,
                    records=LevelRecords(recent_keep_s=RUN_RECENT_KEEP_S))
        self.levels.append(new)
        self.observer.on_level_change(old, new)
        if removed_in_flight(self.in_flight.values(), concurrency):
            self._check_drain(late_start=True)
        else:
            new.t_drained_ns = now
        alive = self.alive
        for k, p in enumerate(alive):
            slots = list(range(k, concurrency, len(alive)))
            share = len(slots) if self.warmup_requests < 0 else round(warmup * len(slots) / max(1, concurrency))
            self._send(p, ev.OpenLevel(new.index, slots, concurrency, share, reason, cancel_removed))
        self._wake()

    def start(self, concurrency: int) -> None:
        self.t_start_ns = time.perf_counter_ns()
        self.set_concurrency(concurrency, reason="start")

    def set_concurrency(self, concurrency: int, reason: str = "user") -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be ≥ 1")
        if self.stopping:
            return
        cancel = self.on_decrease == "cancel" and concurrency < self.concurrency
        self.concurrency = concurrency
        self._open(concurrency, reason, cancel)

    def new_level(self, reason: str = "new") -> None:
        if not self.stopping and self.levels:
            self._open(self.concurrency, reason)

    def pause(self) -> None:
        self.paused = True
        for p in self.alive:
            self._send(p, ev.Pause())
        self._end_if_drained()

    def resume(self) -> None:
        self.paused = False
        if self.levels and not self.level.open and not self.stopping:
            self._open(self.concurrency, "resume")
        for p in self.alive:
            self._send(p, ev.Resume())

    def _end_if_drained(self) -> None:
        level = self.levels[-1] if self.levels else None
        if not self.paused or level is None or not level.open:
            return
        if {p.index for p in self.alive} <= self._drained.get(level.index, set()) and level.in_flight <= 0:
            level.t_end_ns = time.perf_counter_ns()
            self.observer.on_level_end(level)
            self._wake()

    async def wait_level(self, requests: int = 0, seconds: float = 0.0) -> bool:
        return await wait_level(self, requests, seconds)  # the same rule as one process's

    async def stop(self, drain_s: float = 0.0) -> None:
        """Every process stops sending; what is in flight gets drain_s, then ends as cancelled and is sent."""
        if self.stopping:
            return
        self.stopping = True
        if self.levels and self.level.open:
            self.level.t_end_ns = time.perf_counter_ns()
        for p in self.alive:
            self._send(p, ev.WorkerStop(drain_s))
        waiting = [p.finished.wait() for p in self.alive]
        if waiting:
            await asyncio.wait([asyncio.ensure_future(w) for w in waiting], timeout=drain_s + 10.0)
        for p in self.alive:
            if not p.finished.is_set():  # it did not answer: what it had in flight is lost
                p.proc.kill()
                self._lost(p)
        self._wake()
        self.observer.on_finish()

    async def close(self) -> None:
        """End the processes (after stop(), they are ending already) and their connections."""
        for p in self.processes:
            try:
                p.writer.close()
            except Exception:  # noqa: BLE001 — already closed
                pass
        for p in self.processes:
            try:
                await asyncio.wait_for(asyncio.to_thread(p.proc.wait), 5.0)
            except TimeoutError:
                p.proc.kill()
                await asyncio.to_thread(p.proc.wait)
            if p.task is not None:
                await asyncio.gather(p.task, return_exceptions=True)
            if p.proc.returncode == 0 and p.log_path is not None:
                p.log_path.unlink(missing_ok=True)
