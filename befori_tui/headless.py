"""`befori-tui bench`: the headless front end. A progress line per level on stderr, Ori's table at the end."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from befori_tui.cliargs import check_output_paths
from befori_tui.core.client import ClientSetupError
from befori_tui.core.config import Config
from befori_tui.core.health import CLIENT_BOUND_NOTE
from befori_tui.core.loadgen import Level
from befori_tui.core.observer import NullObserver
from befori_tui.core.session import Session, default_out_path
from befori_tui.core.format import price_note, usd

EXIT_OK, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 2, 130


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
    return " · ".join(parts)


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


class ProgressPrinter(NullObserver):
    def on_level_change(self, old: Level | None, new: Level) -> None:
        print(f"level {new.index} · c={new.concurrency} · started", file=sys.stderr, flush=True)


async def run_bench(cfg: Config, out: Path, raw: Path | None) -> int:
    session = Session(cfg, out, raw)
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    signals = 0

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        session.interrupted = True
        if signals == 1:
            print(f"\n{signal.Signals(signum).name}: stopping, saving what was measured "
                  "(again to exit at once)", file=sys.stderr, flush=True)
            stop_requested.set()
        else:
            # Exit at once, but leave valid files: pending lines and an atomic TOML.
            try:
                session.writer.flush_sync()
                session.save()
            finally:
                os._exit(EXIT_INTERRUPTED)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        try:
            await session.open(ProgressPrinter())
        except ClientSetupError as exc:
            print(f"befori-tui bench: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        price = price_note(cfg.pricing)  # a price the user did not set says so before any figure rests on it
        print(f"endpoint {session.endpoint.base_url} · model {session.endpoint.model} · api {cfg.endpoint.api}"
              f" · prompts sized by {session.prompt_count_source}" + (f" · {price}" if price else ""),
              file=sys.stderr, flush=True)
        note = session.start_telemetry()
        if note:
            print(note, file=sys.stderr, flush=True)

        def level_done(level: Level) -> None:
            results = session.results()
            summary = results["levels"][level.index]
            print(level_line(summary), file=sys.stderr, flush=True)
            session.save(results)  # a crash later loses nothing already summarised

        sweep = asyncio.create_task(session.run_sweep(cfg.load.concurrency, level_done))
        stopper = asyncio.create_task(stop_requested.wait())
        await asyncio.wait({sweep, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        completed = sweep.done() and not sweep.cancelled() and sweep.result()
        if not sweep.done():
            sweep.cancel()
        session.ended_by = "signal" if session.interrupted else "completed" if completed else "max_seconds"
        await session.close()
        results = session.results()
        path = session.save(results)
        levels = results["levels"]
        if session.ended_by == "max_seconds" and levels:
            print(level_line(levels[-1]) + " · cut short", file=sys.stderr)  # it never reached its level end
            print(f"stopped after load.max_seconds ({cfg.load.max_seconds:g} s)", file=sys.stderr)
        print(results_table(levels, results.get("api_compare")))
        written = session.writer.written
        print(f"saved {path} and {session.raw_path} ({written} requests)", file=sys.stderr)
        return EXIT_INTERRUPTED if session.interrupted else EXIT_OK
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await session.close()


def bench_main(args, cfg: Config) -> int:
    out = Path(args.out) if args.out else default_out_path()
    raw = Path(args.raw) if args.raw else None
    check_output_paths(out, raw)
    with ExitStack() as stack:
        if not cfg.endpoint.url:
            from befori_tui.sim.launch import start_sim

            print(f"no --url: starting the built-in simulator (profile {args.profile}, simulated GPUs)",
                  file=sys.stderr, flush=True)
            sim = stack.enter_context(start_sim(profile=args.profile, time_scale=args.time_scale))
            cfg.endpoint.url = sim.base_url
            # The simulator's /metrics carries DCGM-style series for its simulated GPUs.
            cfg.telemetry = cfg.telemetry or f"dcgm:{sim.root_url}/metrics"
        t0 = time.monotonic()
        code = asyncio.run(run_bench(cfg, out, raw))
        if code != EXIT_BAD_INPUT:  # bad input stays one line
            print(f"took {time.monotonic() - t0:.1f} s", file=sys.stderr)
        return code
