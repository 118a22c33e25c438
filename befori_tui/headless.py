"""`befori-tui bench`: the headless front end. A progress line per level on stderr, Ori's table at the end."""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path

from befori_tui.cliargs import check_output_paths
from befori_tui.core import events as ev
from befori_tui.core.config import Config
from befori_tui.core.controller import EXIT_BAD_INPUT, RunController, RunPlan
from befori_tui.core.health import CLIENT_BOUND_NOTE
from befori_tui.core.runproc import make_hello, new_run_id, serve_run
from befori_tui.core.runserver import socket_path_for
from befori_tui.core.session import default_out_path
from befori_tui.core import format as fmt
from befori_tui.core.format import price_note, usd

EXIT_NOTHING_SUCCEEDED = 3  # the run completed, and every request failed



def _ms(x: float | None) -> str:
    return "—" if x is None else f"{x * 1e3:.0f} ms" if x < 10 else f"{x:.1f} s"


def level_line(s: dict) -> str:
    errors = ", ".join(f"{k} {v}" for k, v in s.get("errors", {}).items())
    parts = [
        f"level {s['level']} · c={s['concurrency']}",
        f"{s['requests_ok']} ok, {s['requests_failed']} failed" + (f" ({errors})" if errors else ""),
        f"TTFT p50 {_ms(s.get('ttft_s_p50'))}",
        f"ITL p50 {_ms(s.get('itl_s_p50'))}",
        f"served {s.get('output_tok_per_s_total', 0):.0f} output tok/s",
    ]
    if "usd_per_million_input" in s:
        parts.append(f"$/M in {usd(s['usd_per_million_input'])} out {usd(s['usd_per_million_output'])}")
    if s.get("client_bound"):
        parts.append(f"{CLIENT_BOUND_NOTE} (client loop lag p99 {s['client_loop_lag_ms_p99']:.0f} ms)")
    line = " · ".join(parts)
    if s.get("workers"):  # several load processes: each one's loop lag p99 and CPU over the level
        line += "\n  workers: " + " · ".join(fmt.worker_health(w["worker"], w.get("loop_lag_ms_p99"),
                                                                 w.get("cpu_pct")) for w in s["workers"])
    return line


def _f(v, fmt: str) -> str:
    return "—" if v is None else format(v, fmt)


