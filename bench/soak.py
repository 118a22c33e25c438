"""Soak: a long `befori-tui bench` at 64 slots against the simulator; does memory or the fd count creep?

Starts the sim (dbrx-8xh100), runs `befori-tui bench` as a child process at one concurrency for many levels
of equal length (so the session TOML is rewritten after every level, as in a long sweep), and every
`--sample-s` seconds reads the bench process's RSS (VmRSS in /proc/PID/status) and open file descriptors
(entries of /proc/PID/fd), plus the requests recorded so far (lines of the raw JSONL). Writes
bench/out/soak/samples.json and prints a Markdown table.

    .venv/bin/python bench/soak.py                          # 20 minutes at 64 slots
    .venv/bin/python bench/soak.py --minutes 2 --sample-s 10 # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from befori_tui.sim.launch import start_sim  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    except OSError:
        return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=20.0)
    p.add_argument("--slots", type=int, default=64)
    p.add_argument("--level-s", type=float, default=60.0, help="seconds per level (the TOML is saved after each)")
    p.add_argument("--sample-s", type=float, default=30.0)
    p.add_argument("--time-scale", type=float, default=2.0)
    p.add_argument("--out-dir", default=str(ROOT / "bench" / "out" / "soak"))
    args = p.parse_args()

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    toml_path, raw_path = out_dir / "soak.toml", out_dir / "soak.jsonl"
    levels = max(1, round(args.minutes * 60 / args.level_s))
    samples: list[dict] = []
    with start_sim(profile="dbrx-8xh100", time_scale=args.time_scale) as sim:
        cmd = [str(ROOT / ".venv" / "bin" / "befori-tui"), "bench", "--url", sim.base_url,
               "--concurrency", ",".join([str(args.slots)] * levels), "--seconds-per-level", str(args.level_s),
               "--max-seconds", str(args.minutes * 60 + 300), "--telemetry", f"dcgm:{sim.root_url}/metrics",
               "--timeout", "120", "--seed", "1", "--out", str(toml_path), "--raw", str(raw_path)]
        log = open(out_dir / "bench.log", "w")
        t0 = time.monotonic()
        bench = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        next_t = 0.0
        while True:
            now = time.monotonic() - t0
            if now >= next_t:
                s = {"t_s": round(now, 1), "rss_kib": rss_kib(bench.pid), "fds": open_fds(bench.pid),
                     "sim_rss_kib": rss_kib(sim.pid), "records": count_lines(raw_path)}
                if s["rss_kib"] is not None:
                    samples.append(s)
                    print(json.dumps(s), flush=True)
                    (out_dir / "samples.json").write_text(json.dumps(samples, indent=1))
                next_t += args.sample_s
            if bench.poll() is not None:
                break
            time.sleep(0.5)
        log.close()
        code = bench.returncode
    summary = tomllib.loads(toml_path.read_text())
    lv = summary["levels"]
    sent = sum(x["requests_sent"] for x in lv)
    ok = sum(x["requests_ok"] for x in lv)
    failed = sum(x["requests_failed"] for x in lv)
    cancelled = sum(x.get("requests_cancelled", 0) for x in lv)
    tok_s = [x.get("output_tok_per_s_total", 0.0) for x in lv]
    result = {"exit_code": code, "levels": len(lv), "requests_sent": sent, "requests_ok": ok,
              "requests_failed": failed, "requests_cancelled": cancelled, "raw_lines": count_lines(raw_path),
              "output_tok_per_s_median": sorted(tok_s)[len(tok_s) // 2], "samples": samples}
    (out_dir / "samples.json").write_text(json.dumps(result, indent=1))
    first = samples[1] if len(samples) > 1 else samples[0]  # the first sample is taken before start-up ends
    print(f"\nexit {code} · {len(lv)} levels · {sent} sent = {ok} ok + {failed} failed + {cancelled} cancelled"
          f" · {result['raw_lines']} raw lines · median {result['output_tok_per_s_median']:.0f} output tok/s")
    print("\n| t (s) | requests recorded | bench RSS (MiB) | open fds | sim RSS (MiB) |\n|---:|---:|---:|---:|---:|")
    for s in samples:
        sim_mib = f"{s['sim_rss_kib'] / 1024:.0f}" if s["sim_rss_kib"] else "—"
        print(f"| {s['t_s']:.0f} | {s['records']} | {s['rss_kib'] / 1024:.1f} | {s['fds']} | {sim_mib} |")
    last = samples[-1]
    print(f"\nRSS {first['rss_kib'] / 1024:.1f} → {last['rss_kib'] / 1024:.1f} MiB"
          f" ({(last['rss_kib'] - first['rss_kib']) / 1024:+.1f}); fds {first['fds']} → {last['fds']}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
