"""`befori-tui`: the entry point. Subcommands import what they need lazily, so start-up stays light."""

from __future__ import annotations

import json
import sys

from befori_tui.cliargs import OneLineParser, add_run_flags, config_from_args, run_command
from befori_tui.core.config import ConfigError

USAGE = """befori-tui — what your self-hosted LLM costs per input and output token, measured live.

  befori-tui                       the demo: the live monitor on the built-in simulated 8×H100 DBRX server
  befori-tui demo --headless       the same demo without the UI (a short headless sweep)
  befori-tui monitor [flags]       the live monitor against your server (--url or --config)
  befori-tui attach [RUN]          the monitor on a run already going (a monitor's or a bench's)
  befori-tui bench [flags]         headless benchmark: levels of concurrency (or --rate, or --find-optimum),
                                   Ori's table, the cheapest concurrency meeting the SLO, a TOML session
  befori-tui cost [flags]          the befori cost method from means; or a saved session's table and optimum
  befori-tui sim [flags]           the simulated OpenAI-compatible server on 127.0.0.1
  befori-tui report RUN.toml…      charts of saved sessions in one offline HTML file (or --format svg|png)
  befori-tui compare A B [C…]      saved sessions side by side, level by level, with ratios and intervals
  befori-tui export RUN.toml       a session's levels as CSV or JSON, one row per level

Each takes --help.
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if argv and argv[0] in ("-V", "--version"):
        import befori_tui

        print(f"befori-tui {befori_tui.__version__}")
        return 0
    command, rest = (argv[0], argv[1:]) if argv and not argv[0].startswith("-") else ("demo", argv)
    unknown = object()

    def dispatch():
        if command == "sim":
            from befori_tui.sim.cli import main as sim_main

            return sim_main(rest)
        if command == "demo" and "--headless" in rest:
            return bench_command(command, [a for a in rest if a != "--headless"])
        if command == "attach":
            from befori_tui.ui.monitor import attach_main

            return attach_main(rest)
        if command in ("demo", "monitor"):
            from befori_tui.ui.monitor import monitor_main  # lazy: Textual only for the UI

            return monitor_main(command, rest)
        if command == "bench":
            return bench_command(command, rest)
        if command == "cost":
            return cost_command(rest)
        if command in ("report", "compare", "export"):
            from befori_tui.report import cli as report_cli  # its own front end: reads saved sessions

            return getattr(report_cli, f"{command}_main")(rest)
        return unknown

    code = run_command(command, dispatch)
    if code is not unknown:
        return code
    print(f"befori-tui: unknown command {command!r} (see befori-tui --help)", file=sys.stderr)
    return 2


DEMO_HEADLESS_LEVEL_S = 15.0


def bench_parser(command: str = "bench") -> OneLineParser:
    p = OneLineParser(prog=f"befori-tui {command}", description="Headless benchmark, one level per concurrency."
                      + (f" demo --headless: the simulator, levels 1,8,32,64, each 48 measured requests or "
                         f"{DEMO_HEADLESS_LEVEL_S:g} s, whichever comes first." if command == "demo" else ""))
    add_run_flags(p)
    return p


def bench_command(command: str, argv: list[str]) -> int:
    from befori_tui.headless import bench_main

    args = bench_parser(command).parse_args(argv)
    if command == "demo" and not args.url:
        # `befori-tui --headless`: the demo as a short headless sweep against the simulator — each level 48
        # measured requests or DEMO_HEADLESS_LEVEL_S, whichever comes first (at c=1 a request takes ~1.9 s).
        args.concurrency = args.concurrency or "1,8,32,64"
        args.requests_per_level = args.requests_per_level or 48
        if args.seconds_per_level is None:
            args.seconds_per_level = DEMO_HEADLESS_LEVEL_S
        args.input_tokens = args.input_tokens or "550:150"
        args.output_tokens = args.output_tokens or "150"
    cfg = config_from_args(args)
    return bench_main(args, cfg)


def cost_parser() -> OneLineParser:
    p = OneLineParser(
        prog="befori-tui cost",
        description="The befori method from per-level means; or, from a saved session, its table and the cheapest "
                    "concurrency that meets the latency targets (re-priced with --usd-per-hour).",
    )
    p.add_argument("session", nargs="?", help="a saved session TOML: its table and its optimum (default: none, "
                                              "the method from the means below)")
    p.add_argument("--usd-per-hour", type=float, metavar="X",
                   help="hourly price of the server (with a session: re-price it; default its own price; without "
                        "one: required, no default)")
    p.add_argument("--concurrency", type=float, metavar="R", help="concurrent requests (no default: needed "
                                                                   "without a session)")
    p.add_argument("--mean-input-tokens", type=float, metavar="N", help="mean input tokens (no default: needed "
                                                                        "without a session)")
    p.add_argument("--ttft", type=float, metavar="S", help="mean time to first token, seconds (no default: "
                                                           "needed without a session)")
    p.add_argument("--mean-output-tokens", type=float, metavar="N", help="mean output tokens (no default: needed "
                                                                         "without a session)")
    p.add_argument("--e2e", type=float, metavar="S", help="mean end-to-end latency, seconds (no default: needed "
                                                          "without a session)")
    p.add_argument("--slo", metavar="KEY=LIMIT[,…]",
                   help="with a session: latency targets for the optimum (default: the session's own [slo])")
    p.add_argument("--optimum-by", choices=["blended", "input", "output"],
                   help="with a session: which $/M the optimum minimises (default: the session's, else blended)")
    p.add_argument("--range-within", type=float, metavar="F",
                   help="with a session: the range is the concurrencies within F of the least $/M (default 0.1)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout (default: text)")
    p.add_argument("--out", metavar="PATH", help="with a session: write the re-priced session here (default: "
                                                 "only print it)")
    return p


def cost_command(argv: list[str]) -> int:
    from befori_tui.core.cost import befori_cost

    args = cost_parser().parse_args(argv)
    if args.usd_per_hour is not None and args.usd_per_hour < 0:
        raise ConfigError("--usd-per-hour must be ≥ 0")
    if args.session:
        return cost_of_session(args)
    if args.usd_per_hour is None:
        raise ConfigError("missing --usd-per-hour (or give a session file)")
    needed = {"--concurrency": args.concurrency, "--mean-input-tokens": args.mean_input_tokens, "--ttft": args.ttft,
              "--mean-output-tokens": args.mean_output_tokens, "--e2e": args.e2e}
    missing = [k for k, v in needed.items() if v is None]
    if missing:
        raise ConfigError(f"missing {', '.join(missing)} (or give a session file)")
    for k, v in needed.items():
        if v <= 0:
            raise ConfigError(f"{k} must be > 0, got {v:g}")
    if args.e2e <= args.ttft:
        raise ConfigError(f"--e2e ({args.e2e:g}) must be greater than --ttft ({args.ttft:g})")
    c = befori_cost(args.usd_per_hour, args.concurrency, args.mean_input_tokens, args.ttft,
                    args.mean_output_tokens, args.e2e)
    if args.json:
        print(json.dumps(c.as_dict()))
    else:
        print(f"input:  T_in  = {c.input_tok_per_s:.4f} tok/s · ${c.usd_per_input_token:.6g} per token"
              f" · ${c.usd_per_million_input:,.2f} per million")
        print(f"output: T_out = {c.output_tok_per_s:.4f} tok/s · ${c.usd_per_output_token:.6g} per token"
              f" · ${c.usd_per_million_output:,.2f} per million")
    return 0


def cost_of_session(args) -> int:
    """`befori-tui cost run.toml`: the table and the optimum's sentence of a saved session, maybe re-priced."""
    from befori_tui.core.config import SearchConfig, slo_from_table, validate, Config
    from befori_tui.core.optimum import optimum_for
    from befori_tui.core.results import read_session, reprice_session, write_toml_atomic
    from befori_tui.headless import results_table

    data = read_session(args.session)
    if args.usd_per_hour is not None:
        data = reprice_session(data, args.usd_per_hour)
    if args.slo is not None:
        from befori_tui.core.slo import SloError, parse_slo

        try:
            slo = parse_slo(args.slo)
        except SloError as exc:
            raise ConfigError(str(exc)) from None
    else:
        slo = slo_from_table(data.get("slo", {}), f"{args.session}: slo")
    saved = data.get("search", {})
    search = SearchConfig(by=args.optimum_by or saved.get("by", "blended"),
                          range_within=args.range_within if args.range_within is not None
                          else saved.get("range_within", 0.10))
    cfg = Config(search=search)
    validate(cfg, "flags")
    data["optimum"] = optimum_for(data, slo, search)
    if slo:
        data["slo"] = {t.key: t.limit_s for t in slo}
    if args.out:
        write_toml_atomic(args.out, data)
        print(f"saved {args.out}", file=sys.stderr)
    if args.json:
        print(json.dumps(data["levels"]))
    else:
        print(results_table(data["levels"], data.get("api_compare")))
        print("\n" + data["optimum"]["sentence"])
    return 0
