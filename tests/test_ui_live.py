"""Pilot tests of the monitor against the fast simulator: keys change the run, files come out complete."""

from __future__ import annotations

import time
import tomllib

import pytest
from textual import events

from befori_tui.core.config import Config
from befori_tui.core.results import read_records
from befori_tui.ui.app import UiOptions
from tests.runs import live_monitor


async def wait_until(pilot, cond, timeout_s: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


async def press(pilot, *keys: str) -> None:
    """Like pilot.press, without its wait for the whole process to idle (the load thread never does)."""
    chars = {"plus": "+", "minus": "-", "enter": "\r"}
    for key in keys:
        pilot.app.post_message(events.Key(key, chars.get(key, key if len(key) == 1 else None)))
        await pilot.pause(0.05)


def live_app(sim, tmp_path, concurrency: int = 2, max_seconds: float | None = None, **ui):
    cfg = Config()
    cfg.endpoint.url = sim.base_url
    cfg.load.concurrency = [concurrency]
    cfg.workload.input_tokens_mean, cfg.workload.output_tokens_mean = 200, 40
    out = tmp_path / "session.toml"
    if max_seconds is not None:
        cfg.load.max_seconds = max_seconds
    runner, model, app = live_monitor(cfg, out, telemetry=f"dcgm:{sim.root_url}/metrics",
                                      ui_options=UiOptions(fps=10, **ui))
    return runner, model, app, out


async def test_plus_opens_a_level_save_writes_it_and_quit_keeps_every_record(sim, tmp_path):
    runner, model, app, out = live_app(sim, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: len(model.records) >= 4, what="first records")
        assert model.concurrency == 2
        await press(pilot, "plus")
        await wait_until(pilot, lambda: len(model.levels) == 2, what="a new level")
        assert model.levels[-1].concurrency == 4 and model.levels[-1].reason == "user"
        await wait_until(pilot, lambda: len(model.levels[-1].records) >= 4, what="records at c=4")
        await press(pilot, "s")
        await wait_until(pilot, lambda: model.last_saved is not None, what="the save")
        data = tomllib.loads(out.read_text())
        assert [lv["concurrency"] for lv in data["levels"]] == [2, 4]
        assert data["levels"][1]["requests_ok"] >= 1
        await press(pilot, "q")
        await wait_until(pilot, lambda: runner.finished.is_set(), what="the runner to stop")
        await wait_until(pilot, lambda: not app.is_running, what="the app to exit")
    assert app.return_code == 0
    assert runner.join(5)
    records = read_records(out.with_suffix(".jsonl"))
    ids = [r.request_id for r in records]
    sent = sum(lv.sent for lv in model.levels)
    assert len(ids) == len(set(ids)) == sent  # every request sent is there exactly once
    assert sorted(ids) == list(range(sent))
    for r in records:  # each with an outcome: finished, or an error kind (cancelled at quit)
        assert r.t_end_ns is not None
        assert r.ok or r.error_kind is not None
    final = tomllib.loads(out.read_text())
    assert sum(lv["requests_ok"] + lv["requests_failed"] + lv["requests_cancelled"] for lv in final["levels"]) == sent


async def test_pause_new_level_window_and_exact_concurrency(sim, tmp_path):
    runner, model, app, out = live_app(sim, tmp_path, concurrency=1)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: len(model.records) >= 2, what="first records")
        await press(pilot, "n")
        await wait_until(pilot, lambda: len(model.levels) == 2, what="a new level")
        assert model.levels[-1].concurrency == 1 and model.levels[-1].reason == "new"
        await press(pilot, "c")
        await pilot.pause(0.1)
        await press(pilot, "3", "enter")  # the current value is selected: typing replaces it
        await wait_until(pilot, lambda: len(model.levels) == 3, what="the typed level")
        assert model.concurrency == 3
        await press(pilot, "c")
        await pilot.pause(0.1)
        await press(pilot, "enter")  # the value shown, unchanged: no new level
        await pilot.pause(0.3)
        assert len(model.levels) == 3
        await press(pilot, "minus")
        await wait_until(pilot, lambda: len(model.levels) == 4, what="a level down")
        assert model.concurrency == 1  # ×2 step: 3 // 2
        window = app.timeline.window_s
        await press(pilot, "w")
        assert app.timeline.window_s != window
        await press(pilot, "p")
        await wait_until(pilot, lambda: model.paused, what="the run to say it paused")
        await pilot.pause(0.3)
        n = len(model.records)
        await pilot.pause(0.5)
        assert len(model.records) <= n + 1  # at most the one in flight finishes
        await press(pilot, "p")
        await wait_until(pilot, lambda: len(model.records) > n + 1, what="requests after resume")
        await press(pilot, "q")
        await wait_until(pilot, lambda: not app.is_running, what="the app to exit")
    levels = tomllib.loads(out.read_text())["levels"]
    # The pause ended the last level once it drained; resuming opened another at the same concurrency.
    assert [(lv["concurrency"], lv["reason"]) for lv in levels] == [(1, "start"), (1, "new"), (3, "user"),
                                                                    (1, "user"), (1, "resume")]


