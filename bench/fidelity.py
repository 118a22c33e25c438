"""How far befori-tui's own timing is from the server's ground truth, beyond a minimal reference client.

One simulator (the 8B profile made flat: every step 20 ms whatever the batch, a 80 ms front end, so TTFT is
about 100–120 ms and every stream gets a token every 20 ms) serves, in turn and in the same run:

- `ref`: bench/reference_client.py (raw asyncio streams, hand-read HTTP/1.1 chunks, no library),
- `bench`: `befori-tui bench` as a child process, as a user runs it (the run process: the run controller,
  the load loop, the event publisher; `--workers N` passes on), its raw JSONL read afterwards,
- `tui`: what a user sees: the real `befori-tui monitor` in a pseudo-terminal (160×48, read continuously as
  a terminal reads it; `q` after the run's seconds) — bench/ui_pty.py's `run_monitor`, the one place the
  pty is driven —, its raw JSONL read afterwards,
- `headless` (not by default): befori-tui's Session on a plain asyncio loop in this process — the load loop
  alone, without the run process around it; `uvloop`: the same on uvloop.
- transports (not by default; each the in-process Session with one load process, only the HTTP client under
  it changed): `lean` — core/transport.py's LeanTransport, what befori-tui uses; `httpx` — httpx's own
  transport (httpcore, h11), through AsyncClient.stream as a plain httpx user would; `aiohttp` —
  bench/aiohttp_transport.py, aiohttp's ClientSession under the same direct path as `lean`. For these the
  client's CPU seconds per 1,000 requests are measured too (this process's CPU over the load's seconds, the
  sim being another process), and the table gives each one's ratio to `lean` in the same run.

Per request, against the simulator's `befori_sim` timestamps (same CLOCK_MONOTONIC as perf_counter_ns):
- TTFT excess = (client first token − client send) − (server first token − server received),
- ITL excess = client mean gap − server mean gap over the same request's tokens,
then the p50/p90 per run, the median over runs, and each befori-tui mode minus `ref` (the excess that is ours).
Requests sent in a run's first `--warmup-s` seconds (from its first request: set-up and a child process's
start are not counted) are left out. The sim is pinned to one core and this process — and so the child
processes — to the other (unless --no-pin), as on a 2-core client box.

    .venv/bin/python bench/fidelity.py                                   # c = 1 64 256 512, 3 runs each
    .venv/bin/python bench/fidelity.py --concurrency 64 --runs 1 --seconds 5
    .venv/bin/python bench/fidelity.py --concurrency 64 --runs 2 --modes ref bench headless --seconds 6
    .venv/bin/python bench/fidelity.py --modes lean httpx aiohttp --runs 3   # the transport choice
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import statistics
import sys
import tempfile
import time
import tomllib
import urllib.request
from importlib import resources
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402
import tomli_w  # noqa: E402

import reference_client  # noqa: E402
import ui_pty  # noqa: E402  (the CLI runs: `befori-tui bench`, and `befori-tui monitor` in a pty)
from befori_tui.core.config import Config  # noqa: E402
from befori_tui.core.records import RequestRecord  # noqa: E402
from befori_tui.core.session import Session  # noqa: E402
from befori_tui.sim.launch import start_sim  # noqa: E402

OUTPUT_TOKENS = 32
INPUT_TOKENS = 64
STEP_MS = 20.0
FRONTEND_MS = 80.0


def flat_profile(directory: str, max_seqs: int, step_ms: float = STEP_MS, frontend_ms: float = FRONTEND_MS) -> str:
    """The 8B profile with a constant step time and room for every stream, so load does not change timing."""
    src = resources.files("befori_tui.sim") / "profiles" / "llama-3.1-8b-1xh100.toml"
    data = tomllib.loads(src.read_text())
    data["name"] = f"flat-{step_ms:g}ms"
    e = data["engine"]
    e.update(max_num_seqs=max_seqs, step_base_ms=step_ms, step_k_ms_per_seq=0.0, prefill_tok_per_s=1e9,
             frontend_ms=frontend_ms, kv_cache_tokens=max(e["kv_cache_tokens"], max_seqs * 4096),
             max_num_batched_tokens=max(e["max_num_batched_tokens"], max_seqs * 2 * INPUT_TOKENS))
    path = Path(directory) / f"{data['name']}.toml"
    path.write_bytes(tomli_w.dumps(data).encode())
    return str(path)


def _cfg(url: str, c: int, workers: int = 0) -> Config:
    cfg = Config()
    cfg.endpoint.url = url
    cfg.load.workers = workers
    cfg.endpoint.server_metrics = "off"
    cfg.telemetry = "none"
    cfg.load.concurrency = [c]
    cfg.workload.input_tokens_mean, cfg.workload.input_tokens_sd = INPUT_TOKENS, 0.0
    cfg.workload.output_tokens_mean = OUTPUT_TOKENS
    return cfg


def _from_records(records, extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    out = []
    for r in records:
        if not r.ok or r.server_timing is None or r.t_first_token_ns is None:
            continue
        out.append({"t_send_ns": r.t_send_ns, "t_first_token_ns": r.t_first_token_ns,
                    "t_last_token_ns": r.t_first_token_ns + sum(r.itl_ns), "tokens": r.content_chunks,
                    "server_timing": r.server_timing, "ok": True})
    return out


async def _headless(url: str, c: int, seconds: float, out: Path, workers: int = 0) -> tuple[list[dict], dict]:
    session = Session(_cfg(url, c, workers), out)
    runner = await session.open()
    cpu0_s = time.process_time()
    runner.start(c)
    await asyncio.sleep(seconds)
    cpu_s = time.process_time() - cpu0_s
    done = session.finished_count()
    await session.close()
    health = _health(session)
    if done:
        health["cpu_s_per_1k"] = cpu_s / done * 1000
    return _from_records(session.raw_records()), health


TRANSPORTS = ("lean", "httpx", "aiohttp")


def run_transport(kind: str, url: str, c: int, seconds: float, out: Path) -> tuple[list[dict], dict]:
    """The in-process Session (one load process) with its HTTP client's transport swapped."""
    from befori_tui.core import client as client_mod
    from befori_tui.core import session as session_mod

    original = client_mod.make_http_client

    def make(endpoint, slots, timeout_s, connect_timeout_s):
        http = original(endpoint, slots, timeout_s, connect_timeout_s)
        if kind == "httpx":
            limits = httpx.Limits(max_connections=slots + 8, max_keepalive_connections=slots + 8)
            http._transport = httpx.AsyncHTTPTransport(limits=limits, trust_env=False)
        elif kind == "aiohttp":
            from aiohttp_transport import AiohttpTransport
            http._transport = AiohttpTransport()
        return http

    session_mod.make_http_client = make
    try:
        return asyncio.run(_headless(url, c, seconds, out, workers=1))
    finally:
        session_mod.make_http_client = original


