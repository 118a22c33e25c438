"""What `befori-tui bench` itself costs in CPU, start-up included, against a real llama.cpp server.

The workload of the issue's comparison: concurrency 4, 24 requests, 128 input / 64 output tokens, against
llama.cpp's server with Gemma 3 270M (tests/llamacpp.py). `befori-tui bench` runs as a child process; its
CPU (user + system, children included) comes from the kernel's accounting of that child. The start-up alone
(`python -m befori_tui --version`, and importing the bench path) is measured the same way. Each run uses a
new seed, so llama.cpp's prompt cache does not serve a repeated prompt.

    .venv/bin/python bench/client_cost.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def child_cpu_s(cmd: list[str]) -> tuple[float, float, int]:
    """(CPU seconds of the child and its children, wall seconds, exit code)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall, proc.returncode


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--url", help="an already running OpenAI-compatible server (…/v1); default: start llama.cpp")
    args = p.parse_args()
    py = sys.executable
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    rows: dict[str, list[tuple[float, float]]] = {"start-up: --version": [], "start-up: import the bench path": [],
                                                  "bench c=4, 24 requests, 128 in / 64 out": []}
    for _ in range(args.runs):
        cpu, wall, _ = child_cpu_s([py, "-m", "befori_tui", "--version"])
        rows["start-up: --version"].append((cpu, wall))
        cpu, wall, _ = child_cpu_s([py, "-c", "import befori_tui.cli, befori_tui.headless, befori_tui.core.session"])
        rows["start-up: import the bench path"].append((cpu, wall))

    def bench_runs(url: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(args.runs):
                cmd = [py, "-m", "befori_tui", "bench", "--url", url, "--concurrency", "4",
                       "--requests-per-level", "24", "--warmup-requests", "0", "--input-tokens", "128:0",
                       "--output-tokens", "64", "--seed", str(int(time.time()) + i), "--out", f"{tmp}/r{i}.toml"]
                cpu, wall, code = child_cpu_s(cmd)
                if code != 0:
                    raise SystemExit(f"bench failed with exit code {code}")
                rows["bench c=4, 24 requests, 128 in / 64 out"].append((cpu, wall))
                print(f"run {i}: {cpu:.2f} CPU-s in {wall:.1f} s", flush=True)

    if args.url:
        bench_runs(args.url)
    else:
        from tests.llamacpp import ServerOptions, start_server

        with start_server(ServerOptions()) as server:
            bench_runs(server.base_url)
    print("\n| what | CPU seconds (median) | wall seconds (median) | runs |")
    print("|---|---|---|---|")
    for name, vals in rows.items():
        if vals:
            print(f"| {name} | {statistics.median(v[0] for v in vals):.2f} | "
                  f"{statistics.median(v[1] for v in vals):.2f} | {len(vals)} |")
    print(f"# load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
