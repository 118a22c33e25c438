from __future__ import annotations

import numpy as np
import pytest

from befori_tui.core.cost import befori_cost, blended_usd_per_million, occupancy, occupancy_window


def test_befori_example_from_the_brief():
    # H = 27.78 $/h, R = 64, N_in = 63.8844, TTFT = 83.8888 s → T_in = 48.74 tok/s, 0.000158 $/input token.
    c = befori_cost(27.78, 64, 63.8844, 83.8888, 148.0688, 1126.9538)
    assert c.input_tok_per_s == pytest.approx(48.7383, abs=1e-4)
    assert c.usd_per_input_token == pytest.approx(0.000158, abs=5e-7)
    assert c.usd_per_million_input == pytest.approx(158.33, abs=0.01)


# The published table's prices imply H = 27.7776 $/h (3.4722 $/GPU-h × 8), which the brief rounds to 27.78.
SEED_USD_PER_HOUR = 27.7776
# Ori's published DBRX table (docs/dbrx-seed.md): concurrency, N_in, TTFT, T_in, $/input token.
SEED_INPUT = [
    (1, 65.1000, 47.4256, 1.3727, 0.005621),
    (8, 63.7625, 50.0456, 10.1927, 0.000757),
    (32, 63.7531, 61.0651, 33.4086, 0.000231),
    (64, 63.8844, 83.8888, 48.7383, 0.000158),
    (512, 63.6953, 1051.1940, 31.0238, 0.000249),
]
# Its output table: concurrency, N_out, E2E, TTFT, T_out, $/output token.
SEED_OUTPUT = [
    (1, 121.1000, 611.1326, 47.4256, 0.2148, 0.0359173),
    (8, 146.9000, 1025.8838, 50.0456, 1.2043, 0.0064071),
    (32, 148.0688, 1126.9538, 61.0651, 4.4453, 0.0017358),
]


@pytest.mark.parametrize("r,n_in,ttft,t_in,usd", SEED_INPUT)
def test_reproduces_the_published_input_table(r, n_in, ttft, t_in, usd):
    c = befori_cost(SEED_USD_PER_HOUR, r, n_in, ttft, 100, ttft + 100)
    assert c.input_tok_per_s == pytest.approx(t_in, abs=1e-4)
    assert round(c.usd_per_input_token, 6) == pytest.approx(usd)  # published to 6 decimals


@pytest.mark.parametrize("r,n_out,e2e,ttft,t_out,usd", SEED_OUTPUT)
def test_reproduces_the_published_output_table(r, n_out, e2e, ttft, t_out, usd):
    c = befori_cost(SEED_USD_PER_HOUR, r, 64, ttft, n_out, e2e)
    assert c.output_tok_per_s == pytest.approx(t_out, abs=1e-4)
    assert c.usd_per_output_token == pytest.approx(usd, rel=5e-5)  # the post rounds by hand


def test_occupancy_hand_computed():
    # $1 per second. A: 0–4 s, first token at 1. B: 0–3 s, first at 2. C: 5–7 s, first at 6. Window 0–8 s.
    s = np.array([0, 0, 5], dtype=np.int64) * 10**9
    f = np.array([1, 2, 6], dtype=np.int64) * 10**9
    e = np.array([4, 3, 7], dtype=np.int64) * 10**9
    occ = occupancy(s, f, e, usd_per_hour=3600.0)
    assert occ.usd_input.tolist() == pytest.approx([0.5, 1.0, 1.0])
    assert occ.usd_output.tolist() == pytest.approx([2.0, 0.5, 1.0])
    w = occupancy_window(occ, s, f, e, np.zeros(3, bool), 0, 8 * 10**9)
    assert w == pytest.approx({"usd_bill": 8.0, "usd_input": 2.5, "usd_output": 3.5, "usd_failed": 0.0, "usd_idle": 2.0})


def test_occupancy_sums_to_the_bill_in_any_window():
    rng = np.random.default_rng(1)
    n = 500
    s = rng.integers(0, 10**10, n)
    e = s + rng.integers(1, 10**9, n)
    f = s + ((e - s) * rng.random(n)).astype(np.int64)
    failed = rng.random(n) < 0.1
    occ = occupancy(s, f, e, usd_per_hour=27.78)
    for t0, t1 in [(0, 11 * 10**9), (3 * 10**9, 4 * 10**9), (-10**9, 2 * 10**10)]:
        w = occupancy_window(occ, s, f, e, failed, t0, t1)
        assert w["usd_input"] + w["usd_output"] + w["usd_failed"] + w["usd_idle"] == pytest.approx(w["usd_bill"], rel=1e-9)
        assert w["usd_idle"] >= -1e-12
    # Over the whole run, the per-request shares are the busy part of the bill.
    total = occupancy_window(occ, s, f, e, np.zeros(n, bool), int(s.min()), int(e.max()))
    assert occ.usd_input.sum() + occ.usd_output.sum() == pytest.approx(total["usd_input"] + total["usd_output"])


def test_blended_price():
    assert blended_usd_per_million(1.0, 5.0, 3.0) == pytest.approx(2.0)
    assert blended_usd_per_million(0.75, 2.25, 3.0) == pytest.approx(1.125)  # Databricks' DBRX blend ≈ $1.13
