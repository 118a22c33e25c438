"""Inter-token gaps counted per microsecond (core/gapcounts.py): numpy's percentiles to the microsecond, gaps
taken out again, a window kept up to date as it moves, and a level's ITL from its counts."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from befori_tui.core.columns import NONE_NS, RecordColumns
from befori_tui.core.gapcounts import DENSE_MAX_US, GapCounts, WindowGaps
from befori_tui.core.levelstats import LevelRecords
from befori_tui.core.loadgen import Level
from befori_tui.core.metrics import PERCENTILES, column_latency_stats, summarize_level
from tests.test_bounded import PRICING, S, _closed_loop

PS = (0, 1, 50, 90, 99, 99.9, 100)


def _gaps(n: int, seed: int = 0) -> np.ndarray:
    """ns: most near 20 ms, a tail to 300 ms, zeros (tokens in one read), and stalls past the bins."""
    rng = np.random.default_rng(seed)
    g = rng.lognormal(np.log(0.02), 0.3, n) * 1e9
    g[rng.integers(0, n, n // 50)] = rng.uniform(0.05, 0.3, n // 50) * 1e9
    g[rng.integers(0, n, n // 100)] = 0
    g[rng.integers(0, n, 5)] = rng.uniform(1.1, 40.0, 5) * 1e9
    return g.astype(np.int64)


def _exact_us(gaps_ns: np.ndarray, ps=PS) -> np.ndarray:
    return np.percentile((gaps_ns + 500) // 1000, ps) / 1e6


def test_percentiles_are_numpys_over_the_gaps_rounded_to_the_microsecond():
    g = _gaps(200_000)
    assert (g // 1000 >= DENSE_MAX_US).sum() >= 5  # some stalls are kept as values, beside the bins
    c = GapCounts.of(g)
    got = np.array(c.percentiles_s(PS))
    assert got == pytest.approx(_exact_us(g), rel=1e-12, abs=1e-12)
    raw = np.percentile(g, PS) / 1e9
    assert np.abs(got - raw).max() <= 0.5e-6 + 1e-12  # and within half a microsecond of the gaps as measured
    assert c.mean_s() == pytest.approx(g.mean() / 1e9, rel=1e-12)
    assert len(c) == len(g)
    one = GapCounts.of(np.array([20_123_456]))
    assert one.percentiles_s((50, 99)) == [0.020123, 0.020123]


def test_gaps_taken_out_leave_the_counts_of_those_left():
    g = _gaps(50_000, seed=1)
    c = GapCounts.of(g)
    rng = np.random.default_rng(2)
    out = rng.permutation(len(g))[:30_000]
    out = np.union1d(out, np.flatnonzero(g > 2e9)[:2])  # and some of the stalls
    c.remove(g[out])
    left = np.delete(g, out)
    fresh = GapCounts.of(left)
    assert len(c) == len(left) and c.sum_ns == int(left.sum())
    assert c.percentiles_s(PS) == fresh.percentiles_s(PS)
    assert np.array_equal(c.long_us, fresh.long_us)
    assert c.percentiles_s(PS) == pytest.approx(_exact_us(left), rel=1e-12)


def _columns(records) -> RecordColumns:
    return RecordColumns().add(records)


def test_a_window_kept_up_to_date_equals_the_window_counted_afresh_at_every_step():
    records = _closed_loop(32, 60.0, 0, 0, seed=3)
    cols = RecordColumns()
    window = WindowGaps()
    steps = 0
    for i in range(0, len(records), 300):  # the columns grow in place, as a level absorbs
        cols.append(_columns(records[i:i + 300]))
        now = int(cols.end.max())
        for width_s in (10.0, 25.0):  # and the window is widened and narrowed again
            mask = cols.ok() & (cols.first != NONE_NS) & (cols.end >= now - int(width_s * S))
            kept = window.update(cols, mask)
            fresh = GapCounts.of(cols.itl_of(mask))
            assert len(kept) == len(fresh) and kept.sum_ns == fresh.sum_ns
            assert kept.percentiles_s(PS) == fresh.percentiles_s(PS)
            steps += 1
    assert steps > 20
    # New columns (a level let its old rows go): counted afresh, not mixed with the old ones.
    smaller = cols.compress(cols.end >= int(cols.end.max()) - 5 * S)
    mask = smaller.ok() & (smaller.first != NONE_NS)
    assert window.update(smaller, mask).percentiles_s(PS) == GapCounts.of(smaller.itl_of(mask)).percentiles_s(PS)


def test_a_levels_itl_comes_from_its_counts_and_survives_the_trip_to_a_viewer():
    records = _closed_loop(64, 40.0, 0, 0, seed=4)
    level = Level(0, 64, 0, 64, t_end_ns=40 * S, sent=len(records), records=LevelRecords())
    for i in range(0, len(records), 500):
        level.records.extend(records[i:i + 500])
        level.records.absorb()
    s = summarize_level(level, PRICING)
    cols = level.records.cols
    steady = cols.steady() & (cols.first != NONE_NS)
    gaps = cols.itl_of(steady)
    assert len(gaps) > 100_000 and len(level.records.itl_counts) == len(gaps)
    for p in PERCENTILES:
        assert s[f"itl_s_p{p}"] == pytest.approx(np.percentile(gaps, p) / 1e9, abs=0.5e-6)
    assert s["itl_s_mean"] == pytest.approx(gaps.mean() / 1e9, rel=1e-12)
    # As a report computes it from the columns alone: the same figures.
    assert column_latency_stats(cols, cols.steady()) == pytest.approx(
        {k: v for k, v in s.items() if k in column_latency_stats(cols, cols.steady())}, rel=1e-12)
    viewer = Level(0, 64, 0, 64, t_end_ns=40 * S, sent=len(records), records=LevelRecords())
    viewer.records.load_state(copy.deepcopy(level.records.to_state()))
    v = summarize_level(viewer, PRICING)
    assert {k: v[k] for k in v if k.startswith("itl_s")} == {k: s[k] for k in s if k.startswith("itl_s")}


def test_a_level_past_its_size_lets_its_counts_go():
    records = _closed_loop(16, 60.0, 0, 0, seed=5)
    lr = LevelRecords(exact_max=1_000, recent_keep_s=5.0)
    for i in range(0, len(records), 400):
        lr.extend(records[i:i + 400])
        lr.absorb()
    assert not lr.exact and lr.itl_counts is None  # the level's ITL is its sketch's from here
