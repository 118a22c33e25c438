"""`befori-tui monitor` and the demo (`befori-tui` with no arguments): flags, then the app."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Callable

from befori_tui.cliargs import OneLineParser, add_run_flags, check_output_paths, config_from_args, run_command
from befori_tui.core.config import ConfigError, parse_int_list, redact_url
from befori_tui.core import events as ev
from befori_tui.core.controller import RunPlan, search_plan
from befori_tui.core.runlink import AttachError, RunLink, resolve_target
from befori_tui.core.runproc import RunSpec, new_run_id, spawn_run
from befori_tui.core.runserver import socket_path_for
from befori_tui.core.session import default_out_path
from befori_tui.ui.model import LiveModel

DEMO_SWEEP = "1,8,32,64,128,256"
DEMO_SETTLE_CAP_S = 60.0
# The run sends its first request once the screen is up (ScreenReady), or after this long whatever happens.
SCREEN_WAIT_S = 10.0


def add_monitor_flags(p: argparse.ArgumentParser) -> None:
    m = p.add_argument_group("monitor")
    m.add_argument("--sweep", nargs="?", const="", metavar="N[,N…]",
                   help="step through these concurrencies by itself (no value: --concurrency's levels); "
                        "each lasts --requests-per-level / --seconds-per-level (default: no sweep, the first level "
                        "holds until you change it)")
    add_view_flags(m)
    m.add_argument("--drain", type=float, default=0.0, metavar="S",
                   help="on quit, give requests in flight S seconds to finish (default: cancel at once)")
    m.add_argument("--on-hangup", choices=["continue", "stop"], default="continue",
                   help="when the terminal goes away: the run goes on to the end of its plan or "
                        "--max-seconds and can be attached to again (continue, the default), or stops and saves")


def add_view_flags(m) -> None:
    """How the screen looks and what its keys step by: the same for the monitor and for attach."""
    m.add_argument("--step", default="x2", metavar="xN|+N", help="what +/- do to the concurrency (default x2)")
    m.add_argument("--fps", type=float, default=10.0, metavar="HZ",
                   help="redraws per second at most (default 10); the screen redraws twice per cell of the "
                        "timeline, so a 60 s window at 160 columns draws ~4.6 a second")
    m.add_argument("--window", type=float, default=60.0, choices=[30.0, 60.0, 120.0], metavar="S",
                   help="timeline window: 30, 60 or 120 s (default 60; w switches)")
    m.add_argument("--theme", metavar="NAME", help="befori-dark (default), befori-light, befori-contrast, …")
    m.add_argument("--themes", metavar="DIR", help="load more themes from DIR/*.toml (default: only the bundled ones)")


def require_terminal(command: str) -> None:
    """The screen needs a terminal: without one (a script, a pipe, cron) Textual would write raw escape codes
    into a file. Say what to use instead, before anything starts."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise ConfigError(f"the {command} screen needs a terminal (stdin and stdout are not one); "
                          "for scripts use `befori-tui bench`, and `befori-tui attach` to watch it")


def check_view_flags(args: argparse.Namespace) -> None:
    """Bad view flags are one line each (ConfigError), before anything starts."""
    from befori_tui.ui.app import parse_step

    if not 0 < args.fps <= 60:
        raise ConfigError(f"--fps must be in (0, 60], got {args.fps:g}")
    try:
        parse_step(args.step)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if args.themes and not Path(args.themes).is_dir():
        raise ConfigError(f"--themes: no such directory {args.themes!r}")
    if args.theme:
        from textual.theme import BUILTIN_THEMES

        from befori_tui.ui.themes import all_themes

        themes, errors = all_themes(Path(args.themes) if args.themes else None)
        ours = [t.name for t in themes]
        broken = [e for e in errors if e.path.stem == args.theme]
        if args.theme not in ours and broken:
            raise ConfigError(f"--theme: {broken[0].path}: {broken[0].reason}")
        if args.theme not in ours and args.theme not in BUILTIN_THEMES:
            raise ConfigError(f"--theme: no theme {args.theme!r} (there are: {', '.join(ours)}, and Textual's own)")


def build_parser(command: str) -> OneLineParser:
    p = OneLineParser(prog=f"befori-tui {command}",
                      description="The live monitor: load an OpenAI-compatible server, watch $/M tokens settle.")
    add_run_flags(p)
    add_monitor_flags(p)
    return p