def results_table(levels: list[dict], api_compare: list[dict] | None = None) -> str:
    """Ori's two tables (input, output), the $/M by both methods, and — when known — GPU energy and the API
    prices to compare."""
    rows = ["Input tokens (befori method)",
            f"{'conc':>5} {'N_in':>9} {'TTFT s':>9} {'T_in tok/s':>11} {'$/in token':>11}"]
    for s in levels:
        rows.append(f"{s['concurrency']:>5} {_f(s.get('input_tokens_mean'), '9.2f')} {_f(s.get('ttft_s_mean'), '9.4f')}"
                    f" {_f(s.get('input_tok_per_s'), '11.2f')} {_f(s.get('usd_per_input_token'), '11.4g')}")
    rows += ["", "Output tokens (befori method)",
             f"{'conc':>5} {'N_out':>9} {'E2E s':>9} {'TTFT s':>9} {'T_out tok/s':>11} {'$/out token':>11}"]
    for s in levels:
        rows.append(f"{s['concurrency']:>5} {_f(s.get('output_tokens_mean'), '9.2f')} {_f(s.get('e2e_s_mean'), '9.4f')}"
                    f" {_f(s.get('ttft_s_mean'), '9.4f')} {_f(s.get('output_tok_per_s'), '11.2f')}"
                    f" {_f(s.get('usd_per_output_token'), '11.4g')}")
    rows += ["", "$ per million tokens, and requests",
             f"{'conc':>5} {'befori in':>10} {'befori out':>11} {'occup. in':>10} {'occup. out':>11}"
             f" {'measured':>8} {'ok':>6} {'failed':>6} {'idle $':>8}"]
    for s in levels:
        occ = s.get("occupancy", {})
        rows.append(f"{s['concurrency']:>5} {usd(s.get('usd_per_million_input')):>10}"
                    f" {usd(s.get('usd_per_million_output')):>11} {usd(occ.get('usd_per_million_input')):>10}"
                    f" {usd(occ.get('usd_per_million_output')):>11} {s.get('requests_steady', 0):>8}"
                    f" {s['requests_ok']:>6} {s['requests_failed']:>6} {_f(max(occ.get('usd_idle', 0.0), 0.0), '8.4f')}")
    rows.append("measured: the ok requests the figures use (warm-up and those that outlived their level left out);"
                " idle $: dollars of the level's bill with nothing in flight.")
    if any(s.get("gpu", {}).get("energy_j_total") is not None for s in levels):
        kwh = any("usd_energy_per_million_output" in s.get("gpu", {}) for s in levels)
        rows += ["", "GPU energy" + (" (electricity at pricing.usd_per_kwh)" if kwh else ""),
                 f"{'conc':>5} {'J total':>10} {'J/out token':>11} {'source':>14}" + (f" {'$/M out':>10}" if kwh else "")]
        for s in levels:
            g = s.get("gpu", {})
            rows.append(f"{s['concurrency']:>5} {_f(g.get('energy_j_total'), '10.0f')}"
                        f" {_f(g.get('joules_per_output_token'), '11.3f')} {g.get('energy_source', '—'):>14}"
                        + (f" {usd(g.get('usd_energy_per_million_output')):>10}" if kwh else ""))
    if api_compare:
        rows += ["", "API prices to compare ($ per million tokens; blended at the config's input:output ratio)",
                 f"{'name':<28} {'in':>8} {'out':>8} {'blended':>8}"]
        for a in api_compare:
            rows.append(f"{a['name'][:28]:<28} {usd(a['usd_per_million_input']):>8} {usd(a['usd_per_million_output']):>8}"
                        f" {usd(a['usd_per_million_blended']):>8}")
        ours = [s for s in levels if s.get("usd_per_million_blended") is not None]
        if ours:
            rows.append("this server, blended (befori): " + ", ".join(
                f"c={s['concurrency']} {usd(s['usd_per_million_blended'])}" for s in ours))
    return "\n".join(rows)


def progress_printer(cfg: Config):
    """What `bench` says on stderr while it runs (the run's events, as they happen). A setup wait is named
    once it has lasted a second (a quick one stays quiet), then every 5 s with how long it has been."""
    waiting: list[threading.Timer] = []

    def stop_waiting() -> None:
        while waiting:
            waiting.pop().cancel()

    def still(what: str, url: str, t0: float) -> None:
        print(f"waiting for {what} ({url}) · {time.monotonic() - t0:.0f} s of at most "
              f"{cfg.load.setup_timeout_s:g}", file=sys.stderr, flush=True)
        timer = threading.Timer(5.0, still, (what, url, t0))
        timer.daemon = True
        waiting.append(timer)
        timer.start()

    def show(event) -> None:
        t = type(event)
        if t is ev.Connecting:
            stop_waiting()
            timer = threading.Timer(1.0, still, (event.what, event.url, time.monotonic()))
            timer.daemon = True
            waiting.append(timer)
            timer.start()
            return
        if t in (ev.Ready, ev.Failed, ev.Finished):
            stop_waiting()
        if t is ev.LevelOpened:
            print(f"level {event.index} · c={event.concurrency} · started", file=sys.stderr, flush=True)
        elif t is ev.Ready:
            # A price the user did not set says so before any figure rests on it.
            price = price_note(cfg.pricing)
            print(f"endpoint {event.url} · model {event.model} · api {event.api}"
                  f" · prompts sized by {event.prompt_count_source}" + (f" · {price}" if price else ""),
                  file=sys.stderr, flush=True)
        elif t in (ev.Note, ev.SweepNote):
            print(event.text, file=sys.stderr, flush=True)
    return show


