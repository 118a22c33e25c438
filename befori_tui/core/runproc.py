"""A run in a process of its own: what the monitor starts, and what `bench` does in its own process.

`serve_run` runs a controller with its event socket and the stop signals; `bench` calls it directly. The
monitor calls `spawn_run`: a child process (`python -m befori_tui.core.runproc`, the RunSpec pickled on its
stdin) in a session of its own, so that the terminal's signals (a Ctrl-C before the screen is up, the hangup)
do not reach it — what happens when the terminal goes away is `on_hangup`'s choice, carried out by the viewer;
it ignores SIGHUP besides. Its own session is also its own scheduling group (Linux autogroups) at the usual
priority, while the viewer that started it draws in a session lowered as a whole (ui/monitor.py,
`draw_in_a_session_of_its_own`): on a busy box the run's load goes first. Its stdout and stderr go to a log in
the runtime folder.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import subprocess
import sys
import threading
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from befori_tui.core import events as ev
from befori_tui.core.childproc import child_env, module_command
from befori_tui.core.config import Config
from befori_tui.core.controller import EXIT_BAD_INPUT, EXIT_INTERRUPTED, RunController, RunPlan
from befori_tui.core.runserver import RunServer, runtime_dir


@dataclass
class RunSpec:
    """Everything a run process needs: the config, where to save, the plan, how to reach it."""

    cfg: Config
    out: Path
    raw: Path | None
    plan: RunPlan
    socket_path: Path
    run_id: str
    telemetry: str | None = None
    drain_s: float = 0.0
    sim_profile: str | None = None  # start the built-in simulator with this profile (no --url)
    sim_time_scale: float = 1.0
    on_hangup: str = "continue"
    # The monitor's own run: send nothing until its viewer has drawn its first screen, or this many seconds.
    wait_for_screen_s: float = 0.0
    log_path: Path | None = None  # the process's stdout and stderr; removed when the run ends as expected


SWITCH_INTERVAL_S = 0.0005


def new_run_id() -> str:
    return f"{datetime.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def make_hello(run_id: str, out: Path, raw: Path, pricing, on_hangup: str = "continue", slo=()) -> ev.Hello:
    from befori_tui.core.slo import slo_text

    return ev.Hello(ev.SCHEMA_VERSION, run_id, os.getpid(), str(Path(out).absolute()), str(Path(raw).absolute()),
                    datetime.now(timezone.utc).isoformat(timespec="seconds"), on_hangup, pricing,
                    slo_text(list(slo)))


async def serve_run(controller: RunController, socket_path: Path, hello: ev.Hello,
                    on_signal: Callable[[int, bool], None] | None = None, cleanup: Callable[[], None] | None = None,
                    server: RunServer | None = None) -> int:
    """Run the controller with its events on `socket_path`. SIGINT and SIGTERM stop it and save (a second
    one: at once, files still valid); so does SIGHUP unless it is ignored (nohup), so a `bench` under nohup
    outlives its terminal. `on_signal(signum, first)` says something about it; `cleanup` runs before an exit
    at once."""
    if server is None:
        server = RunServer(controller, socket_path, hello)
        server.start()

    def exit_at_once() -> None:
        server.flush_now()
        server.close(0.5)
        if cleanup is not None:
            cleanup()
        os._exit(EXIT_INTERRUPTED)
    controller.on_stop_at_once = exit_at_once

    # Other threads of this process (telemetry parsing, the settle test's bootstrap, summaries for a save,
    # encoding events) hold the GIL in turns of the switch interval, 5 ms by default: a token read waits
    # that long behind them. 0.5 ms bounds it (bench/README.md, Client health).
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    loop = asyncio.get_running_loop()
    count = 0

    def handle(signum: int) -> None:
        nonlocal count
        count += 1
        if on_signal is not None:
            on_signal(signum, count == 1)
        controller.stop("signal", at_once=count > 1)

    sigs = [signal.SIGINT, signal.SIGTERM]
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        sigs.append(signal.SIGHUP)
    for sig in sigs:
        loop.add_signal_handler(sig, handle, sig)
    try:
        return await controller.run()
    finally:
        for sig in sigs:
            loop.remove_signal_handler(sig)
        await asyncio.to_thread(server.close)


def spawn_run(spec: RunSpec) -> tuple[subprocess.Popen, Path]:
    """Start the run process; returns it and its log. Connect to `spec.socket_path` to watch it."""
    log = runtime_dir() / f"{spec.run_id}.log"
    spec.log_path = log
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(module_command("befori_tui.core.runproc"), stdin=subprocess.PIPE,
                                stdout=log_file, stderr=log_file, start_new_session=True, close_fds=True,
                                env=child_env())
    assert proc.stdin is not None
    proc.stdin.write(pickle.dumps(spec))
    proc.stdin.close()
    return proc, log


def run_spec(spec: RunSpec) -> int:
    """The run process's work: the simulator if asked, the controller, the socket, until the run ends."""
    cfg = spec.cfg
    controller = RunController(cfg, spec.out, spec.raw, spec.plan, telemetry=spec.telemetry, drain_s=spec.drain_s,
                               simulated=spec.sim_profile is not None, wait_for_screen_s=spec.wait_for_screen_s)
    hello = make_hello(spec.run_id, spec.out, controller.session.raw_path, cfg.pricing, spec.on_hangup, cfg.slo)
    server = RunServer(controller, spec.socket_path, hello)
    server.start()  # first, so a viewer connects at once and sees what the run is waiting for
    with ExitStack() as stack:
        sim = None
        if spec.sim_profile is not None:
            from befori_tui.sim.launch import start_sim

            controller.emit(ev.Connecting(f"the built-in simulator ({spec.sim_profile})", ""))
            try:
                sim = stack.enter_context(start_sim(profile=spec.sim_profile, time_scale=spec.sim_time_scale))
            except RuntimeError as exc:
                controller.emit(ev.Failed(f"the simulator did not start: {exc}"))
                controller.emit(ev.Finished("setup", EXIT_BAD_INPUT))
                controller.finished.set()
                server.close()
                return EXIT_BAD_INPUT
            cfg.endpoint.url = sim.base_url
            cfg.endpoint.proxy_from_env = False  # our own simulator on loopback: never through a proxy
            # The simulator's /metrics carries DCGM-style series for its simulated GPUs.
            controller.telemetry = controller.telemetry or f"dcgm:{sim.root_url}/metrics"
        return asyncio.run(serve_run(controller, spec.socket_path, hello, server=server,
                                     cleanup=sim.stop if sim is not None else None))


def main() -> int:
    spec = pickle.load(sys.stdin.buffer)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # no terminal: a stray hangup must not end the run
    code = run_spec(spec)
    if code != 1 and spec.log_path is not None:  # an expected end: the log holds nothing worth keeping
        spec.log_path.unlink(missing_ok=True)
    return code


if __name__ == "__main__":
    sys.exit(main())


def start_run_thread(controller: RunController, socket_path: Path, hello: ev.Hello) -> threading.Thread:
    """The run on a thread of this process, its events on `socket_path` (for tests and embedding: no
    signal handling, which belongs to a main thread). Join the thread, or watch `controller.finished`."""
    server = RunServer(controller, socket_path, hello)
    server.start()

    async def main() -> None:
        try:
            await controller.run()
        finally:
            await asyncio.to_thread(server.close)

    thread = threading.Thread(target=asyncio.run, args=(main(),), name="befori-run", daemon=True)
    thread.start()
    return thread
