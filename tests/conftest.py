"""Shared fixtures. Sim fixtures start real `befori-tui sim` subprocesses on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from befori_tui.sim.launch import SimProcess, start_sim

# Fast enough for tests, slow enough that engine steps stay well above event-loop jitter.
FAST_TIME_SCALE = 20.0


@pytest.fixture(scope="session")
def sim() -> Iterator[SimProcess]:
    """One shared fast simulator (llama-3.1-8b-1xh100, time_scale 20) for the whole session."""
    with start_sim(profile="llama-3.1-8b-1xh100", time_scale=FAST_TIME_SCALE) as proc:
        yield proc


@pytest.fixture
def sim_factory() -> Iterator[Callable[..., SimProcess]]:
    """`sim_factory(**start_sim_kwargs)` starts a simulator that is stopped at teardown."""
    started: list[SimProcess] = []

    def make(**kwargs: Any) -> SimProcess:
        kwargs.setdefault("profile", "llama-3.1-8b-1xh100")
        kwargs.setdefault("time_scale", FAST_TIME_SCALE)
        proc = start_sim(**kwargs)
        started.append(proc)
        return proc

    yield make
    for proc in started:
        proc.stop()
