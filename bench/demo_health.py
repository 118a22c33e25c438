"""Does the demo, on a quiet box, warn that the client is the bottleneck at c ≤ 64?

Issue 8's goal: no client-bound warning in the demo at c ≤ 64 on a quiet box. This runs the demo as a user
does — `befori-tui demo`, the built-in simulator started by the run, levels that end when their $/M settle
(60 s at most) — with its sweep cut at `--max-concurrency` (64): `befori-tui demo --sweep 1,8,32,64
--sweep-until-settled --seconds-per-level 60`, in a real pseudo-terminal (160×48, TERM=xterm-256color, the
monitor's controlling terminal; bench/ui_pty.py's), whose output a terminal emulator (pyte) turns into the
screen the user would see. Four times a second it reads that screen: is "client-bound" on it, and which
level is running (the concurrency of the latest raw record in the JSONL). When the sweep is done (the
monitor pauses there: "sweep done" on screen) or the run has ended, it types `q`.

It prints, per level: seconds watched, seconds with the warning on screen, and the level's own figures from
the TOML (`client_loop_lag_ms_p99`, `client_bound`). The seconds a level is watched are counted from its
first finished request to the next level's, so a level's first request (about a second and a half) is
counted in the level before it.

    .venv/bin/python bench/demo_health.py                 # 3 runs
    .venv/bin/python bench/demo_health.py --runs 1 --json demo.json
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import select
import signal
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import pyte

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ui_pty  # noqa: E402  (the pty, child-process and machine helpers)

SAMPLE_S = 0.25
WARNING = "client-bound"


def _new_lines(f, partial: bytearray) -> list[dict]:
    """Whole JSON lines appended since the last call."""
    partial += f.read()
    *lines, rest = bytes(partial).split(b"\n")
    partial[:] = rest
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def _saved_at_end(out: Path) -> bool:
    """The run saves after each level too; only the last save says how it ended."""
    try:
        return tomllib.loads(out.read_text()).get("ended_by") not in (None, "", "running")
    except (OSError, tomllib.TOMLDecodeError):
        return False


def run_demo(befori: list[str], sweep: str, out: Path, size: tuple[int, int], cap_s: float) -> dict[str, Any]:
    cols, rows = size
    env = ui_pty.terminal_env()
    argv = befori + ["demo", "--sweep", sweep, "--sweep-until-settled", "--seconds-per-level", "60",
                     "--out", str(out)]
    screen = pyte.Screen(cols, rows)
    stream = pyte.ByteStream(screen)
    jsonl = out.with_suffix(".jsonl")
    pid, fd = ui_pty._spawn_in_pty(argv, env, rows, cols, None)
    t0 = time.monotonic()
    per_level: dict[int, dict[str, Any]] = {}
    current: int | None = None
    partial = bytearray()
    records = None
    next_sample = t0 + SAMPLE_S
    t_q = None
    ended, status = "q", 0
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], 0.02)
            if ready:
                try:
                    data = os.read(fd, 65536)
                except OSError as exc:
                    if exc.errno != errno.EIO:
                        raise
                    data = b""
                if not data:
                    break
                stream.feed(data)
            now = time.monotonic()
            if now >= next_sample:
                next_sample += SAMPLE_S
                if records is None and jsonl.exists():
                    records = jsonl.open("rb")
                if records is not None:
                    for r in _new_lines(records, partial):
                        if current is None or r.get("concurrency", 0) > current:
                            current = r.get("concurrency")
                if current is not None and t_q is None:
                    shown = next((line.strip() for line in screen.display if WARNING in line), None)
                    lv = per_level.setdefault(current, {"samples": 0, "warned": 0, "warning_text": None})
                    lv["samples"] += 1
                    if shown:
                        lv["warned"] += 1
                        lv["warning_text"] = lv["warning_text"] or shown[:160]
                if t_q is None and (any("sweep done" in line for line in screen.display) or _saved_at_end(out)):
                    os.write(fd, b"q")
                    t_q = now
                elif t_q is None and now - t0 > cap_s:
                    os.write(fd, b"q")
                    t_q, ended = now, "cap"
            got = ui_pty._reap(pid, 0)
            if got is not None:
                status = got[0]
                break
            if t_q is not None and now - t_q > 30:
                ended, status, _ru = ui_pty._stop(pid)
                break
    finally:
        if pid in ui_pty._children:
            ui_pty._stop(pid, grace_s=2.0)
        os.close(fd)
        if records is not None:
            records.close()
    try:
        data = tomllib.loads(out.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        data = {"error": str(exc)}
    levels = {lv.get("concurrency"): lv for lv in data.get("levels", [])}
    for c, lv in per_level.items():
        lv["seconds"] = lv["samples"] * SAMPLE_S
        lv["warned_s"] = lv["warned"] * SAMPLE_S
        t = levels.get(c, {})
        lv.update({k: t.get(k) for k in ("duration_s", "requests_steady", "client_loop_lag_ms_p50",
                                          "client_loop_lag_ms_p99", "client_loop_lag_ms_max", "client_bound")})
    return {"ended": ended, "exit_code": ui_pty._exit_code(status), "wall_s": round(time.monotonic() - t0, 1),
            "ended_by": data.get("ended_by"), "levels": per_level}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--max-concurrency", type=int, default=64)
    p.add_argument("--size", type=ui_pty._size, default=(160, 48), metavar="COLSxROWS")
    p.add_argument("--cap", type=float, default=420.0, help="seconds before q whatever happens (default 420)")
    p.add_argument("--befori", default=None)
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args()
    befori = args.befori.split() if args.befori else ui_pty.default_befori()
    from befori_tui.ui.monitor import DEMO_SWEEP

    sweep = ",".join(c for c in DEMO_SWEEP.split(",") if int(c) <= args.max_concurrency)
    signal.signal(signal.SIGTERM, ui_pty._on_signal)
    signal.signal(signal.SIGHUP, ui_pty._on_signal)
    facts = ui_pty.machine_facts(befori)
    print(f"# {facts['date']} · {facts['cpus']} CPUs · befori-tui at {facts.get('befori_source')} "
          f"({(facts.get('befori_git_head') or '')[:10]}{' dirty' if facts.get('befori_git_dirty') else ''}) · "
          f"demo --sweep {sweep} · load average {' '.join(map(str, ui_pty.loadavg()))}", flush=True)
    runs = []
    with tempfile.TemporaryDirectory(prefix="demo_health-") as tmp:
        for i in range(args.runs):
            la0 = ui_pty.loadavg()
            r = run_demo(befori, sweep, Path(tmp) / f"demo-{i}.toml", args.size, args.cap)
            r["loadavg_before"], r["loadavg_after"] = la0, ui_pty.loadavg()
            runs.append(r)
            print(f"run {i}: {r['ended']} (exit {r['exit_code']}, ended_by {r['ended_by']}) in {r['wall_s']} s · "
                  f"load {la0[0]:.2f}→{r['loadavg_after'][0]:.2f}", flush=True)
            for c, lv in sorted(r["levels"].items()):
                print(f"  c={c:<3} watched {lv['seconds']:5.1f} s · warning on screen {lv['warned_s']:4.1f} s"
                      f" · level lag p50/p99/max {ui_pty._f(lv['client_loop_lag_ms_p50'])}/"
                      f"{ui_pty._f(lv['client_loop_lag_ms_p99'])}/{ui_pty._f(lv['client_loop_lag_ms_max'])} ms"
                      f" · client_bound {lv['client_bound']}"
                      + (f" · «{lv['warning_text']}»" if lv["warning_text"] else ""), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": facts, "sweep": sweep, "runs": runs}, indent=1))
    warned = sum(lv["warned_s"] for r in runs for lv in r["levels"].values())
    print(f"\nwarning on screen at c ≤ {args.max_concurrency}: {warned:g} s in {len(runs)} run(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
