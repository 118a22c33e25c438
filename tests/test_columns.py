"""Figures absorbed as records arrive give what figures absorbed at once give; the large-n interval."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from befori_tui.core import metrics
from befori_tui.core.levelstats import LevelRecords
from befori_tui.core.metrics import befori_interval_arrays, summarize_level
from befori_tui.ui.fixed import FixedRun, fixed_config, fixed_model


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


def _run(run: FixedRun):
    cfg = fixed_config()
    model = fixed_model(run, cfg)
    records = list(model.records)
    assert len(records) == model.finished_count  # the model's recent records hold the whole fixed run
    return cfg, model, records


def test_figures_absorbed_as_records_arrive_equal_those_absorbed_at_once():
    cfg, model, records = _run(FixedRun(levels=((4, 20.0), (16, 30.0)), error_every=13))
    now_ns = model.clock()
    level = model.levels[-1]
    mine = [r for r in records if r.level == level.index]
    growing = copy.copy(level)
    growing.records = LevelRecords()
    # The level's records arrive in four steps, summarised between them, as the screen does.
    for a, b in zip([0, *np.linspace(len(mine) // 4, len(mine), 4, dtype=int)[:-1]],
                    np.linspace(len(mine) // 4, len(mine), 4, dtype=int)):
        growing.records.extend(mine[a:b])
        upto = records.index(mine[b - 1]) + 1
        kept = summarize_level(growing, cfg.pricing, records[:upto], now_ns)
        at_once = copy.copy(level)
        at_once.records = LevelRecords()
        at_once.records.extend(mine[:b])
        fresh = summarize_level(at_once, cfg.pricing, records[:upto], now_ns)
        x, y = _flat(kept), _flat(fresh)
        assert x.keys() == y.keys()
        for k in x:
            assert x[k] == pytest.approx(y[k], rel=1e-9, abs=1e-12), k
    assert kept["requests_failed"] > 0 and kept["errors"]  # the failures were counted, by kind
    assert kept["requests_steady"] > 100


def test_occupancy_reads_only_requests_that_share_the_level():
    """Requests that ended before a level began cannot share its server time: leaving them out changes nothing."""
    cfg, model, records = _run(FixedRun(levels=((8, 30.0), (32, 20.0))))
    now_ns = model.clock()
    level = model.levels[-1]
    later = [r for r in records if r.t_end_ns >= level.t_start_ns]
    assert len(later) < len(records)
    a = summarize_level(level, cfg.pricing, records, now_ns)["occupancy"]
    b = summarize_level(level, cfg.pricing, later, now_ns)["occupancy"]
    for k in a:
        assert a[k] == pytest.approx(b[k], rel=1e-9, abs=1e-12), k


def _requests(n: int, seed: int = 3):
    rng = np.random.default_rng(seed)
    n_in = rng.lognormal(6.0, 0.4, n).round()
    n_out = rng.integers(20, 300, n).astype(float)
    ttft = 0.002 * n_in * rng.lognormal(0, 0.3, n)
    decode = 0.02 * n_out * rng.lognormal(0, 0.2, n)
    return n_in, n_out, ttft, decode


@pytest.mark.parametrize("n", [2500, 6000])
def test_the_large_n_interval_agrees_with_the_bootstrap(n, monkeypatch):
    n_in, n_out, ttft, decode = _requests(n)
    delta = befori_interval_arrays(n_in, n_out, ttft, decode, 64, 27.78)
    monkeypatch.setattr(metrics, "BOOTSTRAP_MAX_N", 10**9)
    boot = befori_interval_arrays(n_in, n_out, ttft, decode, 64, 27.78, rounds=2000)
    for name in ("input", "output"):
        mid = 27.78 / 3600 / 64 * 1e6 * (ttft if name == "input" else decode).mean() / (
            n_in if name == "input" else n_out).mean()
        width = boot[f"usd_per_million_{name}_hi"] - boot[f"usd_per_million_{name}_lo"]
        assert 0 < width < 0.2 * mid
        for end in ("lo", "hi"):
            key = f"usd_per_million_{name}_{end}"
            # Within a tenth of the interval's width, and far within the ±3% that "settled" asks.
            assert delta[key] == pytest.approx(boot[key], abs=0.1 * width), key
