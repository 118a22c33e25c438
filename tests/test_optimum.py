"""The optimum: the cheapest concurrency that meets the latency targets, from level summaries (core/optimum.py),
and `befori-tui cost run.toml` saying it — on Ori's published DBRX table replayed as a session."""

from __future__ import annotations

import math
import subprocess
import sys
import tomllib

import pytest
import tomli_w

from befori_tui.core.cost import befori_cost
from befori_tui.core.optimum import find_optimum
from befori_tui.core.slo import parse_slo
from tests.test_cost import SEED_INPUT, SEED_OUTPUT, SEED_USD_PER_HOUR


def seed_levels() -> list[dict]:
    """Ori's table as the session's [[levels]]: input rows for every level, output rows where published."""
    out_rows = {r[0]: r for r in SEED_OUTPUT}
    levels = []
    for i, (c, n_in, ttft, _t_in, _usd) in enumerate(SEED_INPUT):
        s = {"level": i, "concurrency": c, "reason": "sweep", "requests_steady": 32, "requests_ok": 32,
             "requests_failed": 0, "input_tokens_mean": n_in, "ttft_s_mean": ttft, "ttft_s_p99": ttft}
        cost = befori_cost(SEED_USD_PER_HOUR, c, n_in, ttft, 100, ttft + 100)
        s["input_tok_per_s"], s["usd_per_input_token"] = cost.input_tok_per_s, cost.usd_per_input_token
        s["usd_per_million_input"] = cost.usd_per_million_input
        if c in out_rows:
            _, n_out, e2e, _, _, _ = out_rows[c]
            co = befori_cost(SEED_USD_PER_HOUR, c, n_in, ttft, n_out, e2e)
            s.update(output_tokens_mean=n_out, e2e_s_mean=e2e, output_tok_per_s=co.output_tok_per_s,
                     usd_per_output_token=co.usd_per_output_token, usd_per_million_output=co.usd_per_million_output)
        levels.append(s)
    return levels


def expected_seed_range() -> tuple[int, int, float, float]:
    """The input side's range within 10% of c=64's price, computed from the table: $/M is interpolated
    linearly against log(c) between c=32 and 64, and between 64 and 512."""
    p = {c: SEED_USD_PER_HOUR / 3600 / (c * n / t) * 1e6 for c, n, t, _, _ in SEED_INPUT}
    limit = p[64] * 1.1
    lo = math.exp(math.log(64) + (limit - p[64]) / (p[32] - p[64]) * (math.log(32) - math.log(64)))
    hi = math.exp(math.log(64) + (limit - p[64]) / (p[512] - p[64]) * (math.log(512) - math.log(64)))
    return math.ceil(lo), math.floor(hi), p[64], limit


def test_seed_table_input_side():
    opt = find_optimum(seed_levels(), by="input")
    rmin, rmax, p64, limit = expected_seed_range()
    assert opt["found"] and opt["concurrency"] == 64
    assert opt["usd_per_million_input"] == pytest.approx(158.3, abs=0.05)  # the published 0.000158 $/token
    assert (opt["range_concurrency_min"], opt["range_concurrency_max"]) == (rmin, rmax) == (56, 92)
    assert opt["range_usd_per_million_input_min"] == pytest.approx(p64)
    assert opt["range_usd_per_million_input_max"] == pytest.approx(limit)
    assert opt["max_concurrency_meeting_slo"] == 512  # no SLO: every level meets it


def test_an_slo_moves_the_optimum_down_and_bounds_it():
    # TTFT p99 ≤ 70 s: c=64 (83.9 s) misses; the cheapest that meets it is c=32; the limit lies in 32–64.
    opt = find_optimum(seed_levels(), parse_slo("ttft_p99=70s"), by="input")
    assert opt["concurrency"] == 32
    assert opt["max_concurrency_meeting_slo"] == 32 and opt["min_concurrency_missing_slo"] == 64
    # The range never crosses a level that misses the SLO: it ends at 32 on the right.
    assert opt["range_concurrency_max"] == 32
    assert "the SLO holds up to c=32 (missed at c=64)" in opt["sentence"]
    none = find_optimum(seed_levels(), parse_slo("ttft_p99=10s"), by="input")
    assert none["found"] is False and "no level meets the SLO" in none["reason"]
    assert "c=1" in none["reason"] and "ttft_p99 47.4s > 10s" in none["reason"]


def test_intervals_make_neighbours_candidates():
    levels = seed_levels()
    for s in levels:
        p = s["usd_per_million_input"]
        s["usd_per_million_input_lo"], s["usd_per_million_input_hi"] = p * 0.7, p * 1.3
    opt = find_optimum(levels, by="input")
    # c=64's interval reaches 205.8; c=32 (lo 161.7) and c=512 (lo 174.1) overlap it.
    assert (opt["concurrency_candidates_min"], opt["concurrency_candidates_max"]) == (32, 512)
    assert find_optimum([], by="input")["reason"] == "no level has a input $/M yet"


def test_cost_command_on_the_replayed_table(tmp_path):
    session = {"schema_version": 1, "tool": "befori-tui", "pricing": {"usd_per_hour": SEED_USD_PER_HOUR,
               "blend_input_per_output": 3.0}, "levels": seed_levels()}
    path = tmp_path / "seed.toml"
    path.write_text(tomli_w.dumps(session))
    out = tmp_path / "with-optimum.toml"
    proc = subprocess.run([sys.executable, "-m", "befori_tui", "cost", str(path), "--optimum-by", "input",
                           "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rmin, rmax, p64, limit = expected_seed_range()
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("Cheapest level (by input $/M): c=64 at $158.31/M input")
    assert f"within 10% of that: c={rmin}–{rmax}, ${p64:,.2f}–${limit:,.2f}/M input" in last
    saved = tomllib.loads(out.read_text())["optimum"]
    assert saved["found"] and saved["concurrency"] == 64 and saved["range_concurrency_max"] == rmax
    # Re-priced at half the price: the same answer at half the dollars.
    half = subprocess.run([sys.executable, "-m", "befori_tui", "cost", str(path), "--optimum-by", "input",
                           "--usd-per-hour", str(SEED_USD_PER_HOUR / 2)], capture_output=True, text=True, timeout=60)
    assert f"c=64 at ${p64 / 2:,.2f}/M input" in half.stdout
    bad = subprocess.run([sys.executable, "-m", "befori_tui", "cost", str(path), "--slo", "ttft_p97=1s"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


@pytest.mark.parametrize("text, key", [
    ('[search]\nby = "cheapest"\n', "search.by"),
    ('[search]\ntolerance = 0\n', "search.tolerance"),
    ('[load]\nmax_concurrency = 0\n', "load.max_concurrency"),
    ('[load]\nrate = [0.0]\n', "load.rate"),
])
def test_bad_search_config_names_the_key(tmp_path, text, key):
    from befori_tui.core.config import ConfigError, load_config

    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(p)


def test_levels_with_an_infinite_price_do_not_break_the_answer():
    # A level whose requests made no output tokens has an infinite output $/M (befori_cost): never cheapest,
    # never a number in the range.
    levels = seed_levels()
    levels[3]["usd_per_million_output"] = float("inf")
    levels[3]["usd_per_million_input_lo"], levels[3]["usd_per_million_input_hi"] = 150.0, float("inf")
    for by in ("input", "output", "blended"):
        opt = find_optimum(levels, by=by)
        assert opt["found"] and "inf" not in opt["sentence"], opt
