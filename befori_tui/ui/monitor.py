"""`befori-tui monitor` and the demo (`befori-tui` with no arguments): flags, then the app."""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from pathlib import Path

from befori_tui.cliargs import OneLineParser, add_run_flags, check_output_paths, config_from_args
from befori_tui.core.config import ConfigError, parse_int_list, redact_url
from befori_tui.core.runner_thread import RunnerOptions, RunnerThread, SweepPlan
from befori_tui.core.session import default_out_path

DEMO_SWEEP = "1,8,32,64,128,256"
# The UI thread holds the GIL while it draws; a shorter switch interval lets the load thread, woken by a
# socket, take it sooner, so TTFT is not stretched by a frame (see bench/ui_overhead.py).
SWITCH_INTERVAL_S = 0.0005
DEMO_SETTLE_CAP_S = 60.0


def add_monitor_flags(p: argparse.ArgumentParser) -> None:
    m = p.add_argument_group("monitor")
    m.add_argument("--sweep", nargs="?", const="", metavar="N[,N…]",
                   help="step through these concurrencies by itself (no value: --concurrency's levels); "
                        "each lasts --requests-per-level / --seconds-per-level")
    m.add_argument("--sweep-until-settled", action="store_true",
                   help="move to the next level when both $/M have settled (±3%%) instead, or after "
                        "--seconds-per-level if given")
    m.add_argument("--step", default="x2", metavar="xN|+N", help="what +/- do to the concurrency (default x2)")
    m.add_argument("--fps", type=float, default=10.0, metavar="HZ", help="redraws per second (default 10)")
    m.add_argument("--window", type=float, default=60.0, choices=[30.0, 60.0, 120.0], metavar="S",
                   help="timeline window: 30, 60 or 120 s (default 60; w switches)")
    m.add_argument("--theme", metavar="NAME", help="befori-dark (default), befori-light, befori-contrast, …")
    m.add_argument("--themes", metavar="DIR", help="load more themes from DIR/*.toml")
    m.add_argument("--drain", type=float, default=0.0, metavar="S",
                   help="on quit, give requests in flight S seconds to finish (default: cancel at once)")


def build_parser(command: str) -> OneLineParser:
    p = OneLineParser(prog=f"befori-tui {command}",
                      description="The live monitor: load an OpenAI-compatible server, watch $/M tokens settle.")
    add_run_flags(p)
    add_monitor_flags(p)
    return p


def sweep_from_args(args: argparse.Namespace, cfg) -> SweepPlan | None:
    if args.sweep is None and not args.sweep_until_settled:
        return None
    levels = parse_int_list(args.sweep, "--sweep") if args.sweep else list(cfg.load.concurrency)
    return SweepPlan(levels, cfg.load.requests_per_level, cfg.load.seconds_per_level, args.sweep_until_settled)


def monitor_main(command: str, argv: list[str]) -> int:
    from befori_tui.ui.app import UiOptions, parse_step

    args = build_parser(command).parse_args(argv)
    if command == "demo" and not args.url and not args.config:
        args.input_tokens = args.input_tokens or "550:150"
        args.output_tokens = args.output_tokens or "150"
        if args.sweep is None and not args.concurrency:
            args.sweep, args.sweep_until_settled = DEMO_SWEEP, True
            # A level that has not settled in a minute moves on: the demo should show the whole curve soon.
            args.seconds_per_level = args.seconds_per_level or DEMO_SETTLE_CAP_S
    cfg = config_from_args(args)
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
    if args.drain < 0:
        raise ConfigError(f"--drain must be ≥ 0 seconds, got {args.drain:g}")
    sweep = sweep_from_args(args, cfg)
    # The saved config says what this run was asked to do: the sweep's levels, or the one it starts at (the
    # levels that really ran are in the session's [[levels]]).
    cfg.load.concurrency = list(sweep.concurrencies) if sweep else cfg.load.concurrency[:1]
    out = Path(args.out) if args.out else default_out_path()
    raw = Path(args.raw) if args.raw else None
    check_output_paths(out, raw)

    with ExitStack() as stack:
        telemetry = args.telemetry or cfg.telemetry or None
        simulated = False
        if not cfg.endpoint.url:
            from befori_tui.sim.launch import start_sim

            print(f"no --url: starting the built-in simulator (profile {args.profile}, simulated GPUs)…",
                  file=sys.stderr, flush=True)
            sim = stack.enter_context(start_sim(profile=args.profile, time_scale=args.time_scale))
            cfg.endpoint.url = sim.base_url
            telemetry = telemetry or f"dcgm:{sim.root_url}/metrics"  # the sim's GPU series, marked simulated
            simulated = True
        runner, model, app = build_app(cfg, out, raw, sweep, telemetry, simulated, UiOptions(
            fps=args.fps, window_s=args.window, step=args.step, theme=args.theme,
            themes_dir=Path(args.themes) if args.themes else None), drain_s=args.drain)
        old_switch = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        crashed = True
        try:
            code = app.run()
            # Textual sets return_code 1 when the app died of an exception (our own exits pass their code as
            # the result, with return_code 0).
            crashed = bool(app.return_code)
        finally:
            sys.setswitchinterval(old_switch)
            if crashed:
                runner.session.ended_by = "error"
            if runner.alive:  # the app ended without a clean quit: still stop, flush and save
                runner.stop()
                runner.join(30)
        if crashed:
            code = 1
        if app.exit_note:
            print(app.exit_note, file=sys.stderr)
        if model.last_saved:
            path, n = model.last_saved
            print(f"saved {path} and {runner.session.raw_path} ({n} requests)", file=sys.stderr)
        return code if isinstance(code, int) else 0


def build_app(cfg, out: Path, raw: Path | None, sweep: SweepPlan | None, telemetry: str | None, simulated: bool,
              ui_options, drain_s: float = 0.0):
    """The runner, the model and the app, wired (also used by tests and bench/ui_overhead.py)."""
    from befori_tui.ui.app import MonitorApp
    from befori_tui.ui.model import LiveModel

    runner = RunnerThread(cfg, out, raw, RunnerOptions(
        initial_concurrency=cfg.load.concurrency[0], sweep=sweep, telemetry=telemetry, drain_s=drain_s))
    model = LiveModel(cfg.pricing)
    model.info.update({"url": redact_url(cfg.endpoint.url), "api": cfg.endpoint.api, "simulated": simulated})
    app = MonitorApp(cfg, model, runner, ui_options)
    return runner, model, app
