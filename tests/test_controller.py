"""The run controller — the one level policy behind `bench` and the monitor — and the event socket that
viewers attach to. Against the fast simulator on 127.0.0.1, with real Unix sockets."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path
import subprocess
import sys
import time
import tomllib

import msgspec
import pytest

from befori_tui.core import events as ev
from befori_tui.core.config import Config
from befori_tui.core.controller import RunController, RunPlan, level_settled
from befori_tui.core.levelstats import LevelRecords
from befori_tui.core.records import RequestRecord
from befori_tui.core.runlink import LinkClosed, RunLink, resolve_target
from tests.runs import start_run


def config(url: str, concurrency: int = 1, workers: int = 1) -> Config:
    cfg = Config()
    cfg.endpoint.url = url
    cfg.load.concurrency = [concurrency]
    cfg.load.workers = workers
    cfg.workload.input_tokens_mean, cfg.workload.output_tokens_mean = 100, 20
    return cfg


def wait_for(cond, timeout_s: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def drain(link: RunLink) -> list:
    out = []
    while not link.events.empty():
        out.append(link.events.get_nowait())
    return out


# --- the level policy -------------------------------------------------------------------------------------

def run_plan(cfg: Config, tmp_path, plan: RunPlan) -> RunController:
    controller = RunController(cfg, tmp_path / "p.toml", plan=plan, telemetry="none")
    seen: list = []
    controller.listeners.append(seen.append)
    controller.seen = seen
    asyncio.run(controller.run())
    return controller


@pytest.mark.parametrize("workers", [1, 2], ids=["one load process", "two load processes"])
def test_a_plan_by_requests_steps_through_its_levels_then_stops(sim, tmp_path, workers):
    c = run_plan(config(sim.base_url, 1, workers), tmp_path, RunPlan([1, 3], requests=6))
    assert c.ended_by == "completed" and c.exit_code == 0
    levels = c.session.runner.levels
    assert [(lv.concurrency, lv.reason) for lv in levels] == [(1, "start"), (3, "sweep")]
    assert all(lv.measured_done >= 6 for lv in levels)
    kinds = [type(e).__name__ for e in c.seen]
    assert kinds[0] == "Connecting" and kinds[-1] == "Finished"
    assert kinds.index("Ready") < kinds.index("LevelOpened")
    data = tomllib.loads((tmp_path / "p.toml").read_text())
    assert data["ended_by"] == "completed" and len(data["levels"]) == 2


def test_a_settle_plan_with_a_cap_moves_on_and_says_the_level_did_not_settle(sim, tmp_path):
    # min_settle_requests so high that no level can settle: only the 1 s cap moves the plan on.
    c = run_plan(config(sim.base_url), tmp_path, RunPlan([1, 2], seconds=1.0, until_settled=True,
                                                         min_settle_requests=10**6))
    notes = [e.text for e in c.seen if isinstance(e, ev.SweepNote)]
    assert notes == ["level not settled in 1 s · sweep to c=2"], notes
    levels = c.session.runner.levels
    assert [lv.concurrency for lv in levels] == [1, 2]
    assert 1.0 <= levels[0].duration_s() < 3.0 and c.ended_by == "completed"


def test_a_monitors_run_sends_nothing_until_its_screen_is_up_or_its_wait_is_over(sim, tmp_path):
    """The monitor's run waits for its viewer's first screen (ScreenReady, over the socket) before its first
    request, so that the viewer's start-up does not shape the warm-up; at most wait_for_screen_s."""
    run = start_run(config(sim.base_url, 2), tmp_path / "w.toml", wait_for_screen_s=60)
    c = run.controller
    wait_for(lambda: c.session.runner is not None, what="the run's setup")
    time.sleep(1.0)
    assert not c.session.runner.levels, "it sent before the screen was up"
    link = RunLink(run.socket_path)
    link.connect()
    assert link.send(ev.ScreenReady())
    wait_for(lambda: c.session.runner.levels and c.session.runner.level.sent > 0, what="the first requests")
    c.stop("quit")
    assert run.join(15)
    link.close()
    # A screen that never says so: the run starts anyway when its wait is over.
    t0 = time.monotonic()
    run = start_run(config(sim.base_url, 2), tmp_path / "x.toml", wait_for_screen_s=1.0)
    c = run.controller
    wait_for(lambda: c.session.runner is not None and c.session.runner.levels, what="the first level")
    assert time.monotonic() - t0 >= 1.0
    c.stop("quit")
    assert run.join(15)