def _health(session) -> dict:
    """The client's own health figures for the level, when the session measures them."""
    lv = session.level_summaries()
    return {k: v for k, v in (lv[0] if lv else {}).items() if k.startswith("client_")}


def run_headless(url: str, c: int, seconds: float, out: Path, use_uvloop: bool = False,
                 workers: int = 0) -> tuple[list[dict], dict]:
    """The Session on a plain asyncio loop in this process (load.workers > 1: it starts load processes)."""
    if use_uvloop:
        import uvloop
        return uvloop.run(_headless(url, c, seconds, out, workers))
    return asyncio.run(_headless(url, c, seconds, out, workers))


# The same workload as _cfg, as command-line flags (ui_pty adds --url, --concurrency, --seconds-per-level,
# --output-tokens, --usd-per-hour, --max-seconds and --out).
CLI_FLAGS = ["--input-tokens", f"{INPUT_TOKENS}:0", "--telemetry", "none", "--server-metrics", "off"]
TUI_SIZE = (160, 48)
QUIT_TIMEOUT_S = 30.0


def read_jsonl(path: Path) -> list[RequestRecord]:
    if not path.is_file():
        return []
    with path.open() as f:
        return [RequestRecord.from_json_dict(json.loads(line)) for line in f if line.strip()]


def run_cli(kind: str, befori: list[str], url: str, c: int, seconds: float, out: Path,
            workers: int = 0) -> tuple[list[dict], dict, dict]:
    """`befori-tui bench` (kind "bench") or `befori-tui monitor` in a pty (kind "tui") for `seconds` of load.
    Returns the records, the level's client health from the TOML, and what bench/ui_pty.py says of the run
    (exit code, CPU seconds of the process and the children it waited for, bytes written to the pty)."""
    extra = CLI_FLAGS + (["--workers", str(workers)] if workers else [])
    if kind == "bench":
        res = ui_pty.run_headless(befori, url, c, seconds, out, extra, None, output_tokens=OUTPUT_TOKENS)
    else:
        res = ui_pty.run_monitor(befori, url, c, seconds, out, extra, TUI_SIZE, QUIT_TIMEOUT_S, None,
                                 output_tokens=OUTPUT_TOKENS)
    if res.get("exit_code") not in (0, None):
        tail = res.get("log_tail") or res.get("output_tail") or ""
        print(f"  !! befori-tui {kind} exited with {res.get('exit_code')} ({res.get('ended')}):\n{tail[-800:]}",
              file=sys.stderr, flush=True)
    levels = ui_pty.toml_facts(out).get("levels") or [{}]
    health = {k: v for k, v in levels[0].items() if k.startswith("client_")}
    return _from_records(read_jsonl(out.with_suffix(".jsonl"))), health, res



