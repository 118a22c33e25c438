"""RunnerThread: the load loop on its own thread, driven from another through thread-safe calls."""

from __future__ import annotations

import queue
import threading
import time

from befori_tui.core.config import Config
from befori_tui.core.records import RequestRecord
from befori_tui.core.results import read_records
from befori_tui.core.runner_thread import (
    EV_END,
    EV_ERROR,
    EV_FINISH,
    EV_FIRST,
    EV_LEVEL,
    EV_LEVEL_END,
    EV_READY,
    EV_SAVED,
    EV_START,
    EV_SWEEP,
    QueueObserver,
    RunnerOptions,
    RunnerThread,
    SweepPlan,
    level_settled,
)


def drain(q: queue.SimpleQueue) -> list[tuple]:
    out = []
    while True:
        try:
            out.append(q.get_nowait())
        except queue.Empty:
            return out


def wait_for(cond, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def config(url: str) -> Config:
    cfg = Config()
    cfg.endpoint.url = url
    cfg.workload.input_tokens_mean, cfg.workload.output_tokens_mean = 100, 20
    return cfg


def test_runs_on_its_own_thread_and_obeys_calls_from_another(sim, tmp_path):
    out = tmp_path / "s.toml"
    rt = RunnerThread(config(sim.base_url), out, options=RunnerOptions(initial_concurrency=2, telemetry="none"))
    rt.start()
    assert rt.wait_ready(20)
    assert rt._thread is not threading.current_thread() and rt.loop is not None
    events: list[tuple] = []
    wait_for(lambda: events.extend(drain(rt.events)) or sum(e[0] == EV_END for e in events) >= 4)
    rt.set_concurrency(3)
    rt.pause()
    wait_for(lambda: rt.session.runner.paused and rt.session.runner.concurrency == 3)
    wait_for(lambda: not rt.session.runner.level.open)  # drained: a paused level ends
    rt.resume()  # a new level at the same concurrency
    rt.new_level()
    wait_for(lambda: len(rt.session.runner.levels) == 4)
    assert [lv.reason for lv in rt.session.runner.levels] == ["start", "user", "resume", "new"]
    path = rt.save().result(10)
    assert path == out and out.exists()
    rt.stop()
    assert rt.finished.wait(15) and rt.join(5)
    events += drain(rt.events)
    kinds = [e[0] for e in events]
    assert kinds[0] == EV_READY and kinds[-1] == EV_FINISH and EV_ERROR not in kinds
    assert [e[1].concurrency for e in events if e[0] == EV_LEVEL] == [2, 3, 3, 3]
    assert [e[1] for e in events if e[0] == EV_LEVEL_END] == [1]  # the paused level, when it drained
    starts = {e[1] for e in events if e[0] == EV_START}
    ends = [e[1].request_id for e in events if e[0] == EV_END]
    assert starts == set(ends) and len(ends) == len(set(ends))  # every request started ends once
    assert {e[1] for e in events if e[0] == EV_FIRST} <= starts
    assert sum(e[0] == EV_SAVED for e in events) >= 2  # the save asked for, and the one at stop
    assert len(read_records(out.with_suffix(".jsonl"))) == len(ends)
    rt.set_concurrency(5)  # after the end: ignored, not an error
    assert rt.save().exception(1) is not None


def test_a_setup_error_is_an_event_not_a_crash(tmp_path):
    rt = RunnerThread(config("http://127.0.0.1:9/v1"), tmp_path / "s.toml", options=RunnerOptions(telemetry="none"))
    rt.start()
    assert not rt.wait_ready(20)
    assert rt.join(10)
    kinds = [e[0] for e in drain(rt.events)]
    assert EV_ERROR in kinds and kinds[-1] == EV_FINISH
    assert "cannot reach" in rt.error


def test_observer_only_queues_small_tuples():
    q: queue.SimpleQueue = queue.SimpleQueue()
    obs = QueueObserver(q)
    r = RequestRecord(7, 3, 0, 4, t_send_ns=100)
    obs.on_request_start(r)
    r.t_first_token_ns = 150
    obs.on_first_token(r)
    obs.on_record(r)
    assert drain(q) == [(EV_START, 7, 3, 0, 100), (EV_FIRST, 7, 3, 150), (EV_END, r)]


def _records(n: int, jitter: float) -> list[RequestRecord]:
    out = []
    for i in range(n):
        f = 1 + jitter * ((i % 7) - 3) / 3
        r = RequestRecord(i, 0, 0, 4, t_send_ns=0, t_first_token_ns=int(0.1e9 * f), t_end_ns=int(2e9 * f),
                          input_tokens=500, output_tokens=100)
        out.append(r)
    return out


def test_level_settled_needs_enough_requests_and_a_tight_interval():
    assert level_settled(_records(40, 0.01), 4, 27.78, 16)
    assert not level_settled(_records(10, 0.01), 4, 27.78, 16)  # too few
    assert not level_settled(_records(40, 0.6), 4, 27.78, 16)  # too spread
    assert not level_settled(_records(40, 0.01), 4, 0.0, 16)  # no price, no $/M


def test_a_stop_before_the_loop_exists_is_not_lost(sim, tmp_path):
    from befori_tui.core.config import Config
    from befori_tui.core.runner_thread import RunnerThread

    cfg = Config()
    cfg.endpoint.url = sim.base_url
    runner = RunnerThread(cfg, tmp_path / "early.toml")
    runner.stop()  # before start(): no loop yet
    runner.start()
    assert runner.join(20), "the thread should end by itself"
    assert (tmp_path / "early.toml").exists()
    assert runner.session.runner is None or not any(lv.records for lv in runner.session.runner.levels)


def test_a_settle_sweep_with_a_time_cap_moves_on_and_says_the_level_did_not_settle(sim, tmp_path):
    # min_settle_requests so high that no level can settle: only the 1 s cap moves the sweep on.
    plan = SweepPlan([1, 2], seconds=1.0, until_settled=True, min_settle_requests=10**6)
    rt = RunnerThread(config(sim.base_url), tmp_path / "cap.toml", options=RunnerOptions(sweep=plan, telemetry="none"))
    rt.start()
    assert rt.wait_ready(20)
    events: list[tuple] = []
    wait_for(lambda: events.extend(drain(rt.events)) or any(e[0] == EV_SWEEP and "sweep done" in e[1]
                                                             for e in events))
    rt.stop()
    assert rt.finished.wait(15) and rt.join(5)
    sweep_lines = [e[1] for e in events if e[0] == EV_SWEEP]
    assert sweep_lines[0] == "level not settled in 1 s · sweep to c=2", sweep_lines
    levels = rt.session.runner.levels
    assert [lv.concurrency for lv in levels] == [1, 2]
    assert 1.0 <= levels[0].duration_s() < 3.0
