"""Memory over a long run: RSS of every process of a `befori-tui bench` at 512 streams against the sim, over time.

Starts the sim (`python -m befori_tui.sim`, which is `befori-tui sim`: its own process, 127.0.0.1, a fast
`--time-scale`), then `befori-tui bench` against it as one level of `--minutes` at `--concurrency` (closed
loop, the default workload: 550:150 tokens), its results in a temporary folder. With `--viewer` it also
attaches a viewer (`befori-tui attach RESULTS.toml`) inside a private tmux server at 160x48. Every
`--every-s` seconds it reads, from /proc, the RSS (VmRSS) and CPU time of every process of the run — the
bench run process, every process below it (load processes), the sim, the viewer — the requests finished so
far (lines of the raw JSONL, counted incrementally) and the load average. It prints a line per sample, then a
Markdown table and a summary per process: RSS at the first sample after `--warmup-s`, at the end, the spread
after warm-up against the 50 MB goal, and the growth as least-squares slopes over the samples after warm-up,
in MB per hour and KiB per 1,000 requests. Everything goes to `--out` (JSON, rewritten at every sample). It
ends the run itself (the level ends after `--minutes`; past that plus `--grace-s`, SIGTERM, then SIGKILL) and
kills everything it started on any exit (Ctrl-C, SIGTERM, an error), then summarises what it sampled.

MB here is 10^6 bytes (the issue's unit); KiB is 1,024 bytes.

    .venv/bin/python bench/memory_run.py --minutes 30 --viewer    # the issue's run: 30 min, 512 streams
    .venv/bin/python bench/memory_run.py --minutes 6 --viewer     # a shorter look (what bench/README.md shows)
    .venv/bin/python bench/memory_run.py --minutes 1 --every-s 10 --warmup-s 20   # check the tool itself

Defaults: 512 streams; dbrx-8xh100 at time scale 15, where its 256 running sequences (256 more wait) get a
token every ~6.9 ms: ~192 requests/s of 550 in / 150 out, ~350,000 in 30 min, with about three quarters of a
core to spare on 2 cores (at 20 the client fell behind on a busy box: loop lag p99 0.19 s, 214 of 256
requests/s); samples every 30 s; warm-up 120 s; JSON in bench/out/memory_run/memory-<UTC time>.json.
`--keep DIR` keeps the run's results (TOML, raw JSONL, bench.log) in DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from befori_tui.core.runlink import resolve_target  # noqa: E402
from befori_tui.sim.launch import start_sim  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BEFORI = ROOT / ".venv" / "bin" / "befori-tui"
CLK_TCK = os.sysconf("SC_CLK_TCK")
GOAL_SPREAD_MB = 50.0  # issue 11: RSS flat within 50 MB after the first minutes


# --- /proc --------------------------------------------------------------------------------------------------

def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name (which may hold spaces): [state, ppid, …]."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2:].split()


def cpu_s(pid: int) -> float | None:
    f = stat_fields(pid)
    return (int(f[11]) + int(f[12])) / CLK_TCK if f else None


def descendants(root: int) -> list[int]:
    """Every living process below `root` (children, their children, …), from the ppid of each /proc entry."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            f = stat_fields(int(entry))
            if f and f[0] != "Z":
                children.setdefault(int(f[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


class LineCounter:
    """Lines of a growing file, reading only what was appended since the last call (the raw JSONL of a
    30-minute run is hundreds of MB; re-reading it every 30 s would itself load the box)."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.lines = path, 0, 0

    def count(self) -> int:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                while chunk := f.read(1 << 20):
                    self.lines += chunk.count(b"\n")
                    self.offset += len(chunk)
        except OSError:
            pass
        return self.lines


# --- the processes this script starts ------------------------------------------------------------------------

class Viewer:
    """`befori-tui attach` in a tmux server of its own (-L: never the user's), detached, 160x48."""

    def __init__(self, toml_path: Path) -> None:
        self.sock_name = f"befori-memrun-{os.getpid()}"
        # The viewer draws on its terminal (Textual writes to stderr), so nothing of it is redirected; if it
        # dies, remain-on-exit keeps its last screen for screen().
        tmux = ["tmux", "-L", self.sock_name, "-f", "/dev/null"]
        subprocess.run([*tmux, "new-session", "-d", "-s", "memrun", "-x", "160", "-y", "48",
                        f"exec {BEFORI} attach {toml_path}"], check=True,
                       env={**os.environ, "TERM": "xterm-256color"})
        subprocess.run([*tmux, "set-option", "-t", "memrun", "remain-on-exit", "on"], capture_output=True)
        out = subprocess.run(["tmux", "-L", self.sock_name, "list-panes", "-F", "#{pane_pid}"],
                             capture_output=True, text=True, check=True).stdout.split()
        self.pid = int(out[0])

    def screen(self) -> str:
        r = subprocess.run(["tmux", "-L", self.sock_name, "capture-pane", "-p"], capture_output=True, text=True)
        return r.stdout

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.sock_name, "kill-server"], capture_output=True)


def kill_pids(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


# --- summary --------------------------------------------------------------------------------------------------

def slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of ys on xs (None with fewer than 2 distinct xs)."""
    n = len(xs)
    if n < 2:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx


def summarise(samples: list[dict], warmup_s: float) -> dict[str, dict]:
    roles = sorted({r for s in samples for r in s["rss_kib"]}, key=lambda r: (r.split(":")[0] != "bench", r))
    out = {}
    for role in roles:
        pts = [(s["t_s"], s["requests"], s["rss_kib"][role]) for s in samples if role in s["rss_kib"]]
        after = [p for p in pts if p[0] >= warmup_s]
        if not pts:
            continue
        first, last = (after or pts)[0], pts[-1]
        per_s = slope([p[0] for p in after], [p[2] for p in after])       # KiB per second
        per_req = slope([p[1] for p in after], [p[2] for p in after])     # KiB per request
        spread_mb = (max(p[2] for p in after) - min(p[2] for p in after)) * 1024 / 1e6 if after else None
        out[role] = {
            "samples_after_warmup": len(after),
            "t_first_s": first[0], "rss_first_mb": first[2] * 1024 / 1e6,
            "t_last_s": last[0], "rss_last_mb": last[2] * 1024 / 1e6,
            "spread_after_warmup_mb": spread_mb,
            "growth_mb_per_hour": per_s * 1024 * 3600 / 1e6 if per_s is not None else None,
            "growth_kib_per_1000_requests": per_req * 1000 if per_req is not None else None,
            "cpu_s": samples[-1]["cpu_s"].get(role) if role in samples[-1]["cpu_s"] else None,
        }
    return out


def fmt(x: float | None, spec: str) -> str:
    return "—" if x is None else format(x, spec)


# --- main -----------------------------------------------------------------------------------------------------

def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0, help="length of the one level (default 30)")
    p.add_argument("--concurrency", type=int, default=512, help="closed-loop streams (default 512)")
    p.add_argument("--time-scale", type=float, default=15.0, help="the sim's --time-scale (default 15)")
    p.add_argument("--profile", default="dbrx-8xh100", help="the sim's profile (default dbrx-8xh100)")
    p.add_argument("--every-s", type=float, default=30.0, help="seconds between samples (default 30)")
    p.add_argument("--warmup-s", type=float, default=120.0,
                   help="samples before this are left out of the slopes and the spread (default 120)")
    p.add_argument("--viewer", action="store_true", help="also attach a viewer in tmux (160x48) and measure it")
    p.add_argument("--label", default="", help="free text stored in the JSON (e.g. 'before sketches')")
    p.add_argument("--out", help="the JSON file (default bench/out/memory_run/memory-<UTC time>.json)")
    p.add_argument("--keep", metavar="DIR", help="keep the run's results and logs in DIR (default: a temporary "
                   "folder, removed at the end)")
    p.add_argument("--grace-s", type=float, default=180.0,
                   help="past --minutes plus this, the run is sent SIGTERM (default 180)")
    args = p.parse_args()
    for flag in ("minutes", "concurrency", "time_scale", "every_s"):
        if getattr(args, flag) <= 0:
            p.error(f"--{flag.replace('_', '-')} must be above 0")
    if args.warmup_s < 0 or args.grace_s < 0:
        p.error("--warmup-s and --grace-s must be 0 or more")
    if args.viewer and shutil.which("tmux") is None:
        print("memory_run: --viewer needs tmux, which is not installed (apt-get install tmux); "
              "running without a viewer", file=sys.stderr)
        args.viewer = False

    started_utc = datetime.now(timezone.utc)
    out_path = Path(args.out) if args.out else (
        ROOT / "bench" / "out" / "memory_run" / f"memory-{started_utc:%Y%m%dT%H%M%SZ}.json")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if args.keep:
        work = Path(args.keep).absolute()
        work.mkdir(parents=True, exist_ok=True)
    else:
        work = Path(tempfile.mkdtemp(prefix="memrun-"))
    toml_path, raw_path = work / "session.toml", work / "session.jsonl"
    level_s = args.minutes * 60

    # A signal to this script unwinds through the except and finally below: the run ends, the samples stay.
    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):  # SIGINT too: a shell's `&` would ignore it
        signal.signal(sig, on_signal)

    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "befori_tui"],
                                    capture_output=True, text=True).stdout.strip())
    except OSError:  # no git here: the JSON says so
        commit, dirty = "unknown", False
    meta = {"label": args.label, "commit": commit, "befori_tui_changed_since_commit": dirty,
            "started_utc": started_utc.isoformat(timespec="seconds"), "argv": sys.argv,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release(),
                        "mem_total_kib": int(Path("/proc/meminfo").read_text().split()[1])},
            "minutes": args.minutes, "concurrency": args.concurrency, "time_scale": args.time_scale,
            "profile": args.profile, "every_s": args.every_s, "warmup_s": args.warmup_s, "viewer": args.viewer}
    samples: list[dict] = []
    result: dict = {"meta": meta, "samples": samples}

    def save() -> None:
        tmp = out_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(result, indent=1))
        tmp.replace(out_path)

    sim = bench = viewer = None
    seen: dict[int, str] = {}  # pid -> command line of every load and viewer process seen
    bench_log = open(work / "bench.log", "w")
    code = 1
    try:
        sim = start_sim(profile=args.profile, time_scale=args.time_scale)
        cmd = [str(BEFORI), "bench", "--url", sim.base_url, "--concurrency", str(args.concurrency),
               "--requests-per-level", "0", "--seconds-per-level", f"{level_s:g}",
               "--max-seconds", f"{level_s + args.grace_s / 2:g}", "--telemetry", "none", "--timeout", "120",
               "--seed", "1", "--out", str(toml_path), "--raw", str(raw_path)]
        meta["sim_url"], meta["bench_command"] = sim.base_url, cmd
        # A session of its own: the run and every load process it starts can be signalled as one group.
        bench = subprocess.Popen(cmd, stdout=bench_log, stderr=subprocess.STDOUT, start_new_session=True)
        t0 = time.monotonic()
        print(f"memory_run: sim pid {sim.pid} at {sim.base_url} (time scale {args.time_scale:g}); bench pid "
              f"{bench.pid}, {args.concurrency} streams for {args.minutes:g} min; results in {work}", flush=True)
        if args.viewer:
            while time.monotonic() - t0 < 30 and bench.poll() is None:  # the socket appears once the run is up
                try:
                    if resolve_target(str(toml_path)):
                        break
                except Exception:
                    pass
                time.sleep(0.2)
            viewer = Viewer(toml_path)
            meta["viewer_command"] = f"tmux new-session -x 160 -y 48 '{BEFORI} attach {toml_path}'"
            print(f"memory_run: viewer pid {viewer.pid} (tmux -L {viewer.sock_name})", flush=True)

        counter = LineCounter(raw_path)
        next_t, deadline, termed = 0.0, level_s + args.grace_s, False
        last_req, last_t = 0, 0.0
        while True:
            now = time.monotonic() - t0
            if now >= next_t:
                procs = {"bench": bench.pid, "sim": sim.pid}
                for pid in descendants(bench.pid):
                    procs[f"load:{pid}"] = pid
                for pid in descendants(sim.pid):
                    procs[f"sim-child:{pid}"] = pid
                if viewer is not None:
                    procs["viewer"] = viewer.pid
                    for pid in descendants(viewer.pid):
                        procs[f"viewer-child:{pid}"] = pid
                rss = {role: k for role, pid in procs.items() if (k := rss_kib(pid)) is not None}
                cpu = {role: c for role, pid in procs.items() if (c := cpu_s(pid)) is not None}
                for role, pid in procs.items():
                    if role not in meta.setdefault("processes", {}) and role in rss:
                        meta["processes"][role] = cmdline(pid)
                        if role not in ("bench", "sim"):
                            seen[pid] = meta["processes"][role]
                requests = counter.count()
                s = {"t_s": round(now, 1), "requests": requests, "loadavg": loadavg(), "rss_kib": rss, "cpu_s": cpu}
                rate = (requests - last_req) / (now - last_t) if now > last_t else 0.0
                last_req, last_t = requests, now
                if "bench" in rss:
                    samples.append(s)
                    save()
                    parts = "  ".join(f"{r} {k * 1024 / 1e6:.1f}" for r, k in rss.items())
                    print(f"t {now:6.0f} s  requests {requests:8,d} ({rate:5.0f}/s)  load {s['loadavg'][0]:.2f}  "
                          f"RSS MB: {parts}", flush=True)
                if viewer is not None and "viewer" not in rss and not meta.get("viewer_gone_at_s"):
                    meta["viewer_gone_at_s"] = round(now, 1)
                    print(f"memory_run: the viewer is gone at {now:.0f} s; its last screen:\n{viewer.screen()}",
                          file=sys.stderr, flush=True)
                next_t += args.every_s
            if bench.poll() is not None:
                break
            if now > deadline and not termed:
                print(f"memory_run: the run is still going {args.grace_s:g} s past its level; SIGTERM",
                      file=sys.stderr, flush=True)
                os.killpg(bench.pid, signal.SIGTERM)
                termed, deadline = True, now + 60
            elif now > deadline:
                os.killpg(bench.pid, signal.SIGKILL)
            time.sleep(0.5)
        code = bench.returncode
        meta["bench_exit_code"] = code
        meta["bench_wall_s"] = round(time.monotonic() - t0, 1)
    except SystemExit as e:  # stopped early: clean up below, then summarise what was sampled
        code = e.code if isinstance(e.code, int) else 1
        meta["interrupted_at_s"] = samples[-1]["t_s"] if samples else 0
        print(f"memory_run: stopped early (exit {code}); ending the run", file=sys.stderr, flush=True)
    finally:
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):  # a second signal must not cut the clean-up
            signal.signal(sig, signal.SIG_IGN)
        if viewer is not None:
            viewer.close()
        if bench is not None and bench.poll() is None:
            try:
                os.killpg(bench.pid, signal.SIGTERM)
                bench.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
            try:
                os.killpg(bench.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        # Anything seen during the run that outlived it (a process that left the group) goes by its pid, if that
        # pid still runs the same command (a pid freed and reused by someone else is left alone).
        kill_pids([pid for pid, line in seen.items() if cmdline(pid) == line], signal.SIGKILL)
        if sim is not None:
            sim.stop()
        bench_log.close()
        if samples:
            save()

    # --- the run's own totals, then the summary ----------------------------------------------------------------
    try:
        lv = tomllib.loads(toml_path.read_text())["levels"]
        meta["requests_sent"] = sum(x["requests_sent"] for x in lv)
        meta["requests_ok"] = sum(x["requests_ok"] for x in lv)
        meta["requests_failed"] = sum(x["requests_failed"] for x in lv)
        meta["output_tok_per_s"] = [round(x.get("output_tok_per_s_total", 0.0)) for x in lv]
        meta["client_loop_lag_ms_p99"] = [x.get("client_loop_lag_ms_p99") for x in lv]
    except (OSError, KeyError, tomllib.TOMLDecodeError) as e:
        print(f"memory_run: could not read {toml_path}: {e}", file=sys.stderr)
    meta["raw_lines"] = LineCounter(raw_path).count()
    after = [s for s in samples if s["t_s"] >= args.warmup_s] or samples
    if len(after) >= 2:
        meta["requests_per_s_after_warmup"] = ((after[-1]["requests"] - after[0]["requests"])
                                               / (after[-1]["t_s"] - after[0]["t_s"]))
    loads = [s["loadavg"][0] for s in samples]
    meta["loadavg1_min_median_max"] = [min(loads), sorted(loads)[len(loads) // 2], max(loads)] if loads else None
    result["summary"] = summarise(samples, args.warmup_s)
    save()
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)

    roles = list(result["summary"])
    print(f"\n{meta.get('label') or 'run'} · commit {commit}{' (befori_tui changed)' if dirty else ''} · "
          f"{started_utc:%Y-%m-%d %H:%M} UTC · {os.cpu_count()} CPUs · exit {code}")
    print(f"{meta.get('requests_sent', '?')} sent = {meta.get('requests_ok', '?')} ok + "
          f"{meta.get('requests_failed', '?')} failed · {meta['raw_lines']} raw lines · "
          f"{fmt(meta.get('requests_per_s_after_warmup'), '.0f')} requests/s after warm-up · output tok/s "
          f"{meta.get('output_tok_per_s')} · load average (1 min) min/median/max "
          f"{'/'.join(f'{x:.2f}' for x in meta['loadavg1_min_median_max'] or [])}")
    print("\n| t (s) | requests | load 1 min | " + " | ".join(f"{r} RSS (MB)" for r in roles) + " |")
    print("|---:|---:|---:|" + "---:|" * len(roles))
    for s in samples:
        cells = " | ".join(fmt(s["rss_kib"][r] * 1024 / 1e6 if r in s["rss_kib"] else None, ".1f") for r in roles)
        print(f"| {s['t_s']:.0f} | {s['requests']:,} | {s['loadavg'][0]:.2f} | {cells} |")
    print(f"\nAfter {args.warmup_s:g} s (least squares over the samples from then on; goal: spread within "
          f"{GOAL_SPREAD_MB:g} MB):\n")
    print("| process | RSS at first sample after warm-up (MB) | RSS at the end (MB) | spread (MB) | MB per hour "
          "| KiB per 1,000 requests | a 30-min run would add (MB) | a day would add (MB) | CPU (s) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r, x in result["summary"].items():
        gph = x["growth_mb_per_hour"]
        print(f"| {r} | {x['rss_first_mb']:.1f} (t {x['t_first_s']:.0f} s) | {x['rss_last_mb']:.1f} "
              f"(t {x['t_last_s']:.0f} s) | {fmt(x['spread_after_warmup_mb'], '.1f')} | {fmt(gph, '+.1f')} | "
              f"{fmt(x['growth_kib_per_1000_requests'], '+.1f')} | {fmt(gph and gph / 2, '+.0f')} | "
              f"{fmt(gph and gph * 24, '+,.0f')} | {fmt(x['cpu_s'], '.0f')} |")
    print(f"\nJSON: {out_path}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
