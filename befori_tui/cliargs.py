"""Flags shared by `bench` and `monitor`, and how they override a config file."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from befori_tui.core.config import (
    DEFAULT_GPU_COUNT,
    DEFAULT_USD_PER_HOUR,
    ApiPrice,
    Config,
    ConfigError,
    load_config,
    parse_int_list,
    parse_mean_sd,
    redact_url,
    validate,
)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the flag, exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        raise SystemExit(2)


def add_run_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("endpoint")
    g.add_argument("--config", metavar="FILE", help="TOML config (flags override its keys)")
    g.add_argument("--url", help="OpenAI base URL ending in /v1 (default: start the built-in simulator)")
    g.add_argument("--model", help="model name (default: the first one at /v1/models)")
    g.add_argument("--api", choices=["completions", "chat"], help="which streaming API to call")
    g.add_argument("--api-key-env", metavar="VAR", help="environment variable holding the API key")
    g.add_argument("--server-metrics", metavar="URL|off", help="the server's Prometheus /metrics (default: <root>/metrics)")
    g.add_argument("--telemetry", metavar="SPEC", help="GPU telemetry: nvml | dcgm:URL | none (default: NVML if it loads)")
    w = p.add_argument_group("workload")
    w.add_argument("--input-tokens", metavar="MEAN[:SD]", help="input tokens per request (default 550:150)")
    w.add_argument("--output-tokens", metavar="MEAN[:SD]", help="output tokens per request (default 150)")
    w.add_argument("--no-ignore-eos", action="store_true", help="let the model stop early (output lengths vary)")
    w.add_argument("--prompts", metavar="FILE.jsonl", help='prompts from a JSONL file of {"prompt": ...}')
    w.add_argument("--seed", type=int, help="random seed for prompts and lengths")
    ld = p.add_argument_group("load")
    ld.add_argument("--concurrency", metavar="N[,N…]", help="concurrency levels, e.g. 1,2,4,8")
    ld.add_argument("--requests-per-level", type=int, metavar="N", help="measured requests per level")
    ld.add_argument("--seconds-per-level", type=float, metavar="S", help="seconds per level")
    ld.add_argument("--sweep-until-settled", action="store_true",
                    help="end each level when both $/M have settled (±3%%) instead, or after --seconds-per-level "
                         "if given")
    ld.add_argument("--warmup-requests", type=int, metavar="N", help="warm-up requests per level (default: one per slot)")
    ld.add_argument("--timeout", type=float, metavar="S", help="per-request timeout in seconds")
    ld.add_argument("--max-seconds", type=float, metavar="S", help="hard bound on the whole run")
    ld.add_argument("--workers", type=int, metavar="N",
                    help="load processes carrying the slots (default 0: one per 512 streams, at most one per "
                         "spare core)")
    ld.add_argument("--ray", metavar="auto|ADDRESS",
                    help="load processes as Ray actors on a cluster's nodes, one per node (or --workers N in all): "
                         "auto is the cluster this machine joined (else a one-box cluster), ADDRESS e.g. "
                         "head:6379 (needs befori-tui[ray]; docs/cluster.md)")
    ld.add_argument("--ray-listen", metavar="HOST[:PORT]",
                    help="where the run listens for its Ray actors (default: 127.0.0.1 on a one-box cluster, "
                         "else the address Ray knows this machine by, a free port)")
    ld.add_argument("--honor-retry-after", action="store_true",
                    help="after a 429 with Retry-After, that slot waits as asked (at most 30 s)")
    pr = p.add_argument_group("pricing")
    pr.add_argument("--usd-per-hour", type=float, metavar="X", help="hourly price of the whole server")
    pr.add_argument("--gpu-count", type=int, metavar="N", help="GPUs in that price")
    pr.add_argument("--usd-per-kwh", type=float, metavar="X", help="electricity price, for energy cost")
    pr.add_argument("--compare", action="append", metavar="NAME=IN/OUT",
                    help="an API price to compare, $ per million input/output tokens (repeatable)")
    o = p.add_argument_group("output")
    o.add_argument("--out", metavar="PATH", help="session TOML (default: befori-results/session-<time>.toml)")
    o.add_argument("--raw", metavar="PATH", help="raw per-request JSON lines (default: beside --out, .jsonl)")
    s = p.add_argument_group("built-in simulator (when no --url is given)")
    s.add_argument("--profile", default="dbrx-8xh100", help="simulator profile (default dbrx-8xh100)")
    s.add_argument("--time-scale", type=float, default=1.0, metavar="X", help="run the simulator X× faster")


# Flags copied as they are onto a config key: flag dest → (section, key); section None is the top level.
PLAIN_FLAGS = {
    "url": ("endpoint", "url"), "model": ("endpoint", "model"), "api": ("endpoint", "api"),
    "api_key_env": ("endpoint", "api_key_env"), "server_metrics": ("endpoint", "server_metrics"),
    "telemetry": (None, "telemetry"),
    "prompts": ("workload", "prompt_source"), "seed": ("workload", "seed"),
    "requests_per_level": ("load", "requests_per_level"), "seconds_per_level": ("load", "seconds_per_level"),
    "warmup_requests": ("load", "warmup_requests"), "timeout": ("load", "timeout_s"),
    "max_seconds": ("load", "max_seconds"), "workers": ("load", "workers"),
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
    if args.input_tokens is not None:
        w.input_tokens_mean, w.input_tokens_sd = parse_mean_sd(args.input_tokens, "--input-tokens")
    if args.output_tokens is not None:
        w.output_tokens_mean, w.output_tokens_sd = parse_mean_sd(args.output_tokens, "--output-tokens")
    if args.no_ignore_eos:
        w.ignore_eos = False
    if args.concurrency is not None:
        ld.concurrency = parse_int_list(args.concurrency, "--concurrency")
    if args.seconds_per_level is not None and args.requests_per_level is None:
        ld.requests_per_level = 0  # seconds alone decide, unless both are given
    if args.usd_per_hour is not None:
        pr.source = "flag"
    if args.honor_retry_after:
        ld.retry_after = True
    for spec in args.compare or []:
        pr.compare.append(parse_compare(spec))
    if args.time_scale <= 0:
        raise ConfigError(f"--time-scale must be > 0, got {args.time_scale:g}")
    if not cfg.endpoint.url:  # the built-in simulator will run: its profile must exist
        from befori_tui.sim.profile import list_profiles, load_profile

        if args.profile not in list_profiles():
            raise ConfigError(f"--profile: no simulator profile {args.profile!r} (there are: "
                              f"{', '.join(list_profiles())})")
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
    if w.prompt_source != "sonnets" and not Path(w.prompt_source).is_file():
        raise ConfigError(f"workload.prompt_source: no such file {w.prompt_source!r}")
    if w.prompt_source != "sonnets":
        from befori_tui.core.prompts import read_jsonl_prompts

        read_jsonl_prompts(w.prompt_source)  # up front: a bad line is one error before anything starts
    return cfg


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