async def run_bench(cfg: Config, out: Path, raw: Path | None, plan: RunPlan | None = None,
                    telemetry: str | None = None, simulated: bool = False, run_id: str | None = None,
                    cleanup=None) -> int:
    controller = RunController(cfg, out, raw, plan, telemetry=telemetry, simulated=simulated)
    controller.listeners.append(progress_printer(cfg))
    controller.level_done.append(lambda level, summary: print(level_line(summary), file=sys.stderr, flush=True))
    run_id = run_id or new_run_id()
    hello = make_hello(run_id, out, controller.session.raw_path, cfg.pricing)
    socket_path = socket_path_for(out, run_id)

    def on_signal(signum: int, first: bool) -> None:
        if first:
            print(f"\n{signal.Signals(signum).name}: stopping, saving what was measured "
                  "(again to exit at once)", file=sys.stderr, flush=True)

    code = await serve_run(controller, socket_path, hello, on_signal=on_signal, cleanup=cleanup)
    if controller.ended_by == "setup":
        print(f"befori-tui bench: {controller.error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    session = controller.session
    results = session.results()
    levels = results["levels"]
    if controller.ended_by == "max_seconds" and levels:
        print(level_line(levels[-1]) + " · cut short", file=sys.stderr)  # it never reached its level end
        print(f"stopped after load.max_seconds ({cfg.load.max_seconds:g} s)", file=sys.stderr)
    print(results_table(levels, results.get("api_compare")))
    print(f"saved {session.out_path} and {session.raw_path} ({session.writer.written} requests)", file=sys.stderr)
    if code == 0 and levels and not any(lv.get("requests_ok") for lv in levels):
        # Tables of dashes and exit 0 would read as a run that worked: say why nothing did, and exit 3.
        errors: dict[str, int] = {}
        for lv in levels:
            for kind, n in lv.get("errors", {}).items():
                errors[kind] = errors.get(kind, 0) + n
        first = next((r for lv in session.runner.levels for r in lv.records if r.error_message), None) \
            if session.runner is not None else None
        print(f"befori-tui bench: no request succeeded ({', '.join(f'{k} {n}' for k, n in errors.items()) or 'none ended'})"
              + (f"; the first error: {first.error_message[:200]}" if first else ""), file=sys.stderr)
        return EXIT_NOTHING_SUCCEEDED
    return code


def bench_main(args, cfg: Config) -> int:
    out = Path(args.out) if args.out else default_out_path()
    raw = Path(args.raw) if args.raw else None
    check_output_paths(out, raw)
    with ExitStack() as stack:
        simulated, sim = False, None
        if not cfg.endpoint.url:
            from befori_tui.sim.launch import start_sim

            print(f"no --url: starting the built-in simulator (profile {args.profile}, simulated GPUs)",
                  file=sys.stderr, flush=True)
            sim = stack.enter_context(start_sim(profile=args.profile, time_scale=args.time_scale))
            cfg.endpoint.url = sim.base_url
            # The simulator's /metrics carries DCGM-style series for its simulated GPUs.
            cfg.telemetry = cfg.telemetry or f"dcgm:{sim.root_url}/metrics"
            simulated = True
        t0 = time.monotonic()
        plan = RunPlan(list(cfg.load.concurrency), cfg.load.requests_per_level, cfg.load.seconds_per_level,
                       until_settled=bool(getattr(args, "sweep_until_settled", False)))
        code = asyncio.run(run_bench(cfg, out, raw, plan, telemetry=cfg.telemetry or None,
                                     simulated=simulated, cleanup=sim.stop if sim is not None else None))
        if code != EXIT_BAD_INPUT:  # bad input stays one line
            print(f"took {time.monotonic() - t0:.1f} s", file=sys.stderr)
        return code
