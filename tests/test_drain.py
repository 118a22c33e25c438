"""A lower concurrency is measured once it has taken effect: the removed slots' requests end first (or are
cancelled, with load.on_decrease = "cancel"); meanwhile the new level's requests are warm-up, the run says
`draining N`, and the first steady request of the new level starts after the drain."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib

import pytest

from befori_tui.core import events as ev
from befori_tui.core.loadgen import Level
from befori_tui.ui.model import LiveModel
from befori_tui.core.config import PricingConfig


def run_256_to_8(sim, tmp_path, *extra: str) -> tuple[subprocess.CompletedProcess, dict, list[dict]]:
    out = tmp_path / "drain.toml"
    proc = subprocess.run([sys.executable, "-m", "befori_tui", "bench", "--url", sim.base_url, "--concurrency", "256,8",
                           "--requests-per-level", "16", "--input-tokens", "64", "--output-tokens", "64:40",
                           "--telemetry", "none", "--server-metrics", "off", "--out", str(out), *extra],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    raw = [json.loads(line) for line in (tmp_path / "drain.jsonl").read_text().splitlines()]
    return proc, tomllib.loads(out.read_text()), raw


@pytest.mark.parametrize("workers", ["1", "2"])
def test_256_to_8_measures_the_new_level_after_the_drain(sim, tmp_path, workers):
    proc, data, raw = run_256_to_8(sim, tmp_path, "--workers", workers)
    old = [r for r in raw if r["level"] == 0]
    new = [r for r in raw if r["level"] == 1]
    removed = [r for r in old if r["slot"] >= 8]
    new_steady = [r for r in new if r["error_kind"] is None and not r["warmup"] and not r["outlived_level"]]
    drained_ns = max(r["t_end_ns"] for r in removed)
    t_level_ns = min(r["t_send_ns"] for r in new)
    assert drained_ns > t_level_ns  # there was a drain: the old load outlived the switch
    assert new_steady and min(r["t_send_ns"] for r in new_steady) >= drained_ns
    assert all(r["warmup"] for r in new if r["t_send_ns"] < drained_ns)  # sent during the drain: warm-up
    assert all(r["error_kind"] is None for r in removed)  # by default they finish
    lv = data["levels"][1]
    assert lv["concurrency"] == 8 and lv["requests_steady"] >= 16
    assert (drained_ns - t_level_ns) / 1e9 - 0.05 <= lv["drain_s"] < lv["duration_s"]
    assert "level 1 · draining " in proc.stderr and "level 1 · drained" in proc.stderr


def test_on_decrease_cancel_cancels_the_removed_slots_requests(sim, tmp_path):
    proc, data, raw = run_256_to_8(sim, tmp_path, "--on-decrease", "cancel")
    removed_late = [r for r in raw if r["level"] == 0 and r["slot"] >= 8 and r["outlived_level"]]
    assert removed_late and all(r["error_kind"] == "cancelled" for r in removed_late)
    assert data["levels"][0]["requests_cancelled"] == len(removed_late)
    assert data["load"]["on_decrease"] == "cancel"
    assert data["levels"][1]["drain_s"] < 1.0  # cancelled at once, not waited for
    assert data["levels"][1]["requests_steady"] >= 16


def test_the_monitor_header_says_draining_until_the_drain_ends():
    model = LiveModel(PricingConfig())
    model.open_level(Level(0, 256, 0, 256))
    model.apply(ev.LevelOpened(1, 8, 10, 8, "user"))
    model.apply(ev.Draining(1, 248, 11))
    assert model.level.draining == 248 and not model.level.drained
    model.apply(ev.Draining(1, 0, 99))
    assert model.level.draining == 0 and model.level.t_drained_ns == 99


class _Link:
    def __init__(self) -> None:
        import queue

        self.sent: list = []
        self.events = queue.SimpleQueue()  # nothing comes from this run

    def send(self, command) -> None:
        self.sent.append(command)


async def test_the_header_says_draining_and_a_large_jump_asks_first():
    from befori_tui.ui.app import MonitorApp, UiOptions
    from befori_tui.ui.fixed import fixed_config, fixed_model

    cfg = fixed_config()
    model = fixed_model(cfg=cfg)
    app = MonitorApp(cfg, model, None, UiOptions(live=False))
    async with app.run_test(size=(160, 48)) as pilot:
        link = app.link = _Link()
        c = model.concurrency
        model.level.draining = 40
        app.status.refresh_status(False)
        await pilot.pause(0.1)
        assert "draining 40" in " ".join(line.plain for line in app.status.content.renderables)
        await pilot.press("c")
        await pilot.pause(0.1)
        app.screen.query_one("Input").value = str(c * 5)
        await pilot.press("enter")
        await pilot.pause(0.1)
        assert type(app.screen).__name__ == "JumpScreen" and link.sent == []
        await pilot.press("escape")
        await pilot.pause(0.1)
        assert link.sent == []  # cancelled: nothing asked of the run
        await pilot.press("c")
        await pilot.pause(0.1)
        app.screen.query_one("Input").value = str(c * 5)
        await pilot.press("enter")
        await pilot.pause(0.1)
        await pilot.press("y")
        await pilot.pause(0.1)
        assert [x.concurrency for x in link.sent] == [c * 5]
        await pilot.press("c")  # within 4×: no question
        await pilot.pause(0.1)
        app.screen.query_one("Input").value = str(c * 2)
        await pilot.press("enter")
        await pilot.pause(0.1)
        assert [x.concurrency for x in link.sent] == [c * 5, c * 2]
        app.link = None


def test_a_timed_level_is_timed_from_the_end_of_its_drain(sim, tmp_path):
    out = tmp_path / "timed.toml"
    proc = subprocess.run([sys.executable, "-m", "befori_tui", "bench", "--url", sim.base_url, "--concurrency", "128,4",
                           "--seconds-per-level", "1", "--input-tokens", "64", "--output-tokens", "64:40",
                           "--telemetry", "none", "--server-metrics", "off", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lv = tomllib.loads(out.read_text())["levels"][1]
    assert lv["drain_s"] > 0 and lv["duration_s"] >= lv["drain_s"] + 1.0 - 0.01
    assert lv["requests_steady"] > 0


def test_a_lower_arrival_rate_is_measured_after_the_higher_rates_requests_have_ended(sim_factory, tmp_path):
    """The open loop's drain: from 200 to 20 requests a second, the new level's steady requests start once the
    requests sent at 200/s have ended; those sent meanwhile are warm-up. (A sim in real time: requests of about
    half a second, so some hundred are in flight at the switch.)"""
    sim = sim_factory(time_scale=1.0)
    out = tmp_path / "rate.toml"
    proc = subprocess.run([sys.executable, "-m", "befori_tui", "bench", "--url", sim.base_url, "--rate", "200,20",
                           "--requests-per-level", "12", "--input-tokens", "64", "--output-tokens", "64:40",
                           "--telemetry", "none", "--server-metrics", "off", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    raw = [json.loads(line) for line in (tmp_path / "rate.jsonl").read_text().splitlines()]
    new = [r for r in raw if r["level"] == 1]
    t_level_ns = min(r["t_send_ns"] for r in new)
    old_late = [r for r in raw if r["level"] == 0 and r["t_end_ns"] > t_level_ns]
    assert old_late  # the higher rate's requests outlived the switch
    drained_ns = max(r["t_end_ns"] for r in old_late)
    steady = [r for r in new if r["error_kind"] is None and not r["warmup"] and not r["outlived_level"]]
    assert steady and min(r["t_send_ns"] for r in steady) >= drained_ns
    assert all(r["warmup"] for r in new if r["t_send_ns"] < drained_ns)
    assert "level 1 · draining " in proc.stderr and "level 1 · drained" in proc.stderr
    assert tomllib.loads(out.read_text())["levels"][1]["drain_s"] > 0
