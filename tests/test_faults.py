"""Faults end to end: `befori-tui bench` against the sim's fault modes and our own hostile server, a server
killed mid-run and restarted, connection refused, 429 with Retry-After. The run goes on, every request sent is
recorded once with its outcome, failures are counted by kind and kept out of the latency percentiles."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from befori_tui.core.client import parse_retry_after
from befori_tui.core.loadgen import CONNECT_BACKOFF_MAX_S, next_backoff_s
from tests.hostile_server import HostileServer


def bench_cmd(url: str, out: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "befori_tui", "bench", "--url", url, "--out", str(out), "--telemetry", "none",
            "--server-metrics", "off", "--input-tokens", "60", "--output-tokens", "8", *args]


def run_bench(url: str, out: Path, *args: str, timeout_s: float = 60) -> tuple[int, str, str, int]:
    """Runs bench; returns (exit code, stdout, stderr, peak RSS of the bench process in KiB)."""
    with open(out.with_suffix(".stdout"), "w+") as so, open(out.with_suffix(".stderr"), "w+") as se:
        proc = subprocess.Popen(bench_cmd(url, out, *args), stdout=so, stderr=se)
        deadline = time.monotonic() + timeout_s
        peak_kib = 0
        while True:
            # The peak of the bench program itself: VmHWM belongs to the address space exec made. (wait4's
            # ru_maxrss also counts the moments before exec, when the child was a copy of this pytest process.)
            try:
                status_text = Path(f"/proc/{proc.pid}/status").read_text()
                peak_kib = max(peak_kib, int(status_text.split("VmHWM:")[1].split()[0]))
            except (OSError, IndexError, ValueError):
                pass
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                raise AssertionError("bench did not finish")
            time.sleep(0.02)
        proc.returncode = os.waitstatus_to_exitcode(status)
        so.seek(0)
        se.seek(0)
        return proc.returncode, so.read(), se.read(), peak_kib or usage.ru_maxrss


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_accounting(data: dict, records: list[dict]) -> None:
    """Every request sent is in the raw records exactly once, with an outcome; each level's sums hold."""
    ids = [r["request_id"] for r in records]
    assert len(ids) == len(set(ids))
    assert sorted(ids) == list(range(len(ids)))
    for r in records:
        assert r["t_end_ns"] is not None
        assert (r["error_kind"] is None) == (r["error_message"] is None)
    for lv in data["levels"]:
        mine = [r for r in records if r["level"] == lv["level"]]
        assert lv["requests_sent"] == len(mine)
        assert lv["requests_ok"] + lv["requests_failed"] + lv["requests_cancelled"] == lv["requests_sent"]
        assert lv["requests_in_flight"] == 0
        kinds: dict[str, int] = {}
        for r in mine:
            if r["error_kind"] is not None and r["error_kind"] != "cancelled":
                kinds[r["error_kind"]] = kinds.get(r["error_kind"], 0) + 1
        assert {k: v for k, v in lv.get("errors", {}).items() if k != "cancelled"} == kinds
        assert sum(kinds.values()) == lv["requests_failed"]


def test_bench_survives_every_hostile_reply(tmp_path):
    out = tmp_path / "h.toml"
    with HostileServer() as server:
        code, stdout, stderr, peak_kib = run_bench(server.base_url, out, "--concurrency", "8",
                                                   "--seconds-per-level", "1.5", "--timeout", "0.4")
    assert code == 0, stderr
    assert "Traceback" not in stderr + stdout
    data = tomllib.loads(out.read_text())
    records = read_jsonl(out.with_suffix(".jsonl"))
    check_accounting(data, records)
    lv = data["levels"][0]
    assert set(server.served) >= {"huge_line", "stall", "endless"}  # every mode was served at least once
    errors = lv["errors"]
    assert errors["http_status"] >= 3 * 2  # 500, 429 and 401, each at least twice in 60+ requests
    assert errors["protocol"] >= 7 * 2  # html, drop, malformed, not UTF-8, huge line, endless, no [DONE]
    assert errors["timeout"] >= 2  # the stall
    messages = " | ".join(r["error_message"] or "" for r in records)
    for needle in ("engine died", "Retry-After: 1", "text/html", "malformed JSON", "exceeded", "ran past",
                   "before a finish_reason", "no complete reply"):
        assert needle in messages, needle
    # Failures never enter the percentiles: good replies take a few ms, a stall takes the whole timeout.
    assert lv["requests_ok"] >= 60 // len(server.modes)  # 1.5 s of requests that take ms
    assert lv["e2e_s_p99"] < 0.4 and lv["ttft_s_p99"] < 0.4  # a stall, counted, would be 0.4 s (the timeout)
    assert lv["output_tokens_mean"] == 8  # an endless stream's chunks are not output tokens of a success
    # A 32 MiB line per huge_line request, 8 slots: memory stays bounded by the parser's cap.
    assert peak_kib < 200 * 1024, peak_kib


