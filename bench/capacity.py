"""How many concurrent streams and streamed tokens/s befori-tui ingests before its own timing slips, with one
load process and with several.

For each step time (one token per stream per step, so tokens/s ≈ streams × 1000 / step_ms), each stream
count and each `--workers` count, the simulator (flat profile, pinned to one core) is driven in turn by
bench/reference_client.py and by `befori-tui bench --workers N` as a child process (pinned to the other
core with this script, so with N > 1 the run process and its N load processes share that core — a 2-core
box where the server needs the other), as in bench/fidelity.py. A point passes while befori-tui's TTFT
excess over the server's own figure is within `--limit-ms` (default 1 ms) of the reference client's at p50
(medians over `--runs`). Also reported: the tokens/s each received (the reference client's is what the
server gives a client that keeps up), befori-tui's own TTFT excess p90, its CPU (the bench process and the
load processes it waited for, start-up included, over its wall time; 100% = one core), its load loops' lag
p99 (the level's `client_loop_lag_ms_p99`: with N > 1, of all load processes), the share of the sim's steps
that ran late while it ran (the sim's /debug/engine: above ~0 the server, not the client, is what limits;
the sim carries ~38,000 tokens/s on one core, bench/README.md's Sim capacity), the 1-minute load average
and the CPU that processes other than this benchmark's took meanwhile (% of one core; the box may be shared).

`--in-process`: befori-tui's Session on a plain asyncio loop in this process instead (the load loop alone,
without the run process; load.workers = N starts N load processes from it), as this script measured before
the run process existed.

    .venv/bin/python bench/capacity.py                                   # 128..1024 streams, 20 and 10 ms steps
    .venv/bin/python bench/capacity.py --workers 1 2 --streams 256 512 768 --step-ms 10
    .venv/bin/python bench/capacity.py --streams 512 --step-ms 20 --runs 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fidelity as F  # noqa: E402
import ui_pty  # noqa: E402


def _tokens_per_s(records: list[dict], t_from_ns: int, t_to_ns: int) -> float:
    """Tokens of requests sent in [t_from, t_to) per second of that window (a closed loop's steady rate)."""
    n = sum(r["tokens"] for r in records if r["ok"] and t_from_ns <= r["t_send_ns"] < t_to_ns)
    return n / ((t_to_ns - t_from_ns) / 1e9)


def _engine(sim) -> dict:
    with urllib.request.urlopen(sim.root_url + "/debug/engine", timeout=10) as resp:
        return json.loads(resp.read())


def _children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_ours(url: str, streams: int, seconds: float, out: Path, workers: int, in_process: bool,
             befori: list[str]) -> tuple[list[dict], dict, float]:
    """(records, the level's client health, CPU as % of one core)."""
    if in_process:
        wall0, cpu0, kids0 = time.perf_counter(), time.process_time(), _children_cpu_s()
        recs, health = F.run_headless(url, streams, seconds, out, workers=workers)
        cpu_s = time.process_time() - cpu0 + _children_cpu_s() - kids0
        return recs, health, 100 * cpu_s / (time.perf_counter() - wall0)
    recs, health, res = F.run_cli("bench", befori, url, streams, seconds, out, workers=workers)
    cpu = 100 * res["cpu_s"] / res["wall_s"] if res.get("cpu_s") is not None and res.get("wall_s") else float("nan")
    return recs, health, cpu


def point(sim, model: str, streams: int, seconds: float, warmup_s: float, runs: int, tmp: str,
          workers: list[int], in_process: bool, befori: list[str]) -> tuple[dict, dict[int, dict]]:
    """Medians over `runs` of the reference client's TTFT excess p50 and tokens/s, and per workers count our
    figures (with the share of the sim's steps that ran late while ours ran: > 0, the server is what limits)."""
    ref: list[float] = []
    ref_tok_s: list[float] = []
    ours: dict[int, dict[str, list]] = {w: {"ours": [], "ours_p90": [], "tok_s": [], "cpu_pct": [], "lag_p99": [],
                                            "sim_late_pct": []} for w in workers}
    for i in range(runs):
        recs, _ = F.run_ref(sim.root_url, model, streams, seconds)
        ref.append(F.excess(recs, warmup_s)["ttft_ms_p50"])
        t0 = min((r["t_send_ns"] for r in recs), default=0)
        ref_tok_s.append(_tokens_per_s(recs, t0 + int(warmup_s * 1e9), t0 + int((seconds - 1) * 1e9)))
        for w in workers:
            e0 = _engine(sim)
            recs, health, cpu = run_ours(sim.base_url, streams, seconds, Path(tmp) / f"cap-{streams}-w{w}-{i}.toml",
                                         w, in_process, befori)
            e1 = _engine(sim)
            o = ours[w]
            steps = e1["steps"] - e0["steps"]
            o["sim_late_pct"].append(100 * (e1["late_steps"] - e0["late_steps"]) / steps if steps else float("nan"))
            ex = F.excess(recs, warmup_s)
            o["ours"].append(ex["ttft_ms_p50"])
            o["ours_p90"].append(ex["ttft_ms_p90"])
            # Requests sent in the last ~E2E of the run were cut off: count a window that ends a second early.
            t0 = min((r["t_send_ns"] for r in recs), default=0)
            o["tok_s"].append(_tokens_per_s(recs, t0 + int(warmup_s * 1e9), t0 + int((seconds - 1) * 1e9)))
            o["cpu_pct"].append(cpu)
            o["lag_p99"].append(health.get("client_loop_lag_ms_p99", float("nan")))
    ref_med = statistics.median(ref)
    out = {}
    for w, o in ours.items():
        med = {k: statistics.median(v) for k, v in o.items()}
        med["ref"] = ref_med
        med["ref_tok_s"] = statistics.median(ref_tok_s)
        med["over_ref_ms"] = med["ours"] - ref_med
        med["runs"] = o
        out[w] = med
    return {"ref": ref_med, "ref_runs": ref, "ref_tok_s_runs": ref_tok_s}, out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--streams", type=int, nargs="+", default=[128, 256, 512, 768, 1024])
    p.add_argument("--step-ms", type=float, nargs="+", default=[20.0, 10.0])
    p.add_argument("--workers", type=int, nargs="+", default=[1], metavar="N",
                   help="load processes (befori-tui bench --workers N); several: each point runs each (default 1)")
    p.add_argument("--in-process", action="store_true", help="the Session on a plain asyncio loop in this process "
                   "instead of `befori-tui bench` (load.workers = N)")
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--warmup-s", type=float, default=3.0)
    p.add_argument("--limit-ms", type=float, default=1.0)
    p.add_argument("--befori", default=None, help="the befori-tui command (default: the one beside this Python)")
    p.add_argument("--json", help="also write every point here")
    args = p.parse_args()
    befori = shlex.split(args.befori) if args.befori else ui_pty.default_befori()
    signal.signal(signal.SIGTERM, ui_pty._on_signal)  # unwind: the sim and any child are stopped
    cpus = sorted(os.sched_getaffinity(0))
    facts = ui_pty.machine_facts(befori)
    client = "in-process Session" if args.in_process else "befori-tui bench"
    print(f"# {facts['date']} · {facts['cpus']} CPUs ({facts['cpu_model']}) · Python {sys.version.split()[0]} · "
          f"{client} {facts.get('befori_version', '')} ({facts.get('befori_git_branch')} "
          f"{(facts.get('befori_git_head') or '')[:10]}{' dirty' if facts.get('befori_git_dirty') else ''}) · "
          f"load average {' '.join(map(str, ui_pty.loadavg()))}; medians of {args.runs} runs of {args.seconds:g} s, "
          f"first {args.warmup_s:g} s not counted", flush=True)
    print("| step | streams | load processes | tokens/s received, ref / befori-tui | TTFT − server p50, ref "
          "| befori-tui p50 | over ref | befori-tui p90 | CPU (of one core) | loop lag p99 | sim late steps "
          "| within limit | load average | others' CPU |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    points = []
    with tempfile.TemporaryDirectory() as tmp:
        for step in args.step_ms:
            profile = F.flat_profile(tmp, max(1024, 2 * max(args.streams)), step_ms=step)
            with F.start_sim(profile=profile) as sim:
                if len(cpus) >= 2:
                    os.sched_setaffinity(sim.pid, {cpus[0]})
                    os.sched_setaffinity(0, {cpus[1]})
                try:
                    with urllib.request.urlopen(sim.base_url + "/models", timeout=10) as resp:
                        model = json.loads(resp.read())["data"][0]["id"]
                    for n in args.streams:
                        la0, c0 = ui_pty.loadavg(), ui_pty.cpu_snapshot(sim.pid)
                        ref, by_workers = point(sim, model, n, args.seconds, args.warmup_s, args.runs, tmp,
                                                args.workers, args.in_process, befori)
                        la1, others = ui_pty.loadavg(), ui_pty.cpu_delta(c0, ui_pty.cpu_snapshot(sim.pid))

                        for w, m in by_workers.items():
                            ok = m["over_ref_ms"] <= args.limit_ms
                            points.append({"step_ms": step, "streams": n, "workers": w, **m, "within": ok,
                                           "ref_runs": ref["ref_runs"], "ref_tok_s_runs": ref["ref_tok_s_runs"],
                                           "loadavg_before": la0, "loadavg_after": la1, "cpu_box": others,
                                           "date": time.strftime("%Y-%m-%d %H:%M:%S")})
                            print(f"| {step:g} ms | {n} | {w} | {m['ref_tok_s']:,.0f} / {m['tok_s']:,.0f} "
                                  f"| {m['ref']:.2f} ms | {m['ours']:.2f} ms | {m['over_ref_ms']:+.2f} ms "
                                  f"| {m['ours_p90']:.2f} ms | {m['cpu_pct']:.0f}% | {m['lag_p99']:.1f} ms "
                                  f"| {m['sim_late_pct']:.1f}% | {'yes' if ok else 'no'} | {la0[0]:.2f} → {la1[0]:.2f} "
                                  f"| {others['others_pct']:.0f}% |", flush=True)
                finally:
                    os.sched_setaffinity(0, set(cpus))
    for w in args.workers:
        mine = [pt for pt in points if pt["workers"] == w]
        for step in args.step_ms:
            best = max((pt for pt in mine if pt["within"] and pt["step_ms"] == step), key=lambda pt: pt["streams"],
                       default=None)
            print(f"# {w} load process{'es' if w > 1 else ''}, step {step:g} ms: most streams within "
                  f"{args.limit_ms:g} ms: " + (f"{best['streams']} ({best['tok_s']:,.0f} tokens/s)" if best
                                               else "none of those tried"))
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, load average after: {' '.join(map(str, ui_pty.loadavg()))}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": facts, "client": client, "argv": sys.argv[1:],
                                               "points": points}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