def test_a_sweep_that_pauses_when_done_waits_and_a_stop_ends_it(sim, tmp_path):
    run = start_run(config(sim.base_url), tmp_path / "s.toml", RunPlan([1, 2], requests=3, then="pause"))
    c = run.controller
    wait_for(lambda: c.paused_by == "sweep", what="the sweep to pause")
    wait_for(lambda: not c.session.runner.level.open, what="the paused level to drain and end")
    c.stop("quit")
    assert run.join(15)
    assert c.ended_by == "quit" and c.exit_code == 0
    assert [lv.concurrency for lv in c.session.runner.levels] == [1, 2]


@pytest.mark.parametrize("workers", [1, 2], ids=["one load process", "two load processes"])
def test_commands_change_the_run_and_a_user_level_is_measured_by_the_plans_rule(sim, tmp_path, workers):
    run = start_run(config(sim.base_url, 1, workers), tmp_path / "u.toml", RunPlan([1, 8], seconds=1.0,
                                                                                 then="pause"))
    c = run.controller
    wait_for(lambda: c.session.runner is not None and c.session.runner.levels, what="the first level")
    c.submit(ev.SetConcurrency(2))  # steps in: c=2 lasts 1 s too, then the plan goes on to 8
    wait_for(lambda: c.paused_by == "sweep", timeout_s=20, what="the plan to finish")
    wait_for(lambda: not c.session.runner.level.open, what="the paused level to drain and end")
    c.submit(ev.Resume())
    wait_for(lambda: len(c.session.runner.levels) == 4, what="a level after resuming")
    c.submit(ev.NewLevel())
    wait_for(lambda: len(c.session.runner.levels) == 5, what="a new level")
    c.stop("quit")
    assert run.join(15)
    assert [(lv.concurrency, lv.reason) for lv in c.session.runner.levels] == [
        (1, "start"), (2, "user"), (8, "sweep"), (8, "resume"), (8, "new")]
    assert c.session.runner.levels[1].duration_s() >= 1.0
    check_accounting(tmp_path / "u.toml")


def check_accounting(out) -> tuple[dict, list[dict]]:
    """Every request sent is in the raw records exactly once, in its level, on a slot below its concurrency."""
    data = tomllib.loads(out.read_text())
    raw = [json.loads(line) for line in out.with_suffix(".jsonl").read_text().splitlines()]
    ids = [r["request_id"] for r in raw]
    assert len(ids) == len(set(ids))
    assert len(raw) == sum(lv["requests_sent"] for lv in data["levels"])
    for lv in data["levels"]:
        mine = [r for r in raw if r["level"] == lv["level"]]
        assert len(mine) == lv["requests_sent"]
        assert all(0 <= r["slot"] < lv["concurrency"] and r["concurrency"] == lv["concurrency"] for r in mine)
    return data, raw


def test_a_load_process_that_dies_is_said_its_requests_are_lost_once_and_the_others_go_on(sim, tmp_path):
    import signal as sig

    out = tmp_path / "k.toml"
    cfg = config(sim.base_url, 4, workers=2)
    cfg.workload.output_tokens_mean = 200  # long requests: some are in flight when the process dies
    run = start_run(cfg, out, RunPlan([4], then="hold"))
    c = run.controller
    notes: list = []
    c.listeners.append(lambda e: notes.append(e.text) if isinstance(e, ev.Note) else None)
    wait_for(lambda: c.session.runner is not None and c.session.runner.levels
             and len(c.session.runner.in_flight) >= 4, what="requests in flight in both processes")
    pool = c.session.runner
    victim = pool.processes[1]
    doomed = {rid for rid in pool.in_flight if rid % 2 == 1}
    assert doomed
    victim.proc.send_signal(sig.SIGKILL)
    wait_for(lambda: any("load process 1 ended" in n for n in notes), what="the run to say so")
    wait_for(lambda: len(pool.levels) == 2 and len(pool.levels[1].records) >= 4, what="the load to go on")
    c.stop("quit")
    assert run.join(20)
    data, raw = check_accounting(out)
    assert data["load"]["load_processes"] == 2 and data["load"]["load_processes_lost"] == 1
    lost = [r for r in raw if r["error_kind"] == "lost"]
    # Those in flight there when it died, each once. (Not exactly `doomed`: on a busy box a request of it may
    # end, and the slot's next start, between that look and the kill.)
    lost_ids = [r["request_id"] for r in lost]
    assert lost_ids and len(lost_ids) == len(set(lost_ids)) == victim.requests_lost
    assert all(rid % 2 == 1 and rid >= min(doomed) for rid in lost_ids), (lost_ids, doomed)
    assert [(lv["concurrency"], lv["reason"]) for lv in data["levels"]] == [(4, "start"), (4, "lost-process")]
    after = [r for r in raw if r["level"] == 1 and r["error_kind"] is None]
    assert after and all(r["request_id"] % 2 == 0 for r in after)  # the survivor carried the new level
    assert "lost" in data["levels"][0]["errors"]