def test_sim_fault_modes_through_bench(sim_factory, tmp_path):
    faults = {"http_500": 0.06, "http_429": 0.06, "drop": 0.06, "malformed": 0.06, "stall": 0.06, "no_done": 0.06}
    sim = sim_factory(faults=faults, seed=3)
    out = tmp_path / "f.toml"
    timeout_s = 2.0
    code, stdout, stderr, _ = run_bench(sim.base_url, out, "--concurrency", "8", "--requests-per-level", "160",
                                        "--timeout", str(timeout_s), "--output-tokens", "24")
    assert code == 0, stderr
    assert "Traceback" not in stderr
    data = tomllib.loads(out.read_text())
    records = read_jsonl(out.with_suffix(".jsonl"))
    check_accounting(data, records)
    lv = data["levels"][0]
    errors = lv["errors"]
    assert errors.get("http_status", 0) >= 5  # 500 and 429
    assert errors.get("protocol", 0) >= 5  # drop, malformed
    assert errors.get("timeout", 0) >= 2  # stall: halfway through a stream, for longer than the timeout
    assert any("HTTP 429" in (r["error_message"] or "") for r in records)
    assert any("HTTP 500" in (r["error_message"] or "") for r in records)
    # no_done after a finish_reason is a complete reply, so ok; failures stay out of the latencies.
    assert lv["e2e_s_p99"] < timeout_s / 2 and lv["ttft_s_p99"] < timeout_s / 2
    assert lv["requests_ok"] >= 0.5 * lv["requests_sent"]
    assert "HTTP 500 ×" in stderr and "HTTP 429 ×" in stderr and "protocol ×" in stderr  # by status and kind


