"""Does the live monitor, drawn in a real terminal, change what it measures? (and how many bytes does it write?)

The successor of bench/ui_overhead.py, which ran Textual's headless driver (nothing written anywhere). This
script only uses the command line, so it measures whatever `befori-tui` it is pointed at, before or after a
change, unchanged:

1. `befori-tui sim --port 0 --profile bench/fixed-timing.toml`: one token every 20 ms, TTFT 100 ms when idle
   (100–120 ms under load: a request joins at the next step), no queueing up to 4096 streams.
2. For each concurrency c, `--runs` times, alternating which goes first:
   - headless: `befori-tui bench --url … --concurrency c --seconds-per-level S --usd-per-hour 1
     --output-tokens 64 --max-seconds … --out DIR/h-c-i.toml`, its output to a log file;
   - monitor: `befori-tui monitor` with the same flags, in a real pseudo-terminal (`--size`, 160×48 by
     default, TERM=xterm-256color, the pty is the monitor's controlling terminal). This process reads the
     master side continuously, as a terminal does, and counts the bytes. S seconds after the load started
     (the first raw record's send time) it types `q`; if the monitor has not exited `--quit-timeout` seconds
     later, SIGTERM to its process group, then SIGKILL.
3. From each run's raw JSONL (docs/results.md), over the steady ok requests (not warm-up, not outlived, no
   error_kind):
   - client TTFT p50/p99 (t_first_token − t_send) and ITL p50/p99 (every gap in itl_ns);
   - the truth, from the sim's own timestamps (`server_timing`, perf_counter_ns in the sim, the same
     CLOCK_MONOTONIC as the client's on one machine): server TTFT = t_first_token − t_received, server mean
     gap = (t_last_token − t_first_token) / (tokens − 1) (the sim gives no per-token times; its steps are
     exactly 20 ms on an absolute timeline, so every true gap is 20 ms unless the sim ran late, which
     /debug/engine's late_steps counts);
   - excess, as bench/fidelity.py defines it: per request, client TTFT − server TTFT, and client mean gap −
     server mean gap; p50/p99;
   - the same TTFT figures split in two: the *wave* (each slot's first steady request: the warm-up requests
     all leave at once and, all the same length, end together, so the next c requests leave together too;
     at c ≥ 256 the top 1% of a 30 s run are all in it) and the rest, *settled*;
   - from the TOML: the level's client_loop_lag_ms_p50/p99/max and client_bound;
   - the viewer's own CPU (the monitor's processes, not the run process) from the load's start to the q, % of
     a core.
4. Bytes per second written to the terminal at `--bytes-concurrency` (64) for `--bytes-seconds` (20) at
   each `--bytes-size` (160x48 and 80x24), from the load's start to the `q` (the first paint, before the
   load, is left out), and over the last 5 s before the `q`: the rate rises while the timeline's window (60 s
   by default) fills, so a 20 s run's average understates what a long run writes (`--bytes-seconds 70` for
   the plateau). Every monitor run reports the same figures.

Medians over runs are printed as a table, and each mode's requests pooled over its runs (TTFT p50 and p99,
whole, settled and the sim's own) with monitor − headless and a 95% interval from resampling whole runs: at
c ≥ 256 a 30 s run's p99 moves by more than the goals from run to run, and the interval says whether that
many runs show a difference at all. `--json PATH` writes every run (load average before and after each, the
client's CPU seconds, the CPU other processes took meanwhile — the box may be shared —, the sim's late steps,
bytes per second second by second), the medians and the pooled figures.
Children run in their own process groups and are killed on any exit.

    .venv/bin/python bench/ui_pty.py                                     # c = 1 64 256 512, 3 runs, 15 s
    .venv/bin/python bench/ui_pty.py --concurrency 64 --runs 1 --seconds 10 --bytes-size
    .venv/bin/python bench/ui_pty.py --concurrency 256 --runs 10 --seconds 30 --bytes-size --warmup-per-slot 2
    .venv/bin/python bench/ui_pty.py --concurrency --bytes-size 160x48 80x24 --bytes-seconds 20
    .venv/bin/python bench/ui_pty.py --befori /work/main/.venv/bin/befori-tui --json after.json
"""

from __future__ import annotations

import argparse
import atexit
import errno
import fcntl
import json
import os
import platform
import select
import shlex
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_PROFILE = HERE / "fixed-timing.toml"
OUTPUT_TOKENS = 64
LOAD_HIGH = 1.5  # a run that saw a higher 1-minute load average is flagged (our own load counts in it)
OTHERS_HIGH_PCT = 25.0  # ... and one where other processes used more than this % of a core

_children: dict[int, str] = {}  # pid (= process group id: each child leads its own session) -> what it is


# --- child processes ------------------------------------------------------------------------------------