def test_a_setup_error_ends_the_run_with_its_reason_and_exit_code_2(tmp_path):
    c = run_plan(config("http://127.0.0.1:9/v1"), tmp_path, RunPlan([1], requests=1))
    assert c.ended_by == "setup" and c.exit_code == 2
    assert "cannot reach" in c.error
    assert isinstance(c.seen[-1], ev.Finished) and c.seen[-1].exit_code == 2


def test_a_stop_before_the_run_starts_sends_nothing_and_saves(sim, tmp_path):
    controller = RunController(config(sim.base_url), tmp_path / "early.toml", plan=RunPlan([1], requests=5),
                               telemetry="none")
    controller.stop("quit")
    asyncio.run(controller.run())
    assert controller.ended_by == "quit"
    assert tomllib.loads((tmp_path / "early.toml").read_text())["ended_by"] == "quit"
    assert controller.session.runner is None or not controller.session.runner.levels


def _records(n: int, jitter: float) -> LevelRecords:
    out = LevelRecords()
    for i in range(n):
        f = 1 + jitter * ((i % 7) - 3) / 3
        out.append(RequestRecord(i, 0, 0, 4, t_send_ns=0, t_first_token_ns=int(0.1e9 * f), t_end_ns=int(2e9 * f),
                                 input_tokens=500, output_tokens=100))
    return out


def test_level_settled_needs_enough_requests_and_a_tight_interval():
    assert level_settled(_records(40, 0.01), 4, 27.78, 16)
    assert not level_settled(_records(10, 0.01), 4, 27.78, 16)  # too few
    assert not level_settled(_records(40, 0.6), 4, 27.78, 16)  # too spread
    assert not level_settled(_records(40, 0.01), 4, 0.0, 16)  # no price, no $/M