def test_server_killed_mid_run_and_restarted(sim_factory, tmp_path):
    sim = sim_factory()
    port = int(sim.root_url.rsplit(":", 1)[1])
    out = tmp_path / "k.toml"
    proc = subprocess.Popen(bench_cmd(sim.base_url, out, "--concurrency", "4", "--seconds-per-level", "7",
                                      "--output-tokens", "24", "--timeout", "5"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    raw = out.with_suffix(".jsonl")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (not raw.exists() or raw.stat().st_size < 3000):
        time.sleep(0.05)
    sim.proc.send_signal(signal.SIGKILL)  # no goodbye: streams cut, then connection refused
    sim.proc.wait()
    t_killed = time.monotonic()
    time.sleep(1.5)
    sim_factory(port=port)  # back on the same port
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    data = tomllib.loads(out.read_text())
    records = read_jsonl(raw)
    check_accounting(data, records)
    errors = data["levels"][0]["errors"]
    assert errors.get("connect", 0) >= 4  # every slot found the server down
    # The back-off (50 ms doubling, ≤ 2 s per slot) keeps the refused requests few; without it each slot
    # retries at once and 1.5 s of downtime becomes thousands of records.
    assert errors["connect"] <= 4 * 10, errors
    assert set(errors) <= {"connect", "protocol", "timeout", "cancelled"}
    failed = [r for r in records if r["error_kind"] in ("connect", "protocol")]
    last_failure_ns = max(r["t_end_ns"] for r in failed)
    later_ok = [r for r in records if r["error_kind"] is None and r["t_send_ns"] > last_failure_ns]
    assert len(later_ok) >= 8, "requests succeed again once the server is back"
    assert time.monotonic() - t_killed < 30


def test_connection_refused_before_and_during_a_run(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    # Without --model, bench asks /v1/models first: one line, exit 2.
    code, _, stderr, _ = run_bench(url, tmp_path / "r.toml")
    assert code == 2 and "cannot reach the server" in stderr and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    # With --model the run starts; every request is refused, counted as connect, and the run completes.
    out = tmp_path / "r2.toml"
    code, _, stderr, _ = run_bench(url, out, "--model", "m", "--concurrency", "4", "--requests-per-level", "8")
    assert code == 3, stderr  # completed, nothing succeeded: exit 3, with the reason
    assert "no request succeeded (connect " in stderr
    assert "Traceback" not in stderr
    data = tomllib.loads(out.read_text())
    check_accounting(data, read_jsonl(out.with_suffix(".jsonl")))
    lv = data["levels"][0]
    assert lv["requests_ok"] == 0 and lv["errors"]["connect"] == lv["requests_failed"] >= 8
    assert "ttft_s_p50" not in lv  # nothing measured: no latency, not a zero


@pytest.mark.parametrize("honor", [False, True])
def test_429_retry_after_counted_or_honoured(tmp_path, honor):
    out = tmp_path / "r.toml"
    with HostileServer(modes=["http_429"]) as server:
        extra = ["--honor-retry-after"] if honor else []
        code, _, stderr, _ = run_bench(server.base_url, out, "--concurrency", "2", "--seconds-per-level", "1.6",
                                       "--warmup-requests", "0", *extra)
    assert code == 3, stderr  # the run completed and no request succeeded: said, and exit 3
    data = tomllib.loads(out.read_text())
    assert data["load"]["retry_after"] is honor
    lv = data["levels"][0]
    assert lv["errors"]["http_status"] == lv["requests_failed"] > 0
    if honor:
        assert lv["requests_sent"] <= 2 * 2  # Retry-After: 1 → each slot sends about once a second
    else:
        assert lv["requests_sent"] >= 20  # just counted: the slots go on at once


def test_retry_after_and_backoff_units():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after("soon") is None
    assert 8 < parse_retry_after(time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 10))) <= 10
    waits = [next_backoff_s(0.0)]
    for _ in range(8):
        waits.append(next_backoff_s(waits[-1]))
    assert waits[0] == 0.05 and waits[1] == 0.1 and waits[-1] == CONNECT_BACKOFF_MAX_S


async def test_monitor_survives_every_hostile_reply_and_shows_kinds(tmp_path):
    from befori_tui.core.config import Config
    from tests.runs import live_monitor
    from tests.test_ui_live import press, wait_until

    with HostileServer() as server:
        cfg = Config()
        cfg.endpoint.url = server.base_url
        cfg.endpoint.server_metrics = "off"
        cfg.load.concurrency = [8]
        cfg.load.timeout_s = 0.4
        cfg.workload.input_tokens_mean, cfg.workload.output_tokens_mean = 40, 8
        out = tmp_path / "ui.toml"
        runner, model, app = live_monitor(cfg, out)
        async with app.run_test(size=(160, 48)) as pilot:
            await wait_until(pilot, lambda: {r.error_kind for r in model.records} >= {None, "http_status", "protocol",
                                                                                    "timeout"}, what="every kind")
            await pilot.pause(0.6)  # a summary with the errors
            shown = app.export_screenshot()
            await press(pilot, "q")
            await wait_until(pilot, lambda: not app.is_running, what="the app to exit")
    assert app.return_code == 0
    shown = shown.replace("&#160;", " ")
    import re
    plain = re.sub(r"<[^>]+>", "", shown)
    assert "HTTP 401 ×" in plain and "protocol ×" in plain and "failed " in plain, plain[-3000:]  # by status, kind
    data = tomllib.loads(out.read_text())
    check_accounting(data, read_jsonl(out.with_suffix(".jsonl")))
    lv = data["levels"][0]
    assert lv["e2e_s_p99"] < 0.4  # a stall would be 0.4 s (the timeout): failures are not latencies
