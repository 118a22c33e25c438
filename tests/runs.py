"""A real run for UI tests: the controller on a thread of the test process, its events on a real Unix socket,
and a MonitorApp watching it through a RunLink — the monitor's own path, minus the separate process."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from threading import Thread

from befori_tui.core.controller import RunController, RunPlan
from befori_tui.core.runlink import RunLink
from befori_tui.core.runproc import make_hello, new_run_id, start_run_thread
from befori_tui.core.runserver import socket_path_for


@dataclass
class Run:
    controller: RunController
    thread: Thread
    socket_path: Path

    @property
    def finished(self):
        return self.controller.finished

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    def join(self, timeout_s: float = 30.0) -> bool:
        self.thread.join(timeout_s)
        return not self.thread.is_alive()


def start_run(cfg, out: Path, plan: RunPlan | None = None, telemetry: str | None = "none",
              simulated: bool = True, wait_for_screen_s: float = 0.0) -> Run:
    plan = plan or RunPlan(cfg.load.concurrency[:1], then="hold")
    controller = RunController(cfg, out, None, plan, telemetry=telemetry, simulated=simulated,
                               wait_for_screen_s=wait_for_screen_s)
    run_id = new_run_id()
    socket_path = socket_path_for(out, run_id)
    hello = make_hello(run_id, out, controller.session.raw_path, cfg.pricing)
    return Run(controller, start_run_thread(controller, socket_path, hello), socket_path)


def watch_run(run: Run, cfg, ui_options):
    from befori_tui.ui.app import MonitorApp
    from befori_tui.ui.model import LiveModel

    link = RunLink(run.socket_path)
    link.connect()
    model = LiveModel(cfg.pricing, clock=link.clock)
    model.info.update({"simulated": run.controller.simulated})
    return model, MonitorApp(cfg, model, link, ui_options)


def live_monitor(cfg, out: Path, plan: RunPlan | None = None, telemetry: str | None = "none", ui_options=None):
    """(run, model, app): what `befori-tui monitor` wires, with the run on a thread here."""
    from befori_tui.ui.app import UiOptions

    run = start_run(cfg, out, plan, telemetry)
    model, app = watch_run(run, cfg, ui_options or UiOptions(fps=10))
    return run, model, app
