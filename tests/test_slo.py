"""Latency targets: parsing, what a request and a level meeting them means, and the per-level figures."""

from __future__ import annotations

import subprocess
import sys
from array import array

import pytest

from befori_tui.core.columns import RecordColumns
from befori_tui.core.config import ConfigError, PricingConfig, load_config
from befori_tui.core.loadgen import Level
from befori_tui.core.metrics import summarize_level
from befori_tui.core.records import RequestRecord
from befori_tui.core.slo import SloError, SloTarget, level_meets, parse_slo, requests_meeting

MS = 10**6


def test_parse_slo():
    t = parse_slo("ttft_p99=2s, itl_p99=60ms,e2e_p50=30")
    assert t == [SloTarget("ttft", 99, 2.0), SloTarget("itl", 99, 0.06), SloTarget("e2e", 50, 30.0)]
    assert ",".join(x.text() for x in t) == "ttft_p99=2s,itl_p99=60ms,e2e_p50=30s"
    for bad in ("ttft_p95=2s", "ttft=2s", "ttft_p99", "ttft_p99=-1s", "ttft_p99=2 h", ""):
        with pytest.raises(SloError):
            parse_slo(bad)


def test_slo_config_table(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[slo]\nttft_p99 = "2s"\nitl_p90 = 0.05\n')
    assert load_config(p).slo == [SloTarget("ttft", 99, 2.0), SloTarget("itl", 90, 0.05)]
    p.write_text('[slo]\nttft_p98 = "2s"\n')
    with pytest.raises(ConfigError, match="c.toml: slo.*ttft_p98"):
        load_config(p)


def _record(rid, ttft_ms, gaps_ms, *, error=None, warmup=False):
    send = rid * 10**10
    first = send + ttft_ms * MS
    end = first + sum(gaps_ms) * MS
    return RequestRecord(rid, 0, 0, 1, t_send_ns=send, t_first_token_ns=None if error else first, t_end_ns=end,
                         itl_ns=array("q", [g * MS for g in gaps_ms]), input_tokens=100,
                         output_tokens=len(gaps_ms) + 1, error_kind=error, warmup=warmup)


def test_a_request_meets_when_its_own_figures_do():
    # ITL p90 of a request is its own 90th percentile gap: [10]*9 + [100] → p90 = 19 ms (numpy's linear).
    recs = [_record(1, 100, [10] * 10), _record(2, 300, [10] * 10), _record(3, 100, [10] * 9 + [100]),
            _record(4, 100, [10] * 10, error="http_status")]
    cols = RecordColumns().add(recs)
    every = cols.ok() | ~cols.ok()
    assert requests_meeting(cols, every, [SloTarget("ttft", 99, 0.2)]).tolist() == [True, False, True, False]
    assert requests_meeting(cols, every, [SloTarget("itl", 90, 0.018)]).tolist() == [True, True, False, False]
    assert requests_meeting(cols, every, [SloTarget("itl", 90, 0.020)]).tolist() == [True, True, True, False]
    assert requests_meeting(cols, every, [SloTarget("e2e", 99, 0.25)]).tolist() == [True, False, False, False]


def test_level_figures():
    recs = [_record(i, 100 if i % 4 else 300, [10] * 10) for i in range(1, 41)]  # every 4th: TTFT 300 ms
    recs.append(_record(99, 100, [10] * 10, error="timeout"))
    level = Level(0, 1, 0, 0)
    level.records.extend(recs)
    level.t_end_ns = max(r.t_end_ns for r in recs)
    s = summarize_level(level, PricingConfig(usd_per_hour=3.6), recs, slo=[SloTarget("ttft", 50, 0.2)])
    assert s["requests_met_slo"] == 30
    assert s["slo_share_met"] == pytest.approx(30 / 41)  # the failure counts, and meets nothing
    assert s["slo_met"] is True  # the level's median TTFT is 100 ms
    assert s["goodput_requests_per_s"] == pytest.approx(s["requests_per_s"] * 30 / 40)
    assert s["goodput_output_tok_per_s"] == pytest.approx(s["goodput_requests_per_s"] * 11)
    # Same bill, three quarters of the tokens.
    assert s["usd_per_million_input_slo"] == pytest.approx(s["usd_per_million_input"] * 40 / 30)
    s99 = summarize_level(level, PricingConfig(usd_per_hour=3.6), recs, slo=[SloTarget("ttft", 99, 0.2)])
    assert s99["slo_met"] is False and s99["slo_missed"] == ["ttft_p99 300ms > 200ms"]
    assert level_meets({"ttft_s_p99": 0.1}, [SloTarget("itl", 99, 1)]) is None  # not known yet


def test_bad_slo_flag_is_one_line():
    proc = subprocess.run([sys.executable, "-m", "befori_tui", "bench", "--slo", "ttft_p99=fast"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--slo ttft_p99" in proc.stderr
