"""How much load one `befori-tui sim` process carries while keeping its timing.

Starts the sim (pinned to one core) with a profile whose batch cap lets every stream decode at once, drives it
with N closed-loop streaming clients (a raw asyncio client pinned to another core, so the client is not what
limits), and over a steady window reports:

- tokens/s the engine emitted and tokens/s the client received,
- the engine's planned step time and the ground-truth inter-token time (from the `befori_sim` fields),
- late steps and lost time (the engine's own lag counters): the sim keeps its timing when these stay ~0,
- the sim process's CPU use (of one core).

    .venv/bin/python bench/sim_capacity.py                      # 512 streams, time scales 1 2 2.5 3 4, 3 repeats
    .venv/bin/python bench/sim_capacity.py --streams 512 --time-scales 2 --repeats 1 --window-s 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
import tomllib
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tomli_w  # noqa: E402

from befori_tui.sim.launch import start_sim  # noqa: E402
from befori_tui.sim.profile import load_profile  # noqa: E402

BASE_PROFILE = "llama-3.1-8b-1xh100"
_GT = re.compile(rb'"befori_sim":(\{[^}]*\})')
_TOKEN = b'"text":"'


@dataclass
class Done:
    t_end_s: float
    tokens: int
    gt: dict[str, int] | None
    ok: bool


@dataclass
class Client:
    host: str
    port: int
    prompt: str
    rng: random.Random
    done: list[Done] = field(default_factory=list)
    received_tokens: int = 0
    stop: bool = False

    def request(self, max_tokens: int) -> bytes:
        body = json.dumps({"prompt": self.prompt, "max_tokens": max_tokens, "ignore_eos": True,
                           "stream": True}).encode()
        return (b"POST /v1/completions HTTP/1.1\r\nhost: sim\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n" % len(body)) + body

    async def worker(self) -> None:
        """Closed loop on one kept-alive connection, as an HTTP client pool would; tokens are counted as
        bytes arrive (no JSON per chunk), and a response ends at the chunked body's last-chunk marker."""
        loop = asyncio.get_running_loop()
        client = self

        class Proto(asyncio.Protocol):
            def __init__(self) -> None:
                self.buf = bytearray()
                self.tail = b""
                self.fut: asyncio.Future[bytes] = loop.create_future()

            def data_received(self, data: bytes) -> None:
                joined = self.tail + data
                client.received_tokens += joined.count(_TOKEN)
                self.tail = joined[-(len(_TOKEN) - 1):]  # a marker split across two reads counts once
                self.buf += data
                if self.buf.endswith(b"\r\n0\r\n\r\n") and not self.fut.done():
                    self.fut.set_result(bytes(self.buf))
                    self.buf.clear()

            def connection_lost(self, exc: Exception | None) -> None:
                if not self.fut.done():
                    self.fut.set_result(bytes(self.buf))

        transport: asyncio.Transport | None = None
        proto = Proto()
        while not self.stop:
            if transport is None or transport.is_closing():
                transport, proto = await loop.create_connection(Proto, self.host, self.port)
            proto.fut = loop.create_future()
            transport.write(self.request(self.rng.randint(64, 256)))
            raw = await proto.fut
            gts = _GT.findall(raw)
            gt = json.loads(gts[-1]) if gts else None
            ok = raw.endswith(b"\r\n0\r\n\r\n") and gt is not None  # the chunked body ended properly
            self.done.append(Done(time.perf_counter(), raw.count(_TOKEN), gt, ok))
        if transport is not None:
            transport.close()


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _runq_wait_s(pid: int) -> float:
    """Time the process spent runnable but waiting for a CPU (other load on the box)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9


def _profile_file(streams: int, directory: str) -> str:
    """The 8B profile with the batch cap raised to the stream count, so every stream decodes each step."""
    base = load_profile(BASE_PROFILE)
    from importlib import resources
    src = resources.files("befori_tui.sim") / "profiles" / f"{BASE_PROFILE}.toml"
    data = tomllib.loads(src.read_text())
    data["name"] = f"{base.name}-cap{streams}"
    data["engine"]["max_num_seqs"] = max(streams, base.engine.max_num_seqs)
    path = Path(directory) / f"{data['name']}.toml"
    path.write_bytes(tomli_w.dumps(data).encode())
    return str(path)


async def _drive(client: Client, streams: int, warmup_s: float, window_s: float, root: str,
                 sim_pid: int) -> dict[str, float]:
    tasks = [asyncio.create_task(client.worker()) for _ in range(streams)]
    await asyncio.sleep(warmup_s)
    w0 = _runq_wait_s(sim_pid)
    e0, c0, t0, r0 = _get(root + "/debug/engine"), _cpu_s(sim_pid), time.perf_counter(), client.received_tokens
    await asyncio.sleep(window_s)
    e1, c1, t1, r1 = _get(root + "/debug/engine"), _cpu_s(sim_pid), time.perf_counter(), client.received_tokens
    w1 = _runq_wait_s(sim_pid)
    client.stop = True
    await asyncio.gather(*tasks, return_exceptions=True)
    wall = t1 - t0
    steps = e1["steps"] - e0["steps"]
    # Requests that arrived after the opening burst had settled and finished inside the window.
    t_start_ns, t1_ns = int((t0 - warmup_s / 2) * 1e9), int(t1 * 1e9)
    itl_ms = [(d.gt["t_last_token_ns"] - d.gt["t_first_token_ns"]) / 1e6 / (d.tokens - 1)
              for d in client.done
              if d.ok and d.gt and d.tokens > 1
              and d.gt["t_received_ns"] >= t_start_ns and d.gt["t_last_token_ns"] <= t1_ns]
    failed = sum(1 for d in client.done if not d.ok)
    return {
        "engine_tok_s": (e1["generation_tokens_total"] - e0["generation_tokens_total"]) / wall,
        "client_tok_s": (r1 - r0) / wall,
        "planned_step_ms": 1000 * (e1["busy_sim_s"] - e0["busy_sim_s"]) / max(steps, 1) / e1["time_scale"],
        "gt_itl_ms": statistics.fmean(itl_ms) if itl_ms else float("nan"),
        "late_steps_pct": 100 * (e1["late_steps"] - e0["late_steps"]) / max(steps, 1),
        "lag_ms_per_s": 1000 * (e1["lag_s_total"] - e0["lag_s_total"]) / wall,
        "sim_cpu_pct": 100 * (c1 - c0) / wall,
        "sim_runq_wait_pct": 100 * (w1 - w0) / wall,
        "cpu_us_per_tok": 1e6 * (c1 - c0) / max(1, e1["generation_tokens_total"] - e0["generation_tokens_total"]),
        "requests_measured": len(itl_ms),
        "max_lag_ms": 1000 * e1["max_lag_s"],
        "gc_pause_ms_max": 1000 * e1["gc_pause_s_max"],
        "failed": failed,
    }


def run_once(streams: int, time_scale: float, warmup_s: float, window_s: float, profile_path: str,
             pin: bool) -> dict:
    with start_sim(profile=profile_path, time_scale=time_scale) as sim:
        host, port = sim.root_url.removeprefix("http://").rsplit(":", 1)
        cpus = sorted(os.sched_getaffinity(0))
        if pin and len(cpus) >= 2:  # sim on one core, this client on another
            os.sched_setaffinity(sim.pid, {cpus[0]})
            os.sched_setaffinity(0, {cpus[1]})
        try:
            client = Client(host, int(port), "Benchmark the simulator with a short prompt. " * 6, random.Random(1))
            return asyncio.run(_drive(client, streams, warmup_s, window_s, sim.root_url, sim.pid))
        finally:
            os.sched_setaffinity(0, set(cpus))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=512)
    ap.add_argument("--time-scales", type=float, nargs="+", default=[1.0, 2.0, 2.5, 3.0, 4.0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup-s", type=float, default=4.0)
    ap.add_argument("--window-s", type=float, default=8.0)
    ap.add_argument("--no-pin", action="store_true", help="do not pin the sim and the client to a core each")
    ap.add_argument("--json", help="also write all runs here")
    args = ap.parse_args()
    keys = ["engine_tok_s", "client_tok_s", "planned_step_ms", "gt_itl_ms", "late_steps_pct", "lag_ms_per_s",
            "sim_cpu_pct", "sim_runq_wait_pct", "cpu_us_per_tok"]
    all_runs = []
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "?")
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs ({cpu}), Python {sys.version.split()[0]}, "
          f"load average before: {os.getloadavg()[0]:.2f}")
    print(f"# {args.streams} streams, medians of {args.repeats} runs, {args.window_s:g} s windows", flush=True)
    print("| time scale | " + " | ".join(keys) + " | failed |")
    print("|---" * (len(keys) + 2) + "|")
    with tempfile.TemporaryDirectory() as tmp:
        profile_path = _profile_file(args.streams, tmp)
        for ts in args.time_scales:
            runs = [run_once(args.streams, ts, args.warmup_s, args.window_s, profile_path, not args.no_pin)
                    for _ in range(args.repeats)]
            all_runs.append({"time_scale": ts, "runs": runs})
            med = {k: statistics.median(r[k] for r in runs) for k in keys}
            failed = sum(r["failed"] for r in runs)
            print(f"| {ts:g} | " + " | ".join(f"{med[k]:,.1f}" if k.endswith("tok_s") or k.endswith("pct")
                                               else f"{med[k]:.2f}" for k in keys) + f" | {failed} |", flush=True)
    print(f"# load average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(all_runs, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
