"""The open loop (`--rate`): arrivals at a rate, a cap on requests in flight, and the befori method with the
mean number in flight (Little's law) as R. Against the fast simulator."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tomllib

import numpy as np
import pytest

from befori_tui.core.loadgen import LoadRunner


def bench(tmp_path, *args: str) -> tuple[dict, list[dict]]:
    out = tmp_path / "open.toml"
    proc = subprocess.run([sys.executable, "-m", "befori_tui", "bench", "--input-tokens", "32:0", "--output-tokens",
                           "4", "--out", str(out), *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = [json.loads(line) for line in out.with_suffix(".jsonl").read_text().splitlines() if line.strip()]
    return tomllib.loads(out.read_text()), records


def test_arrival_rate_below_capacity_is_the_one_asked(sim, tmp_path):
    data, records = bench(tmp_path, "--url", sim.base_url, "--rate", "250", "--requests-per-level", "2000",
                          "--warmup-requests", "0")
    sends = np.sort([r["t_send_ns"] for r in records]) / 1e9
    assert len(sends) >= 2000
    rate = (len(sends) - 1) / (sends[-1] - sends[0])
    assert rate == pytest.approx(250, rel=0.02)
    (lv,) = data["levels"]
    assert lv["rate_per_s"] == 250 and lv["arrival_rate_per_s"] == pytest.approx(250, rel=0.02)
    # Below capacity the cap (256) is far above the mean in flight: (almost) no arrival waited for it.
    assert lv["mean_in_flight"] < 128 and lv["requests_delayed_by_cap"] <= 0.02 * len(sends)
    # The befori method with R = L = λ·W (Little's law).
    # (to what the file holds: times to the µs, a 3 ms E2E to about 2e-4 of itself)
    assert lv["mean_in_flight"] == pytest.approx(lv["arrival_rate_per_s"] * lv["e2e_s_mean"], rel=1e-3)
    assert lv["input_tok_per_s"] == pytest.approx(lv["mean_in_flight"] * lv["input_tokens_mean"] / lv["ttft_s_mean"],
                                                  rel=1e-3)


def test_the_cap_on_requests_in_flight_holds(sim, tmp_path):
    data, records = bench(tmp_path, "--url", sim.base_url, "--rate", "2000", "--requests-per-level", "150",
                          "--max-in-flight", "3", "--output-tokens", "24")
    events = sorted([(r["t_send_ns"], 1) for r in records] + [(r["t_end_ns"], -1) for r in records],
                    key=lambda e: (e[0], e[1]))  # an end before a send at the same instant
    in_flight = np.cumsum([d for _, d in events])
    assert in_flight.max() <= 3
    assert data["levels"][0]["requests_delayed_by_cap"] > 0
    assert {r["slot"] for r in records} <= {0, 1, 2}


def test_gaps_are_poisson_or_gamma_with_the_asked_mean():
    runner = LoadRunner.__new__(LoadRunner)
    for burstiness in (1.0, 0.25):
        runner.burstiness = burstiness
        gaps = np.array([g for _ in range(100) for g in runner.arrival_gaps_s(random.Random(_), 10.0)])
        assert gaps.mean() == pytest.approx(0.1, rel=1e-9)  # every block has the exact mean
        cv = gaps.std() / gaps.mean()
        assert cv == pytest.approx(burstiness ** -0.5, rel=0.1)  # exponential: 1; gamma(k): 1/√k


def test_bad_rate_input_is_one_line(tmp_path):
    for args, text in ((["--rate", "0"], "--rate"), (["--rate", "5", "--workers", "2"], "load.rate"),
                       (["--burstiness", "0"], "load.burstiness")):
        proc = subprocess.run([sys.executable, "-m", "befori_tui", "bench", *args], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 2 and text in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
