"""The optimum search (core/search.py): pure decisions on made-up cost curves, then `bench --find-optimum`
against the simulator with a profile whose cost minimum the engine model gives (tests/fixtures/knee-profile.toml)."""

from __future__ import annotations

import math
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from befori_tui.core.optimum import find_optimum
from befori_tui.core.search import OptimumSearch
from befori_tui.core.slo import parse_slo
from befori_tui.sim.profile import load_profile

KNEE_PROFILE = Path(__file__).parent / "fixtures" / "knee-profile.toml"


def level(c: int, usd: float, ttft_p99: float = 0.1) -> dict:
    return {"level": 0, "concurrency": c, "requests_steady": 50, "usd_per_million_input": usd,
            "usd_per_million_output": usd * 10, "ttft_s_p99": ttft_p99}


def drive(search: OptimumSearch, cost, ttft=lambda c: 0.1) -> list[int]:
    """Run the search on a cost curve; the concurrencies it measured, in order."""
    seen: list[dict] = []
    order = []
    c = search.next(seen)
    while c is not None:
        order.append(c)
        seen.append({**level(c, cost(c), ttft(c)), "level": len(seen)})
        c = search.next(seen)
    return order


def curve(c: float) -> float:  # least at c = 37
    return 100 / c + c / 37 * 100 / 37


@pytest.mark.parametrize("start", [1, 5, 300])
def test_finds_the_minimum_within_tolerance(start):
    s = OptimumSearch(start=start, max_concurrency=1024, by="input")
    order = drive(s, curve)
    best = min(order, key=curve)
    assert abs(best - 37) <= 0.1 * 37, (order, s.done_reason)
    assert len(order) <= 16, order  # bounded: log2 steps up, then bisection
    assert "bracketed" in s.done_reason
    assert max(order) <= 1024


def test_never_past_the_cap():
    s = OptimumSearch(start=1, max_concurrency=20, by="input")
    order = drive(s, curve)
    assert max(order) == 20 and "cap c=20" in s.done_reason
    assert min(order, key=curve) == 20


def test_slo_the_minimum_misses():
    # TTFT p99 grows with c: 2 s at c=25, so c=37 misses a 2 s target; the cheapest meeting it is c≤25.
    ttft = lambda c: 2.0 * c / 25  # noqa: E731
    s = OptimumSearch(start=1, max_concurrency=1024, by="input", slo=parse_slo("ttft_p99=2s"))
    order = drive(s, curve, ttft)
    meeting = [c for c in order if ttft(c) <= 2.0]
    best = min(meeting, key=curve)
    assert 23 <= best <= 25, order
    failing_above = [c for c in order if c > best and ttft(c) > 2.0]
    assert failing_above and min(failing_above) <= best * 1.1 + 1  # the SLO's edge is bracketed


def test_slo_nothing_meets():
    s = OptimumSearch(start=8, by="input", slo=parse_slo("ttft_p99=1s"))
    order = drive(s, curve, lambda c: 5.0)
    assert order == [8, 4, 2, 1]  # down until c=1 misses too
    assert s.done_reason == "no level meets the SLO, not even c=1"