def _kill_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _reap(pid: int, timeout_s: float) -> tuple[int, Any] | None:
    """(wait status, rusage) once `pid` has exited, or None after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            got, status, ru = os.wait4(pid, os.WNOHANG)
        except ChildProcessError:
            return 0, None
        if got == pid:
            _children.pop(pid, None)
            return status, ru
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)


def _stop(pid: int, grace_s: float = 5.0) -> tuple[str, int, Any]:
    """SIGTERM the process group, wait, then SIGKILL. Returns (how it ended, wait status, rusage)."""
    _kill_group(pid, signal.SIGTERM)
    got = _reap(pid, grace_s)
    if got is not None:
        _kill_group(pid, signal.SIGKILL)  # anything it left behind in its group
        return "sigterm", got[0], got[1]
    _kill_group(pid, signal.SIGKILL)
    got = _reap(pid, 5.0) or (0, None)
    return "sigkill", got[0], got[1]


@atexit.register
def _cleanup() -> None:
    for pid in list(_children):
        _stop(pid, grace_s=2.0)


def _on_signal(signum, _frame) -> None:
    raise SystemExit(128 + signum)  # unwinds through finally blocks; atexit kills what is left


def _preexec(cpus: set[int] | None):
    if cpus is None:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def _cpu_s(ru) -> float | None:
    return None if ru is None else round(ru.ru_utime + ru.ru_stime, 3)


def _exit_code(status: int) -> int | None:
    try:
        return os.waitstatus_to_exitcode(status)
    except ValueError:
        return None


# --- the simulator --------------------------------------------------------------------------------------

class Sim:
    def __init__(self, befori: list[str], profile: Path, workdir: Path, cpus: set[int] | None) -> None:
        self.log = workdir / "sim.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(befori + ["sim", "--port", "0", "--profile", str(profile)],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, preexec_fn=_preexec(cpus))
        _children[self.proc.pid] = "sim"
        deadline = time.monotonic() + 30
        self.root_url = ""
        while not self.root_url:
            for line in self.log.read_text(errors="replace").splitlines():
                if line.startswith("listening on http://"):
                    self.root_url = line.split()[2].rstrip("/")
            if self.proc.poll() is not None:
                raise RuntimeError(f"sim exited ({self.proc.returncode}): {self.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("sim did not say where it listens within 30 s")
            time.sleep(0.05)
        self.base_url = self.root_url + "/v1"
        while True:
            try:
                self.engine()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def engine(self) -> dict:
        with urllib.request.urlopen(self.root_url + "/debug/engine", timeout=10) as resp:
            return json.loads(resp.read())

    def stop(self) -> None:
        if self.proc.pid in _children:
            _stop(self.proc.pid)


# --- facts about the run --------------------------------------------------------------------------------

def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_snapshot(sim_pid: int) -> tuple[float, float, float]:
    """(monotonic s, CPU-seconds the whole box was busy, CPU-seconds of this script, its reaped children and
    the sim). Their differences over a run say how much CPU others took: other work on a shared box."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = (sum(f[:8]) - f[3] - f[4]) / _TICK  # all but idle and iowait (guest time is inside user)
    ours = sum(os.times()[:4])  # this process and its reaped children (bench, monitor)
    try:
        st = Path(f"/proc/{sim_pid}/stat").read_text().rsplit(")", 1)[1].split()
        ours += (int(st[11]) + int(st[12])) / _TICK
    except (OSError, IndexError):
        pass
    return time.monotonic(), busy, ours


def cpu_delta(a: tuple[float, float, float], b: tuple[float, float, float]) -> dict[str, float]:
    wall = b[0] - a[0]
    busy, ours = b[1] - a[1], b[2] - a[2]
    return {"wall_s": round(wall, 2), "box_busy_pct": round(100 * busy / wall, 1),
            "ours_pct": round(100 * ours / wall, 1), "others_pct": round(100 * max(0.0, busy - ours) / wall, 1)}


def _run_text(cmd: list[str], timeout_s: float = 20.0) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _befori_python(befori: list[str]) -> str | None:
    """The interpreter behind the befori-tui command (its script's shebang), for version facts."""
    if len(befori) >= 3 and befori[1:3] == ["-m", "befori_tui"]:
        return befori[0]
    try:
        first = Path(befori[0]).read_bytes()[:300].split(b"\n", 1)[0].decode()
    except OSError:
        return None
    return first[2:].strip().split()[0] if first.startswith("#!") else None


def machine_facts(befori: list[str]) -> dict[str, Any]:
    cpu_model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    mem = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal:")), "0")
    facts: dict[str, Any] = {
        "date": _run_text(["date"]), "date_iso": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(), "uname": " ".join(platform.uname()), "cpus": os.cpu_count(),
        "cpu_model": cpu_model, "mem_gib": round(int(mem) / 2**20, 1),
        "script_python": sys.version.split()[0], "befori_cmd": befori,
        "befori_version": _run_text(befori + ["--version"]),
    }
    py = _befori_python(befori)
    if py:
        code = ("import sys, importlib.metadata as m, befori_tui, os\n"
                "v = lambda n: m.version(n) if n else None\n"
                "print(sys.version.split()[0]); print(v('textual')); print(v('httpx'));"
                "print(os.path.dirname(os.path.dirname(os.path.abspath(befori_tui.__file__))))")
        # -P: the befori_tui that command imports, not one in the current folder (another checkout)
        out = _run_text([py, "-P", "-c", code]).splitlines()
        if len(out) == 4:
            facts.update(befori_python=out[0], textual=out[1], httpx=out[2], befori_source=out[3])
            head = _run_text(["git", "-C", out[3], "rev-parse", "HEAD"])
            if head:
                facts["befori_git_head"] = head
                facts["befori_git_branch"] = _run_text(["git", "-C", out[3], "rev-parse", "--abbrev-ref", "HEAD"])
                # Whether the code measured differs from HEAD (changes to bench/ or docs/ do not count).
                facts["befori_git_dirty"] = bool(_run_text(["git", "-C", out[3], "status", "--porcelain",
                                                            "--untracked-files=no", "--", "befori_tui",
                                                            "pyproject.toml"]))
    return facts


# --- one run --------------------------------------------------------------------------------------------

def _common_flags(url: str, c: int, seconds: float, out: Path, extra: list[str],
                  output_tokens: int = OUTPUT_TOKENS) -> list[str]:
    return ["--url", url, "--concurrency", str(c), "--seconds-per-level", f"{seconds:g}", "--usd-per-hour", "1",
            "--output-tokens", str(output_tokens), "--max-seconds", f"{seconds + 60:g}", "--out", str(out)] + extra


