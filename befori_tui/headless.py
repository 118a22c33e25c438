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
from befori_tui.core.controller import EXIT_BAD_INPUT, RunController, RunPlan, search_plan
from befori_tui.core.health import CLIENT_BOUND_NOTE
from befori_tui.core.runproc import make_hello, new_run_id, serve_run
from befori_tui.core.runserver import socket_path_for
from befori_tui.core.session import default_out_path
from befori_tui.core import format as fmt
from befori_tui.core.format import errors_text, price_note, usd

EXIT_NOTHING_SUCCEEDED = 3  # the run completed, and every request failed
PROGRESS_EVERY_S = 3.0  # a level's progress line on stderr, when something changed



def _ms(x: float | None) -> str:
    return "—" if x is None else f"{x * 1e3:.0f} ms" if x < 10 else f"{x:.1f} s"


def level_line(s: dict) -> str:
    groups = s.get("error_groups") or {}
    errors = errors_text(groups) if groups else ""
    parts = [
        f"level {s['level']} · " + (f"{s['rate_per_s']:g} req/s asked, {s.get('arrival_rate_per_s', 0):.3g} sent,"
                                    f" {s.get('mean_in_flight', 0):.3g} in flight" if s.get("rate_per_s")
                                    else f"c={s['concurrency']}"),
        f"{s['requests_ok']} ok, {s['requests_failed']} failed" + (f" ({errors})" if errors else ""),
        f"TTFT p50 {_ms(s.get('ttft_s_p50'))}",
        f"ITL p50 {_ms(s.get('itl_s_p50'))}",
        f"served {s.get('output_tok_per_s_total', 0):.0f} output tok/s",
    ]
    if "usd_per_million_input" in s:
        parts.append(f"$/M in {usd(s['usd_per_million_input'])} out {usd(s['usd_per_million_output'])}")
    elif s.get("requests_failed") and not s.get("requests_ok"):
        parts.append(f"no $/M: all {s['requests_failed']} requests failed")
    failed_usd = s.get("occupancy", {}).get("usd_failed")
    if s.get("requests_failed") and failed_usd:
        parts.append(f"failed requests cost ${failed_usd:.4f}")
    if "slo" in s:
        parts.append(slo_word(s))
    if s.get("client_bound"):
        parts.append(f"{CLIENT_BOUND_NOTE} (client loop lag p99 {s['client_loop_lag_ms_p99']:.0f} ms)")
    line = " · ".join(parts)
    if s.get("workers"):  # several load processes: each one's loop lag p99 and CPU over the level
        line += "\n  workers: " + " · ".join(fmt.worker_health(w["worker"], w.get("loop_lag_ms_p99"),
                                                                 w.get("cpu_pct")) for w in s["workers"])
    return line


def slo_word(s: dict) -> str:
    """'SLO met (98% of requests)' or 'SLO missed: ttft_p99 3.1s > 2s (40% of requests)'."""
    share = s.get("slo_share_met")
    pct = "" if share is None else f" ({share * 100:.0f}% of requests)"
    if s.get("slo_met") is None:
        return "SLO —" + pct
    return ("SLO met" if s["slo_met"] else "SLO missed: " + ", ".join(s.get("slo_missed", []))) + pct


def _x(s: dict) -> str:
    """The level's load: its concurrency, or in the open loop its arrival rate ("12/s")."""
    return f"{s['rate_per_s']:g}/s" if s.get("rate_per_s") else str(s["concurrency"])


def _f(v, fmt: str) -> str:
    return "—" if v is None else format(v, fmt)