def run_ref(root: str, model: str, c: int, seconds: float) -> tuple[list[dict], dict]:
    host, port = root.removeprefix("http://").rsplit(":", 1)
    body = reference_client.completions_body(model, "Measure the client. " * 10, OUTPUT_TOKENS)
    return asyncio.run(reference_client.run(host, int(port), c, seconds, body)), {}


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def excess(records: list[dict], warmup_s: float) -> dict[str, float]:
    """TTFT and ITL excess over the server's own figures, for requests sent `warmup_s` or more after the
    run's first request."""
    ttft, itl = [], []
    t_from_ns = min((r["t_send_ns"] for r in records), default=0) + int(warmup_s * 1e9)
    for r in records:
        gt = r["server_timing"]
        if not r["ok"] or r["t_send_ns"] < t_from_ns or gt is None or gt.get("t_first_token_ns") is None:
            continue
        ttft.append(((r["t_first_token_ns"] - r["t_send_ns"]) - (gt["t_first_token_ns"] - gt["t_received_ns"])) / 1e6)
        if r["tokens"] > 1:
            client = r["t_last_token_ns"] - r["t_first_token_ns"]
            server = gt["t_last_token_ns"] - gt["t_first_token_ns"]
            itl.append((client - server) / (r["tokens"] - 1) / 1e6)
    return {"n": len(ttft), "ttft_ms_p50": _pct(ttft, 50), "ttft_ms_p90": _pct(ttft, 90),
            "ttft_ms_p99": _pct(ttft, 99), "itl_ms_p50": _pct(itl, 50), "itl_ms_p90": _pct(itl, 90)}


def one_run(mode: str, sim, model: str, c: int, seconds: float, warmup_s: float, tmp: str, i: int,
            befori: list[str]) -> dict:
    out = Path(tmp) / f"{mode}-{c}-{i}.toml"
    if mode == "ref":
        recs, health = run_ref(sim.root_url, model, c, seconds)
    elif mode in TRANSPORTS:
        recs, health = run_transport(mode, sim.base_url, c, seconds, out)
    elif mode in ("headless", "uvloop"):
        recs, health = run_headless(sim.base_url, c, seconds, out, use_uvloop=mode == "uvloop")
    else:
        recs, health, _ = run_cli(mode, befori, sim.base_url, c, seconds, out)
    res = excess(recs, warmup_s)
    res.update(health)
    return res


KEYS = ("ttft_ms_p50", "ttft_ms_p90", "itl_ms_p50", "cpu_s_per_1k")


