"""A server that accepts connections and never answers: every setup wait is bounded, named, and ends at
once on a stop, with a session file that says so (nothing measured is nothing lost)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import pytest

from tests.test_signals import PtyApp


@pytest.fixture
def silent_url():
    """127.0.0.1: accepts every connection, reads nothing, answers nothing."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}/v1"
    stop.set()
    t.join(2)
    for c in held:
        c.close()
    srv.close()


def config_file(tmp_path: Path, setup_timeout_s: float) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(f"[load]\nsetup_timeout_s = {setup_timeout_s}\n")
    return p


def test_bench_names_the_wait_and_gives_up_after_setup_timeout(silent_url, tmp_path):
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "befori_tui", "bench", "--url", silent_url, "--config",
                           str(config_file(tmp_path, 2)), "--out", str(tmp_path / "s.toml")],
                          capture_output=True, text=True, timeout=30)
    elapsed_s = time.monotonic() - t0
    assert proc.returncode == 2, proc.stderr
    assert elapsed_s < 8, elapsed_s  # not the 600 s per-request timeout
    assert "waiting for the server's model list" in proc.stderr  # said while it waited (after 1 s)
    last = proc.stderr.strip().splitlines()[-1]
    assert "/v1/models: no answer within 2 s (load.setup_timeout_s)" in last and "Traceback" not in proc.stderr