def results_table(levels: list[dict], api_compare: list[dict] | None = None) -> str:
    """Ori's two tables (input, output), the $/M by both methods, and — when known — GPU energy and the API
    prices to compare."""
    rows = ["Input tokens (befori method)",
            f"{'conc':>5} {'N_in':>9} {'TTFT s':>9} {'T_in tok/s':>11} {'$/in token':>11}"]
    for s in levels:
        rows.append(f"{_x(s):>5} {_f(s.get('input_tokens_mean'), '9.2f')} {_f(s.get('ttft_s_mean'), '9.4f')}"
                    f" {_f(s.get('input_tok_per_s'), '11.2f')} {_f(s.get('usd_per_input_token'), '11.4g')}")
    rows += ["", "Output tokens (befori method)",
             f"{'conc':>5} {'N_out':>9} {'E2E s':>9} {'TTFT s':>9} {'T_out tok/s':>11} {'$/out token':>11}"]
    for s in levels:
        rows.append(f"{_x(s):>5} {_f(s.get('output_tokens_mean'), '9.2f')} {_f(s.get('e2e_s_mean'), '9.4f')}"
                    f" {_f(s.get('ttft_s_mean'), '9.4f')} {_f(s.get('output_tok_per_s'), '11.2f')}"
                    f" {_f(s.get('usd_per_output_token'), '11.4g')}")
    rows += ["", "$ per million tokens, and requests",
             f"{'conc':>5} {'befori in':>10} {'befori out':>11} {'occup. in':>10} {'occup. out':>11}"
             f" {'measured':>8} {'ok':>6} {'failed':>6} {'idle $':>8} {'failed $':>8}"]
    failures = []
    for s in levels:
        occ = s.get("occupancy", {})
        all_failed = s["requests_failed"] and not s["requests_ok"]  # say so, not a row of dashes
        rows.append(f"{_x(s):>5} {'all failed' if all_failed else usd(s.get('usd_per_million_input')):>10}"
                    f" {usd(s.get('usd_per_million_output')):>11} {usd(occ.get('usd_per_million_input')):>10}"
                    f" {usd(occ.get('usd_per_million_output')):>11} {s.get('requests_steady', 0):>8}"
                    f" {s['requests_ok']:>6} {s['requests_failed']:>6} {_f(max(occ.get('usd_idle', 0.0), 0.0), '8.4f')}"
                    f" {_f(occ.get('usd_failed'), '8.4f')}")
        if s.get("error_groups"):
            failures.append(f"c={s['concurrency']}: {errors_text(s['error_groups'])}")
    rows.append("measured: the ok requests the figures use (warm-up and those that outlived their level left out);"
                " idle $: dollars of the level's bill with nothing in flight; failed $: its share spent on requests"
                " that failed or were cancelled.")
    if failures:
        rows.append("failed: " + " · ".join(failures))
    with_slo = [s for s in levels if "slo" in s]
    if with_slo:
        rows += ["", f"Latency targets (SLO {with_slo[0]['slo']}): goodput and $ per million tokens of the requests"
                 " that met them",
                 f"{'conc':>5} {'level':>6} {'met %':>6} {'good req/s':>10} {'good out/s':>10} {'SLO $/M in':>10}"
                 f" {'SLO $/M out':>11} {'plain in':>9} {'plain out':>9}"]
        for s in with_slo:
            met = s.get("slo_met")
            share = s.get("slo_share_met")
            rows.append(f"{_x(s):>5} {'—' if met is None else 'meets' if met else 'misses':>6}"
                        f" {_f(None if share is None else share * 100, '6.1f')}"
                        f" {_f(s.get('goodput_requests_per_s'), '10.3f')} {_f(s.get('goodput_output_tok_per_s'), '10.1f')}"
                        f" {usd(s.get('usd_per_million_input_slo')):>10} {usd(s.get('usd_per_million_output_slo')):>11}"
                        f" {usd(s.get('usd_per_million_input')):>9} {usd(s.get('usd_per_million_output')):>9}")
        rows.append("level: whether the level's own percentiles meet every target; met %: the share of its measured"
                    " requests that met every one (failures never do).")
    if any(s.get("turns") for s in levels):
        # Conversations: each turn re-sends the history, so how TTFT grows with the turn shows a prefix cache.
        rows += ["", "Conversations: TTFT by turn (each turn re-sends the history)",
                 f"{'conc':>5} {'turn':>5} {'requests':>8} {'N_in':>9} {'TTFT p50 s':>10} {'TTFT p90 s':>10}"]
        for s in levels:
            for t in s.get("turns", []):
                rows.append(f"{s['concurrency']:>5} {t['turn']:>5} {t['requests']:>8}"
                            f" {_f(t.get('input_tokens_mean'), '9.1f')} {_f(t.get('ttft_s_p50'), '10.4f')}"
                            f" {_f(t.get('ttft_s_p90'), '10.4f')}")
    if any(s.get("gpu", {}).get("energy_j_total") is not None for s in levels):
        kwh = any("usd_energy_per_million_output" in s.get("gpu", {}) for s in levels)
        rows += ["", "GPU energy" + (" (electricity at pricing.usd_per_kwh)" if kwh else ""),
                 f"{'conc':>5} {'J total':>10} {'J/out token':>11} {'source':>14}" + (f" {'$/M out':>10}" if kwh else "")]
        for s in levels:
            g = s.get("gpu", {})
            rows.append(f"{_x(s):>5} {_f(g.get('energy_j_total'), '10.0f')}"
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
                f"c={_x(s)} {usd(s['usd_per_million_blended'])}" for s in ours))
    return "\n".join(rows)


