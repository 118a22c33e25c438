"""Secrets: a planted API key (from the variable --api-key-env names) and a password in the URL never reach the
results, the raw records, stdout/stderr, the screen or a screenshot — even when the server echoes the
Authorization header back in an error body. Credentials in the URL are not sent at all (no Basic auth)."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
import tomllib

from befori_tui.core.config import Config
from tests.runs import live_monitor
from tests.hostile_server import HostileServer
from tests.test_signals import PtyApp, wait_for_records

KEY_ENV = "BEFORI_TEST_PLANTED_KEY"
GATEWAY_ENV, GATEWAY_KEY = "BEFORI_TEST_GATEWAY_KEY", "gw-PLANTED-5e1d77a0c3"  # --header X-Gateway-Key:env:VAR
KEY = "sk-PLANTED-3f9a0c71d2e84b56"
USER, PASSWORD = "alice", "pw-PLANTED-91b2e7"
BASIC = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


def secret_url(server: HostileServer) -> str:
    return f"http://{USER}:{PASSWORD}@127.0.0.1:{server.port}/v1"


def assert_clean(where: str, text: str) -> None:
    for secret in (KEY, PASSWORD, BASIC, KEY[3:15], GATEWAY_KEY):
        assert secret not in text, f"{secret!r} leaked into {where}"


def check_server_saw(server: HostileServer) -> None:
    assert server.auth_seen, "no completion requests"
    assert set(server.auth_seen) == {f"Bearer {KEY}"}  # the key was sent, and no Basic auth from the URL


def test_bench_never_writes_or_prints_secrets(tmp_path):
    out = tmp_path / "s.toml"
    with HostileServer(modes=["echo_auth", "ok", "http_500"]) as server:
        proc = subprocess.run(
            [sys.executable, "-m", "befori_tui", "bench", "--url", secret_url(server), "--api-key-env", KEY_ENV,
             "--concurrency", "2", "--requests-per-level", "12", "--input-tokens", "40", "--output-tokens", "8",
             "--telemetry", "none", "--out", str(out), "--header", f"X-Gateway-Key:env:{GATEWAY_ENV}",
             "--header", "X-Tenant: acme"],
            capture_output=True, text=True, timeout=60, env={**os.environ, KEY_ENV: KEY, GATEWAY_ENV: GATEWAY_KEY})
    assert proc.returncode == 0, proc.stderr
    check_server_saw(server)
    assert set(server.gateway_key_seen) == {GATEWAY_KEY}  # sent on every request…
    assert "with key '***'" in out.with_suffix(".jsonl").read_text()  # …and scrubbed where the server echoed it
    assert "headers X-Gateway-Key, X-Tenant" in proc.stderr  # names on the start line, never values
    raw = out.with_suffix(".jsonl").read_text()
    toml_text = out.read_text()
    assert "Bearer ***" in raw  # the echoed header was there, scrubbed
    for where, text in (("the TOML", toml_text), ("the raw records", raw), ("stdout", proc.stdout),
                        ("stderr", proc.stderr)):
        assert_clean(where, text)
    data = tomllib.loads(toml_text)
    assert data["endpoint"]["url"] == f"http://127.0.0.1:{server.port}/v1"
    assert data["endpoint"]["headers"] == ["X-Gateway-Key", "X-Tenant"]
    # Credentials in the URL are not sent, and on the command line they are visible in `ps`: the user is told,
    # once, without repeating them.
    assert proc.stderr.count("warning: --url carries user:password; it is not sent") == 1, proc.stderr
    assert "read it in `ps`" in proc.stderr


def test_monitor_never_shows_or_saves_secrets(tmp_path):
    out = tmp_path / "m.toml"
    with HostileServer(modes=["echo_auth", "ok"]) as server:
        app = PtyApp(["--url", secret_url(server), "--api-key-env", KEY_ENV, "--concurrency", "2",
                      "--input-tokens", "40", "--output-tokens", "8", "--telemetry", "none", "--out", str(out),
                      "--header", f"X-Gateway-Key:env:{GATEWAY_ENV}"],
                     env={KEY_ENV: KEY, GATEWAY_ENV: GATEWAY_KEY})
        try:
            wait_for_records(out.with_suffix(".jsonl"), min_bytes=1)
            time.sleep(1.0)  # a few frames with errors on screen
            app.type(b"s")
            time.sleep(0.5)
            app.type(b"q")
            code = app.wait()
        finally:
            app.close()
    assert code == 0, app.text[-2000:]
    check_server_saw(server)
    assert "Bearer ***" in out.with_suffix(".jsonl").read_text()
    for where, text in (("the screen and stderr", app.text), ("the TOML", out.read_text()),
                        ("the raw records", out.with_suffix(".jsonl").read_text())):
        assert_clean(where, text)


async def test_monitor_screenshot_has_no_secrets(tmp_path, monkeypatch):
    from tests.test_ui_live import wait_until

    monkeypatch.setenv(KEY_ENV, KEY)
    with HostileServer(modes=["echo_auth", "ok"]) as server:
        cfg = Config()
        cfg.endpoint.url = secret_url(server)
        cfg.endpoint.api_key_env = KEY_ENV
        cfg.endpoint.server_metrics = "off"
        cfg.load.concurrency = [2]
        cfg.workload.input_tokens_mean, cfg.workload.output_tokens_mean = 40, 8
        out = tmp_path / "shot.toml"
        runner, model, app = live_monitor(cfg, out)
        async with app.run_test(size=(160, 48)) as pilot:
            await wait_until(pilot, lambda: len(model.records) >= 6, what="records")
            await pilot.pause(0.3)
            svg = app.export_screenshot()
            runner.controller.stop()
            await wait_until(pilot, lambda: runner.finished.is_set(), what="the runner to stop")
    assert "127.0.0.1" in svg  # the URL is on screen, without its credentials
    assert_clean("a screenshot", svg)
    check_server_saw(server)
