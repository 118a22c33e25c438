"""Bounded memory (docs/results.md, "Bounded memory"): sketch percentiles against exact ones, figures past a
level's size against the exact figures of the same requests, the occupancy ledger folded against unfolded,
and a level handed to a viewer that attaches."""

from __future__ import annotations

import copy
import random
from array import array

import msgspec
import numpy as np
import pytest

from befori_tui.core.config import PricingConfig
from befori_tui.core.ledger import OccupancyLedger
from befori_tui.core.levelstats import LevelRecords
from befori_tui.core.loadgen import Level
from befori_tui.core.metrics import summarize_level, turn_stats
from befori_tui.core.records import RequestRecord
from befori_tui.core.sketch import RELATIVE_ERROR, Sketch
from befori_tui.core.slo import SloTarget

S = 10**9
PRICING = PricingConfig(usd_per_hour=98.32, blend_input_per_output=3.0)
SLO = [SloTarget("ttft", 99, 0.25), SloTarget("itl", 90, 0.021)]


def _latencies(n: int, seed: int = 1) -> np.ndarray:
    """A long-tailed mix: most requests near 100 ms, a slow tenth near 900 ms (a queue), a few stragglers."""
    rng = np.random.default_rng(seed)
    fast = rng.lognormal(np.log(0.1), 0.25, int(n * 0.9))
    slow = rng.lognormal(np.log(0.9), 0.4, n - len(fast) - n // 200)
    straggle = rng.uniform(5, 30, n // 200)
    return rng.permutation(np.concatenate([fast, slow, straggle]))


def test_sketch_percentiles_are_within_the_stated_error_of_exact_ones_on_100k_latencies():
    values = _latencies(100_000)
    sk = Sketch()
    sk.add_many(values)
    assert sk.count == len(values)
    assert sk.mean == pytest.approx(values.mean(), rel=1e-12)  # means are exact sums, not sketched
    for q in (0.5, 0.9, 0.99, 0.999):
        # The sketch answers with (within 1% of) an order statistic; numpy interpolates between two neighbours.
        lo, hi = np.quantile(values, q, method="lower"), np.quantile(values, q, method="higher")
        got = sk.quantile(q)
        assert lo * (1 - RELATIVE_ERROR) <= got <= hi * (1 + RELATIVE_ERROR), q
        assert abs(got / np.quantile(values, q) - 1) < 0.02, q  # and it can fail: 2% would be a real miss


def test_add_many_puts_values_in_the_buckets_the_package_itself_would():
    from ddsketch import DDSketch

    values = np.concatenate([_latencies(5_000, seed=4), [0.0, 0.0, 1e-12, 3600.0, -0.002]])
    ours, theirs = Sketch(), DDSketch(relative_accuracy=RELATIVE_ERROR)
    ours.add_many(values)
    for v in values.tolist():
        theirs.add(v)
    assert (ours.dd.count, ours.dd.sum, ours.dd._min, ours.dd._max) == pytest.approx(
        (theirs.count, theirs.sum, theirs._min, theirs._max), rel=1e-12)
    # numpy's log2 and the package's math.log may differ in the last bit: at most a value on a bucket's edge
    # lands in its neighbour.
    moved = sum(abs(a - b) for a, b in zip(ours.dd._store.bins, theirs._store.bins))
    assert ours.dd._store.offset == theirs._store.offset and moved <= 2
    for q in np.linspace(0, 1, 41):
        assert ours.quantile(q) == pytest.approx(theirs.get_quantile_value(q), rel=2 * RELATIVE_ERROR)


def test_sketches_merge_exactly_and_survive_the_trip_to_a_viewer():
    values = _latencies(20_000, seed=2)
    whole, a, b = Sketch(), Sketch(), Sketch()
    whole.add_many(values)
    a.add_many(values[:7_000])  # two workers' shares
    b.add_many(values[7_000:])
    a.merge(b)
    trip = Sketch.from_state(msgspec.msgpack.decode(msgspec.msgpack.encode(whole.to_state())))
    for q in np.linspace(0, 1, 101):
        assert a.quantile(q) == whole.quantile(q) == trip.quantile(q)
    assert (a.count, trip.count) == (whole.count, whole.count)
    empty = Sketch.from_state(Sketch().to_state())
    empty.add_many(np.array([0.5]))
    assert empty.quantile(0.5) == pytest.approx(0.5, rel=RELATIVE_ERROR)


def _closed_loop(n_slots: int, seconds: float, level: int, t0_ns: int, seed: int, fail_every: int = 41,
                 turns: bool = True) -> list[RequestRecord]:
    """A closed loop's requests, in the order they end: ok ones with gaps between tokens, failures, a
    warm-up request per slot, conversations of three turns, and requests that outlive the level."""
    rnd = random.Random(seed)
    out = []
    rid = level * 10**7
    end_ns = t0_ns + int(seconds * S)
    for slot in range(n_slots):
        t = t0_ns + rnd.randrange(0, 20_000_000)
        first_of_slot = True
        while t < end_ns:
            n_in = rnd.randint(50, 900)
            n_out = rnd.randint(2, 40)
            ttft_ns = int((0.02 + n_in / 20_000) * rnd.lognormvariate(0, 0.3) * S)
            gaps = [int(rnd.uniform(0.015, 0.025) * S) for _ in range(n_out - 1)]
            r = RequestRecord(rid, slot, level, n_slots, t_send_ns=t, input_tokens=n_in, input_tokens_source="usage",
                              output_tokens=n_out, output_tokens_source="usage", content_chunks=n_out)
            rid += 1
            if rid % fail_every == 0:
                r.t_end_ns = t + int(rnd.uniform(0.01, 0.3) * S)
                r.error_kind, r.http_status, r.error_message = ("http_status", 503, "HTTP 503") if rid % 2 else (
                    "timeout", None, "timed out")
                r.output_tokens = None
            else:
                r.t_first_token_ns = t + ttft_ns
                r.itl_ns = array("q", gaps)
                r.t_end_ns = r.t_first_token_ns + sum(gaps)
                if turns:
                    r.turn = 1 + rid % 3
                    r.server_timing = {"cached_tokens": 30 * (r.turn - 1)}
            r.warmup = first_of_slot
            r.outlived_level = r.t_end_ns > end_ns
            first_of_slot = False
            out.append(r)
            t = r.t_end_ns + rnd.randrange(100_000, 2_000_000)
    return sorted(out, key=lambda r: r.t_end_ns)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


PERCENTILE_KEYS = ("_p50", "_p90", "_p99")


def test_a_level_past_its_size_gives_the_exact_figures_within_the_sketch_error():
    records = _closed_loop(64, 150.0, 0, 0, seed=5)
    assert len(records) > 12_000
    exact_level = Level(0, 64, 0, 64, t_end_ns=150 * S, sent=len(records),
                        records=LevelRecords(exact_max=10**9))
    bounded_level = Level(0, 64, 0, 64, t_end_ns=150 * S, sent=len(records),
                          records=LevelRecords(exact_max=2_000, recent_keep_s=5.0))
    for i in range(0, len(records), 700):  # absorbed in batches, as every second of a run
        exact_level.records.extend(records[i:i + 700])
        bounded_level.records.extend(records[i:i + 700])
        bounded_level.records.watch_slo(SLO)
        bounded_level.records.absorb()
    assert not bounded_level.records.exact and exact_level.records.absorb().exact
    assert len(bounded_level.records.cols) < 3_000  # only the last seconds' requests are kept as columns
    exact = summarize_level(exact_level, PRICING, records, slo=SLO)
    bounded = summarize_level(bounded_level, PRICING, records, slo=SLO)
    assert bounded.pop("figures_from") == "sketches" and "figures_from" not in exact
    a, b = _flat(exact), _flat(bounded)
    assert a.keys() == b.keys()
    for k in a:
        if k.endswith(PERCENTILE_KEYS) and not k.startswith(("input_tokens", "output_tokens")):
            assert b[k] == pytest.approx(a[k], rel=RELATIVE_ERROR * 1.5), k
        elif k.endswith(PERCENTILE_KEYS):  # token counts: integers, within the error of one
            assert b[k] == pytest.approx(a[k], rel=RELATIVE_ERROR, abs=1.0), k
        elif isinstance(a[k], float):
            assert b[k] == pytest.approx(a[k], rel=1e-9), k  # counts, means, rates, $/M, interval, SLO, occupancy
        else:
            assert b[k] == a[k], k
    assert exact["requests_failed"] > 100 and exact["requests_steady"] > 10_000
    assert 0 < exact["slo_share_met"] < 1
    # Per-turn figures too.
    ta, tb = turn_stats(exact_level.records), turn_stats(bounded_level.records)
    assert [t["turn"] for t in ta] == [t["turn"] for t in tb] == [1, 2, 3]
    for x, y in zip(ta, tb):
        assert (x["requests"], x["cached_tokens_mean"]) == (y["requests"], y["cached_tokens_mean"])
        assert y["input_tokens_mean"] == pytest.approx(x["input_tokens_mean"], rel=1e-12)
        assert y["ttft_s_p99"] == pytest.approx(x["ttft_s_p99"], rel=RELATIVE_ERROR * 1.5)


def _levels_and_records():
    """Three levels of a run back to back; requests of one level outlive it into the next."""
    levels, records, t = [], [], 0
    for i, (c, seconds) in enumerate(((8, 40.0), (32, 30.0), (16, 40.0))):
        rs = _closed_loop(c, seconds, i, t, seed=10 + i, turns=False)
        levels.append(Level(i, c, t, c, t_end_ns=t + int(seconds * S), sent=len(rs), records=rs))
        records.extend(rs)
        t += int(seconds * S)
    return levels, sorted(records, key=lambda r: r.t_end_ns)


def test_the_occupancy_ledger_folded_as_the_run_goes_gives_the_unfolded_bill():
    levels, records = _levels_and_records()
    t_stop = levels[-1].t_end_ns
    whole = OccupancyLedger(max_rows=10**9)
    folding = OccupancyLedger(max_rows=300)
    # Replay the run: every simulated second, the requests that ended hand over, and the ledger settles
    # with the send time of the oldest request still in flight as its watermark.
    i = 0
    for now in range(S, t_stop + 5 * S, S):
        while i < len(records) and records[i].t_end_ns <= now:
            whole.append(records[i])
            folding.append(records[i])
            i += 1
        in_flight = [r.t_send_ns for r in records[i:] if r.t_send_ns <= now]
        live = [lv for lv in levels if lv.t_start_ns <= now]
        shown = [copy.copy(lv) for lv in live]
        for lv in shown:
            lv.t_end_ns = lv.t_end_ns if lv.t_end_ns <= now else None  # a level's end is known once it has come
        folding.settle(shown, min(in_flight, default=now))
    assert folding.folded > len(records) // 2
    assert len(folding.rows["send"]) < len(records) // 4
    for lv in levels:
        a = summarize_level(lv, PRICING, whole, t_stop)["occupancy"]
        b = summarize_level(lv, PRICING, folding, t_stop)["occupancy"]
        assert a.keys() == b.keys() and "usd_per_million_input" in a
        for k in a:
            assert b[k] == pytest.approx(a[k], rel=1e-9, abs=1e-12), (lv.index, k)
        # The bill is split in full: input + output + failed + idle.
        assert a["usd_input"] + a["usd_output"] + a["usd_failed"] + a["usd_idle"] == pytest.approx(a["usd_bill"])


def test_a_level_and_the_ledger_handed_to_a_viewer_give_the_same_figures():
    levels, records = _levels_and_records()
    run_ledger = OccupancyLedger(max_rows=300)
    for r in records:
        run_ledger.append(r)
    run_ledger.settle(levels, records[-1].t_end_ns - 10 * S)
    assert run_ledger.folded
    wire = lambda state: msgspec.msgpack.decode(msgspec.msgpack.encode(state))  # noqa: E731
    viewer_ledger = OccupancyLedger()
    viewer_ledger.load_state(wire(run_ledger.to_state()))
    for lv in levels:
        lv.records.exact_max = 1_000  # past its size: the viewer gets sketches, not requests
        lv.records.watch_slo(SLO)
        theirs = copy.copy(lv)
        theirs.records = LevelRecords()
        theirs.records.load_state(wire(lv.records.to_state()))
        a = _flat(summarize_level(lv, PRICING, run_ledger, slo=SLO))
        b = _flat(summarize_level(theirs, PRICING, viewer_ledger, slo=SLO))
        assert a == b
    assert not levels[1].records.exact


def test_a_window_longer_than_what_a_long_level_kept_starts_where_it_kept():
    """Past its size a viewer's level keeps the window's columns only; widened (w) or just attached, the
    window counts over what it holds — not 60 s of time over 20 s of requests (rates a third of the truth)."""
    from befori_tui.ui.model import window_stats

    records = _closed_loop(16, 60.0, 0, 0, seed=7, turns=False)
    level = Level(0, 16, 0, 16, sent=len(records), records=LevelRecords(exact_max=500, recent_keep_s=20.0))
    level.records.extend(records)
    lr = level.records.absorb()
    assert not lr.exact and lr.kept_since_ns is not None
    now = max(r.t_end_ns for r in records)
    w = window_stats(level, lr.cols, now, 60.0)
    assert w["span_s"] == pytest.approx((now - lr.kept_since_ns) / 1e9) and w["span_s"] < 25
    assert w["requests_ok"] == sum(1 for r in records if r.ok and r.t_end_ns >= lr.kept_since_ns)


def test_a_viewer_that_attaches_past_the_size_shows_the_runs_figures():
    """The events a run sends a viewer that attaches (core/controller.py's snapshot) rebuild, in the viewer's
    model, the figures the run itself computes — for levels past their size, whose requests it no longer holds."""
    from befori_tui.core import events as ev
    from befori_tui.core.controller import level_opened
    from befori_tui.ui.model import LiveModel, SummaryCache

    levels, records = _levels_and_records()
    ledger = OccupancyLedger(max_rows=300)
    for lv in levels:
        lv.records.exact_max, lv.records.recent_keep_s = 1_000, 0.0  # as the run process keeps them
    for r in records:
        ledger.append(r)
    now = records[-1].t_end_ns
    ledger.settle(levels, now - 10 * S)
    events = []
    for lv in levels:
        events.append(level_opened(lv))
        events.append(ev.LevelState(lv.index, lv.sent, lv.measured_done, msgspec.msgpack.encode(lv.records.to_state())))
    events.append(ev.LedgerState(msgspec.msgpack.encode(ledger.to_state())))
    events.append(ev.LevelEnded(levels[-1].index, levels[-1].t_end_ns))  # the others end as the next opens
    wire = msgspec.msgpack.decode(ev.encode_batch(0, events)[4:], type=ev.Batch).events  # as the socket carries them
    model = LiveModel(PRICING, clock=lambda: now)
    for e in wire:
        model.apply(e)
    assert model.finished_count == len(records)
    shown = SummaryCache().compute(*model.snapshot()[:1], model.snapshot()[1], [], PRICING, now, 60.0)
    for lv, mine in zip(levels, shown.levels):
        theirs = summarize_level(lv, PRICING, ledger, now)
        assert _flat(mine) == _flat(theirs), lv.index
        assert (mine.get("figures_from") == "sketches") == (len(lv.records) > 1_000)
    assert sum(len(lv.records) > 1_000 for lv in levels) >= 2


def test_a_viewer_that_attached_late_counts_its_window_over_what_it_holds():
    """The run keeps no columns past the size; a viewer that attaches then holds only what ends after: its
    window must count over that, even after its own let-go (which keeps more time than it has)."""
    from befori_tui.ui.model import window_stats

    records = _closed_loop(16, 90.0, 0, 0, seed=8, turns=False)
    cut = len(records) // 2  # then more than 1,000 end after the attach: the viewer lets go of columns too
    run = LevelRecords(exact_max=500, recent_keep_s=0.0)
    run.extend(records[:cut])
    state = msgspec.msgpack.decode(msgspec.msgpack.encode(run.to_state()))
    level = Level(0, 16, 0, 16, sent=len(records), records=LevelRecords(exact_max=500, recent_keep_s=70.0))
    level.records.load_state(state)
    attached = level.records.kept_since_ns
    assert attached >= records[cut - 1].t_end_ns - 1
    for r in records[cut:]:  # what ends after the attach, in batches, with the viewer's own let-go
        level.records.append(r)
        if r.request_id % 50 == 0:
            level.records.absorb()
    lr = level.records.absorb()
    now = records[-1].t_end_ns
    w = window_stats(level, lr.cols, now, 60.0)
    assert lr.kept_since_ns == attached and w["span_cut_by"] == "kept"
    assert w["span_s"] == pytest.approx((now - attached) / 1e9)
    assert w["requests_ok"] == sum(1 for r in records if r.ok and r.t_end_ns >= attached)
