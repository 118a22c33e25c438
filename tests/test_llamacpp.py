"""A real engine: llama.cpp's server (xllamacpp, CPU) with Gemma 3 270M, driven as a user drives it.

One server for the module: 4 slots, 1024 context tokens per slot, and 1 thread — with 2 threads on 2 cores any
other busy process stalls llama.cpp's thread barrier and these tests time out (docs/llama-cpp.md). Small
prompts (64 tokens) and outputs (16, exact with ignore_eos) keep it near 70 s. Skips when the test extra is missing,
except under CI, where the extra is installed and a skip would hide a broken engine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from befori_tui.core.config import Config
from befori_tui.core.controller import RunController
from befori_tui.core.telemetry import ServerMetricsSource, open_server_source
from befori_tui.core.telemetry.prometheus import parse_series
from tests.llamacpp import MODEL_ALIAS, LlamaCppServer, LlamaCppUnavailable, ServerOptions, start_server

SLOTS = 4
INPUT_TOKENS = 64
OUTPUT_TOKENS = 16
LEVELS = [1, 4, 8]  # 8 > SLOTS: half the requests wait for a slot
REQUESTS_PER_LEVEL = 6
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaCppServer]:
    log = tmp_path_factory.mktemp("llamacpp") / "server.log"
    try:
        server = start_server(ServerOptions(slots=SLOTS, threads=1), log_path=log)
    except LlamaCppUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"llama.cpp tests cannot run in CI: {exc}")
        pytest.skip(f"llama.cpp tests need the test extra: {exc}")
    yield server
    server.stop()
    assert server.proc.returncode is not None, "the server outlived stop()"


def run_bench(server: LlamaCppServer, api: str, out: Path) -> tuple[dict, list[dict], str]:
    """`befori-tui bench` in a subprocess, as a user runs it; returns the TOML, the JSONL records and stderr."""
    cmd = [
        sys.executable, "-m", "befori_tui", "bench", "--url", server.base_url, "--api", api,
        "--concurrency", ",".join(map(str, LEVELS)), "--requests-per-level", str(REQUESTS_PER_LEVEL),
        "--input-tokens", str(INPUT_TOKENS), "--output-tokens", str(OUTPUT_TOKENS),
        "--telemetry", "none", "--timeout", "60", "--max-seconds", "120", "--out", str(out),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"bench exited {proc.returncode}\n{proc.stderr[-3000:]}"
    results = tomllib.loads(out.read_text())
    records = [json.loads(line) for line in out.with_suffix(".jsonl").read_text().splitlines()]
    return results, records, proc.stderr


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_bench_sweep(llama: LlamaCppServer, api: str, tmp_path: Path) -> None:
    results, records, stderr = run_bench(llama, api, tmp_path / "x.toml")
    endpoint = results["endpoint"]
    assert {k: endpoint[k] for k in ("url", "api", "model")} == {"url": llama.base_url, "api": api, "model": MODEL_ALIAS}
    assert (endpoint["proxy"], endpoint["tls_verify"], endpoint["headers"]) == ("", True, [])  # a direct connection
    # Prompts were sized with the server's own /tokenize (llama.cpp answers {"tokens": [...]}).
    assert results["workload"]["input_tokens_counted_by"] == "tokenize"

    levels = results["levels"]
    assert [lv["concurrency"] for lv in levels] == LEVELS, stderr
    for lv in levels:
        assert lv["requests_failed"] == 0, lv["errors"]
        assert lv["requests_steady"] >= REQUESTS_PER_LEVEL
        # ignore_eos makes output lengths exact; usage says so.
        assert lv["output_tokens_mean"] == OUTPUT_TOKENS
        assert lv["ttft_s_p50"] > 0 and lv["e2e_s_p50"] > lv["ttft_s_p50"]
        assert lv["output_tok_per_s_total"] > 0 and lv["usd_per_million_output"] > 0
        # Prompts aim at 64 tokens as the server counts them (BOS, the chat template and all).
        assert abs(lv["input_tokens_mean"] - INPUT_TOKENS) <= 0.25 * INPUT_TOKENS, lv["input_tokens_mean"]
    # By the last level the usage correction has converged (it once drifted to +12 % / +30 % on chat).
    assert abs(levels[-1]["input_tokens_mean"] - INPUT_TOKENS) <= 0.10 * INPUT_TOKENS, levels[-1]

    # Beyond the 4 slots, requests queue: TTFT at c=8 includes waiting for a slot, i.e. for a request that
    # shares the server four ways to end, which takes longer than a whole request alone at c=1.
    ttft = {lv["concurrency"]: lv["ttft_s_p50"] for lv in levels}
    print(f"\n{api}: TTFT p50 " + ", ".join(f"c={c} {t * 1e3:.0f} ms" for c, t in ttft.items())
          + " · out tok/s " + ", ".join(f"c={lv['concurrency']} {lv['output_tok_per_s_total']:.0f}" for lv in levels)
          + " · in mean " + ", ".join(f"{lv['input_tokens_mean']:.1f}" for lv in levels))
    assert ttft[8] > 2 * ttft[1], ttft
    assert ttft[8] > levels[0]["e2e_s_p50"], (ttft, levels[0]["e2e_s_p50"])

    # Raw records: every request ended well, counted by the server's usage. The only exception allowed is
    # the one bench makes itself: requests still running when the sweep ends are cancelled.
    assert len(records) == sum(lv["requests_sent"] for lv in levels)
    last = levels[-1]["level"]
    done = [r for r in records if r["error_kind"] is None]
    for r in records:
        if r["error_kind"] is not None:
            assert r["error_kind"] == "cancelled" and r["level"] == last and r["outlived_level"], r
    assert len(done) >= len(LEVELS) * REQUESTS_PER_LEVEL
    for r in done:
        assert r["http_status"] == 200
        assert r["finish_reason"] == "length"
        assert (r["output_tokens"], r["output_tokens_source"]) == (OUTPUT_TOKENS, "usage"), r
        assert r["input_tokens_source"] == "usage" and r["input_tokens"] > 0
        # One SSE chunk per token; llama.cpp may hold back a token that ends mid-UTF-8 and send two at once.
        assert OUTPUT_TOKENS - 3 <= r["content_chunks"] <= OUTPUT_TOKENS, r
        assert r["t_send_ns"] < r["t_first_token_ns"] < r["t_end_ns"]


def _counters(source: ServerMetricsSource) -> tuple[float, float, float]:
    """(prompt tokens evaluated, prompt tokens reused from llama.cpp's prompt cache, tokens generated)."""
    reading = source.read()
    assert reading.engine == "llamacpp"
    assert reading.prompt_tokens_total is not None and reading.generation_tokens_total is not None
    # The cache counter is not part of ServerReading; read it from the same page.
    cached = parse_series(source._scraper.get()).get("llamacpp:prompt_tokens_cached", [({}, 0.0)])
    return reading.prompt_tokens_total, sum(v for _, v in cached), reading.generation_tokens_total


def _quiet_counters(source: ServerMetricsSource, timeout_s: float = 15.0) -> tuple[float, float, float]:
    """Counters once the server is idle: requests cancelled by an earlier bench may still be releasing slots."""
    deadline = time.monotonic() + timeout_s
    last = None
    while True:
        reading = source.read()
        now = _counters(source)
        if reading.running == 0 and reading.waiting == 0 and now == last:
            return now
        assert time.monotonic() < deadline, f"server still busy: {reading}"
        last = now
        time.sleep(0.2)


async def test_server_metrics_move_by_what_we_sent(llama: LlamaCppServer, tmp_path: Path) -> None:
    cfg = Config()
    cfg.endpoint.url = llama.base_url
    cfg.workload.input_tokens_mean, cfg.workload.input_tokens_sd = INPUT_TOKENS, 0.0
    cfg.workload.output_tokens_mean = OUTPUT_TOKENS
    # Not bench's seed 0: the same seed makes the same prompts, and llama.cpp's prompt cache (RAM, shared by
    # slots) would serve them whole from the earlier run.
    cfg.workload.seed = 5
    cfg.load.concurrency = [SLOTS]
    cfg.load.requests_per_level = 8
    cfg.load.timeout_s = 60.0
    source = open_server_source(None, llama.base_url)  # the default: <root>/metrics
    assert source is not None and source.url == llama.root_url + "/metrics"
    try:
        before = _quiet_counters(source)
        # drain_s: let every request end, so the server did exactly what we count.
        controller = RunController(cfg, tmp_path / "m.toml", telemetry="none", drain_s=30.0)
        assert await controller.run() == 0 and controller.ended_by == "completed"
        records = controller.session.raw_records()
        assert records and all(r.ok for r in records), [r.error_message for r in records if not r.ok]
        sent_in = sum(r.input_tokens for r in records)
        sent_out = sum(r.output_tokens for r in records)
        assert sent_out == OUTPUT_TOKENS * len(records)

        # The counters move when a slot is released, a moment after the last chunk: poll briefly.
        deadline = time.monotonic() + 3.0
        while True:
            after = _counters(source)
            prompt, cached, generated = (a - b for a, b in zip(after, before))
            if (prompt + cached, generated) == (sent_in, sent_out) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        source.close()
    print(f"\nmetrics: {len(records)} requests, usage in {sent_in} out {sent_out}; llama.cpp prompt {prompt:.0f}"
          f" + cached {cached:.0f}, generated {generated:.0f}")
    # usage.prompt_tokens counts cached tokens too; llama.cpp's prompt counter leaves them out.
    assert generated == sent_out
    assert prompt + cached == sent_in
    # Prompts start with a unique line, so the prompt cache can only reuse a few leading tokens each.
    assert cached <= 4 * len(records), (prompt, cached)


def test_ready_config_loads_and_fits_a_slot() -> None:
    """configs/llama-cpp-local.toml: valid, and a long request (mean + 3 SD in, plus out) fits one slot of
    the server its header starts (-np 4 -c 8192: 2048 tokens per slot)."""
    from befori_tui.core.config import load_config

    cfg = load_config(ROOT / "configs" / "llama-cpp-local.toml")
    assert cfg.endpoint.url == "http://127.0.0.1:8080/v1"
    w = cfg.workload
    assert w.ignore_eos and w.input_tokens_mean + 3 * w.input_tokens_sd + w.output_tokens_mean <= 8192 // 4
    assert max(cfg.load.concurrency) > 4  # one level past the 4 slots, to show queueing
    assert cfg.pricing.usd_per_hour > 0 and cfg.pricing.compare