def run_headless(befori: list[str], url: str, c: int, seconds: float, out: Path, extra: list[str],
                 cpus: set[int] | None, output_tokens: int = OUTPUT_TOKENS) -> dict[str, Any]:
    """`befori-tui bench` with the common flags, its output to a log beside `out`; waits for it to exit."""
    log = out.with_suffix(".log")
    t0 = time.monotonic()
    with log.open("wb") as f:
        proc = subprocess.Popen(befori + ["bench"] + _common_flags(url, c, seconds, out, extra, output_tokens),
                                stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=_preexec(cpus))
    _children[proc.pid] = "bench"
    got = _reap(proc.pid, seconds + 90)
    how = "exit"
    if got is None:
        how, status, ru = _stop(proc.pid)
    else:
        status, ru = got
    proc.returncode = _exit_code(status)  # reaped here: keep Popen from waiting again
    return {"ended": how, "exit_code": _exit_code(status), "wall_s": round(time.monotonic() - t0, 3),
            "cpu_s": _cpu_s(ru), "log_tail": log.read_text(errors="replace")[-1500:]}


def _first_send_ns(jsonl: Path) -> int | None:
    """The earliest t_send_ns among the raw records written so far (the load's start, to a few ms)."""
    try:
        with jsonl.open("rb") as f:
            head = f.read(1 << 20)
    except OSError:
        return None
    sends = []
    for line in head.split(b"\n")[:-1]:  # whole lines only
        try:
            sends.append(json.loads(line)["t_send_ns"])
        except (ValueError, KeyError):
            pass
    return min(sends) if sends else None


def _spawn_in_pty(argv: list[str], env: dict[str, str], rows: int, cols: int,
                  cpus: set[int] | None) -> tuple[int, int]:
    """fork + exec `argv` with a new pty as its controlling terminal and stdin/stdout/stderr."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    pid = os.fork()
    if pid == 0:  # child: only exec from here (this script starts no threads, so forking is safe)
        try:
            os.close(master)
            os.setsid()
            fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
            for fd in (0, 1, 2):
                os.dup2(slave, fd)
            if slave > 2:
                os.close(slave)
            if cpus is not None:
                os.sched_setaffinity(0, cpus)
            os.execvpe(argv[0], argv, env)
        finally:
            os._exit(127)
    os.close(slave)
    _children[pid] = "monitor"
    return pid, master


def terminal_env() -> dict[str, str]:
    """This environment as a 256-colour terminal would give it, without what would change how the app draws."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("COLORTERM", "NO_COLOR", "FORCE_COLOR", "TMUX", "COLUMNS", "LINES", "STY")
           and not k.startswith("TEXTUAL")}
    env.update(TERM="xterm-256color", LANG=env.get("LANG") or "C.UTF-8")
    return env


def run_monitor(befori: list[str], url: str, c: int, seconds: float, out: Path, extra: list[str],
                size: tuple[int, int], quit_timeout_s: float, cpus: set[int] | None,
                output_tokens: int = OUTPUT_TOKENS) -> dict[str, Any]:
    """`befori-tui monitor` with the common flags in a new pty of `size` (COLS, ROWS), read as a terminal reads
    it; `q` `seconds` after the load's first request, SIGTERM `quit_timeout_s` after that. The records are in
    `out`'s JSONL; returns how it ended, its CPU and the bytes it wrote (see the module's docstring)."""
    cols, rows = size
    env = terminal_env()
    argv = befori + ["monitor"] + _common_flags(url, c, seconds, out, extra, output_tokens)
    jsonl = out.with_suffix(".jsonl")
    t_spawn_ns = time.perf_counter_ns()
    pid, fd = _spawn_in_pty(argv, env, rows, cols, cpus)
    bins: dict[int, int] = {}  # bytes read per 100 ms since the spawn
    total = 0
    tail = bytearray()
    load_start_ns: int | None = None
    t_q_ns: int | None = None
    t_exit_ns: int | None = None
    ended, status, ru = "q", 0, None
    viewer_cpu0: tuple[int, float | None] | None = None  # (when, the viewer's own CPU then): at the load's start
    viewer_cpu_pct: float | None = None
    next_poll = 0.0
    eof = False
    try:
        while True:
            now_ns = time.perf_counter_ns()
            if not eof:
                ready, _, _ = select.select([fd], [], [], 0.02)
                if ready:
                    try:
                        data = os.read(fd, 65536)
                    except OSError as exc:  # EIO: every slave side is closed
                        if exc.errno != errno.EIO:
                            raise
                        data = b""
                    if not data:
                        eof = True
                    else:
                        now_ns = time.perf_counter_ns()
                        total += len(data)
                        k = (now_ns - t_spawn_ns) // 100_000_000
                        bins[k] = bins.get(k, 0) + len(data)
                        tail += data
                        del tail[:-8192]
            else:
                time.sleep(0.02)
            if load_start_ns is None and now_ns / 1e9 >= next_poll:
                next_poll = now_ns / 1e9 + 0.1
                load_start_ns = _first_send_ns(jsonl)
                if load_start_ns is not None:
                    viewer_cpu0 = (time.perf_counter_ns(), _viewer_cpu_s(pid))
            if t_q_ns is None and t_exit_ns is None:
                due = (load_start_ns + seconds * 1e9 if load_start_ns is not None
                       else t_spawn_ns + (seconds + 30) * 1e9)  # the load never showed: quit anyway
                if now_ns >= due:
                    cpu1 = _viewer_cpu_s(pid)
                    if viewer_cpu0 is not None and viewer_cpu0[1] is not None and cpu1 is not None:
                        viewer_cpu_pct = 100 * (cpu1 - viewer_cpu0[1]) / ((time.perf_counter_ns() - viewer_cpu0[0]) / 1e9)
                    os.write(fd, b"q")
                    t_q_ns = now_ns
            if t_exit_ns is None:
                got = _reap(pid, 0)
                if got is not None:
                    t_exit_ns = time.perf_counter_ns()
                    status, ru = got
                    if t_q_ns is None:
                        ended = "exited-before-q"
                elif t_q_ns is not None and now_ns - t_q_ns > quit_timeout_s * 1e9:
                    ended, status, ru = _stop(pid)
                    t_exit_ns = time.perf_counter_ns()
                elif now_ns - t_spawn_ns > (seconds + 120 + quit_timeout_s) * 1e9:
                    ended, status, ru = _stop(pid)
                    t_exit_ns = time.perf_counter_ns()
            if t_exit_ns is not None and (eof or time.perf_counter_ns() - t_exit_ns > 2e9):
                break
    finally:
        if pid in _children:
            _stop(pid, grace_s=2.0)
        os.close(fd)
    res: dict[str, Any] = {
        "ended": ended, "exit_code": _exit_code(status), "cpu_s": _cpu_s(ru),
        "wall_s": round(((t_exit_ns or time.perf_counter_ns()) - t_spawn_ns) / 1e9, 3),
        "load_start_after_spawn_s": None if load_start_ns is None else round((load_start_ns - t_spawn_ns) / 1e9, 3),
        "quit_s": None if t_q_ns is None or t_exit_ns is None else round((t_exit_ns - t_q_ns) / 1e9, 3),
        "bytes_total": total, "size": f"{cols}x{rows}",
        # The viewer alone (the monitor process and its child that draws; not the run process nor its load processes),
        # from the load's start to the q: what drawing costs, in % of one core.
        "viewer_cpu_pct": None if viewer_cpu_pct is None else round(viewer_cpu_pct, 2),
        "bytes_per_s_series": [],
        "output_tail": _printable_tail(bytes(tail)),
    }
    if load_start_ns is not None and t_q_ns is not None:
        a, b = (load_start_ns - t_spawn_ns) // 100_000_000, (t_q_ns - t_spawn_ns) // 100_000_000
        window = sum(v for k, v in bins.items() if a <= k < b)
        span_s = (b - a) / 10
        res.update(bytes_window=window, window_s=span_s, bytes_per_s=round(window / span_s, 1) if span_s else None)
        res["bytes_per_s_series"] = [sum(bins.get(k, 0) for k in range(s, s + 10)) for s in range(a, b - 9, 10)]
        # The rate rises while the timeline fills its window: the last seconds say where it is heading.
        last = min(50, b - a)
        res["bytes_per_s_last5"] = round(sum(v for k, v in bins.items() if b - last <= k < b) / (last / 10), 1)
    return res


