"""`befori-tui sim`: run the simulated inference server until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys

from befori_tui.sim.faults import FAULT_KINDS, FaultPlan, SimulatedDrop
from befori_tui.sim.profile import list_profiles, load_profile

DEFAULT_PROFILE = "dbrx-8xh100"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(message)


def _parser() -> _Parser:
    p = _Parser(prog="befori-tui sim", description="Simulated OpenAI-compatible LLM inference server.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port (default 8000)")
    p.add_argument("--profile", default=DEFAULT_PROFILE,
                   help=f"built-in profile ({', '.join(list_profiles())}) or a path to a .toml profile "
                        f"(default {DEFAULT_PROFILE})")
    p.add_argument("--time-scale", type=float, default=1.0, help="X > 0: every step X times shorter (default 1)")
    p.add_argument("--fault", action="append", default=[], choices=FAULT_KINDS, metavar="KIND",
                   help=f"inject a fault ({', '.join(FAULT_KINDS)}); repeat with one --fault-rate each "
                        "(default: none)")
    p.add_argument("--fault-rate", action="append", default=[], type=float, metavar="P",
                   help="the share of requests that get the --fault before it, 0 to 1 (no default: one per --fault)")
    p.add_argument("--seed", type=int, default=0, help="seed of the faults and the engine's draws (default 0)")
    p.add_argument("--prefix-cache-tokens", type=int, metavar="N",
                   help="prefix cache capacity in tokens (default: the profile's; 0: no prefix cache)")
    p.add_argument("--log-level", default="warning", choices=LOG_LEVELS, help="uvicorn's log level (default warning)")
    return p


class _DropFilter(logging.Filter):
    """Injected drops are meant to abort connections; keep their tracebacks out of the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], SimulatedDrop))


def parse(argv: list[str]) -> tuple[argparse.Namespace, dict[str, float]]:
    args = _parser().parse_args(argv)
    if not 0 <= args.port <= 65535:
        raise _UsageError(f"argument --port: {args.port} is not within 0..65535")
    if not args.time_scale > 0 or args.time_scale != args.time_scale or args.time_scale == float("inf"):
        raise _UsageError(f"argument --time-scale: must be a finite number > 0, got {args.time_scale}")
    if len(args.fault) != len(args.fault_rate):
        raise _UsageError("argument --fault-rate: give exactly one --fault-rate after each --fault")
    faults = dict(zip(args.fault, args.fault_rate))
    if len(faults) != len(args.fault):
        raise _UsageError("argument --fault: each kind may be given once")
    try:
        FaultPlan(faults)
    except ValueError as exc:
        raise _UsageError(f"argument --fault-rate: {exc}") from None
    try:
        args.profile_obj = load_profile(args.profile)
    except ValueError as exc:
        raise _UsageError(f"argument --profile: {exc}") from None
    if args.prefix_cache_tokens is not None:
        if args.prefix_cache_tokens < 0:
            raise _UsageError(f"argument --prefix-cache-tokens: must be ≥ 0, got {args.prefix_cache_tokens}")
        import dataclasses

        prof = args.profile_obj
        args.profile_obj = dataclasses.replace(prof, engine=dataclasses.replace(
            prof.engine, prefix_cache_tokens=args.prefix_cache_tokens))
    return args, faults


def main(argv: list[str]) -> int:
    try:
        args, faults = parse(argv)
    except _UsageError as exc:
        print(f"befori-tui sim: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    try:
        # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose proto says TCP,
        # and without it a response's headers and body (two writes) meet a 40 ms delayed ACK.
        family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((args.host, args.port))
    except OSError as exc:
        print(f"befori-tui sim: error: argument --port: cannot listen on {args.host}:{args.port}: {exc}",
              file=sys.stderr)
        return 2
    return serve(sock, args.profile_obj, args.time_scale, faults, args.seed, args.log_level)


def serve(sock: socket.socket, profile: object, time_scale: float, faults: dict[str, float], seed: int,
          log_level: str) -> int:
    import uvicorn  # only the server process needs it

    from befori_tui.sim.app import SimServer

    server_app = SimServer(profile, time_scale, faults, seed)  # type: ignore[arg-type]
    config = uvicorn.Config(server_app.app, log_level=log_level, access_log=False, lifespan="on",
                            timeout_graceful_shutdown=1, backlog=4096, timeout_keep_alive=30)
    logging.getLogger("uvicorn.error").addFilter(_DropFilter())
    server = uvicorn.Server(config)
    host, port = sock.getsockname()[:2]

    async def run() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if server.started:
            print(f"listening on http://{host}:{port}", flush=True)
        await task

    # uvicorn re-raises the signal that stopped it once it is done; a no-op handler makes that a clean exit.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    asyncio.run(run())
    return 0 if server.started else 1