def _median(values) -> float:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 64, 256, 512])
    p.add_argument("--modes", nargs="+", default=["ref", "bench", "tui"],
                   choices=["ref", "bench", "tui", "headless", "uvloop", *TRANSPORTS])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--warmup-s", type=float, default=3.0, help="requests sent before this are not counted")
    p.add_argument("--no-pin", action="store_true")
    p.add_argument("--befori", default=None, help="the befori-tui command for bench and tui (default: the one "
                   "beside this Python, else python -m befori_tui)")
    p.add_argument("--json", help="also write every run here")
    args = p.parse_args()
    befori = shlex.split(args.befori) if args.befori else ui_pty.default_befori()
    signal.signal(signal.SIGTERM, ui_pty._on_signal)  # unwind: the sim and any child are stopped
    cpus = sorted(os.sched_getaffinity(0))
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
          f"load average {os.getloadavg()[0]:.2f}; sim step {STEP_MS:g} ms, front end {FRONTEND_MS:g} ms, "
          f"{OUTPUT_TOKENS} tokens; {args.seconds:g} s runs, first {args.warmup_s:g} s not counted", flush=True)
    all_runs: dict[str, Any] = {}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        profile = flat_profile(tmp, max(1024, 2 * max(args.concurrency)))
        with start_sim(profile=profile) as sim:
            pinned = not args.no_pin and len(cpus) >= 2
            if pinned:
                os.sched_setaffinity(sim.pid, {cpus[0]})
                os.sched_setaffinity(0, {cpus[1]})
            try:
                with urllib.request.urlopen(sim.base_url + "/models", timeout=10) as resp:
                    model = json.loads(resp.read())["data"][0]["id"]
                for c in args.concurrency:
                    runs: dict[str, list[dict]] = {m: [] for m in args.modes}
                    for i in range(args.runs):
                        for mode in args.modes:
                            r = one_run(mode, sim, model, c, args.seconds, args.warmup_s, tmp, i, befori)
                            runs[mode].append(r)
                            lag = (f" loop lag p50/p99/max {r['client_loop_lag_ms_p50']:.1f}/"
                                   f"{r['client_loop_lag_ms_p99']:.1f}/{r['client_loop_lag_ms_max']:.1f} ms"
                                   if "client_loop_lag_ms_p50" in r else "")
                            cpu = (f" · CPU {r['cpu_s_per_1k']:.2f} s/1k requests" if "cpu_s_per_1k" in r else "")
                            print(f"c={c:<4} run {i} {mode:8s} n={r['n']:5d} TTFT excess p50 {r['ttft_ms_p50']:7.2f}"
                                  f" p90 {r['ttft_ms_p90']:7.2f} ms · ITL excess p50 {r['itl_ms_p50']:6.3f} ms{cpu}{lag}"
                                  f" · load {os.getloadavg()[0]:.2f}", flush=True)
                    all_runs[str(c)] = runs
                    med = {m: {k: _median(r.get(k) for r in rs) for k in KEYS} for m, rs in runs.items()}
                    for m in args.modes:
                        over = ({k: med[m][k] - med["ref"][k] for k in KEYS}
                                if "ref" in med and m != "ref" else None)
                        rows.append((c, m, med[m], over))
            finally:
                if pinned:
                    os.sched_setaffinity(0, set(cpus))
    print(f"# load average after: {os.getloadavg()[0]:.2f}")
    print("\n| c | client | TTFT − server p50 | p90 | ITL − server p50 | TTFT p50 over ref | TTFT p90 over ref "
          "| ITL p50 over ref |")
    print("|---|---|---|---|---|---|---|---|")
    for c, m, v, over in rows:
        o = (f"{over['ttft_ms_p50']:+.2f} ms | {over['ttft_ms_p90']:+.2f} ms | {over['itl_ms_p50']:+.3f} ms"
             if over else "— | — | —")
        print(f"| {c} | {m} | {v['ttft_ms_p50']:.2f} ms | {v['ttft_ms_p90']:.2f} ms | {v['itl_ms_p50']:.3f} ms | {o} |")
    if "lean" in args.modes:
        print("\n| c | transport | TTFT − server p50 | p90 | ITL − server p50 | CPU s / 1k requests | ratio to lean: "
              "TTFT p50 | TTFT p90 | CPU |")
        print("|---|---|---|---|---|---|---|---|---|")
        lean = {c: v for c, m, v, _ in rows if m == "lean"}
        for c, m, v, _ in rows:
            if m not in TRANSPORTS:
                continue
            base = lean[c]
            ratio = " | ".join(f"{v[k] / base[k]:.2f}×" if base[k] and base[k] == base[k] else "—"
                               for k in ("ttft_ms_p50", "ttft_ms_p90", "cpu_s_per_1k"))
            print(f"| {c} | {m} | {v['ttft_ms_p50']:.2f} ms | {v['ttft_ms_p90']:.2f} ms | {v['itl_ms_p50']:.3f} ms | "
                  f"{v['cpu_s_per_1k']:.2f} | {ratio} |")
    if args.json:
        Path(args.json).write_text(json.dumps(all_runs, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