def test_bench_sweeps_until_settled_with_a_cap(sim, tmp_path):
    out = tmp_path / "settle.toml"
    proc = subprocess.run([sys.executable, "-m", "befori_tui", "bench", "--url", sim.base_url, "--concurrency", "1,2",
                           "--sweep-until-settled", "--seconds-per-level", "1.5", "--input-tokens", "100",
                           "--output-tokens", "20", "--telemetry", "none", "--out", str(out)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    data = tomllib.loads(out.read_text())
    assert [lv["concurrency"] for lv in data["levels"]] == [1, 2]
    assert "sweep to c=2" in proc.stderr and ("settled" in proc.stderr)
    assert data["levels"][0]["duration_s"] <= 2.5  # settled, or cut at the 1.5 s cap


# --- events on the wire ----------------------------------------------------------------------------------

def test_a_record_survives_the_wire_exactly():
    from array import array

    r = RequestRecord(7, 3, 1, 4, t_send_ns=10, t_first_token_ns=150, t_end_ns=900, itl_ns=array("q", [5, 6, 2**40]),
                      input_tokens=12, output_tokens=3, http_status=200, server_timing={"t_received_ns": 11})
    batch = ev.decode_batch(ev.encode_batch(99, [ev.RequestEnded(ev.record_to_wire(r))])[4:])
    back = ev.record_from_wire(batch.events[0].record)
    assert back.to_json_dict() == r.to_json_dict() and batch.sent_ns == 99


def test_a_frame_of_another_kind_is_a_protocol_error_not_a_crash():
    with pytest.raises(ev.ProtocolError):
        ev.decode_batch(b"\x93\x01\x02\x03")
    with pytest.raises(ev.ProtocolError):
        ev.decode_command(ev.encode_batch(1, [])[4:])


def test_the_clock_offset_keeps_the_least_delayed_batch():
    off = ev.ClockOffset()
    for sent, received in ((100, 180), (200, 230), (300, 400)):
        off.observe(sent, received)
    assert off.offset_ns == 30


# --- attaching ---------------------------------------------------------------------------------------------

def test_viewers_attach_see_the_history_change_the_run_and_leave_without_stopping_it(sim, tmp_path):
    out = tmp_path / "a.toml"
    run = start_run(config(sim.base_url, 2), out, RunPlan([2], then="hold"))
    c = run.controller
    wait_for(lambda: c.session.runner is not None and sum(len(lv.records) for lv in c.session.runner.levels) >= 6,
             what="some history")
    sock = run.socket_path
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600  # private to this user
    assert resolve_target(str(out)) == [{"socket": str(sock)}]

    first = RunLink(sock)
    hello = first.connect()
    assert hello.schema_version == ev.SCHEMA_VERSION and hello.results == str(out.absolute())
    assert hello.pricing.usd_per_hour == c.cfg.pricing.usd_per_hour  # the viewer prices with the run's price
    wait_for(lambda: first.events.qsize() >= 8, what="the history")
    history = drain(first)
    # The history: each level as the run holds it (columns, aggregates), not one event per request.
    held = sum(msgspec.msgpack.decode(e.state)["absorbed"] for e in history if isinstance(e, ev.LevelState))
    assert held >= 6 and isinstance(history[0], ev.Ready)
    assert any(isinstance(e, ev.LedgerState) for e in history)
    assert [e.concurrency for e in history if isinstance(e, ev.LevelOpened)] == [2]

    first.send(ev.SetConcurrency(4))  # a viewer raises the concurrency: every viewer hears of it
    wait_for(lambda: c.session.runner.concurrency == 4, what="the new concurrency")
    wait_for(lambda: history.extend(drain(first)) or any(isinstance(e, ev.LevelOpened) and e.concurrency == 4
                                                         for e in history), what="the first viewer to hear of it")
    second = RunLink(sock)
    second.connect()
    first.close()  # leaving changes nothing
    time.sleep(0.5)
    assert not c.finished.is_set() and c.session.runner.concurrency == 4

    later = []
    wait_for(lambda: later.extend(drain(second)) or any(isinstance(e, ev.LevelOpened) and e.concurrency == 4
                                                        for e in later), what="the second viewer's history")
    second.send(ev.Stop("quit"))
    assert run.join(15)
    wait_for(lambda: later.extend(drain(second)) or any(isinstance(e, LinkClosed) for e in later),
             what="the end of the stream")
    finished = [e for e in later if isinstance(e, ev.Finished)]
    saves = [e for e in later if isinstance(e, ev.Saved)]
    assert len(finished) == 1 and finished[0].ended_by == "quit"
    # Every request the second viewer heard of ended exactly once — in the levels it received, or after —
    # and the file holds them all.
    ids = [e.record.request_id for e in later if isinstance(e, ev.RequestEnded)]
    assert len(ids) == len(set(ids))
    held = sum(msgspec.msgpack.decode(e.state)["absorbed"] for e in later if isinstance(e, ev.LevelState))
    raw = [json.loads(line) for line in out.with_suffix(".jsonl").read_text().splitlines()]
    assert set(ids) <= {r["request_id"] for r in raw}
    assert held + len(ids) == len(raw)
    assert saves[-1].requests_written == len(raw)
    assert not sock.exists()


def test_attach_to_a_bench_run_started_in_the_background(sim, tmp_path):
    """`bench` publishes its events too: a viewer attaches by the results folder, sees the levels, leaves."""
    out = tmp_path / "bg" / "b.toml"
    out.parent.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "befori_tui", "bench", "--url", sim.base_url, "--concurrency",
                             "2,4", "--seconds-per-level", "2", "--input-tokens", "100", "--output-tokens", "20",
                             "--telemetry", "none", "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: resolve_target(str(out.parent)) != [], timeout_s=20, what="the bench's socket")
        runs = resolve_target(str(out.parent))
        link = RunLink(runs[0]["socket"])
        link.connect()
        seen: list = []
        wait_for(lambda: seen.extend(drain(link)) or any(isinstance(e, ev.RequestEnded) for e in seen),
                 what="requests")
        link.close()
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    data = tomllib.loads(out.read_text())
    assert [lv["concurrency"] for lv in data["levels"]] == [2, 4] and data["ended_by"] == "completed"


def test_child_processes_import_this_befori_tui_not_one_in_the_current_folder(sim, tmp_path, monkeypatch):
    """The run process, load processes and the simulator are started with `python -m`: a befori_tui folder in
    the user's current folder (another checkout, an older version) must not be what they import."""
    decoy = tmp_path / "befori_tui"
    (decoy / "core").mkdir(parents=True)
    (decoy / "__init__.py").write_text("raise ImportError('the decoy was imported')\n")
    (decoy / "core" / "__init__.py").write_text("")
    monkeypatch.chdir(tmp_path)
    befori = Path(sys.executable).parent / "befori-tui"
    proc = subprocess.run([str(befori), "bench", "--concurrency", "2", "--requests-per-level", "4", "--workers", "2",
                           "--output-tokens", "8", "--time-scale", "20", "--telemetry", "none", "--out", "b.toml"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]  # the simulator and both load processes started
    from befori_tui.core.runproc import RunSpec, new_run_id, spawn_run
    from befori_tui.ui.monitor import connect_to_new_run

    cfg = config(sim.base_url, 1)
    run_id = new_run_id()
    spec = RunSpec(cfg, tmp_path / "m.toml", None, RunPlan([1], then="hold"), tmp_path / "m.sock", run_id,
                   telemetry="none")
    run, log = spawn_run(spec)
    link = connect_to_new_run(spec.socket_path, run, log)  # the run process came up
    link.send(ev.Stop("quit"))
    assert run.wait(20) == 0


def test_a_run_whose_every_load_process_died_ends_as_an_error_and_saves(sim, tmp_path):
    import signal as sig

    out = tmp_path / "all.toml"
    run = start_run(config(sim.base_url, 2, workers=2), out, RunPlan([2], then="hold"))
    c = run.controller
    wait_for(lambda: c.session.runner is not None and c.session.runner.levels
             and sum(len(lv.records) for lv in c.session.runner.levels) >= 2, what="requests")
    for p in c.session.runner.processes:
        p.proc.send_signal(sig.SIGKILL)
    assert run.join(20), "the run should end by itself"
    assert c.ended_by == "error" and c.exit_code == 1
    data, raw = check_accounting(out)
    assert data["ended_by"] == "error" and data["load"]["load_processes_lost"] == 2


def test_a_plan_that_holds_a_concurrency_twice_measures_it_twice_and_ends(sim, tmp_path):
    c = run_plan(config(sim.base_url), tmp_path, RunPlan([2, 2, 1], requests=4))
    assert c.ended_by == "completed"
    assert [(lv.concurrency, lv.reason) for lv in c.session.runner.levels] == [(2, "start"), (2, "sweep"),
                                                                              (1, "sweep")]


def test_a_viewer_starts_the_optimum_search_from_the_current_level(sim, tmp_path):
    """The monitor's `o`: a holding run becomes a search from its level, which ends paused at the answer."""
    cfg = config(sim.base_url, 2)
    cfg.load.max_concurrency = 4
    controller = RunController(cfg, tmp_path / "o.toml", plan=RunPlan([2], then="hold", max_requests=8),
                               telemetry="none")
    seen: list = []
    controller.listeners.append(seen.append)
    thread = __import__("threading").Thread(target=lambda: asyncio.run(controller.run()))
    thread.start()
    try:
        wait_for(lambda: controller.session.runner is not None and controller.session.runner.levels
                 and controller.session.runner.level.measured_done >= 2, what="the first requests")
        controller.submit(ev.FindOptimum())
        wait_for(lambda: controller.paused_by == "sweep", timeout_s=60, what="the search to end")
    finally:
        controller.stop()
        thread.join(30)
    levels = controller.session.runner.levels
    assert levels[1].reason == "search" and levels[1].concurrency == 2
    assert max(lv.concurrency for lv in levels) <= 4  # never past load.max_concurrency
    notes = [e.text for e in seen if isinstance(e, ev.SweepNote)]
    assert notes[0] == "searching for the cheapest concurrency from c=2"
    assert any(n.startswith("search done: cheapest c=") for n in notes), notes
    data = tomllib.loads((tmp_path / "o.toml").read_text())
    assert data["optimum"]["found"] and data["search"]["ended_because"].startswith("cheapest c=")


def test_an_open_loop_run_changes_its_rate_when_a_viewer_asks(sim, tmp_path):
    """The monitor's + and - in the open loop: SetRate opens a level at the new rate."""
    cfg = config(sim.base_url)
    cfg.load.rate, cfg.load.max_in_flight = [40.0], 8
    controller = RunController(cfg, tmp_path / "r.toml", plan=RunPlan([8], then="hold", rates=[40.0]),
                               telemetry="none")
    thread = __import__("threading").Thread(target=lambda: asyncio.run(controller.run()))
    thread.start()
    try:
        wait_for(lambda: controller.session.runner is not None and controller.session.runner.levels
                 and controller.session.runner.level.measured_done >= 3, what="the first requests")
        controller.submit(ev.SetRate(80.0))
        wait_for(lambda: len(controller.session.runner.levels) == 2
                 and controller.session.runner.level.measured_done >= 3, what="the new rate's requests")
    finally:
        controller.stop()
        thread.join(30)
    levels = controller.session.runner.levels
    assert [(lv.rate_per_s, lv.reason, lv.concurrency) for lv in levels] == [(40.0, "start", 8), (80.0, "user", 8)]
