"""Per-level summaries against hand-computed values."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest
import tomli_w

from befori_tui.core.telemetry import GpuReading, ServerReading, TelemetrySample, summarize_gpus, summarize_server

S = 1_000_000_000  # ns per second


def gpu_samples() -> list[TelemetrySample]:
    """Samples at 0..4 s. GPU 0: energy counter 100, 400, ... J (300 W), power readings say 999 W (ignored:
    the counter wins). GPU 1: no counter, power 100, 200, ... W. GPU 2: nothing but a name."""
    out = []
    for k in range(5):
        out.append(TelemetrySample(
            t_ns=k * S,
            gpu_source="nvml",
            gpus=[
                GpuReading(0, "H100", util_pct=10.0 * k, mem_used_mib=1000.0 + k, mem_total_mib=81559.0,
                           power_w=999.0, power_limit_w=700.0, energy_j=100.0 + 300.0 * k),
                GpuReading(1, "H100", util_pct=50.0, power_w=100.0 + 100.0 * k),
                GpuReading(2, "H100"),
            ],
        ))
    return out


def test_energy_by_counter_and_by_power_integral_on_sample_edges() -> None:
    s = summarize_gpus(gpu_samples(), 1 * S, 3 * S, output_tokens=600, usd_per_kwh=0.36)
    g0, g1, g2 = s["gpus"]
    assert s["source"] == "nvml" and s["samples"] == 3
    assert g0["energy_source"] == "counter" and g0["energy_j"] == pytest.approx(600.0)  # 1000 - 400
    assert g1["energy_source"] == "power_integral"
    assert g1["energy_j"] == pytest.approx((200 + 300) / 2 + (300 + 400) / 2)  # trapezoid, 1 s steps = 600 J
    assert "energy_j" not in g2 and "energy_source" not in g2
    assert g0["util_pct_mean"] == 20.0 and g0["util_pct_max"] == 30.0  # 10, 20, 30
    assert g0["mem_used_mib_peak"] == 1003.0 and g0["mem_total_mib"] == 81559.0 and g0["power_limit_w"] == 700.0
    assert g1["power_w_mean"] == 300.0 and g1["power_w_max"] == 400.0
    assert s["energy_j_total"] == pytest.approx(1200.0)
    assert s["energy_source"] == "mixed" and s["energy_all_gpus"] is False  # GPU 2 reported no energy
    assert s["joules_per_output_token"] == pytest.approx(2.0)
    assert s["usd_energy"] == pytest.approx(1200 / 3.6e6 * 0.36)
    # 2 J/token × 1e6 tokens = 2e6 J = 0.5556 kWh × $0.36 = $0.20
    assert s["usd_energy_per_million_output"] == pytest.approx(0.20)


def test_edges_between_samples_are_interpolated() -> None:
    s = summarize_gpus(gpu_samples(), S // 2, 3 * S + S // 2, output_tokens=None, usd_per_kwh=None)
    g0, g1, _ = s["gpus"]
    assert g0["energy_j"] == pytest.approx(1150.0 - 250.0)  # counter at 0.5 s and 3.5 s
    # power 150 W at 0.5 s .. 450 W at 3.5 s: 0.5·175 + 250 + 350 + 0.5·425
    assert g1["energy_j"] == pytest.approx(900.0)
    assert s["samples"] == 3  # only 1, 2, 3 s are inside; 0 s and 4 s only anchor the edges
    assert "joules_per_output_token" not in s and "usd_energy" not in s


def test_only_the_nearest_sample_outside_each_edge_is_used() -> None:
    samples = gpu_samples()
    samples[0].gpus[0].energy_j = 10_000.0  # far outside (0 s) and going backwards: must not matter
    s = summarize_gpus(samples, 2 * S, 3 * S, output_tokens=1, usd_per_kwh=None)
    assert s["gpus"][0]["energy_j"] == pytest.approx(300.0) and s["gpus"][0]["energy_source"] == "counter"


def test_counter_reset_falls_back_to_power() -> None:
    samples = gpu_samples()
    samples[2].gpus[0].energy_j = 5.0  # GPU reset: the counter went backwards
    s = summarize_gpus(samples, 1 * S, 3 * S, output_tokens=None, usd_per_kwh=None)
    assert s["gpus"][0]["energy_source"] == "power_integral" and s["gpus"][0]["energy_j"] == pytest.approx(1998.0)


def test_lost_gpu_and_missing_samples() -> None:
    samples = gpu_samples()
    for smp in samples[2:]:
        smp.gpus[0] = GpuReading(0, "H100", error="GPU is lost")
    s = summarize_gpus(samples, 0, 4 * S, output_tokens=None, usd_per_kwh=None)
    g0 = s["gpus"][0]
    assert g0["energy_j"] == pytest.approx(300.0) and g0["error"] == "GPU is lost"  # up to the loss
    assert summarize_gpus([], 0, S, 10, 0.1) == {"source": "none", "samples": 0, "gpus": []}
    none = [TelemetrySample(t_ns=k * S, gpu_source="none", gpu_error="no GPU telemetry: NVML did not load")
            for k in range(3)]
    s = summarize_gpus(none, 0, 2 * S, 10, 0.1)
    assert s == {"source": "none", "samples": 3, "error": "no GPU telemetry: NVML did not load", "gpus": []}


def server_samples() -> list[TelemetrySample]:
    out = []
    for k in range(5):
        out.append(TelemetrySample(
            t_ns=k * S,
            gpu_source="none",
            server=ServerReading("vllm", running=2.0 * k, waiting=float(k % 2), kv_cache_usage_frac=0.1 * k,
                                 prompt_tokens_total=1000.0 * k, generation_tokens_total=100.0 * k),
        ))
    return out


def test_server_summary() -> None:
    s = summarize_server(server_samples(), S // 2, 3 * S + S // 2)
    assert s["engine"] == "vllm" and s["samples"] == 3
    assert (s["running_mean"], s["running_max"]) == (4.0, 6.0)  # 2, 4, 6
    assert s["waiting_mean"] == pytest.approx(2 / 3) and s["waiting_max"] == 1.0
    assert s["kv_cache_usage_frac_mean"] == pytest.approx(0.2) and s["kv_cache_usage_frac_max"] == pytest.approx(0.3)
    assert s["prompt_tokens_delta"] == pytest.approx(3000.0) and s["generation_tokens_delta"] == pytest.approx(300.0)
    assert s["generation_tok_per_s"] == pytest.approx(100.0) and s["prompt_tok_per_s"] == pytest.approx(1000.0)


def test_server_restart_drops_the_delta() -> None:
    samples = server_samples()
    samples[2].server.generation_tokens_total = 3.0  # type: ignore[union-attr]
    s = summarize_server(samples, 0, 4 * S)
    assert "generation_tokens_delta" not in s and s["prompt_tokens_delta"] == 4000.0


def test_unknown_server_has_no_stats() -> None:
    samples = [TelemetrySample(t_ns=0, gpu_source="none", server=ServerReading(),
                               server_error="no vLLM or llama.cpp series in the server's /metrics")]
    s = summarize_server(samples, 0, S)
    assert s == {"engine": "unknown", "samples": 0, "error": "no vLLM or llama.cpp series in the server's /metrics"}


def _walk(value: Any) -> None:
    assert value is not None
    assert isinstance(value, (str, int, float, bool, list, dict)), type(value)
    if isinstance(value, dict):
        for k, v in value.items():
            assert isinstance(k, str)
            _walk(v)
    elif isinstance(value, list):
        for v in value:
            _walk(v)


def test_summaries_are_toml_friendly() -> None:
    level = {
        "gpu": summarize_gpus(gpu_samples(), S // 2, 3 * S, output_tokens=7, usd_per_kwh=0.15),
        "server": summarize_server(server_samples(), S // 2, 3 * S),
    }
    _walk(level)
    assert tomllib.loads(tomli_w.dumps({"levels": [level]}))["levels"][0] == level