def run_search(tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "search.toml"
    proc = subprocess.run([sys.executable, "-m", "befori_tui", "bench", "--profile", str(KNEE_PROFILE),
                           "--time-scale", "5", "--find-optimum", "--concurrency", "4", "--max-concurrency", "24",
                           "--requests-per-level", "16", "--input-tokens", "32:0", "--output-tokens", "16",
                           "--optimum-by", "output", "--max-seconds", "120", "--out", str(out), *extra],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc, tomllib.loads(out.read_text())


@pytest.fixture(scope="module")
def unconstrained(tmp_path_factory):
    return run_search(tmp_path_factory.mktemp("search"))


def test_sim_search_finds_the_models_minimum(unconstrained):
    proc, data = unconstrained
    model_c = load_profile(str(KNEE_PROFILE)).cheapest_output_concurrency()
    assert model_c == 16
    opt = data["optimum"]
    assert opt["found"] and abs(opt["concurrency"] - model_c) <= 0.1 * model_c, proc.stderr[-3000:]
    assert len(data["levels"]) <= 12
    assert max(lv["concurrency"] for lv in data["levels"]) <= 24  # load.max_concurrency
    assert "bracketed" in data["search"]["ended_because"]
    assert proc.stdout.strip().splitlines()[-1].startswith(f"Cheapest level (by output $/M): c={opt['concurrency']} ")
    # The answer is the pure function's over the saved levels.
    assert find_optimum(data["levels"], by="output")["concurrency"] == opt["concurrency"]


def test_sim_search_with_an_slo_the_minimum_misses(unconstrained, tmp_path):
    _, free = unconstrained
    by_c = {lv["concurrency"]: lv for lv in free["levels"]}
    best = free["optimum"]["concurrency"]
    # A median-ITL limit between c=8's and the minimum's (the step time grows 2 ms a sequence in this profile).
    limit_s = math.sqrt(by_c[8]["itl_s_p50"] * by_c[best]["itl_s_p50"])
    proc, data = run_search(tmp_path, "--slo", f"itl_p50={limit_s * 1e3:.3f}ms")
    opt = data["optimum"]
    assert opt["found"], proc.stderr[-3000:]
    chosen = next(lv for lv in data["levels"] if lv["concurrency"] == opt["concurrency"])
    assert chosen["slo_met"] and chosen["itl_s_p50"] <= limit_s * 1.0001
    assert opt["concurrency"] < best
    # It is the cheapest of the measured levels that meet the SLO; the unconstrained minimum, measured again
    # here, misses it.
    meeting = [lv for lv in data["levels"] if lv.get("slo_met")]
    assert min(meeting, key=lambda lv: lv["usd_per_million_output"])["concurrency"] == opt["concurrency"]
    again = [lv for lv in data["levels"] if lv["concurrency"] == best]
    assert all(not lv["slo_met"] for lv in again)
    # The SLO's edge is bracketed: the first level above the highest meeting one misses, within the tolerance
    # (or with no integer left between).
    top, miss = opt["max_concurrency_meeting_slo"], opt["min_concurrency_missing_slo"]
    assert miss <= max(top * 1.1, top + 1)


def test_sim_search_when_nothing_meets(tmp_path):
    proc, data = run_search(tmp_path, "--slo", "ttft_p99=0.01ms", "--concurrency", "2",
                             "--requests-per-level", "6")
    assert data["optimum"]["found"] is False
    assert [lv["concurrency"] for lv in data["levels"]] == [2, 1]
    assert "No optimum: no level meets the SLO (ttft_p99=0.01ms)" in proc.stdout


def test_the_search_runs_over_rates_too():
    # Open loop: $/M falls with the rate until the server stops keeping up (arrivals wait for the cap).
    def level_at(rate: float, k: int) -> dict:
        return {"level": k, "concurrency": 64, "rate_per_s": rate, "requests_steady": 100, "requests_sent": 100,
                "requests_delayed_by_cap": 0 if rate <= 50 else 30, "usd_per_million_input": 100 / rate,
                "usd_per_million_output": 1000 / rate, "ttft_s_p99": 0.1}

    s = OptimumSearch(start=5.0, by="input", x="rate_per_s", max_concurrency=10**6)
    seen: list[dict] = []
    r = s.next(seen)
    while r is not None:
        seen.append(level_at(r, len(seen)))
        r = s.next(seen)
    opt = find_optimum(seen, by="input")
    assert 45 <= opt["rate_per_s"] <= 50 and "concurrency" not in opt
    assert opt["max_rate_per_s_meeting_slo"] == opt["rate_per_s"]
    assert opt["sentence"].startswith(f"Cheapest level (by input $/M): {opt['rate_per_s']:.3g} req/s")
    assert len(seen) <= 12 and "bracketed" in s.done_reason