async def test_gpu_panel_shows_the_sims_series_marked_simulated(sim, tmp_path):
    runner, model, app, out = live_app(sim, tmp_path)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_until(pilot, lambda: len(model.samples) >= 1, what="a telemetry sample")
        await pilot.pause(0.2)
        assert model.samples[-1].simulated
        assert "simulated" in (app.gpus.border_title or "")
        await press(pilot, "q")
        await wait_until(pilot, lambda: not app.is_running, what="the app to exit")


async def test_sweep_steps_through_levels_by_itself_and_user_can_step_in(sim, tmp_path):
    from befori_tui.core.controller import RunPlan

    cfg = Config()
    cfg.endpoint.url = sim.base_url
    cfg.load.concurrency = [1]
    cfg.workload.input_tokens_mean, cfg.workload.output_tokens_mean = 100, 20
    out = tmp_path / "sweep.toml"
    runner, model, app = live_monitor(cfg, out, RunPlan([1, 2, 8], seconds=1.5, then="pause"))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: model.concurrency == 1, what="the sweep's first level")
        await press(pilot, "plus")  # the user steps in: c=2, measured by the same rule, then the sweep goes on
        await wait_until(pilot, lambda: model.concurrency == 8, timeout_s=20, what="the sweep to go on")
        await wait_until(pilot, lambda: model.paused, timeout_s=20, what="the sweep to end")
        # Paused, the last level ends when its last request does: the pause is billed to no level.
        await wait_until(pilot, lambda: model.levels[-1].t_end_ns is not None, what="the drained level to end")
        await pilot.pause(1.0)
        assert model.sweep_text.startswith("sweep done")
        await press(pilot, "p")  # resume: a new level at the same concurrency
        await wait_until(pilot, lambda: len(model.levels) == 4, what="a level after the pause")
        assert model.sweep_text == ""  # "sweep done · paused" is no longer true
        await wait_until(pilot, lambda: len(model.levels[3].records) >= 1, what="a request after the pause")
        await press(pilot, "q")
        await wait_until(pilot, lambda: not app.is_running, what="the app to exit")
    levels = tomllib.loads(out.read_text())["levels"]
    assert [(lv["concurrency"], lv["reason"]) for lv in levels] == [(1, "start"), (2, "user"), (8, "sweep"),
                                                                    (8, "resume")]
    assert levels[1]["duration_s"] >= 1.5
    swept = levels[2]
    assert swept["occupancy"]["usd_idle"] < 0.1 * swept["occupancy"]["usd_bill"], swept["occupancy"]
    assert levels[3]["requests_sent"] >= 1


def test_cli_routes_monitor_and_demo_to_the_ui(monkeypatch):
    import befori_tui.cli as cli
    import befori_tui.ui.monitor as monitor

    seen = []
    monkeypatch.setattr(monitor, "monitor_main", lambda command, argv: seen.append((command, argv)) or 0)
    monkeypatch.setattr(cli, "bench_command", lambda command, argv: seen.append(("headless", command, argv)) or 0)
    assert cli.main([]) == 0
    assert cli.main(["monitor", "--url", "http://x/v1"]) == 0
    assert cli.main(["demo", "--headless", "--time-scale", "5"]) == 0
    assert cli.main(["bench"]) == 0
    assert seen == [("demo", []), ("monitor", ["--url", "http://x/v1"]), ("headless", "demo", ["--time-scale", "5"]),
                    ("headless", "bench", [])]


@pytest.mark.parametrize("argv, message", [
    (["--fps", "0"], "--fps"),
    (["--step", "x1"], "--step"),
    (["--sweep", "1,x"], "--sweep"),
    (["--themes", "/no/such/dir"], "--themes"),
    (["--theme", "nope"], "--theme: no theme 'nope'"),
    (["--drain", "-1"], "--drain"),
])
def test_monitor_flag_errors_are_one_line(argv, message, capsys):
    import befori_tui.cli as cli

    assert cli.main(["monitor", "--url", "http://127.0.0.1:9/v1", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err



async def test_the_screen_never_turns_records_into_text(sim, tmp_path, monkeypatch):
    """The UI thread's cost must not grow with the session: nothing on it may repr() the records (Textual's
    @work did, to name each summaries worker — every record, twice a second)."""
    from befori_tui.core.records import RequestRecord

    calls = []
    monkeypatch.setattr(RequestRecord, "__repr__", lambda self: calls.append(self.request_id) or "record")
    runner, model, app, out = live_app(sim, tmp_path, concurrency=2)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: len(model.records) >= 6, what="records")
        shown = []
        await wait_until(pilot, lambda: (app.summaries is not None and app.summaries not in shown
                                         and shown.append(app.summaries) is None and len(shown) >= 3),
                         what="three rounds of summaries")
        await press(pilot, "q")
        await wait_until(pilot, lambda: not app.is_running, what="the app to exit")
    assert calls == []


async def test_the_monitor_stops_by_itself_after_max_seconds_and_keeps_the_screen(sim, tmp_path):
    runner, model, app, out = live_app(sim, tmp_path, max_seconds=1.5)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: runner.finished.is_set(), what="the run to stop by itself")
        await wait_until(pilot, lambda: model.finished, what="the app to hear of it")
        assert app.is_running  # the figures stay on screen to be read
        data = tomllib.loads(out.read_text())
        assert data["ended_by"] == "max_seconds"
        assert data["levels"][0]["requests_ok"] > 0
        await press(pilot, "q")
        await wait_until(pilot, lambda: not app.is_running, what="the app to exit")
    assert app.return_code == 0
