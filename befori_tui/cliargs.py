"""Flags shared by `bench` and `monitor`, and how they override a config file."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable

from befori_tui.core.config import (
    DEFAULT_GPU_COUNT,
    DEFAULT_USD_PER_HOUR,
    ApiPrice,
    Config,
    ConfigError,
    check_header,
    load_config,
    parse_int_list,
    redact_url,
    validate,
)
from befori_tui.core.lengths import parse_length, parse_think_time


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the flag, exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        raise SystemExit(2)


def run_command(command: str, body: Callable[[], int]) -> int:
    """A command's exit code: bad input is one line naming what was wrong and exit 2, Ctrl-C is 130."""
    try:
        return body()
    except ConfigError as exc:
        print(f"befori-tui {command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def add_run_flags(p: argparse.ArgumentParser) -> None:
    # Every default is said in --help, from the config's own defaults (a flag left out means the config's key).
    d = Config()
    e, w, ld, pr = d.endpoint, d.workload, d.load, d.pricing
    g = p.add_argument_group("endpoint")
    g.add_argument("--config", metavar="FILE", help="TOML config (flags override its keys; default: none, the "
                                                    "defaults below)")
    g.add_argument("--url", help="OpenAI base URL ending in /v1 (default: start the built-in simulator)")
    g.add_argument("--model", help="model name (default: the first one at /v1/models)")
    g.add_argument("--api", choices=["completions", "chat"], help=f"which streaming API to call (default {e.api})")
    g.add_argument("--api-key-env", metavar="VAR", help="environment variable holding the API key (default: none, "
                                                        "no key is sent)")
    g.add_argument("--server-metrics", metavar="URL|off", help="the server's Prometheus /metrics (default: <root>/metrics)")
    g.add_argument("--telemetry", metavar="SPEC", help="GPU telemetry: nvml | dcgm:URL | none (default: NVML if it loads)")
    g.add_argument("--header", action="append", metavar="NAME:VALUE",
                   help="an extra request header for a gateway (repeatable); NAME:env:VAR reads the value from "
                        "the environment and never writes it anywhere (default: none)")
    g.add_argument("--ca-bundle", metavar="FILE", help="trust the CA certificates in this PEM file (https; default: "
                                                       "the system's)")
    g.add_argument("--client-cert", metavar="FILE[:KEY]", help="a client certificate (PEM), with its key file if apart "
                                                               "(default: none)")
    g.add_argument("--insecure", action="store_true",
                   help="do not verify the server's TLS certificate (said on screen and in the results; default: "
                        "verify)")
    g.add_argument("--no-proxy", action="store_true",
                   help="ignore HTTP_PROXY / HTTPS_PROXY / ALL_PROXY for the load (default: honour them, and NO_PROXY)")
    w = p.add_argument_group("workload")
    wd = d.workload
    w.add_argument("--input-tokens", metavar="DIST",
                   help="input tokens per request: MEAN[:SD] (normal), fixed:N, lognormal:MEAN:SIGMA, uniform:LO:HI, "
                        f"or dataset (default {wd.input_tokens_mean}:{wd.input_tokens_sd:g})")
    w.add_argument("--output-tokens", metavar="DIST",
                   help=f"output tokens (max_tokens) per request, same forms (default {wd.output_tokens_mean})")
    w.add_argument("--no-ignore-eos", action="store_true",
                   help="let the model stop early (output lengths vary; default: ignore_eos is sent, lengths exact)")
    w.add_argument("--prompts", metavar="FILE.jsonl", help='prompts from a JSONL file of {"prompt": ...} (default: '
                                                           "the bundled sonnets)")
    w.add_argument("--seed", type=int, help=f"random seed for prompts and lengths (default {wd.seed})")
    w.add_argument("--dataset", metavar="FILE",
                   help="prompts and conversations from a file: ShareGPT JSON/JSONL, OpenAI chat JSONL or prompt JSONL "
                        "(default: none, the bundled sonnets)")
    w.add_argument("--dataset-format", choices=["auto", "sharegpt", "openai-chat", "prompts"],
                   help="the dataset's format (default: detected per record)")
    w.add_argument("--turns", metavar="DIST",
                   help="turns per conversation, as a length (e.g. 4, uniform:2:8); each turn re-sends the history "
                        "(default: 1, no conversations; a dataset's own turns with --dataset)")
    w.add_argument("--think-time", metavar="MEAN[:SD]",
                   help="seconds between a reply and the next turn (default 0)")
    w.add_argument("--shared-prefix-tokens", type=int, metavar="N",
                   help="a system prompt of N tokens common to every request of its group (default 0: none)")
    w.add_argument("--prefix-groups", type=int, metavar="G", help="how many different shared prefixes (default 1)")
    lg = p.add_argument_group("load")
    lg.add_argument("--concurrency", metavar="N[,N…]",
                    help=f"concurrency levels (default {','.join(map(str, ld.concurrency))})")
    lg.add_argument("--requests-per-level", type=int, metavar="N",
                    help=f"measured requests per level (default {ld.requests_per_level}; 0 with --seconds-per-level "
                         "alone)")
    lg.add_argument("--seconds-per-level", type=float, metavar="S",
                    help="seconds per level (default: none, levels end by their requests; with both, whichever "
                         "comes first)")
    lg.add_argument("--sweep-until-settled", action="store_true",
                    help="end each level when both $/M have settled (±3%%) instead, or after --seconds-per-level "
                         "if given (default: off)")
    lg.add_argument("--warmup-requests", type=int, metavar="N",
                    help="warm-up requests per level (default: one per slot)")
    lg.add_argument("--timeout", type=float, metavar="S", help=f"per-request timeout in seconds (default {ld.timeout_s:g})")
    lg.add_argument("--max-seconds", type=float, metavar="S",
                    help=f"hard bound on the whole run (default {ld.max_seconds:g})")
    lg.add_argument("--workers", type=int, metavar="N",
                    help="load processes carrying the slots (default 0: one per 512 streams, at most one per "
                         "spare core)")
    lg.add_argument("--on-decrease", choices=["finish", "cancel"],
                    help="when concurrency goes down, the removed slots' requests finish, or are cancelled (counted "
                         "as cancelled); either way the new level is measured once they have ended "
                         f"(default {ld.on_decrease})")
    lg.add_argument("--ray", metavar="auto|ADDRESS",
                    help="load processes as Ray actors on a cluster's nodes, one per node (or --workers N in all): "
                         "auto is the cluster this machine joined (else a one-box cluster), ADDRESS e.g. "
                         "head:6379 (needs befori-tui[ray]; docs/cluster.md; default: none, local processes)")
    lg.add_argument("--ray-listen", metavar="HOST[:PORT]",
                    help="where the run listens for its Ray actors (default: 127.0.0.1 on a one-box cluster, "
                         "else the address Ray knows this machine by, a free port)")
    lg.add_argument("--honor-retry-after", action="store_true",
                    help="after a 429 with Retry-After, that slot waits as asked, at most 30 s (default: off, only "
                         "counted)")
    lg.add_argument("--rate", metavar="R[,R…]",
                    help="open loop: requests per second (one level each) instead of --concurrency slots (default: "
                         "none, the closed loop)")
    lg.add_argument("--trace", metavar="FILE",
                    help="replay a request trace on its own clock: Mooncake JSONL (timestamp ms, input_length, "
                         "output_length, hash_ids) or Azure's CSV (TIMESTAMP, ContextTokens, GeneratedTokens); one "
                         "level, ending with the trace (default: none)")
    lg.add_argument("--trace-speed", type=float, metavar="X",
                    help="divide the trace's times by X: 2 replays it twice as fast (default 1)")
    lg.add_argument("--burstiness", type=float, metavar="B",
                    help=f"open loop: gamma shape of the gaps between arrivals (default {ld.burstiness:g}: Poisson; "
                         "lower: burstier)")
    lg.add_argument("--max-in-flight", type=int, metavar="N",
                    help=f"open loop: at most N requests in flight; an arrival over it waits (default {ld.max_in_flight})")
    lg.add_argument("--max-concurrency", type=int, metavar="N",
                    help=f"the optimum search never goes above this (default {ld.max_concurrency})")
    op = p.add_argument_group("latency targets and the optimum")
    op.add_argument("--slo", metavar="KEY=LIMIT[,…]",
                    help="latency targets, e.g. ttft_p99=2s,itl_p99=60ms,e2e_p99=30s (any of ttft, itl, tpot, e2e "
                         "at p50, p90, p99; default: none)")
    op.add_argument("--find-optimum", action="store_true",
                    help="search for the cheapest concurrency that meets the SLO instead of a fixed list of levels "
                         "(default: off)")
    op.add_argument("--optimum-by", choices=["blended", "input", "output"],
                    help=f"which $/M the optimum minimises (default {d.search.by})")
    op.add_argument("--search-tolerance", type=float, metavar="F",
                    help=f"stop when the cheapest concurrency is bracketed within ±F (default {d.search.tolerance:g})")
    pg = p.add_argument_group("pricing")
    pg.add_argument("--usd-per-hour", type=float, metavar="X",
                    help=f"hourly price of the whole server (default {pr.usd_per_hour:g}, an 8×H100 rental — said "
                         "on screen and in the file; the built-in simulator: its box at that rate per GPU)")
    pg.add_argument("--gpu-count", type=int, metavar="N", help=f"GPUs in that price (default {pr.gpu_count})")
    pg.add_argument("--usd-per-kwh", type=float, metavar="X",
                    help="electricity price, for energy cost (default 0: no energy cost)")
    pg.add_argument("--compare", action="append", metavar="NAME=IN/OUT",
                    help="an API price to compare, $ per million input/output tokens (repeatable; default: none)")
    o = p.add_argument_group("output")
    o.add_argument("--out", metavar="PATH", help="session TOML (default: befori-results/session-<time>.toml)")
    o.add_argument("--gpu-detail", action="store_true", default=None,
                   help="every GPU's own figures in each level of the session file (gpu_detail; default: a "
                        "summary over the GPUs per level)")
    o.add_argument("--raw", metavar="PATH", help="raw per-request JSON lines (default: beside --out, .jsonl)")
    s = p.add_argument_group("built-in simulator (when no --url is given)")
    s.add_argument("--profile", default="dbrx-8xh100", help="simulator profile (default dbrx-8xh100)")
    s.add_argument("--time-scale", type=float, default=1.0, metavar="X", help="run the simulator X× faster (default 1)")


def undocumented_defaults(p: argparse.ArgumentParser) -> list[str]:
    """Options whose --help does not say their default (a test keeps this empty for every command)."""
    return [a.option_strings[0] if a.option_strings else a.dest for a in p._actions
            if not isinstance(a, argparse._HelpAction) and "default" not in (a.help or "")]


# Flags copied as they are onto a config key: flag dest → (section, key); section None is the top level.
PLAIN_FLAGS = {
    "url": ("endpoint", "url"), "model": ("endpoint", "model"), "api": ("endpoint", "api"),
    "api_key_env": ("endpoint", "api_key_env"), "server_metrics": ("endpoint", "server_metrics"),
    "ca_bundle": ("endpoint", "ca_bundle"), "client_cert": ("endpoint", "client_cert"),
    "telemetry": (None, "telemetry"), "gpu_detail": (None, "gpu_detail"),
    "prompts": ("workload", "prompt_source"), "seed": ("workload", "seed"),
    "turns": ("workload", "turns"), "shared_prefix_tokens": ("workload", "shared_prefix_tokens"),
    "prefix_groups": ("workload", "prefix_groups"),
    "requests_per_level": ("load", "requests_per_level"), "seconds_per_level": ("load", "seconds_per_level"),
    "warmup_requests": ("load", "warmup_requests"), "timeout": ("load", "timeout_s"),
    "max_seconds": ("load", "max_seconds"), "workers": ("load", "workers"),
    "on_decrease": ("load", "on_decrease"),
    "max_concurrency": ("load", "max_concurrency"), "optimum_by": ("search", "by"),
    "burstiness": ("load", "burstiness"), "max_in_flight": ("load", "max_in_flight"),
    "search_tolerance": ("search", "tolerance"),
    "ray": ("cluster", "ray"), "ray_listen": ("cluster", "listen"),
    "usd_per_hour": ("pricing", "usd_per_hour"), "gpu_count": ("pricing", "gpu_count"),
    "usd_per_kwh": ("pricing", "usd_per_kwh"),
}


def config_from_args(args: argparse.Namespace) -> Config:
    """The config file (or defaults), then every flag given on top. Raises ConfigError."""
    cfg = load_config(args.config)
    w, ld, pr = cfg.workload, cfg.load, cfg.pricing
    for flag, (section, key) in PLAIN_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            setattr(cfg if section is None else getattr(cfg, section), key, value)
    if args.dataset is not None:
        w.dataset.path = args.dataset
    if args.dataset_format is not None:
        w.dataset.format = args.dataset_format
    if args.trace is not None:
        w.trace.path = args.trace
    if args.trace_speed is not None:
        w.trace.speed = args.trace_speed
    has_data = bool(w.dataset.path) or w.prompt_source != "sonnets"
    if args.input_tokens is not None:
        w.input_tokens_dist, w.input_tokens_mean, w.input_tokens_sd = length_flag(args.input_tokens,
                                                                                 "--input-tokens", has_data)
    if args.output_tokens is not None:
        w.output_tokens_dist, w.output_tokens_mean, w.output_tokens_sd = length_flag(args.output_tokens,
                                                                                    "--output-tokens", has_data)
    if args.turns is not None:
        parse_length(args.turns, "--turns", has_data)
    if args.think_time is not None:
        w.think_time_s_mean, w.think_time_s_sd = parse_think_time(args.think_time, "--think-time")
    if args.no_ignore_eos:
        w.ignore_eos = False
    if args.concurrency is not None:
        ld.concurrency = parse_int_list(args.concurrency, "--concurrency")
    if args.rate is not None:
        try:
            ld.rate = [float(x) for x in args.rate.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(f"--rate: expected requests per second, comma-separated, got {args.rate!r}") from None
        if not ld.rate or any(not r > 0 for r in ld.rate):
            raise ConfigError(f"--rate: every rate must be > 0 requests per second, got {args.rate!r}")
    if args.insecure:
        cfg.endpoint.verify = False
    if args.no_proxy:
        cfg.endpoint.proxy_from_env = False
    for spec in args.header or []:
        name, sep, value = spec.partition(":")
        if not sep:
            raise ConfigError("--header: expected NAME:VALUE or NAME:env:VAR (one was given without a ':')")
        name, value = name.strip(), value.strip()
        check_header(name, value, f"--header {name}")
        cfg.endpoint.headers[name] = value
    if args.seconds_per_level is not None and args.requests_per_level is None:
        ld.requests_per_level = 0  # seconds alone decide, unless both are given
    if args.usd_per_hour is not None:
        pr.source = "flag"
    if args.slo is not None:
        from befori_tui.core.slo import SloError, parse_slo

        try:
            cfg.slo = parse_slo(args.slo)
        except SloError as exc:
            raise ConfigError(str(exc)) from None
    if args.honor_retry_after:
        ld.retry_after = True
    for spec in args.compare or []:
        pr.compare.append(parse_compare(spec))
    if args.time_scale <= 0:
        raise ConfigError(f"--time-scale must be > 0, got {args.time_scale:g}")
    if not cfg.endpoint.url:  # the built-in simulator will run: its profile must exist
        from befori_tui.sim.profile import list_profiles, load_profile

        if args.profile.endswith(".toml"):  # a profile file of one's own (docs/sim.md)
            try:
                load_profile(args.profile)
            except (ValueError, OSError, TypeError) as exc:
                raise ConfigError(f"--profile: {exc}") from None
        elif args.profile not in list_profiles():
            raise ConfigError(f"--profile: no simulator profile {args.profile!r} (there are: "
                              f"{', '.join(list_profiles())}, or a profile .toml file)")
        if pr.source == "default":
            # No price given: the simulated box's, its GPUs at the default's rate per GPU (the default is the
            # demo's 8×H100, so the demo keeps it; a one-GPU profile is not billed for eight).
            gpus = load_profile(args.profile).gpu.count
            pr.usd_per_hour = DEFAULT_USD_PER_HOUR / DEFAULT_GPU_COUNT * gpus
            pr.gpu_count, pr.source = gpus, "simulator"
    try:
        validate(cfg, "flags" if args.config is None else f"{args.config} + flags")
    except ConfigError as exc:
        # Name the flag too, when a flag set the key the message is about.
        given = [f"--{flag.replace('_', '-')}" for flag, (section, key) in PLAIN_FLAGS.items()
                 if getattr(args, flag) is not None and f"{section}.{key}" in str(exc)]
        raise ConfigError(f"{exc} ({', '.join(given)})" if given else str(exc)) from None
    if cfg.endpoint.url and cfg.endpoint.url != redact_url(cfg.endpoint.url):
        # Not an error: the run can go on without them. But the user must know they are not used, and a flag's
        # text is in every process listing.
        where = "--url" if args.url else "endpoint.url"
        seen = ", and anyone on this machine can read it in `ps`" if args.url else ""
        print(f"befori-tui: warning: {where} carries user:password; it is not sent (only a bearer key from "
              f"endpoint.api_key_env is){seen}", file=sys.stderr)
    if w.trace.path:
        from befori_tui.core.trace import load_trace

        load_trace(w.trace.path)  # up front: a bad line is one error before anything is sent
        if getattr(args, "find_optimum", False):
            raise ConfigError("--find-optimum and --trace: a trace sets its own arrivals, there is no level to "
                              "search; give one")
    for key, path in (("workload.prompt_source (--prompts)", "" if w.prompt_source == "sonnets" else w.prompt_source),
                      ("workload.dataset.path (--dataset)", w.dataset.path)):
        if path and not Path(path).is_file():
            raise ConfigError(f"{key}: no such file {path!r}")
        if path:
            from befori_tui.core.datasets import load_dataset

            # Up front: a bad line is one error before anything starts.
            load_dataset(path, w.dataset.format if w.dataset.path else "prompts")
    return cfg


def length_flag(text: str, flag: str, has_data: bool) -> tuple[str, int, float]:
    """A length flag → (distribution spec, mean, sd) for the workload's keys; the mean keys keep saying the
    mean, so results read the same whatever the distribution."""
    d = parse_length(text, flag, has_data)
    if d.from_dataset:
        return "dataset", 550, 0.0
    return d.spec(), max(1, round(d.mean)), d.b if d.kind == "normal" else 0.0


def parse_compare(spec: str) -> ApiPrice:
    name, _, prices = spec.partition("=")
    inp, _, out = prices.partition("/")
    try:
        return ApiPrice(name.strip(), float(inp), float(out))
    except ValueError:
        raise ConfigError(f"--compare: expected NAME=IN/OUT in $ per million tokens, got {spec!r}") from None


def check_output_paths(out: Path, raw: Path | None) -> None:
    """Before anything is measured: the session file and the raw records can be written where asked."""
    for flag, path in (("--out", out), ("--raw", raw)):
        if path is None:  # the raw records go beside the session file
            path = out.with_suffix(".jsonl")
        if path.is_dir() or not path.name:
            raise ConfigError(f"{flag}: {str(path)!r} is a directory; give a file name")
        blocking = next((p for p in (path.parent, *path.parent.parents) if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            raise ConfigError(f"{flag}: {str(blocking)!r} is a file, so {str(path)!r} cannot be created")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"{flag}: cannot create the folder {str(path.parent)!r} ({exc.strerror})") from None
        if not os.access(path.parent, os.W_OK):
            raise ConfigError(f"{flag}: the folder {str(path.parent)!r} is not writable")