def _proc_cpu_s(pid: int) -> float | None:
    """utime + stime of one process so far (its own threads, not its children), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _viewer_cpu_s(pid: int) -> float | None:
    """The viewer's CPU so far: the monitor process and its children (the viewer, where the monitor draws in a
    child process), not the run process (`befori_tui.core.runproc`) nor anything under it."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            if b"core.runproc" in Path(f"/proc/{p}/cmdline").read_bytes():
                continue
            kids = [int(c) for t in Path(f"/proc/{p}/task").iterdir() for c in (t / "children").read_text().split()]
        except OSError:
            if p == pid:
                return None
            continue
        total += _proc_cpu_s(p) or 0.0
        todo.extend(kids)
    return total


def _printable_tail(data: bytes) -> str:
    """What the monitor printed after leaving the alternate screen (its exit messages), escapes removed."""
    text = data.split(b"\x1b[?1049l")[-1].decode(errors="replace")
    out, i = [], 0
    while i < len(text):
        if text[i] == "\x1b":
            j = i + 1
            if j < len(text) and text[j] == "[":
                j += 1
                while j < len(text) and not ("@" <= text[j] <= "~"):
                    j += 1
            i = j + 1
            continue
        out.append(text[i])
        i += 1
    return "".join(out).strip()[-1500:]


# --- figures from the files -----------------------------------------------------------------------------

def _pcts(values, ps=(50, 99)) -> dict[str, float | None]:
    if len(values) == 0:
        return {f"p{p}": None for p in ps}
    return {f"p{p}": round(float(v), 4) for p, v in zip(ps, np.percentile(np.asarray(values, dtype=float), ps))}


def samples(jsonl: Path) -> dict[str, Any]:
    """The steady ok requests of one run's raw records: client, truth and excess values (ms), and counts."""
    client_ttft, true_ttft, ex_ttft, gaps, true_gap, ex_gap = [], [], [], [], [], []
    # Each slot's first steady request: the wave that leaves together when the warm-up requests (all sent at
    # once, all the same length) end together. Its TTFT measures how fast a client sends c requests at once,
    # and at c ≥ 256 its top 1% is the run's p99; the rest ("settled") shows the steady state on its own.
    first_of_slot: dict[int, tuple[int, float, float | None]] = {}  # slot -> (send, client TTFT, excess)
    settled_ttft, settled_ex = [], []
    counts = {"records": 0, "steady": 0, "no_server_timing": 0}
    if not jsonl.is_file():
        return {"counts": counts, "missing": str(jsonl)}
    with jsonl.open() as f:
        for line in f:
            if not line.strip():
                continue
            r = json.loads(line)
            counts["records"] += 1
            if r.get("error_kind") or r.get("warmup") or r.get("outlived_level") or r.get("t_first_token_ns") is None:
                continue
            counts["steady"] += 1
            ttft = (r["t_first_token_ns"] - r["t_send_ns"]) / 1e6
            client_ttft.append(ttft)
            itl = r.get("itl_ns") or []
            gaps.extend(itl)
            st = r.get("server_timing")
            if not st or st.get("t_first_token_ns") is None or st.get("t_received_ns") is None:
                counts["no_server_timing"] += 1
                excess = None
            else:
                truth = (st["t_first_token_ns"] - st["t_received_ns"]) / 1e6
                excess = ttft - truth
                true_ttft.append(truth)
                ex_ttft.append(excess)
            mine = (r["t_send_ns"], ttft, excess)
            earlier = first_of_slot.get(r["slot"])
            if earlier is None or mine[0] < earlier[0]:
                first_of_slot[r["slot"]], mine = mine, earlier
            if mine is not None:
                settled_ttft.append(mine[1])
                if mine[2] is not None:
                    settled_ex.append(mine[2])
            if excess is None:
                continue
            if len(itl) >= 1 and st.get("t_last_token_ns") is not None:
                server_gap = (st["t_last_token_ns"] - st["t_first_token_ns"]) / len(itl) / 1e6
                true_gap.append(server_gap)
                ex_gap.append(sum(itl) / len(itl) / 1e6 - server_gap)
    return {"counts": counts, "client_ttft": client_ttft, "true_ttft": true_ttft, "ex_ttft": ex_ttft, "gaps": gaps,
            "true_gap": true_gap, "ex_gap": ex_gap, "first_of_slot": first_of_slot, "settled_ttft": settled_ttft,
            "settled_ex": settled_ex}