def progress_printer(cfg: Config):
    """What `bench` says on stderr while it runs (the run's events, as they happen). A setup wait is named
    once it has lasted a second (a quick one stays quiet), then every 5 s with how long it has been."""
    waiting: list[threading.Timer] = []
    drains: dict[int, int] = {}  # level → requests of the old load it began with
    # Progress of the level under way, printed every PROGRESS_EVERY_S while it runs (a level is never silent).
    progress = {"level": -1, "concurrency": 0, "measured": 0, "ok": 0, "failed": 0, "t0": 0.0, "shown": None}
    ticker: list[threading.Timer] = []

    def tick() -> None:
        p = progress
        now = (p["level"], p["measured"], p["ok"], p["failed"])
        if p["level"] >= 0 and now != p["shown"]:
            p["shown"] = now
            target = cfg.load.requests_per_level
            seconds = cfg.load.seconds_per_level
            done = f"{p['measured']}/{target} measured" if target else f"{p['measured']} measured"
            if seconds:
                done += f" · {time.monotonic() - p['t0']:.0f} of {seconds:g} s"
            else:
                done += f" · {time.monotonic() - p['t0']:.0f} s"
            print(f"level {p['level']} · c={p['concurrency']} · {done} · {p['ok']} ok, {p['failed']} failed",
                  file=sys.stderr, flush=True)
        if p.get("finished"):
            return
        timer = threading.Timer(PROGRESS_EVERY_S, tick)
        timer.daemon = True
        ticker[:] = [timer]
        timer.start()

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
        if t in (ev.Ready, ev.Failed, ev.Finished, ev.FirstToken):
            if waiting:
                stop_waiting()
        if t is ev.Finished:
            progress["finished"] = True
            while ticker:
                ticker.pop().cancel()
        if t is ev.RequestEnded:
            if waiting:
                stop_waiting()  # the first request answered
            r = event.record
            if r.level == progress["level"]:
                progress["measured"] += not r.warmup and not r.outlived_level
                if r.error_kind is None:
                    progress["ok"] += 1
                elif r.error_kind != "cancelled":
                    progress["failed"] += 1
            return
        if t is ev.LevelOpened:
            progress.update(level=event.index, concurrency=event.concurrency, measured=0, ok=0, failed=0,
                            t0=time.monotonic(), shown=(event.index, 0, 0, 0))
            if not ticker:
                tick()
            what = f"{event.rate_per_s:g} req/s (at most {event.concurrency} in flight)" if event.rate_per_s \
                else f"c={event.concurrency}"
            print(f"level {event.index} · {what} · started", file=sys.stderr, flush=True)
        elif t is ev.Draining:
            if event.level not in drains and event.in_flight:
                drains[event.level] = event.in_flight
                print(f"level {event.level} · draining {event.in_flight}: the old load's requests end before "
                      "this level is measured", file=sys.stderr, flush=True)
            elif not event.in_flight and event.level in drains:
                print(f"level {event.level} · drained", file=sys.stderr, flush=True)
        elif t is ev.Ready:
            # A price the user did not set says so before any figure rests on it.
            price = price_note(cfg.pricing)
            print(f"endpoint {event.url} · model {event.model} · api {event.api}"
                  f" · prompts sized by {event.prompt_count_source}" + (f" · {event.wire}" if event.wire else "")
                  + (f" · {price}" if price else ""),
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
    hello = make_hello(run_id, out, controller.session.raw_path, cfg.pricing, slo=cfg.slo)
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
    if levels:
        print("\n" + results["optimum"]["sentence"])
    print(f"saved {session.out_path} and {session.raw_path} ({session.writer.written} requests)", file=sys.stderr)
    if code == 0 and levels and not any(lv.get("requests_ok") for lv in levels):
        # Tables of dashes and exit 0 would read as a run that worked: say why nothing did, and exit 3.
        errors: dict[str, int] = {}
        for lv in levels:
            for kind, n in lv.get("error_groups", {}).items():
                errors[kind] = errors.get(kind, 0) + n
        errors = dict(sorted(errors.items(), key=lambda kv: -kv[1]))
        first = next((lv.records.first_error for lv in session.runner.levels if lv.records.first_error), None) \
            if session.runner is not None else None
        print(f"befori-tui bench: no request succeeded ({errors_text(errors) if errors else 'none ended'})"
              + (f"; the first error: {first[:200]}" if first else ""), file=sys.stderr)
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
            cfg.endpoint.proxy_from_env = False  # our own simulator on loopback: never through a proxy
            # The simulator's /metrics carries DCGM-style series for its simulated GPUs.
            cfg.telemetry = cfg.telemetry or f"dcgm:{sim.root_url}/metrics"
            simulated = True
        t0 = time.monotonic()
        if getattr(args, "find_optimum", False):
            # Start at the first of --concurrency (default 1); --requests-per-level, when given, caps each level.
            start = cfg.load.rate[0] if cfg.load.rate else cfg.load.concurrency[0] if args.concurrency else 1
            plan = search_plan(cfg, start, args.requests_per_level or 0)
            cfg.load.concurrency = list(plan.concurrencies)  # the session records where the search started
        else:
            plan = RunPlan(list(cfg.load.concurrency), cfg.load.requests_per_level, cfg.load.seconds_per_level,
                           until_settled=bool(getattr(args, "sweep_until_settled", False)), rates=list(cfg.load.rate))
        code = asyncio.run(run_bench(cfg, out, raw, plan, telemetry=cfg.telemetry or None,
                                     simulated=simulated, cleanup=sim.stop if sim is not None else None))
        if code != EXIT_BAD_INPUT:  # bad input stays one line
            print(f"took {time.monotonic() - t0:.1f} s", file=sys.stderr)
        return code
