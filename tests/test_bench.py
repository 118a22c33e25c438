"""`befori-tui bench` end to end against a real `befori-tui sim` on 127.0.0.1, as a user runs it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import tomllib

import numpy as np
import pytest

from befori_tui.core.cost import befori_cost


def run_bench(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "befori_tui", "bench", *args],
                          capture_output=True, text=True, timeout=timeout)


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def bench_run(sim, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "run.toml"
    proc = run_bench("--url", sim.base_url, "--concurrency", "1,4,16", "--requests-per-level", "24",
                     "--input-tokens", "120:20", "--output-tokens", "24", "--usd-per-hour", "3.24",
                     "--gpu-count", "1", "--compare", "Llama-3.1-8B Together=0.18/0.18", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return proc, tomllib.loads(out.read_text()), read_jsonl(out.with_suffix(".jsonl"))


def test_table_and_progress(bench_run):
    proc, _, _ = bench_run
    assert "Input tokens (befori method)" in proc.stdout and "$ per million tokens" in proc.stdout
    assert proc.stderr.count("· started") == 3
    assert "level 2 · c=16 ·" in proc.stderr
    assert "warning" not in proc.stderr  # no credentials in --url, nothing to warn about
    # The API price given with --compare is printed beside this server's blended price, not only saved.
    assert "API prices to compare" in proc.stdout and "Llama-3.1-8B Together" in proc.stdout
    assert "this server, blended (befori): c=1 " in proc.stdout


def test_session_toml(bench_run, sim):
    _, data, records = bench_run
    assert data["schema_version"] == 1
    assert data["ended_by"] == "completed" and data["interrupted"] is False
    assert data["endpoint"]["model"].endswith("(simulated)")  # discovered from /v1/models
    assert data["workload"]["input_tokens_counted_by"] == "tokenize"
    assert [lv["concurrency"] for lv in data["levels"]] == [1, 4, 16]
    for lv in data["levels"]:
        assert lv["requests_sent"] == lv["requests_ok"] + lv["requests_failed"] + lv["requests_cancelled"]
        assert lv["requests_failed"] == 0
        assert lv["requests_steady"] >= 24
        assert lv["output_tokens_mean"] == 24  # ignore_eos: exactly max_tokens, counted by the server
        # The befori method from the level's own means (as written: times to the µs, money to 6 figures — a
        # mean TTFT of a few ms on the fast simulator is then known to a few parts in 10,000).
        c = befori_cost(3.24, lv["concurrency"], lv["input_tokens_mean"], lv["ttft_s_mean"],
                        lv["output_tokens_mean"], lv["e2e_s_mean"])
        assert lv["usd_per_million_input"] == pytest.approx(c.usd_per_million_input, rel=1e-3)
        assert lv["usd_per_million_output"] == pytest.approx(c.usd_per_million_output, rel=1e-3)
        occ = lv["occupancy"]
        assert occ["usd_input"] + occ["usd_output"] + occ["usd_failed"] + occ["usd_idle"] == pytest.approx(
            occ["usd_bill"], rel=1e-5)
        assert occ["usd_bill"] == pytest.approx(3.24 * lv["duration_s"] / 3600, rel=1e-4)
    # Prompts hit their target: mean input tokens (server's count) close to 120.
    assert data["levels"][0]["input_tokens_mean"] == pytest.approx(120, rel=0.15)
    # More concurrency, cheaper output tokens on an unsaturated server.
    assert data["levels"][2]["usd_per_million_output"] < data["levels"][0]["usd_per_million_output"]
    assert data["api_compare"][0]["name"] == "Llama-3.1-8B Together"


def test_raw_records_complete(bench_run):
    _, data, records = bench_run
    ids = [r["request_id"] for r in records]
    assert len(ids) == len(set(ids))
    assert len(ids) == sum(lv["requests_sent"] for lv in data["levels"])
    assert all(r["error_kind"] in (None, "cancelled") for r in records)


def test_client_timing_agrees_with_server_ground_truth(sim_factory, tmp_path):
    # A slower sim than the shared one: its engine steps (≈3.5 ms) stay well above its own event-loop jitter.
    sim = sim_factory(time_scale=2.0)
    out = tmp_path / "gt.toml"
    proc = run_bench("--url", sim.base_url, "--concurrency", "1,4", "--requests-per-level", "16",
                     "--input-tokens", "120", "--output-tokens", "16", "--server-metrics", "off", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    ok = [r for r in read_jsonl(out.with_suffix(".jsonl")) if r["error_kind"] is None and r["server_timing"]]
    assert len(ok) >= 32
    # Same clock (CLOCK_MONOTONIC) in both processes: the client sees the first token just after the server
    # wrote it, and sends just before the server receives.
    lag_ms = np.array([(r["t_first_token_ns"] - r["server_timing"]["t_first_token_ns"]) / 1e6 for r in ok])
    lead_ms = np.array([(r["server_timing"]["t_received_ns"] - r["t_send_ns"]) / 1e6 for r in ok])
    assert (lag_ms > 0).all() and (lead_ms > 0).all()
    # Bounds wide enough for a shared 2-core box; a stamp in the wrong place (end of stream, after parsing
    # everything) is off by tens of ms. Fidelity itself is measured in bench/, not here.
    assert np.median(lag_ms) < 3.0, np.percentile(lag_ms, [50, 90, 99])
    # Client TTFT also holds the server's HTTP layer (parsing the request before the handler stamps it): small
    # alone; under load the sim's one core is shared with the other streams, so compare at c=1.
    alone = [r for r in ok if r["concurrency"] == 1]
    ttft_client = np.array([(r["t_first_token_ns"] - r["t_send_ns"]) / 1e9 for r in alone])
    ttft_server = np.array([(r["server_timing"]["t_first_token_ns"] - r["server_timing"]["t_received_ns"]) / 1e9
                            for r in alone])
    assert np.median(ttft_client - ttft_server) < 0.008
    # The client's inter-token gaps match the engine's step time at c=1: base + k·1 = 7.07 ms, halved.
    itl_ms = np.array([g / 1e6 for r in ok if r["concurrency"] == 1 and not r["warmup"] for g in r["itl_ns"]])
    assert np.median(itl_ms) == pytest.approx(7.07 / 2, abs=0.8)


def test_reprice_saved_session(bench_run, tmp_path):
    _, data, _ = bench_run
    src = tmp_path / "s.toml"
    import tomli_w

    src.write_text(tomli_w.dumps(data))
    out = tmp_path / "s2.toml"
    proc = subprocess.run([sys.executable, "-m", "befori_tui", "cost", str(src), "--usd-per-hour", "6.48",
                           "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    new = tomllib.loads(out.read_text())
    assert new["pricing"]["usd_per_hour"] == 6.48 and new["pricing"]["source"] == "flag"  # `cost --usd-per-hour`
    for a, b in zip(data["levels"], new["levels"]):
        # Exact to the 6 significant figures a file keeps of money.
        assert b["usd_per_million_output"] == pytest.approx(2 * a["usd_per_million_output"], rel=1e-5)
        assert b["occupancy"]["usd_bill"] == pytest.approx(2 * a["occupancy"]["usd_bill"], rel=1e-5)
        assert b["ttft_s_mean"] == a["ttft_s_mean"]


def test_ctrl_c_saves_what_was_measured(sim, tmp_path):
    out = tmp_path / "int.toml"
    proc = subprocess.Popen(
        [sys.executable, "-m", "befori_tui", "bench", "--url", sim.base_url, "--concurrency", "8",
         "--requests-per-level", "100000", "--input-tokens", "100", "--output-tokens", "400", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    raw = out.with_suffix(".jsonl")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not raw.exists() or raw.stat().st_size < 2000):
        time.sleep(0.1)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert time.monotonic() - t0 < 5
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    data = tomllib.loads(out.read_text())
    assert data["interrupted"] is True
    records = read_jsonl(raw)
    lv = data["levels"][0]
    assert len(records) == lv["requests_sent"] == lv["requests_ok"] + lv["requests_failed"] + lv["requests_cancelled"]
    assert lv["requests_cancelled"] >= 1  # the ones in flight at the stop
    assert {r["error_kind"] for r in records} <= {None, "cancelled"}


def test_a_model_the_server_does_not_list_is_one_line_before_any_request(sim, tmp_path):
    out = tmp_path / "m.toml"
    proc = run_bench("--url", sim.base_url, "--model", "no-such-model", "--concurrency", "1",
                     "--requests-per-level", "2", "--out", str(out))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "'no-such-model' is not among the models the server lists" in lines[0], lines
    assert "sim/dbrx-instruct" in lines[0] or "simulated" in lines[0]  # it says which models there are
    assert not out.exists()  # nothing was run


def test_max_seconds_cuts_the_run_short_and_says_so(sim, tmp_path):
    out = tmp_path / "cut.toml"
    proc = run_bench("--url", sim.base_url, "--concurrency", "2", "--requests-per-level", "100000",
                     "--output-tokens", "16", "--max-seconds", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    data = tomllib.loads(out.read_text())
    assert data["ended_by"] == "max_seconds" and data["interrupted"] is False
    assert data["levels"][0]["requests_ok"] > 0  # what was measured is kept
    assert "level 0 · c=2" in proc.stderr and "cut short" in proc.stderr
    assert "stopped after load.max_seconds (2 s)" in proc.stderr


def test_gpu_energy_from_the_sims_dcgm_series_is_saved_and_printed(sim, tmp_path):
    out = tmp_path / "energy.toml"
    proc = run_bench("--url", sim.base_url, "--telemetry", f"dcgm:{sim.root_url}/metrics", "--usd-per-kwh", "0.12",
                     "--concurrency", "4", "--seconds-per-level", "3", "--output-tokens", "16", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    lv = tomllib.loads(out.read_text())["levels"][0]
    gpu = lv["gpu"]
    assert gpu["gpu_count"] == 1 and "gpus" not in gpu  # the 8B profile: one simulated H100 (per GPU: --gpu-detail)
    assert gpu["energy_j_total"] > 0 and gpu["energy_source"] == "counter"
    assert gpu["joules_per_output_token"] == pytest.approx(gpu["energy_j_total"] / sum(
        r["output_tokens"] for r in read_jsonl(out.with_suffix(".jsonl")) if r["level"] == 0 and r["error_kind"] is None),
        rel=1e-5)  # 6 significant figures in the file
    assert gpu["usd_energy_per_million_output"] == pytest.approx(
        gpu["joules_per_output_token"] * 1e6 / 3.6e6 * 0.12, rel=1e-5)
    assert "GPU energy (electricity at pricing.usd_per_kwh)" in proc.stdout


@pytest.mark.parametrize("price_flags, source", [([], "default"), (["--usd-per-hour", "10"], "flag")],
                         ids=["no-price", "flag"])
def test_a_price_nobody_set_is_marked_on_the_start_line_and_in_the_toml(sim, tmp_path, price_flags, source):
    out = tmp_path / "price.toml"
    proc = run_bench("--url", sim.base_url, "--concurrency", "1", "--requests-per-level", "2",
                     "--output-tokens", "8", *price_flags, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    pricing = tomllib.loads(out.read_text())["pricing"]
    assert pricing["source"] == source
    start = next(line for line in proc.stderr.splitlines() if line.startswith("endpoint "))
    note = "priced at the default $27.78/h (8×H100 rental) — set --usd-per-hour"
    if source == "default":
        assert pricing["usd_per_hour"] == 27.78 and note in start, proc.stderr
    else:
        assert pricing["usd_per_hour"] == 10 and "priced at" not in proc.stderr, proc.stderr