class StderrWatch:
    """A child's stderr, read line by line on a thread: a test signals it once it has said what it waits for
    (a fixed sleep raced the interpreter's start on a busy machine, where SIGTERM came before its handler)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)

    def wait_for(self, text: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(text in line for line in self.lines):
            assert time.monotonic() < deadline and self.proc.poll() is None, "".join(self.lines)
            time.sleep(0.05)

    def rest(self, timeout_s: float = 20.0) -> str:
        self.proc.wait(timeout_s)
        self.thread.join(5)
        return "".join(self.lines)


def test_bench_obeys_sigterm_while_connecting_and_saves_why(silent_url, tmp_path):
    out = tmp_path / "t.toml"
    proc = subprocess.Popen([sys.executable, "-m", "befori_tui", "bench", "--url", silent_url, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    watch = StderrWatch(proc)
    watch.wait_for("waiting for the server's model list")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    err = watch.rest()
    assert time.monotonic() - t0 < 2.0
    assert proc.returncode == 130, err
    data = tomllib.loads(out.read_text())
    assert data["ended_by"] == "signal" and data["levels"] == []
    assert "stopped while connecting: nothing was measured" in err


def test_the_monitor_shows_the_wait_and_quits_at_once(silent_url, tmp_path):
    out = tmp_path / "m.toml"
    app = PtyApp(["--url", silent_url, "--telemetry", "none", "--server-metrics", "off", "--out", str(out)])
    try:
        app.wait_for_text("waiting for the server")
        t0 = time.monotonic()
        app.type(b"q")
        code = app.wait(10)
        elapsed_s = time.monotonic() - t0
    finally:
        app.close()
    assert elapsed_s < 2.0, elapsed_s
    assert code == 0, app.text[-1500:]
    assert tomllib.loads(out.read_text())["ended_by"] == "quit"


@pytest.mark.parametrize("command", ["monitor", "attach"])
def test_the_screen_without_a_terminal_says_to_use_bench(command, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "befori_tui", command, *(["--url", "http://127.0.0.1:9/v1",
                           "--out", str(tmp_path / "x.toml")] if command == "monitor" else [])],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs a terminal" in lines[0] and "befori-tui bench" in lines[0], proc.stderr
    assert "\x1b[" not in proc.stdout + proc.stderr and not (tmp_path / "x.toml").exists()


def test_a_bench_where_every_request_fails_says_why_and_exits_3(sim_factory, tmp_path):
    sim = sim_factory(faults={"http_500": 1.0})
    out = tmp_path / "f.toml"
    proc = subprocess.run([sys.executable, "-m", "befori_tui", "bench", "--url", sim.base_url, "--concurrency", "2",
                           "--requests-per-level", "4", "--output-tokens", "8", "--telemetry", "none",
                           "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    said = [line for line in proc.stderr.splitlines() if line.startswith("befori-tui bench: no request succeeded")]
    assert len(said) == 1 and "(HTTP 500 ×" in said[0], proc.stderr
    assert tomllib.loads(out.read_text())["levels"][0]["requests_ok"] == 0  # and what happened is saved


@pytest.fixture
def mute_url():
    """Lists its models, then never sends a byte of an answer to a completion."""
    from tests.hostile_server import HostileServer

    with HostileServer(["silent"]) as srv:
        yield srv.base_url


def test_bench_bounds_the_first_requests_wait_names_it_and_saves(mute_url, tmp_path):
    out = tmp_path / "first.toml"
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "befori_tui", "bench", "--url", mute_url, "--config",
                           str(config_file(tmp_path, 2)), "--concurrency", "2", "--telemetry", "none",
                           "--server-metrics", "off", "--out", str(out)], capture_output=True, text=True, timeout=30)
    elapsed_s = time.monotonic() - t0
    assert proc.returncode == 2, proc.stderr
    assert elapsed_s < 10, elapsed_s  # not the 600 s per-request timeout
    assert "waiting for the first request's first byte" in proc.stderr  # said while it waited
    assert "no answer to the first request within 2 s (load.setup_timeout_s)" in proc.stderr
    assert "Traceback" not in proc.stderr
    data = tomllib.loads(out.read_text())
    assert data["ended_by"] == "setup" and data["levels"][0]["requests_cancelled"] == 2


def test_bench_obeys_sigterm_while_waiting_for_the_first_request(mute_url, tmp_path):
    out = tmp_path / "t1.toml"
    proc = subprocess.Popen([sys.executable, "-m", "befori_tui", "bench", "--url", mute_url, "--concurrency", "2",
                             "--telemetry", "none", "--server-metrics", "off", "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    watch = StderrWatch(proc)
    watch.wait_for("waiting for the first request's first byte")  # named after 1 s
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    err = watch.rest()
    assert time.monotonic() - t0 < 2.0
    assert proc.returncode == 130, err
    assert "waiting for the first request's first byte" in err
    data = tomllib.loads(out.read_text())
    assert data["ended_by"] == "signal" and data["levels"][0]["requests_cancelled"] == 2


def test_the_monitor_shows_the_first_requests_wait_and_quits_at_once(mute_url, tmp_path):
    out = tmp_path / "m1.toml"
    app = PtyApp(["--url", mute_url, "--concurrency", "2", "--telemetry", "none", "--server-metrics", "off",
                  "--out", str(out)])
    try:
        app.wait_for_text("waiting for the first request")
        t0 = time.monotonic()
        app.type(b"q")
        code = app.wait(10)
        elapsed_s = time.monotonic() - t0
    finally:
        app.close()
        if app.proc.poll() is None:
            app.proc.kill()
    assert elapsed_s < 2.0, elapsed_s
    assert code == 0, app.text[-1500:]
    assert tomllib.loads(out.read_text())["levels"][0]["requests_cancelled"] == 2


def test_the_monitor_gives_up_on_a_first_request_without_answer_and_says_why(mute_url, tmp_path):
    out = tmp_path / "m2.toml"
    app = PtyApp(["--url", mute_url, "--config", str(config_file(tmp_path, 2)), "--concurrency", "2",
                  "--telemetry", "none", "--server-metrics", "off", "--out", str(out)])
    try:
        code = app.wait(20)
    finally:
        app.close()
        if app.proc.poll() is None:
            app.proc.kill()
    assert code == 2, app.text[-1500:]
    assert "no answer to the first request within 2 s" in app.text
    assert tomllib.loads(out.read_text())["ended_by"] == "setup"
