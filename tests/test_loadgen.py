"""The closed loop against a real `befori-tui sim`: slots, live concurrency changes, levels, warm-up."""

from __future__ import annotations

import asyncio
from pathlib import Path

from befori_tui.core.config import Config
from befori_tui.core.observer import NullObserver
from befori_tui.core.session import Session


class Recorder(NullObserver):
    def __init__(self) -> None:
        self.levels = []
        self.started = []
        self.first = 0

    def on_level_change(self, old, new):
        self.levels.append((old.index if old else None, new.index, new.concurrency))

    def on_request_start(self, record):
        self.started.append(record.request_id)

    def on_first_token(self, record):
        self.first += 1


def make_cfg(url: str) -> Config:
    cfg = Config()
    cfg.endpoint.url = url
    cfg.workload.input_tokens_mean, cfg.workload.input_tokens_sd = 64, 0
    cfg.workload.output_tokens_mean = 40
    cfg.load.requests_per_level = 10
    return cfg


async def test_closed_loop_keeps_exactly_n_in_flight(sim, tmp_path: Path):
    session = Session(make_cfg(sim.base_url), tmp_path / "s.toml", max_slots=16)
    runner = await session.open()
    peak = 0
    runner.start(6)
    for _ in range(200):
        await asyncio.sleep(0.005)
        peak = max(peak, len(runner.in_flight))
        assert len(runner.in_flight) <= 6
    assert peak == 6
    await session.close()
    slots = {r.slot for r in session.raw_records()}
    assert slots == set(range(6))


async def test_concurrency_changes_open_levels_and_removed_slots_stop(sim, tmp_path: Path):
    obs = Recorder()
    session = Session(make_cfg(sim.base_url), tmp_path / "s.toml", max_slots=16)
    runner = await session.open(obs)
    runner.start(2)
    assert await runner.wait_level(requests=5)
    runner.set_concurrency(8)
    assert await runner.wait_level(requests=10)
    assert len(runner.in_flight) == 8
    runner.set_concurrency(3)
    assert await runner.wait_level(requests=10)
    # Removed slots finished their request and stopped: only slots 0-2 still send.
    assert {r.slot for r in runner.in_flight.values()} <= {0, 1, 2}
    runner.new_level()
    assert runner.level.concurrency == 3 and runner.level.reason == "new"
    await session.close()
    assert obs.levels == [(None, 0, 2), (0, 1, 8), (1, 2, 3), (2, 3, 3)]
    levels = runner.levels
    # Warm-up: the first request of each slot in a level; outlived: still running when the level changed.
    assert levels[1].records.absorb().cols.warmup.sum() == 8
    assert levels[0].records.absorb().cols.outlived.any()
    assert all((lv.records.absorb().cols.level == lv.index).all() for lv in levels)
    assert obs.first >= sum(lv.measured_done for lv in levels)
    # Every request sent is recorded once, with an outcome.
    ids = [r.request_id for r in session.raw_records()]
    assert sorted(ids) == sorted(obs.started) and len(ids) == len(set(ids))


async def test_pause_stops_new_requests(sim, tmp_path: Path):
    session = Session(make_cfg(sim.base_url), tmp_path / "s.toml", max_slots=4)
    runner = await session.open()
    runner.start(4)
    await runner.wait_level(requests=4)
    runner.pause()
    for _ in range(400):
        if not runner.in_flight:
            break
        await asyncio.sleep(0.01)
    sent = runner.level.sent
    await asyncio.sleep(0.2)
    assert runner.level.sent == sent and not runner.in_flight
    runner.resume()
    await runner.wait_level(requests=12)
    assert runner.level.sent > sent
    await session.close()


async def test_seconds_per_level(sim, tmp_path: Path):
    from befori_tui.core.controller import RunController, RunPlan

    controller = RunController(make_cfg(sim.base_url), tmp_path / "s.toml", plan=RunPlan([1, 2], seconds=0.4),
                               telemetry="none")
    assert await controller.run() == 0 and controller.ended_by == "completed"
    assert [round(lv.duration_s(), 1) for lv in controller.session.runner.levels] == [0.4, 0.4]