def plan_from_args(args: argparse.Namespace, cfg) -> RunPlan:
    """A sweep (--sweep, --sweep-until-settled) or a search (--find-optimum) pauses when done; without one the
    first level holds."""
    if args.find_optimum:
        start = cfg.load.rate[0] if cfg.load.rate else cfg.load.concurrency[0] if args.concurrency else 1
        return search_plan(cfg, start, args.requests_per_level or 0, then="pause")
    if cfg.load.rate:  # the open loop: a level per rate (a sweep), or the first rate, held
        sweep = args.sweep is not None or args.sweep_until_settled
        return RunPlan([cfg.load.max_in_flight], cfg.load.requests_per_level if sweep else 0,
                       cfg.load.seconds_per_level if sweep else 0.0, args.sweep_until_settled,
                       then="pause" if sweep else "hold", rates=list(cfg.load.rate if sweep else cfg.load.rate[:1]))
    if args.sweep is None and not args.sweep_until_settled:
        return RunPlan(cfg.load.concurrency[:1], then="hold")
    levels = parse_int_list(args.sweep, "--sweep") if args.sweep else list(cfg.load.concurrency)
    return RunPlan(levels, cfg.load.requests_per_level, cfg.load.seconds_per_level, args.sweep_until_settled,
                   then="pause")


def monitor_main(command: str, argv: list[str]) -> int:
    from befori_tui.ui.app import UiOptions

    args = build_parser(command).parse_args(argv)
    if command == "demo" and not args.url and not args.config:
        args.input_tokens = args.input_tokens or "550:150"
        args.output_tokens = args.output_tokens or "150"
        if args.sweep is None and not args.concurrency:
            args.sweep, args.sweep_until_settled = DEMO_SWEEP, True
            # A level that has not settled in a minute moves on: the demo should show the whole curve soon.
            args.seconds_per_level = args.seconds_per_level or DEMO_SETTLE_CAP_S
    cfg = config_from_args(args)
    check_view_flags(args)
    if args.drain < 0:
        raise ConfigError(f"--drain must be ≥ 0 seconds, got {args.drain:g}")
    try:
        plan = plan_from_args(args, cfg)
    except ValueError as exc:
        raise ConfigError(f"--sweep: {exc}") from None
    # The saved config says what this run was asked to do: the sweep's levels, or the one it starts at (the
    # levels that really ran are in the session's [[levels]]).
    cfg.load.concurrency = list(plan.concurrencies)
    out = Path(args.out) if args.out else default_out_path()
    raw = Path(args.raw) if args.raw else None
    check_output_paths(out, raw)
    require_terminal(command)
    ui_options = UiOptions(fps=args.fps, window_s=args.window, step=args.step, theme=args.theme,
                           themes_dir=Path(args.themes) if args.themes else None, on_hangup=args.on_hangup)
    run_id = new_run_id()
    spec = RunSpec(cfg, out, raw, plan, socket_path_for(out, run_id), run_id,
                   telemetry=args.telemetry or cfg.telemetry or None, drain_s=args.drain,
                   sim_profile=None if cfg.endpoint.url else args.profile, sim_time_scale=args.time_scale,
                   on_hangup=args.on_hangup, wait_for_screen_s=SCREEN_WAIT_S)
    return draw_in_a_session_of_its_own(command, lambda: _start_and_watch(command, args, cfg, spec, ui_options))


def _start_and_watch(command: str, args, cfg, spec: RunSpec, ui_options) -> int:
    if spec.sim_profile is not None:
        print(f"no --url: starting the built-in simulator (profile {args.profile}, simulated GPUs)…",
              file=sys.stderr, flush=True)
    early = SignalsBeforeTheScreen()
    proc, log = spawn_run(spec)
    try:
        link = connect_to_new_run(spec.socket_path, proc, log)
    except AttachError as exc:
        print(f"befori-tui {command}: {exc}", file=sys.stderr)
        return 1
    model = LiveModel(cfg.pricing, clock=link.clock)
    model.info.update({"url": redact_url(cfg.endpoint.url) if cfg.endpoint.url else "built-in simulator",
                       "api": cfg.endpoint.api, "simulated": spec.sim_profile is not None})
    if early.received:
        return _stop_before_the_screen(early.received[0], link, model, proc, ui_options.on_hangup)
    ui_options.signals_before_the_screen = early.received  # those that come while it starts: its on_mount acts
    return watch(cfg, link, model, ui_options, run_proc=proc)


class SignalsBeforeTheScreen:
    """The terminal's signals from the run's start until the screen takes them over (MonitorApp's on_mount):
    kept, then acted on as the screen would act on them. The run is in a session of its own, so a Ctrl-C in
    the second before the screen was up used to end the viewer alone and leave its run going."""

    def __init__(self) -> None:
        self.received: list[int] = []
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._keep)

    def _keep(self, signum: int, _frame) -> None:
        self.received.append(signum)