def figures(jsonl: Path) -> dict[str, Any]:
    """Client, truth and excess figures (ms) of the steady ok requests in one run's raw records."""
    v = samples(jsonl)
    counts = v["counts"]
    if "missing" in v:
        return {"counts": counts, "missing": v["missing"]}
    client_ttft, true_ttft, ex_ttft, true_gap, ex_gap = (v[k] for k in ("client_ttft", "true_ttft", "ex_ttft",
                                                                          "true_gap", "ex_gap"))
    first_of_slot, settled_ttft, settled_ex = v["first_of_slot"], v["settled_ttft"], v["settled_ex"]
    g = np.asarray(v["gaps"], dtype=float) / 1e6
    return {
        "counts": counts,
        "ttft_ms": _pcts(client_ttft), "ttft_truth_ms": _pcts(true_ttft), "ttft_excess_ms": _pcts(ex_ttft),
        "itl_ms": _pcts(g), "itl_gaps": int(g.size), "itl_ms_max": round(float(g.max()), 3) if g.size else None,
        "gap_truth_ms": _pcts(true_gap), "gap_excess_ms": _pcts(ex_gap),
        "wave_ttft_ms": _pcts([v[1] for v in first_of_slot.values()], (50, 99, 100)),
        "wave_ttft_excess_ms": _pcts([v[2] for v in first_of_slot.values() if v[2] is not None], (50, 99, 100)),
        "settled_ttft_ms": _pcts(settled_ttft), "settled_ttft_excess_ms": _pcts(settled_ex),
    }


POOLED = (("ttft", "client_ttft", "TTFT"), ("settled_ttft", "settled_ttft", "settled TTFT"),
          ("ttft_truth", "true_ttft", "the sim's own TTFT"))
RESAMPLES = 2000


def pooled(headless: list[dict], monitor: list[dict], seed: int = 0) -> dict[str, Any]:
    """Each mode's steady requests over all its runs pooled: TTFT (whole, settled, the sim's own) p50 and p99,
    and monitor − headless with a 95% interval from resampling whole runs (a cluster bootstrap: from run to
    run the wave and the box move the tail, so runs, not requests, are the unit that varies). A difference
    whose interval is wider than the goal is not shown either way by that many runs."""
    rng = np.random.default_rng(seed)
    per_run = {kind: [samples(Path(r["toml_path"]).with_suffix(".jsonl")) for r in runs]
               for kind, runs in (("headless", headless), ("monitor", monitor))}
    out: dict[str, Any] = {}
    for name, key, label in POOLED:
        h = [np.asarray(v.get(key, []), dtype=float) for v in per_run["headless"]]
        m = [np.asarray(v.get(key, []), dtype=float) for v in per_run["monitor"]]
        if not h or not m or not sum(a.size for a in h) or not sum(a.size for a in m):
            continue
        for q in (50, 99):
            ph, pm = (float(np.percentile(np.concatenate(x), q)) for x in (h, m))
            diffs = [np.percentile(np.concatenate([m[j] for j in rng.integers(0, len(m), len(m))]), q)
                     - np.percentile(np.concatenate([h[j] for j in rng.integers(0, len(h), len(h))]), q)
                     for _ in range(RESAMPLES)]
            lo, hi = np.percentile(diffs, [2.5, 97.5])
            out[f"{name}_p{q}_ms"] = {"label": f"{label} p{q}", "headless": round(ph, 2), "monitor": round(pm, 2),
                                       "diff": round(pm - ph, 2), "ci95": [round(float(lo), 2), round(float(hi), 2)]}
    return out


TOML_KEYS = ("ended_by", "interrupted")
LEVEL_KEYS = ("concurrency", "duration_s", "requests_sent", "requests_ok", "requests_failed", "requests_cancelled",
              "requests_steady", "ttft_s_p50", "ttft_s_p99", "itl_s_p99", "client_loop_lag_ms_p50",
              "client_loop_lag_ms_p99", "client_loop_lag_ms_max", "client_bound")


