"""Stops: Ctrl-C, SIGTERM and SIGHUP against a running `bench` and a running monitor (under a pseudo-terminal).
Each saves everything measured within 5 s (TOML atomic, raw records complete); a second Ctrl-C exits at once
and still leaves valid files."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
import tomllib
from pathlib import Path

import pytest

STOP_WITHIN_S = 5.0


def long_run_args(url: str, out: Path) -> list[str]:
    return ["--url", url, "--concurrency", "8", "--requests-per-level", "100000", "--input-tokens", "100",
            "--output-tokens", "400", "--telemetry", "none", "--server-metrics", "off", "--out", str(out)]


def wait_for_records(raw: Path, min_bytes: int = 2000, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not raw.exists() or raw.stat().st_size < min_bytes:
        if time.monotonic() > deadline:
            raise AssertionError(f"no records in {raw} after {timeout_s} s")
        time.sleep(0.05)


def check_saved(out: Path, complete: bool = True) -> tuple[dict, list[dict]]:
    data = tomllib.loads(out.read_text())  # parses: written atomically
    records = [json.loads(line) for line in out.with_suffix(".jsonl").read_text().splitlines()]  # every line parses
    assert data["interrupted"] is True
    ids = [r["request_id"] for r in records]
    assert len(ids) == len(set(ids))
    sent = sum(lv["requests_sent"] for lv in data["levels"])
    if complete:
        assert len(records) == sent
        for lv in data["levels"]:
            assert lv["requests_ok"] + lv["requests_failed"] + lv["requests_cancelled"] == lv["requests_sent"]
        assert {r["error_kind"] for r in records} <= {None, "cancelled"}
    else:  # exited at once: what was in flight may be missing, but nothing is invented or half-written
        assert len(records) <= sent
        assert sum(lv["requests_ok"] for lv in data["levels"]) >= 1
    return data, records


# --- bench ---------------------------------------------------------------------------------------------------

def _default_hangup() -> None:
    # A suite started under nohup hands its children SIGHUP ignored, and bench rightly keeps it so (nohup's
    # meaning): these tests are about a terminal that goes away, so the child starts as a terminal's would.
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def start_bench(sim, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "befori_tui", "bench", *long_run_args(sim.base_url, out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_default_hangup)


def communicate_or_kill(proc: subprocess.Popen, timeout_s: float) -> tuple[str, str]:
    """communicate(); on a timeout, kill the child first (a bench left running loads the suite's shared sim)."""
    try:
        return proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_bench_stops_and_saves_on(sim, tmp_path, sig):
    out = tmp_path / "b.toml"
    proc = start_bench(sim, out)
    wait_for_records(out.with_suffix(".jsonl"))
    t0 = time.monotonic()
    proc.send_signal(sig)
    _, err = communicate_or_kill(proc, 20)
    assert time.monotonic() - t0 < STOP_WITHIN_S
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert signal.Signals(sig).name in err
    data, _ = check_saved(out)
    assert data["levels"][0]["requests_ok"] >= 1


def test_bench_second_ctrl_c_exits_at_once_with_valid_files(sim, tmp_path):
    out = tmp_path / "b2.toml"
    proc = start_bench(sim, out)
    wait_for_records(out.with_suffix(".jsonl"))
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    _, err = communicate_or_kill(proc, 20)
    assert time.monotonic() - t0 < 2.0
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    check_saved(out, complete=False)


# --- the monitor under a pseudo-terminal ----------------------------------------------------------------------

class PtyApp:
    """`befori-tui monitor` on its own pseudo-terminal (120×40), its screen output collected."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None,
                 program: tuple[str, ...] = ("-m", "befori_tui", "monitor")) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.master = master
        self.output = bytearray()
        self.proc = subprocess.Popen([sys.executable, *program, *argv], stdin=slave,
                                     stdout=slave, stderr=slave, start_new_session=True, close_fds=True,
                                     env={**os.environ, "TERM": "xterm-256color", **(env or {})})
        os.close(slave)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            self.output.extend(data)

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def hang_up(self) -> None:
        """What a dropped SSH session does: the terminal goes away and the session gets SIGHUP."""
        os.close(self.master)
        self.proc.send_signal(signal.SIGHUP)

    def wait(self, timeout_s: float = 20) -> int:
        try:
            return self.proc.wait(timeout_s)
        finally:
            self._kill_if_running()
            self._reader.join(2)

    @property
    def text(self) -> str:
        """What was written (raw, escape codes included), then the screen a terminal shows from it: the monitor
        sends only the cells that change, so a phrase on screen need not appear whole in the bytes."""
        import pyte

        raw = self.output.decode("utf-8", "replace")
        screen = pyte.Screen(120, 40)
        pyte.Stream(screen).feed(raw)
        return raw + "\n" + "\n".join(screen.display)

    def wait_for_text(self, phrase: str, timeout_s: float = 20.0) -> None:
        """Until `phrase` is on the screen (or in what was written)."""
        deadline = time.monotonic() + timeout_s
        while phrase not in self.text:
            assert time.monotonic() < deadline, self.text[-1500:]
            time.sleep(0.1)

    def close(self) -> None:
        try:
            os.close(self.master)
        except OSError:
            pass
        self._kill_if_running()

    def _kill_if_running(self) -> None:
        """A viewer that did not leave (a failing test): kill it and the process waiting for it, and stop its run
        process, which would go on."""
        if self.proc.poll() is not None:
            return
        viewers = _children_of(self.proc.pid)
        runs = [run for viewer in viewers for run in _children_of(viewer)]
        for pid in viewers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.kill()
        self.proc.wait()
        for pid in runs:
            try:
                os.kill(pid, signal.SIGTERM)  # it stops and saves
            except ProcessLookupError:
                pass


def _children_of(pid: int) -> list[int]:
    try:
        return [int(c) for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()]
    except OSError:
        return []


def wait_for_end(out: Path, timeout_s: float) -> None:
    """The run process saves after the viewer has gone (a hangup): wait for its final TOML."""
    deadline = time.monotonic() + timeout_s
    while not out.exists() or tomllib.loads(out.read_text()).get("ended_by") == "running":
        if time.monotonic() > deadline:
            raise AssertionError(f"{out}: no final save within {timeout_s} s")
        time.sleep(0.05)


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM", "ctrl-c key", "SIGHUP, terminal gone"])
def test_monitor_stops_and_saves_on(sim, tmp_path, how):
    out = tmp_path / "m.toml"
    hangup = ["--on-hangup", "stop"] if how.startswith("SIGHUP") else []
    app = PtyApp([*long_run_args(sim.base_url, out), *hangup])
    try:
        wait_for_records(out.with_suffix(".jsonl"), min_bytes=1)  # the runner only writes records
        t0 = time.monotonic()
        if how == "ctrl-c key":
            app.type(b"\x03")
        elif how == "SIGHUP, terminal gone":
            app.hang_up()
        else:
            app.proc.send_signal(getattr(signal, how))
        code = app.wait()
        wait_for_end(out, STOP_WITHIN_S)
        elapsed_s = time.monotonic() - t0
    finally:
        app.close()
    assert elapsed_s < STOP_WITHIN_S, elapsed_s
    assert "Traceback" not in app.text, app.text[-2000:]
    data, records = check_saved(out)
    assert data["ended_by"] == "signal"
    assert data["levels"][0]["requests_ok"] >= 1
    if how != "SIGHUP, terminal gone":  # no terminal left to report to
        assert code == 130, app.text[-2000:]
        assert f"({len(records)} requests)" in app.text


def test_monitor_second_ctrl_c_exits_at_once_with_valid_files(sim, tmp_path):
    out = tmp_path / "m2.toml"
    # Long requests and --drain 30: the first stop waits for them, so only the second Ctrl-C can end it soon.
    app = PtyApp([*long_run_args(sim.base_url, out), "--output-tokens", "4000", "--drain", "30"])
    try:
        wait_for_records(out.with_suffix(".jsonl"), min_bytes=1)
        t0 = time.monotonic()
        app.type(b"\x03")
        time.sleep(0.3)
        app.type(b"\x03")
        code = app.wait()
        elapsed_s = time.monotonic() - t0
    finally:
        app.close()
    assert elapsed_s < 3.0, elapsed_s
    assert code == 130
    assert "Traceback" not in app.text
    data, _ = check_saved(out, complete=False)
    assert data["levels"][0]["requests_in_flight"] >= 1  # saved while requests were still running
    assert app.text.rstrip().endswith("\x1b[?2004l") or "\x1b[?1049l" in app.text  # the terminal was restored


# The monitor with a levels table that fails when it is first drawn: an error inside the app.
FAILING_MONITOR = ("-c", "import sys; from befori_tui.ui.widgets import levels; "
                         "levels.LevelsTable.show = lambda self, summaries: 1 / 0; "
                         "from befori_tui.cli import main; sys.exit(main(['monitor', *sys.argv[1:]]))")


def test_an_error_inside_the_monitor_is_not_a_clean_quit(sim, tmp_path):
    out = tmp_path / "err.toml"
    app = PtyApp(long_run_args(sim.base_url, out), program=FAILING_MONITOR)
    try:
        code = app.wait(30)
    finally:
        app.close()
    assert code == 1, app.text[-2000:]
    assert "ZeroDivisionError" in app.text  # Textual shows what went wrong
    data = tomllib.loads(out.read_text())  # and what was measured is saved, marked as such
    assert data["ended_by"] == "error" and data["interrupted"] is False


def test_a_hangup_leaves_the_run_going_and_attach_finds_it(sim, tmp_path):
    """--on-hangup continue (the default): the viewer is gone within 2 s, the run goes on in its own process,
    `attach` finds it by its results file, and a Stop from there ends it with everything saved."""
    from befori_tui.core import events as ev
    from befori_tui.core.runlink import RunLink, resolve_target

    out = tmp_path / "h.toml"
    app = PtyApp(long_run_args(sim.base_url, out))
    try:
        wait_for_records(out.with_suffix(".jsonl"), min_bytes=1)
        peek = RunLink(resolve_target(str(out))[0]["socket"])
        run_pid = peek.connect().pid
        peek.close()  # a viewer that leaves changes nothing
        assert_the_viewer_draws_in_a_lowered_session_of_its_own(app.proc.pid, run_pid)
        t0 = time.monotonic()
        app.hang_up()
        app.wait(10)
        assert time.monotonic() - t0 < 2.0
    finally:
        app.close()
    raw = out.with_suffix(".jsonl")
    size = raw.stat().st_size
    time.sleep(1.0)
    assert raw.stat().st_size > size, "the run stopped with its viewer"
    runs = resolve_target(str(out))
    assert len(runs) == 1
    link = RunLink(runs[0]["socket"])
    hello = link.connect()
    assert hello.results == str(out.absolute()) and hello.on_hangup == "continue"
    link.send(ev.Stop("quit"))
    assert link.closed.wait(STOP_WITHIN_S), "the run did not end"
    wait_for_end(out, STOP_WITHIN_S)
    data = tomllib.loads(out.read_text())
    assert data["ended_by"] == "quit"
    records = [json.loads(line) for line in raw.read_text().splitlines()]
    assert len(records) == sum(lv["requests_sent"] for lv in data["levels"])
    assert not out.with_suffix(".sock").exists()  # the run took its socket with it


def test_a_terminal_gone_without_a_sighup_ends_the_viewer_too(sim, tmp_path):
    """The pseudo-terminal closes and no SIGHUP comes (it was not the viewer's controlling terminal, or the
    signal was ignored): reads return nothing, and the viewer once spun on them at a whole core, forever. It
    must leave as on a hangup — here with `--on-hangup stop`, so the run stops and saves."""
    out = tmp_path / "gone.toml"
    app = PtyApp([*long_run_args(sim.base_url, out), "--on-hangup", "stop"])
    try:
        wait_for_records(out.with_suffix(".jsonl"), min_bytes=1)
        t0 = time.monotonic()
        os.close(app.master)  # the terminal goes away; PtyApp's viewer has no controlling terminal: no SIGHUP
        code = app.wait(10)
        elapsed_s = time.monotonic() - t0
    finally:
        app.close()
    assert code == 129 and elapsed_s < 2.0, (code, elapsed_s)
    wait_for_end(out, STOP_WITHIN_S)
    data, _records = check_saved(out)
    assert data["ended_by"] == "signal"


def assert_the_viewer_draws_in_a_lowered_session_of_its_own(launcher_pid: int, run_pid: int) -> None:
    """The process the terminal started only waits; its one child, the viewer, has a session of its own, whose
    scheduling group (Linux autogroup) is at the lowest priority; the run process, the viewer's child, has
    another session at the usual one. (Linux shares the CPU between sessions as equals whatever their threads'
    priorities: in the terminal's session the viewer took CPU from the load and the server as an equal.)"""
    viewers = _children_of(launcher_pid)
    assert len(viewers) == 1, viewers
    viewer = viewers[0]
    assert run_pid in _children_of(viewer)
    assert os.getsid(viewer) == viewer and os.getsid(run_pid) == run_pid
    assert len({os.getsid(launcher_pid), viewer, run_pid}) == 3
    groups = [Path(f"/proc/{pid}/autogroup") for pid in (viewer, run_pid)]
    if all(g.exists() for g in groups):  # a kernel built with autogroups: "/autogroup-123 nice 19"
        (v_group, *_, v_nice), (r_group, *_, r_nice) = (g.read_text().split() for g in groups)
        assert v_group != r_group and (v_nice, r_nice) == ("19", "0")


def test_the_terminal_s_signals_reach_the_viewer_in_its_own_session(sim, tmp_path):
    """The viewer is not in the terminal's session: a resize (SIGWINCH, sent to the process the terminal
    started) must reach it and redraw the screen at the new size; a SIGTERM must stop the run and save."""
    import pyte

    from befori_tui.ui.monitor import SCREEN_WAIT_S

    out = tmp_path / "winch.toml"
    t0_ns = time.perf_counter_ns()  # CLOCK_MONOTONIC, as the records' times
    app = PtyApp(long_run_args(sim.base_url, out))
    try:
        wait_for_records(out.with_suffix(".jsonl"), min_bytes=1)
        # The run waits for the viewer's first screen, at most SCREEN_WAIT_S: the viewer said it was up sooner.
        first = json.loads(out.with_suffix(".jsonl").read_text().splitlines()[0])
        assert (first["t_send_ns"] - t0_ns) / 1e9 < SCREEN_WAIT_S
        app.wait_for_text("Slots")
        fcntl.ioctl(app.master, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        mark = len(app.output)
        app.proc.send_signal(signal.SIGWINCH)
        deadline = time.monotonic() + 10
        while True:  # redrawn for 100 columns: the panels' right edges in column 100, not 120
            screen = pyte.Screen(100, 30)
            pyte.Stream(screen).feed(app.output[mark:].decode("utf-8", "replace"))
            if any(line.endswith("╮") for line in screen.display):
                break
            assert time.monotonic() < deadline, "\n".join(screen.display)
            time.sleep(0.1)
        app.proc.send_signal(signal.SIGTERM)
        code = app.wait(STOP_WITHIN_S + 5)
    finally:
        app.close()
    assert code == 130, app.text[-1500:]
    data, _records = check_saved(out)
    assert data["ended_by"] == "signal"


def _signal_before_the_screen(app: PtyApp, when: str, sig: int) -> int:
    """Send `sig` to the process the terminal started as soon as its run process exists ("run started": the
    viewer is still waiting for the run's socket) or as soon as the screen starts to draw ("screen starting":
    the app is starting, its own handlers not yet in place). Returns the run's pid."""
    deadline = time.monotonic() + 20
    runs: list[int] = []
    while not runs or (when == "screen starting" and not app.output):
        assert time.monotonic() < deadline, f"{when}: not reached"
        runs = [run for viewer in _children_of(app.proc.pid) for run in _children_of(viewer)]
        time.sleep(0.002)
    app.proc.send_signal(sig)
    return runs[0]


@pytest.mark.parametrize("when", ["run started", "screen starting"])
def test_a_ctrl_c_before_the_screen_is_up_stops_the_run_too(sim, tmp_path, when):
    """The run is in a session of its own: a Ctrl-C in the second before the screen was up once ended the
    viewer alone and left its run going. It must stop the run, which saves (here: nothing measured yet)."""
    out = tmp_path / "early.toml"
    app = PtyApp(long_run_args(sim.base_url, out))
    try:
        run_pid = _signal_before_the_screen(app, when, signal.SIGINT)
        t0 = time.monotonic()
        code = app.wait(STOP_WITHIN_S + 5)
        elapsed_s = time.monotonic() - t0
    finally:
        app.close()
    gone = not Path(f"/proc/{run_pid}").exists()
    if not gone:
        os.kill(run_pid, signal.SIGTERM)  # it would go on after the test
    assert gone, "the run went on"
    assert code == 130 and elapsed_s < STOP_WITHIN_S, (code, elapsed_s, app.text[-1500:])
    assert "Traceback" not in app.text
    data = tomllib.loads(out.read_text())
    assert data["ended_by"] == "signal" and data["interrupted"] is True


def test_a_hangup_before_the_screen_is_up_leaves_the_run_going(sim, tmp_path):
    """--on-hangup continue, the terminal gone before the screen was up: the viewer leaves at once, the run
    starts its load anyway (its wait for the screen is bounded) and `attach` finds it."""
    from befori_tui.core import events as ev
    from befori_tui.core.runlink import RunLink, resolve_target

    out = tmp_path / "early-hup.toml"
    app = PtyApp(long_run_args(sim.base_url, out))
    try:
        _signal_before_the_screen(app, "run started", signal.SIGHUP)
        code = app.wait(STOP_WITHIN_S)
    finally:
        app.close()
    assert code == 129, app.text[-1500:]
    wait_for_records(out.with_suffix(".jsonl"), min_bytes=1, timeout_s=20)
    link = RunLink(resolve_target(str(out))[0]["socket"])
    link.connect()
    link.send(ev.Stop("quit"))
    assert link.closed.wait(STOP_WITHIN_S), "the run did not end"
    wait_for_end(out, STOP_WITHIN_S)
    assert tomllib.loads(out.read_text())["ended_by"] == "quit"


def test_a_monitor_whose_run_has_ended_sends_nothing_more_to_its_terminal(sim, tmp_path):
    """Over SSH every byte drawn crosses the link: once the run has ended the screen stands still (its clock,
    timeline and figures frozen at the end) and nothing is written until a key is pressed."""
    out = tmp_path / "still.toml"
    app = PtyApp(["--url", sim.base_url, "--concurrency", "4", "--output-tokens", "20", "--telemetry", "none",
                  "--server-metrics", "off", "--max-seconds", "2", "--out", str(out)])
    try:
        wait_for_end(out, 20)
        time.sleep(9.5)  # the last summaries land, and the notices about the end expire (8 s)
        before = len(app.output)
        time.sleep(3.0)
        written = len(app.output) - before
        app.type(b"q")
        code = app.wait(10)
    finally:
        app.close()
    assert code == 0, app.text[-2000:]
    assert written < 200, f"{written} bytes drawn in 3 s with nothing happening"


def test_the_viewer_lowers_every_thread_it_has_not_only_its_own():
    """On Linux a priority is a thread's: the link's reader, started before the viewer yields, must yield too."""
    code = """
import os, threading
from befori_tui.ui.monitor import VIEWER_NICENESS, yield_to_the_load
ready, done = threading.Event(), threading.Event()
tid = []
def reader():
    tid.append(threading.get_native_id()); ready.set(); done.wait(5)
t = threading.Thread(target=reader); t.start(); ready.wait(5)
before = os.getpriority(os.PRIO_PROCESS, tid[0])
yield_to_the_load()
after_reader, after_main = os.getpriority(os.PRIO_PROCESS, tid[0]), os.getpriority(os.PRIO_PROCESS, 0)
later = []
t2 = threading.Thread(target=lambda: later.append(os.getpriority(os.PRIO_PROCESS, 0))); t2.start(); t2.join()
done.set(); t.join()
print(before, after_reader, after_main, later[0], VIEWER_NICENESS)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    before, reader, main, later, step = map(int, out.stdout.split())
    assert reader == main == later == min(19, before + step), out.stdout
