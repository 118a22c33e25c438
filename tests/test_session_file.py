"""A session file a person can read: floats rounded to what they mean, a [summary] first, the levels that ran,
a reason beside every missing figure, per-GPU tables only when asked — and re-pricing still works."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

from befori_tui.core.results import clean_for_toml, tidy_float


def test_floats_are_tidied_by_what_they_mean():
    assert tidy_float("usd_idle", -5.551115123125783e-17) == -5.55112e-17  # money: 6 significant figures …
    assert tidy_float("input_tokens_p90", 738.6000000000001) == 738.6
    assert tidy_float("ttft_s_p50", 0.0612345678) == 0.061235  # … times: to the microsecond
    assert tidy_float("requests_per_s", 189.59612345) == 189.596  # a rate is not a time
    assert tidy_float("duration_s", -1e-9) == 0.0 and str(tidy_float("duration_s", -1e-9)) == "0.0"
    assert clean_for_toml({"a": [1.0000000001, None], "b": {"e2e_s_mean": 1.23456789}}) == {
        "a": [1.0], "b": {"e2e_s_mean": 1.234568}}


def _float_items(table, path=""):
    if isinstance(table, dict):
        for k, v in table.items():
            yield from _float_items(v, f"{path}.{k}" if path else k)
    elif isinstance(table, list):
        for i, v in enumerate(table):
            yield from _float_items(v, f"{path}[{i}]")
    elif isinstance(table, float):
        yield path, table


def run_bench(sim, tmp_path, name, *args):
    out = tmp_path / f"{name}.toml"
    proc = subprocess.run([sys.executable, "-m", "befori_tui", "bench", "--url", sim.base_url, "--seed", "3",
                           "--telemetry", f"dcgm:{sim.root_url}/metrics", "--out", str(out), *args],
                          capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr
    return out


def test_a_session_file_reads_back_tidy_with_a_summary_and_every_absence_explained(sim, tmp_path):
    out = run_bench(sim, tmp_path, "tidy", "--concurrency", "4,2", "--requests-per-level", "8",
                    "--output-tokens", "16", "--input-tokens", "64")
    text = out.read_text()
    data = tomllib.loads(text)
    for path, value in _float_items(data):
        digits = re.sub(r"e.*$", "", repr(abs(value))).replace(".", "").lstrip("0")
        key = path.rsplit(".", 1)[-1]
        if key.endswith("_s") or "_s_" in key and "_per_s" not in key:
            assert value == round(value, 6), (path, value)
        else:
            assert len(digits) <= 6, (path, value)  # no 738.6000000000001
        assert not (value < 0 and abs(value) < 1e-9), (path, value)  # no -5.5e-17
    # [summary] is the first table, with one row per level (and the reason where a level has no cost).
    first_table = re.search(r"^\[+([a-z_.]+)\]+$", text, re.M).group(1)
    assert first_table == "summary"
    rows = data["summary"]["table"].strip().splitlines()
    assert len(rows) == 1 + len(data["levels"]) and rows[0].split()[:2] == ["level", "conc"]
    assert data["load"]["levels_run"] == [4, 2] and data["load"]["concurrency"] == [4, 2]
    measured = data["levels"][1]
    for lv in data["levels"]:
        assert "usd_per_million_input" in lv or "cost_missing" in lv
        assert "ttft_s_p50" in lv or "cost_missing" in lv
        assert "usd_per_million_input_lo" in lv or "cost_missing" in lv or "interval_missing" in lv
        assert "usd_per_million_input" in lv["occupancy"] or "occupancy_missing" in lv
        assert lv.get("gpu", {}).get("samples") or "gpu_missing" in lv
        assert "gpus" not in lv.get("gpu", {})  # per-GPU detail only when asked
    assert "usd_per_million_input" in measured and "cost_missing" not in measured
    assert measured["gpu"]["gpu_count"] == 1

    # Re-pricing reads it back and scales it, summary included.
    repriced = tmp_path / "at20.toml"
    proc = subprocess.run([sys.executable, "-m", "befori_tui", "cost", str(out), "--usd-per-hour",
                           str(2 * data["pricing"]["usd_per_hour"]), "--out", str(repriced)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    again = tomllib.loads(repriced.read_text())
    lv = again["levels"][1]
    assert abs(lv["usd_per_million_output"] / measured["usd_per_million_output"] - 2) < 1e-5
    assert again["summary"]["table"] != data["summary"]["table"]


def test_gpu_detail_keeps_every_gpus_table(sim, tmp_path):
    out = run_bench(sim, tmp_path, "detail", "--concurrency", "2", "--seconds-per-level", "1.5",
                    "--output-tokens", "16", "--gpu-detail")
    lv = tomllib.loads(out.read_text())["levels"][0]
    assert len(lv["gpu"]["gpus"]) == 1 and lv["gpu"]["gpu_count"] == 1


def _level_with(records, concurrency=2, warmup=2, t_end=None):
    from befori_tui.core.loadgen import Level

    lv = Level(0, concurrency, 0, warmup, t_end_ns=t_end if t_end is not None else 10**9)
    lv.records.extend(records)
    lv.sent = len(records)
    return lv


def _rec(i, warmup=False, kind=None, status=None, outlived=False):
    from befori_tui.core.records import RequestRecord

    r = RequestRecord(i, i % 2, 0, 2, t_send_ns=i * 1000, t_first_token_ns=i * 1000 + 10, t_end_ns=i * 1000 + 500,
                      input_tokens=10, output_tokens=5, http_status=status, warmup=warmup, outlived_level=outlived)
    r.error_kind = kind
    return r


def test_every_missing_cost_says_why():
    from befori_tui.core.config import PricingConfig
    from befori_tui.core.metrics import summarize_level

    def why(records, **kw):
        lv = _level_with(records, **kw)
        return summarize_level(lv, PricingConfig(), records, 10**9).get("cost_missing")

    assert why([_rec(0, warmup=True), _rec(1, warmup=True)]) == "no steady requests: the level ended during warm-up"
    assert why([_rec(0, kind="http_status", status=500), _rec(1, kind="timeout")]) == \
        "every request failed (HTTP 500 ×1, timeout ×1)"
    assert why([_rec(0, kind="cancelled")]).startswith("every request was cancelled")
    assert why([]) == "no request was sent in this level"
    assert why([_rec(0, warmup=True), _rec(1, outlived=True), _rec(2, outlived=True)]) == \
        "no steady requests: those that succeeded were warm-up or outlived the level"
    lv = summarize_level(_level_with([_rec(i) for i in range(3)]), PricingConfig(), [], 10**9)
    assert "usd_per_million_input" in lv and lv["interval_missing"] == "fewer than 5 steady requests (3)"