def toml_facts(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    out: dict[str, Any] = {k: data.get(k) for k in TOML_KEYS}
    out["levels"] = [{k: lv.get(k) for k in LEVEL_KEYS if k in lv} for lv in data.get("levels", [])]
    return out


def _engine_delta(before: dict, after: dict) -> dict[str, Any]:
    return {"steps": after["steps"] - before["steps"], "late_steps": after["late_steps"] - before["late_steps"],
            "lag_ms_total": round((after["lag_s_total"] - before["lag_s_total"]) * 1e3, 3),
            "max_lag_ms_ever": round(after["max_lag_s"] * 1e3, 3),
            "gc_pause_ms_max_ever": round(after.get("gc_pause_s_max", 0.0) * 1e3, 3)}


def one_run(kind: str, purpose: str, c: int, i: int, seconds: float, size: tuple[int, int], args, sim: Sim,
            befori: list[str], outdir: Path, cpus: set[int] | None) -> dict[str, Any]:
    tag = {"headless": "h", "monitor": "m"}[kind] + ("" if purpose == "fidelity" else f"-{size[0]}x{size[1]}")
    out = outdir / f"{tag}-{c}-{i}.toml"
    la0, e0, c0 = loadavg(), sim.engine(), cpu_snapshot(sim.proc.pid)
    extra = list(args.extra)
    if args.warmup_per_slot:
        extra += ["--warmup-requests", str(args.warmup_per_slot * c)]
    if kind == "headless":
        res = run_headless(befori, sim.base_url, c, seconds, out, extra, cpus)
    else:
        res = run_monitor(befori, sim.base_url, c, seconds, out, extra, size, args.quit_timeout, cpus)
    c1, la1, e1 = cpu_snapshot(sim.proc.pid), loadavg(), sim.engine()
    cpu = cpu_delta(c0, c1)
    res.update(cpu_box=cpu, others_busy=cpu["others_pct"] > OTHERS_HIGH_PCT, kind=kind, purpose=purpose,
               concurrency=c, run=i, seconds=seconds, toml_path=str(out),
               loadavg_before=la0, loadavg_after=la1, loaded=max(la0[0], la1[0]) > LOAD_HIGH,
               sim=_engine_delta(e0, e1), toml=toml_facts(out), figures=figures(out.with_suffix(".jsonl")))
    return res


# --- medians and the table ------------------------------------------------------------------------------

def _get(run: dict, path: str):
    cur: Any = run
    for part in path.split("."):
        if isinstance(cur, list):
            cur = cur[0] if cur else None
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def _median(values) -> float | None:
    vals = [v for v in values if v is not None]
    return round(statistics.median(vals), 4) if vals else None


METRICS = {
    "ttft_p50_ms": "figures.ttft_ms.p50", "ttft_p99_ms": "figures.ttft_ms.p99",
    "itl_p50_ms": "figures.itl_ms.p50", "itl_p99_ms": "figures.itl_ms.p99",
    "ttft_truth_p50_ms": "figures.ttft_truth_ms.p50", "ttft_truth_p99_ms": "figures.ttft_truth_ms.p99",
    "gap_truth_p50_ms": "figures.gap_truth_ms.p50", "gap_truth_p99_ms": "figures.gap_truth_ms.p99",
    "ttft_excess_p50_ms": "figures.ttft_excess_ms.p50", "ttft_excess_p99_ms": "figures.ttft_excess_ms.p99",
    "gap_excess_p50_ms": "figures.gap_excess_ms.p50", "gap_excess_p99_ms": "figures.gap_excess_ms.p99",
    "loop_lag_p99_ms": "toml.levels.client_loop_lag_ms_p99", "steady": "figures.counts.steady",
    "sim_late_steps": "sim.late_steps", "others_cpu_pct": "cpu_box.others_pct", "bytes_per_s": "bytes_per_s",
    "bytes_per_s_last5": "bytes_per_s_last5", "cpu_s": "cpu_s", "quit_s": "quit_s",
    "viewer_cpu_pct": "viewer_cpu_pct",
    "settled_ttft_p50_ms": "figures.settled_ttft_ms.p50", "settled_ttft_p99_ms": "figures.settled_ttft_ms.p99",
    "settled_excess_p99_ms": "figures.settled_ttft_excess_ms.p99", "wave_ttft_p99_ms": "figures.wave_ttft_ms.p99",
    "wave_excess_p50_ms": "figures.wave_ttft_excess_ms.p50", "wave_excess_max_ms": "figures.wave_ttft_excess_ms.p100",
}


def medians(runs: list[dict]) -> dict[str, Any]:
    return {name: _median(_get(r, path) for r in runs) for name, path in METRICS.items()}


def _f(v, digits=1) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _print_fidelity(summary: dict, size: str, runs: int) -> None:
    print(f"\nMedians of {runs} run(s); ms unless said; truth = the sim's own timestamps (median over both modes' "
          f"runs; for ITL, the p99 of each request's mean server gap); KB/s = 1000 bytes/s written to the {size} pty "
          "from the load's start to the q")
    print("\n| c | TTFT p50 truth / headless / monitor | TTFT p99 truth / headless / monitor "
          "| ITL p99 truth / headless / monitor | loop lag p99 headless / monitor | KB/s |")
    print("|---|---|---|---|---|---|")
    for c, s in summary.items():
        h, m, t = s["headless"], s["monitor"], s["truth"]
        kb = None if m["bytes_per_s"] is None else m["bytes_per_s"] / 1000
        print(f"| {c} | {_f(t['ttft_p50_ms'])} / {_f(h['ttft_p50_ms'])} / {_f(m['ttft_p50_ms'])} "
              f"| {_f(t['ttft_p99_ms'])} / {_f(h['ttft_p99_ms'])} / {_f(m['ttft_p99_ms'])} "
              f"| {_f(t['gap_p99_ms'])} / {_f(h['itl_p99_ms'])} / {_f(m['itl_p99_ms'])} "
              f"| {_f(h['loop_lag_p99_ms'])} / {_f(m['loop_lag_p99_ms'])} | {_f(kb)} |")
    print("\nExcess over the truth per request (bench/fidelity.py's definition), and what else each run saw:")
    print("\n| c | TTFT excess p50 headless / monitor | TTFT excess p99 headless / monitor "
          "| mean-gap excess p99 headless / monitor | steady requests h / m | sim late steps h / m "
          "| client CPU s h / m | viewer's own CPU % of a core | others' CPU % of a core h / m | q → exit s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for c, s in summary.items():
        h, m = s["headless"], s["monitor"]
        print(f"| {c} | {_f(h['ttft_excess_p50_ms'], 2)} / {_f(m['ttft_excess_p50_ms'], 2)} "
              f"| {_f(h['ttft_excess_p99_ms'], 2)} / {_f(m['ttft_excess_p99_ms'], 2)} "
              f"| {_f(h['gap_excess_p99_ms'], 3)} / {_f(m['gap_excess_p99_ms'], 3)} "
              f"| {_f(h['steady'], 0)} / {_f(m['steady'], 0)} | {_f(h['sim_late_steps'], 0)} / "
              f"{_f(m['sim_late_steps'], 0)} | {_f(h['cpu_s'])} / {_f(m['cpu_s'])} | {_f(m['viewer_cpu_pct'])} "
              f"| {_f(h['others_cpu_pct'], 0)} / {_f(m['others_cpu_pct'], 0)} | {_f(m['quit_s'])} |")


def _print_waves(summary: dict) -> None:
    print("\nThe wave after the warm-up (each slot's first steady request: they leave together) and the rest "
          "(settled), TTFT in ms; excess = client − the sim's truth, per request:\n")
    print("| c | settled TTFT p50 headless / monitor | settled TTFT p99 headless / monitor "
          "| settled excess p99 h / m | wave TTFT p99 h / m | wave excess p50 h / m | wave excess max h / m |")
    print("|---|---|---|---|---|---|---|")
    columns = (("settled_ttft_p50_ms", 1), ("settled_ttft_p99_ms", 1), ("settled_excess_p99_ms", 2),
               ("wave_ttft_p99_ms", 1), ("wave_excess_p50_ms", 1), ("wave_excess_max_ms", 1))
    for c, s in summary.items():
        h, m = s["headless"], s["monitor"]
        print(f"| {c} | " + " | ".join(f"{_f(h[k], d)} / {_f(m[k], d)}" for k, d in columns) + " |")


def _print_pooled(summary: dict, runs: int) -> None:
    print(f"\nEvery run's steady requests pooled ({runs} run(s) a mode), ms; monitor − headless with a 95% interval "
          "from resampling whole runs:\n")
    print("| c | figure | headless | monitor | monitor − headless | 95% interval |")
    print("|---|---|---|---|---|---|")
    for c, s in summary.items():
        for f in s.get("pooled", {}).values():
            print(f"| {c} | {f['label']} | {f['headless']:.1f} | {f['monitor']:.1f} | {f['diff']:+.1f} "
                  f"| {f['ci95'][0]:+.1f} to {f['ci95'][1]:+.1f} |")


def _print_bytes(bytes_summary: list[dict]) -> None:
    print("\nBytes written to the terminal (monitor only), from the load's start to the q, and over its last 5 s "
          "(the rate rises while the timeline's window fills):\n")
    print("| size | c | seconds | KB/s median | KB/s each run | last 5 s KB/s median |")
    print("|---|---|---|---|---|---|")
    for b in bytes_summary:
        each = ", ".join(_f(None if v is None else v / 1000) for v in b["bytes_per_s_runs"])
        print(f"| {b['size']} | {b['concurrency']} | {b['seconds']:g} | "
              f"{_f(None if b['bytes_per_s'] is None else b['bytes_per_s'] / 1000)} | {each} | "
              f"{_f(None if b['bytes_per_s_last5'] is None else b['bytes_per_s_last5'] / 1000)} |")


def print_tables(summary: dict, bytes_summary: list[dict], size: str, runs: int, loaded: list[str],
                 busy: list[str]) -> None:
    if summary:
        _print_fidelity(summary, size, runs)
        _print_waves(summary)
        _print_pooled(summary, runs)
    if bytes_summary:
        _print_bytes(bytes_summary)
    if loaded:
        print(f"\nload average above {LOAD_HIGH} before or after (this benchmark's own processes count in it): "
              + "; ".join(loaded))
    if busy:
        print(f"\nother processes used more than {OTHERS_HIGH_PCT:g}% of a core during: " + "; ".join(busy))


# --- main -----------------------------------------------------------------------------------------------

def _size(text: str) -> tuple[int, int]:
    try:
        cols, rows = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size is COLSxROWS, e.g. 160x48, not {text!r}") from None
    return cols, rows


def _ints(values: list[str]) -> list[int]:
    return [int(x) for v in values for x in v.split(",") if x]


def default_befori() -> list[str]:
    script = Path(sys.executable).with_name("befori-tui")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "befori_tui"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", nargs="*", default=["1", "64", "256", "512"], metavar="C",
                   help="concurrencies for headless vs monitor (default 1 64 256 512; none: bytes runs only)")
    p.add_argument("--runs", type=int, default=3, help="runs of each (medians are reported)")
    p.add_argument("--seconds", type=float, default=15.0, help="seconds of load per run")
    p.add_argument("--size", type=_size, default=(160, 48), metavar="COLSxROWS", help="the pty (default 160x48)")
    p.add_argument("--bytes-size", type=_size, nargs="*", default=[(160, 48), (80, 24)], metavar="COLSxROWS",
                   help="monitor-only runs that measure bytes/s at these sizes (default 160x48 80x24; none: skip)")
    p.add_argument("--bytes-concurrency", type=int, default=64)
    p.add_argument("--bytes-seconds", type=float, default=20.0)
    p.add_argument("--befori", default=None, help="the befori-tui command to measure (default: the one beside "
                   "this Python, else python -m befori_tui)")
    p.add_argument("--profile", default=str(DEFAULT_PROFILE), help="sim profile (default bench/fixed-timing.toml)")
    p.add_argument("--extra", default="", help="more flags for both bench and monitor, e.g. --extra='--telemetry none'")
    p.add_argument("--warmup-per-slot", type=int, default=0, metavar="K",
                   help="warm-up requests per slot, in both modes (default: the tool's, one): with 2 the wave after "
                        "warm-up is warm-up too, and a run's p99 is the steady state's")
    p.add_argument("--pin", action="store_true", help="the sim on the first CPU, the clients on the others")
    p.add_argument("--quit-timeout", type=float, default=30.0, help="seconds from q to SIGTERM (default 30)")
    p.add_argument("--keep", metavar="DIR", help="keep every TOML, JSONL and log here (default: a temp dir)")
    p.add_argument("--json", metavar="PATH", help="write every run and the medians here")
    args = p.parse_args()
    args.extra = shlex.split(args.extra)
    concurrencies = _ints(args.concurrency)
    befori = shlex.split(args.befori) if args.befori else default_befori()
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)

    cpus = sorted(os.sched_getaffinity(0))
    sim_cpus = client_cpus = None
    if args.pin and len(cpus) >= 2:
        sim_cpus, client_cpus = {cpus[0]}, set(cpus[1:])
    facts = machine_facts(befori)
    print(f"# {facts['date']} · {facts['cpus']} CPUs ({facts['cpu_model']}) · befori {facts.get('befori_version')} "
          f"at {facts.get('befori_source')} ({facts.get('befori_git_branch')} "
          f"{(facts.get('befori_git_head') or '')[:10]}{' dirty' if facts.get('befori_git_dirty') else ''}) · "
          f"Textual {facts.get('textual')} · load average {' '.join(map(str, loadavg()))}", flush=True)
    tmp = None
    if args.keep:
        outdir = Path(args.keep)
        outdir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="ui_pty-")
        outdir = Path(tmp.name)
    report: dict[str, Any] = {"script": "bench/ui_pty.py", "argv": sys.argv[1:], "machine": facts,
                              "profile": args.profile, "profile_toml": Path(args.profile).read_text(),
                              "seconds": args.seconds, "runs_each": args.runs, "size": "%dx%d" % args.size,
                              "pinned": args.pin and sim_cpus is not None, "extra_flags": args.extra,
                              "warmup_per_slot": args.warmup_per_slot, "runs": []}
    sim = None
    try:
        sim = Sim(befori, Path(args.profile), outdir, sim_cpus)
        report["sim_url"] = sim.root_url
        print(f"# sim {sim.root_url} (profile {args.profile}); outputs in {outdir}", flush=True)

        def go(kind, purpose, c, i, seconds, size):
            r = one_run(kind, purpose, c, i, seconds, size, args, sim, befori, outdir, client_cpus)
            report["runs"].append(r)
            f = r["figures"]
            kbs = (f" · {r['bytes_per_s'] / 1000:.1f} KB/s (last 5 s {r['bytes_per_s_last5'] / 1000:.1f}) at "
                   f"{r['size']}" if r.get("bytes_per_s") else "")
            lag = _get(r, "toml.levels.client_loop_lag_ms_p99")
            print(f"c={c:<4} run {i} {kind:8s} n={f['counts']['steady']:6d} TTFT p50/p99 "
                  f"{_f(f['ttft_ms']['p50'])}/{_f(f['ttft_ms']['p99'])} ms (truth {_f(f['ttft_truth_ms']['p50'])}/"
                  f"{_f(f['ttft_truth_ms']['p99'])}) · ITL p99 {_f(f['itl_ms']['p99'])} ms · loop lag p99 "
                  f"{_f(lag)} ms · sim late steps {r['sim']['late_steps']} · {r['ended']}"
                  f"{'' if r.get('quit_s') is None else ' after %.1f s' % r['quit_s']}{kbs} · load "
                  f"{r['loadavg_before'][0]:.2f}→{r['loadavg_after'][0]:.2f}, others "
                  f"{r['cpu_box']['others_pct']:.0f}% of a core", flush=True)
            if r.get("exit_code") not in (0, None) or r["toml"].get("error"):
                print(f"  !! exit code {r.get('exit_code')}, toml {r['toml'].get('error', 'ok')}; output tail:\n"
                      + (r.get("output_tail") or r.get("log_tail") or "")[-800:], flush=True)
            return r

        summary: dict[str, Any] = {}
        for c in concurrencies:
            by_kind: dict[str, list[dict]] = {"headless": [], "monitor": []}
            for i in range(args.runs):
                order = ("headless", "monitor") if i % 2 == 0 else ("monitor", "headless")
                for kind in order:
                    by_kind[kind].append(go(kind, "fidelity", c, i, args.seconds, args.size))
            med = {k: medians(v) for k, v in by_kind.items()}
            both = by_kind["headless"] + by_kind["monitor"]
            med["truth"] = {"ttft_p50_ms": _median(_get(r, "figures.ttft_truth_ms.p50") for r in both),
                            "ttft_p99_ms": _median(_get(r, "figures.ttft_truth_ms.p99") for r in both),
                            "gap_p50_ms": _median(_get(r, "figures.gap_truth_ms.p50") for r in both),
                            "gap_p99_ms": _median(_get(r, "figures.gap_truth_ms.p99") for r in both)}
            med["pooled"] = pooled(by_kind["headless"], by_kind["monitor"])
            summary[str(c)] = med
        bytes_summary = []
        for size in args.bytes_size:
            rs = [go("monitor", "bytes", args.bytes_concurrency, i, args.bytes_seconds, size) for i in range(args.runs)]
            vals = [r.get("bytes_per_s") for r in rs]
            bytes_summary.append({"size": "%dx%d" % size, "concurrency": args.bytes_concurrency,
                                  "seconds": args.bytes_seconds, "bytes_per_s": _median(vals),
                                  "bytes_per_s_runs": vals,
                                  "bytes_per_s_last5": _median(r.get("bytes_per_s_last5") for r in rs),
                                  "ttft_p99_ms": _median(_get(r, "figures.ttft_ms.p99") for r in rs),
                                  "itl_p99_ms": _median(_get(r, "figures.itl_ms.p99") for r in rs)})
        report.update(summary=summary, bytes_summary=bytes_summary, date_end=_run_text(["date"]))
        loaded = [f"{r['kind']} c={r['concurrency']} run {r['run']}"
                  f"{'' if r['purpose'] == 'fidelity' else ' (' + r['size'] + ')'}: "
                  f"{r['loadavg_before'][0]:.2f}→{r['loadavg_after'][0]:.2f}" for r in report["runs"] if r["loaded"]]
        report["loaded_runs"] = loaded
        busy = [f"{r['kind']} c={r['concurrency']} run {r['run']}"
                f"{'' if r['purpose'] == 'fidelity' else ' (' + r['size'] + ')'}: {r['cpu_box']['others_pct']:.0f}%"
                for r in report["runs"] if r["others_busy"]]
        report["others_busy_runs"] = busy
        print_tables(summary, bytes_summary, report["size"], args.runs, loaded, busy)
    finally:
        if sim is not None:
            sim.stop()
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1))
            print(f"\nwrote {args.json}")
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