def _stop_before_the_screen(signum: int, link: RunLink, model, run_proc, on_hangup: str) -> int:
    """A signal came before there was a screen: a Ctrl-C or a kill stops the run, which saves what it has (if
    anything), and this exits 130; a hangup does what --on-hangup says, and this exits at once."""
    from befori_tui.ui.app import EXIT_HANGUP, EXIT_INTERRUPTED

    if signum == signal.SIGHUP:  # as the screen's own hangup (MonitorApp._on_hangup): nobody is left to tell
        if on_hangup == "stop":
            link.send(ev.Stop("signal"))
        link.close()
        return EXIT_HANGUP
    link.send(ev.Stop("signal"))
    _wait_for_end(link, model, run_proc)
    link.close()
    _say_where_saved(model, "stopped before the screen was up; ")
    return EXIT_INTERRUPTED


def connect_to_new_run(socket_path: Path, proc, log: Path, timeout_s: float = 60.0) -> RunLink:
    """Wait for the run process's socket (a fresh interpreter: about a second), then connect."""
    deadline = time.monotonic() + timeout_s
    while True:
        if socket_path.exists():
            link = RunLink(socket_path)
            try:
                link.connect()
                return link
            except AttachError:
                pass
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
            raise AttachError(f"the run process exited with code {proc.returncode} before it was ready"
                              + (f": {tail[0]}" if tail else ""))
        if time.monotonic() > deadline:
            raise AttachError(f"the run process did not open {socket_path} within {timeout_s:g} s (log: {log})")
        time.sleep(0.02)


VIEWER_NICENESS = 10  # added to the viewer's own: on a busy box the screen waits, the load does not
VIEWER_SESSION_NICE = 19  # the viewer's session (autogroup): the lowest, as it holds nothing but the viewer
PASSED_ON = (signal.SIGWINCH, signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


def draw_in_a_session_of_its_own(command: str, draw: Callable[[], int]) -> int:
    """Run `draw` (start or find the run, then the viewer until it ends) in a child process in a session of its
    own, at the lowest priority a session can have; this process waits for it, passing on the signals the
    terminal sends (a resize, a hangup, a Ctrl-C before the screen is up, a kill), and returns its exit code.

    Why: Linux with autogroups (on by default on most distributions) schedules each *session* as one group and
    shares the CPU between groups as equals whatever the threads' priorities. In the terminal's session the
    viewer would compete as an equal with the run process and with the server, each in a session of its own
    (a user's server never shares the viewer's). In a session holding only the viewer, its whole session can be
    lowered (/proc/self/autogroup): on a box with no core to spare a frame waits, and neither a token read nor
    the server does (bench/README.md, UI). The terminal is the same for the child — the same descriptors, modes
    and size — but no longer its controlling terminal: it gets the terminal's signals from here, and sees the
    terminal close by itself (ui/app.py, `_terminal_gone`).

    Without fork (or with threads already started, where forking is unsafe) it draws in this process."""
    if not hasattr(os, "fork") or not hasattr(os, "setsid") or threading.active_count() > 1:
        return draw()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the viewer
        code = 1
        try:
            os.setsid()
            _lower_this_session()
            code = run_command(command, draw)  # as the command's own process would exit (cli.main)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # noqa: BLE001 — a crash: say where, as the interpreter would
            traceback.print_exc()
            code = 1
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    for sig in PASSED_ON:
        signal.signal(sig, lambda signum, _frame: _pass_on(pid, signum))
    while True:
        _, status = os.waitpid(pid, 0)  # a signal handled meanwhile does not end the wait (PEP 475)
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            code = os.waitstatus_to_exitcode(status)
            return code if code >= 0 else 128 - code


def _pass_on(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _lower_this_session() -> None:
    """The session's scheduling group to the lowest priority (a user may lower, never raise it); a kernel
    without autogroups has no such file, and there the viewer's threads' nice (yield_to_the_load) counts."""
    try:
        with open("/proc/self/autogroup", "w") as f:
            f.write(str(VIEWER_SESSION_NICE))
    except OSError:
        pass


def yield_to_the_load() -> None:
    """Lower this process's CPU priority, after the run process has been started (it keeps its own). A viewer
    only draws; where it shares a box with the load (and often the server), a frame or the first paint must
    not take the CPU a token read needs: the load's figures matter, the screen can be a frame late.

    Every thread, not only this one: on Linux a priority is a thread's, and the link's reader (which decodes
    every event) was started before this and kept its full priority. Threads started later inherit it.

    A thread's priority counts only within its scheduling group, and Linux makes each session one (autogroup):
    that is why the viewer draws in a session of its own whose priority is lowered as a whole
    (draw_in_a_session_of_its_own). Where the kernel has no autogroups, this priority is the one that counts."""
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]
    for tid in tids:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + VIEWER_NICENESS)
        except (OSError, AttributeError):  # not permitted, or no priorities on this platform: draw as we are
            pass


