"""Each load process's health — its loop lag and CPU — on the monitor's status bar and in bench's lines, with
two local load processes (the same path as Ray actors', core/raypool.py, without a cluster)."""

from __future__ import annotations

from befori_tui.core import events as ev
from befori_tui.core import format as fmt
from befori_tui.core.config import Config
from befori_tui.headless import level_line
from tests.runs import live_monitor
from tests.test_ui_live import press, wait_until


def test_a_workers_health_is_compact_and_a_lost_one_says_so():
    assert fmt.worker_health("box-a.cluster.internal:4242", 0.43, 23.4) == "box-a:4242 lag 0.4ms cpu 23%"
    assert fmt.worker_health("box-b:77", None, None) == "box-b:77 lag — cpu —"
    assert fmt.worker_health("box-b:77", 1.0, 5.0, alive=False) == "box-b:77 lost"
    line = level_line({"level": 0, "concurrency": 2, "requests_ok": 4, "requests_failed": 0,
                       "workers": [{"worker": "a:1", "loop_lag_ms_p99": 0.5, "cpu_pct": 40.0},
                                   {"worker": "b:2", "loop_lag_ms_p99": 7.25, "cpu_pct": 99.0}]})
    assert line.splitlines()[1] == "  workers: a:1 lag 0.5ms cpu 40% · b:2 lag 7.2ms cpu 99%"


async def test_the_status_bar_shows_each_load_processs_lag_and_cpu(sim, tmp_path):
    cfg = Config()
    cfg.endpoint.url = sim.base_url
    cfg.load.concurrency = [2]
    cfg.load.workers = 2
    cfg.workload.input_tokens_mean, cfg.workload.output_tokens_mean = 100, 20
    runner, model, app = live_monitor(cfg, tmp_path / "w.toml", telemetry="none")
    async with app.run_test(size=(200, 30)) as pilot:
        await wait_until(pilot, lambda: len(model.workers) == 2 and all(w.cpu_pct is not None for w in model.workers),
                         timeout_s=20, what="both load processes' health")
        assert all(isinstance(w, ev.WorkerHealth) and w.alive for w in model.workers)
        await pilot.pause(0.3)
        shown = app.export_screenshot().replace("&#160;", " ")
        await press(pilot, "q")
        await wait_until(pilot, lambda: not app.is_running, what="the app to exit")
    assert runner.join(10)
    for w in model.workers:
        assert fmt.short_worker(w.worker) in shown
    assert "workers" in shown and shown.count(" cpu ") >= 2


def test_workers_that_do_not_fit_their_line_are_shortened_then_counted_never_cut():
    from befori_tui.ui.widgets.timeline import workers_line

    workers = (ev.WorkerHealth("a:1", 0.5, 10.0), ev.WorkerHealth("b:2", 9.0, 99.0),
               ev.WorkerHealth("c:3", None, None, alive=False))
    assert workers_line(workers, 200).plain == ("workers a:1 lag 0.5ms cpu 10% · ⚠ b:2 lag 9.0ms cpu 99% · "
                                                "⚠ c:3 lost")
    assert workers_line(workers, 60).plain == "workers a:1 0.5ms 10% · ⚠ b:2 9.0ms 99% · ⚠ c:3 lost"
    assert workers_line(workers, 45).plain == "workers a:1 0.5ms 10% · ⚠ b:2 9.0ms 99% +1"
    assert workers_line(workers, 20).plain == "workers +3"
