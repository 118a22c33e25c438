from __future__ import annotations

import pytest

from befori_tui.core.config import PricingConfig
from befori_tui.core.loadgen import Level
from befori_tui.core.metrics import summarize_level
from befori_tui.core.records import RequestRecord

S = 10**9


def rec(rid, send_s, ttft_s, e2e_s, n_in, n_out, gaps_s=(), **kw) -> RequestRecord:
    r = RequestRecord(rid, rid % 2, 0, 2, t_send_ns=int(send_s * S), t_first_token_ns=int((send_s + ttft_s) * S),
                      t_end_ns=int((send_s + e2e_s) * S), input_tokens=n_in, output_tokens=n_out,
                      itl_ns=[int(g * S) for g in gaps_s], **kw)
    return r


def test_level_figures_hand_computed():
    records = [
        rec(0, 0.0, 1.0, 3.0, 100, 5, (0.5, 0.5, 0.5, 0.5), warmup=True),
        rec(1, 0.0, 1.0, 5.0, 100, 9, (0.5,) * 8),
        rec(2, 3.0, 2.0, 6.0, 200, 5, (1.0,) * 4),
        rec(3, 5.0, 1.0, 3.0, 300, 3, (1.0, 1.0)),
        RequestRecord(4, 1, 0, 2, t_send_ns=6 * S, t_end_ns=7 * S, error_kind="http_status", error_message="HTTP 500"),
    ]
    level = Level(0, 2, 0, warmup_target=1, t_end_ns=8 * S, sent=5, records=records)
    s = summarize_level(level, PricingConfig(usd_per_hour=3600.0, blend_input_per_output=1.0), records)
    assert (s["requests_sent"], s["requests_ok"], s["requests_failed"], s["requests_steady"]) == (5, 4, 1, 3)
    assert s["errors"] == {"http_status": 1}
    # Steady requests 1-3: TTFT 1, 2, 1; E2E 5, 6, 3; N_in 100, 200, 300; N_out 9, 5, 3.
    assert s["ttft_s_mean"] == pytest.approx(4 / 3)
    assert s["ttft_s_p50"] == pytest.approx(1.0)
    assert s["e2e_s_mean"] == pytest.approx(14 / 3)
    assert s["itl_s_p50"] == pytest.approx(0.5)  # 8 gaps of 0.5 s, 6 of 1.0 s
    assert s["tpot_s_mean"] == pytest.approx((4 / 8 + 4 / 4 + 2 / 2) / 3)
    assert s["input_tokens_mean"] == pytest.approx(200)
    # befori: T_in = 2·200/(4/3) = 300 tok/s; $1/s → $1/300 per input token.
    assert s["input_tok_per_s"] == pytest.approx(300)
    assert s["usd_per_input_token"] == pytest.approx(1 / 300)
    # T_out = 2·(17/3)/(14/3 − 4/3) = 3.4 tok/s
    assert s["output_tok_per_s"] == pytest.approx(3.4)
    assert s["usd_per_million_blended"] == pytest.approx((1e6 / 300 + 1e6 / 3.4) / 2)
    occ = s["occupancy"]
    assert occ["usd_bill"] == pytest.approx(8.0)
    assert occ["usd_input"] + occ["usd_output"] + occ["usd_failed"] + occ["usd_idle"] == pytest.approx(8.0)
    assert occ["usd_failed"] == pytest.approx(1 / 3)  # 6–7 s shared with requests 2 and 3
    assert occ["usd_idle"] == pytest.approx(0.0)  # something is in flight all through 0–8 s


def test_throughput_is_closed_loop_rate():
    records = [rec(i, float(i), 1.0, 4.0, 100, 10) for i in range(6)]
    level = Level(0, 2, 0, warmup_target=0, t_end_ns=20 * S, sent=6, records=records)
    s = summarize_level(level, PricingConfig(), records)
    assert s["requests_per_s"] == pytest.approx(0.5)  # 2 slots, 4 s per request
    assert s["output_tok_per_s_total"] == pytest.approx(5.0)
    assert s["input_tok_per_s_total"] == pytest.approx(50.0)


def test_records_keep_gaps_compactly_and_round_trip():
    import json
    import tracemalloc

    tracemalloc.start()
    r = RequestRecord(1, 0, 0, 1)
    for i in range(150):
        r.itl_ns.append(12_000_000 + i * 1_000)
    size, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert size < 3000  # a list of 150 distinct ints would take over 5 kB
    back = RequestRecord.from_json_dict(json.loads(json.dumps(r.to_json_dict())))
    assert list(back.itl_ns) == list(r.itl_ns)


def test_throughput_counts_only_the_slot_time_that_served_ok_requests():
    """Two slots: 5 s of ok requests (1 s each), then the server is gone — each slot's request fails in 10 ms
    and it backs off 1 s, five times. 10 ok requests in 10 s is 1 request/s, not R / mean(E2E) = 2."""
    records, rid = [], 0
    for slot in (0, 1):
        for i in range(5):
            records.append(RequestRecord(rid, slot, 0, 2, t_send_ns=i * S, t_first_token_ns=i * S + S // 10,
                                         t_end_ns=(i + 1) * S, input_tokens=100, output_tokens=10))
            rid += 1
        for i in range(5):
            t = (5 + i) * S
            records.append(RequestRecord(rid, slot, 0, 2, t_send_ns=t, t_end_ns=t + S // 100,
                                         error_kind="connect", error_message="refused"))
            rid += 1
    level = Level(0, 2, 0, warmup_target=0, t_end_ns=10 * S, sent=rid, records=records)
    s = summarize_level(level, PricingConfig(), records)
    assert s["slot_time_ok_share"] == pytest.approx(5 / (5 + 4 + 0.01))  # the last failure has no next send
    assert s["requests_per_s"] == pytest.approx(2 * s["slot_time_ok_share"] / 1.0)
    assert 0.9 < s["requests_per_s"] < 1.2
    assert s["output_tok_per_s_total"] == pytest.approx(10 * s["requests_per_s"])