def watch(cfg, link: RunLink, model, ui_options, run_proc=None) -> int:
    """The app on a run's link until the user quits, detaches or the run is gone; then what it says."""
    from befori_tui.ui.app import MonitorApp

    yield_to_the_load()
    app = MonitorApp(cfg, model, link, ui_options)
    crashed = True
    try:
        code = app.run()
        # Textual sets return_code 1 when the app died of an exception (our own exits pass their code as
        # the result, with return_code 0).
        crashed = bool(app.return_code)
    finally:
        if crashed and not model.finished and ui_options.owns_run:
            link.send(ev.Stop("error"))  # the screen broke, not the run: stop it and save as an error
        if crashed or (ui_options.owns_run and not app.detached):
            _wait_for_end(link, model, run_proc)
        link.close()
    if crashed:
        code = 1
    if app.exit_note:
        print(app.exit_note, file=sys.stderr)
    if app.detached:
        print(f"detached; the run goes on. befori-tui attach {link.socket_path} to watch it again",
              file=sys.stderr)
    else:
        _say_where_saved(model)
    return code if isinstance(code, int) else 0


def _say_where_saved(model, before: str = "") -> None:
    if model.last_saved:
        path, n = model.last_saved
        print(f"{before}saved {path} and {model.raw_path} ({n} requests)", file=sys.stderr)


def _wait_for_end(link: RunLink, model, run_proc, timeout_s: float = 30.0) -> None:
    """The run's last events (its final save) before this process says where the files are."""
    deadline = time.monotonic() + timeout_s
    while not model.finished and not link.closed.is_set() and time.monotonic() < deadline:
        model.drain(link.events)
        time.sleep(0.02)
    model.drain(link.events)
    if run_proc is not None:
        try:
            run_proc.wait(max(0.5, deadline - time.monotonic()))
        except Exception:  # noqa: BLE001 — it goes on by itself; nothing more to wait for
            pass


def attach_main(argv: list[str]) -> int:
    """`befori-tui attach [SOCKET | RESULTS.toml | FOLDER]`: the monitor on a run that is already going."""
    p = OneLineParser(prog="befori-tui attach",
                      description="Watch a running run (a monitor's or a bench's): its history, then live. "
                                  "q stops the run (after asking), d detaches and leaves it going.")
    p.add_argument("target", nargs="?", metavar="SOCKET|RESULTS.toml|FOLDER",
                   help="which run (default: the one running here, in ./befori-results, or anywhere for this user)")
    add_view_flags(p.add_argument_group("view"))
    args = p.parse_args(argv)
    check_view_flags(args)
    require_terminal("attach")
    try:
        runs = resolve_target(args.target)
    except AttachError as exc:
        raise ConfigError(str(exc)) from None
    if not runs:
        where = args.target or "./befori-results or this user's runtime folder"
        print(f"befori-tui attach: no run is going in {where}", file=sys.stderr)
        return 1
    run = runs[0] if len(runs) == 1 else choose_run(runs)
    if run is None:
        return 1
    return draw_in_a_session_of_its_own("attach", lambda: _attach_and_watch(args, run))


def _attach_and_watch(args, run: dict) -> int:
    from befori_tui.core.config import Config
    from befori_tui.ui.app import UiOptions

    link = RunLink(run["socket"])
    try:
        hello = link.connect()
    except AttachError as exc:
        print(f"befori-tui attach: {exc}", file=sys.stderr)
        return 1
    cfg = Config()
    cfg.pricing = hello.pricing
    if hello.slo:  # the run's latency targets: levels are judged by them here too
        from befori_tui.core.slo import parse_slo

        cfg.slo = parse_slo(hello.slo, "the run's SLO")
    model = LiveModel(cfg.pricing, clock=link.clock)
    ui_options = UiOptions(fps=args.fps, window_s=args.window, step=args.step, theme=args.theme,
                           themes_dir=Path(args.themes) if args.themes else None, owns_run=False,
                           on_hangup=hello.on_hangup)
    return watch(cfg, link, model, ui_options)


def choose_run(runs: list[dict]) -> dict | None:
    """Several runs: list them and read a number (the terminal is still a plain one here)."""
    print("runs going:", file=sys.stderr)
    for i, r in enumerate(runs, 1):
        print(f"  {i}. {r.get('results', r['socket'])}  (started {r.get('started_at', '?')}, pid {r.get('pid', '?')})",
              file=sys.stderr)
    if not sys.stdin.isatty():
        print("befori-tui attach: several runs; name one (its socket or results file)", file=sys.stderr)
        return None
    try:
        answer = input(f"attach to which (1-{len(runs)})? ").strip()
    except EOFError:
        return None
    if answer.isdigit() and 1 <= int(answer) <= len(runs):
        return runs[int(answer) - 1]
    print(f"befori-tui attach: no run {answer!r}", file=sys.stderr)
    return None
