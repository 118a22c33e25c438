"""Failures are part of the cost: grouped by status and kind wherever they are shown, their share and what
they cost beside $/M, a level where all failed says so, and a setup error names its likely cause."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import tomllib
from collections import Counter

from befori_tui.core import format as fmt
from befori_tui.core.columns import RecordColumns
from befori_tui.core.records import RequestRecord


def _record(i: int, kind: str | None, status: int | None) -> RequestRecord:
    r = RequestRecord(i, i % 4, 0, 4, t_send_ns=i * 10, t_end_ns=i * 10 + 5, http_status=status)
    r.error_kind = kind
    return r


def test_error_groups_split_http_statuses_and_leave_out_cancelled():
    records = ([_record(i, "http_status", 500) for i in range(20)] + [_record(20 + i, "timeout", None) for i in range(4)]
               + [_record(30 + i, "http_status", 429) for i in range(3)] + [_record(40, "cancelled", None)]
               + [_record(41, None, 200)])
    groups = RecordColumns().add(records).error_groups()
    assert groups == {"http_500": 20, "timeout": 4, "http_429": 3}
    assert list(groups) == ["http_500", "timeout", "http_429"]  # the most first
    assert fmt.errors_text(groups) == "HTTP 500 ×20, timeout ×4, HTTP 429 ×3"


def test_a_mix_of_500_and_429_is_counted_by_status_in_the_line_the_table_and_the_toml(sim_factory, tmp_path):
    sim = sim_factory(faults={"http_500": 0.3, "http_429": 0.2})
    out = tmp_path / "mix.toml"
    proc = subprocess.run([sys.executable, "-m", "befori_tui", "bench", "--url", sim.base_url, "--concurrency", "4",
                           "--requests-per-level", "24", "--output-tokens", "8", "--telemetry", "none",
                           "--server-metrics", "off", "--out", str(out)], capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr
    raw = [json.loads(line) for line in (tmp_path / "mix.jsonl").read_text().splitlines()]
    truth = Counter(f"http_{r['http_status']}" for r in raw if r["error_kind"] == "http_status")
    assert truth["http_500"] > 0 and truth["http_429"] > 0, truth
    lv = tomllib.loads(out.read_text())["levels"][0]
    assert lv["error_groups"] == dict(truth)
    assert lv["requests_failed"] == sum(truth.values())
    assert lv["occupancy"]["usd_failed"] > 0  # the server's time on them was paid for
    level_line = next(line for line in proc.stderr.splitlines() if line.startswith("level 0 · c=4 ·") and "ok," in line)
    assert f"HTTP 500 ×{truth['http_500']}" in level_line and f"HTTP 429 ×{truth['http_429']}" in level_line
    assert "failed requests cost $" in level_line
    assert f"HTTP 500 ×{truth['http_500']}" in proc.stdout and "failed $" in proc.stdout


def test_a_level_where_every_request_failed_says_so(sim_factory, tmp_path):
    sim = sim_factory(faults={"http_500": 1.0})
    out = tmp_path / "all.toml"
    proc = subprocess.run([sys.executable, "-m", "befori_tui", "bench", "--url", sim.base_url, "--concurrency", "2",
                           "--requests-per-level", "4", "--output-tokens", "8", "--telemetry", "none",
                           "--server-metrics", "off", "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert "no $/M: all" in proc.stderr and "all failed" in proc.stdout
    last = [line for line in proc.stderr.splitlines() if line.startswith("befori-tui bench: no request succeeded")]
    assert len(last) == 1 and "(HTTP 500 ×" in last[0], proc.stderr


def test_the_cost_panel_line_shows_the_failed_share_and_cost():
    from befori_tui.ui.widgets.panels import failed_line

    lv = {"requests_ok": 37, "requests_failed": 24, "error_groups": {"http_500": 20, "timeout": 4}}
    text = failed_line(lv, {"usd_failed": 0.0123, "usd_bill": 0.1}).plain
    assert text == "failed 24 of 61 (39%) · cost $0.0123 · 12% of the bill · HTTP 500 ×20, timeout ×4"
    narrow = failed_line(lv, {"usd_failed": 0.0123, "usd_bill": 0.1}, width=46).plain
    assert narrow == "failed 24 of 61 (39%) · cost $0.0123"  # left out whole, never cut


def test_a_404_on_the_model_list_asks_whether_the_path_is_v1(tmp_path):
    class NotHere(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 — the stdlib's name
            self.send_error(404)

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotHere)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        proc = subprocess.run([sys.executable, "-m", "befori_tui", "bench", "--url",
                               f"http://127.0.0.1:{srv.server_port}/v1", "--telemetry", "none",
                               "--server-metrics", "off", "--out", str(tmp_path / "x.toml")],
                              capture_output=True, text=True, timeout=30)
    finally:
        srv.shutdown()
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert "/v1/models: HTTP 404; is the URL's path /v1 right?" in line, proc.stderr
    assert "Traceback" not in proc.stderr
