"""DCGM exporter and inference-server /metrics: parsing realistic fixtures, and scraping over a real socket."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from befori_tui.core.telemetry import (
    DcgmSource,
    NoGpuSource,
    ServerMetricsSource,
    TelemetryError,
    TelemetrySampler,
    default_server_metrics_url,
    open_server_source,
    parse_dcgm,
    parse_server,
    summarize_gpus,
    summarize_server,
)

FIXTURES = Path(__file__).parent / "fixtures" / "telemetry"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


class MetricsServer:
    """A real loopback HTTP server: `routes[path] = (status, body)`; anything else is a 404."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, str]] = {}
        self.hits: dict[str, int] = {}
        routes, hits = self.routes, self.hits

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits[self.path] = hits.get(self.path, 0) + 1
                status, body = routes.get(self.path, (404, "Not Found"))
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    srv = MetricsServer()
    yield srv
    srv.close()


def test_parse_dcgm_exporter_page() -> None:
    gpus = parse_dcgm(fixture("dcgm_8xh100.txt"))
    assert [g.index for g in gpus] == list(range(8))
    g = gpus[2]
    assert g.name == "NVIDIA H100 80GB HBM3"
    assert (g.util_pct, g.mem_util_pct) == (92.0, 32.0)
    assert g.mem_used_mib == 72200.0 and g.mem_total_mib == 72200.0 + 8835.0  # FB_USED + FB_FREE, MiB
    assert g.power_w == pytest.approx(432.5) and g.power_limit_w is None  # not in the default CSV
    assert (g.temp_c, g.sm_clock_mhz) == (43.0, 1980.0)
    assert g.energy_j == pytest.approx(8_125_456.789)  # mJ -> J


def test_parse_dcgm_without_gpu_series_raises() -> None:
    with pytest.raises(TelemetryError):
        parse_dcgm(fixture("llamacpp.txt"))


def test_parse_vllm_sums_engines_and_reads_kv_fraction() -> None:
    r = parse_server(fixture("vllm_v1_dp2.txt"))
    assert r.engine == "vllm"
    assert (r.running, r.waiting) == (22.0, 4.0)
    assert r.kv_cache_usage_frac == pytest.approx(0.40)
    assert r.prompt_tokens_total == 1_234_567 + 1_200_000
    assert r.generation_tokens_total == 900_000.0


def test_parse_older_vllm_gpu_cache_usage() -> None:
    r = parse_server(fixture("vllm_v0_legacy.txt"))
    assert r.engine == "vllm" and r.running == 7.0 and r.waiting == 0.0
    assert r.kv_cache_usage_frac == pytest.approx(0.0625)
    assert (r.prompt_tokens_total, r.generation_tokens_total) == (52311.0, 98004.0)


def test_parse_llamacpp() -> None:
    r = parse_server(fixture("llamacpp.txt"))
    assert r.engine == "llamacpp"
    assert (r.running, r.waiting, r.kv_cache_usage_frac) == (2.0, 1.0, None)
    assert (r.prompt_tokens_total, r.generation_tokens_total) == (18342.0, 40960.0)


def test_unknown_series_is_unknown_engine() -> None:
    text = "# HELP python_info x\n# TYPE python_info gauge\npython_info{version=\"3.12\"} 1.0\n"
    r = parse_server(text)
    assert r.engine == "unknown" and r.running is None and r.generation_tokens_total is None


@pytest.mark.parametrize(
    ("base", "want"),
    [
        ("http://gpu-box:8000/v1", "http://gpu-box:8000/metrics"),
        ("http://gpu-box:8000/v1/", "http://gpu-box:8000/metrics"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/metrics"),
        ("https://host/proxy/v1?x=1", "https://host/proxy/metrics"),
    ],
)
def test_default_server_metrics_url(base: str, want: str) -> None:
    assert default_server_metrics_url(base) == want


def test_open_server_source() -> None:
    assert open_server_source("off", "http://h:8000/v1") is None
    src = open_server_source(None, "http://h:8000/v1")
    assert src is not None and src.url == "http://h:8000/metrics"
    src.close()
    with pytest.raises(ValueError):
        open_server_source("h:8000/metrics", "http://h:8000/v1")


def test_scrape_over_loopback_and_errors(server: MetricsServer) -> None:
    server.routes["/dcgm"] = (200, fixture("dcgm_8xh100.txt"))
    server.routes["/metrics"] = (200, fixture("vllm_v1_dp2.txt"))
    server.routes["/html"] = (200, "<html><body>hello</body></html>")
    server.routes["/nometrics"] = (501, "This server does not support metrics endpoint.")
    dcgm = DcgmSource(server.url + "/dcgm")
    assert len(dcgm.read()) == 8
    dcgm.close()
    src = ServerMetricsSource(server.url + "/metrics")
    assert src.read().running == 22.0
    src.close()
    for path, words in (("/missing", "404"), ("/html", "Prometheus"), ("/nometrics", "HTTP 501")):
        s = ServerMetricsSource(server.url + path)
        with pytest.raises(TelemetryError, match=words):
            s.read()
        s.close()


def test_refused_connection_is_a_telemetry_error() -> None:
    probe = MetricsServer()
    url = probe.url + "/metrics"
    probe.close()  # nothing listens there now
    src = ServerMetricsSource(url, timeout_s=0.5)
    with pytest.raises(TelemetryError, match="cannot scrape"):
        src.read()
    src.close()


def test_sampler_scrapes_dcgm_and_vllm_in_its_thread(server: MetricsServer) -> None:
    server.routes["/dcgm"] = (200, fixture("dcgm_8xh100.txt").replace("NVIDIA H100 80GB HBM3", "H100 80GB (simulated)"))
    server.routes["/metrics"] = (200, fixture("vllm_v1_dp2.txt"))
    seen: list[object] = []
    main_thread = threading.get_ident()
    threads: set[int] = set()

    def on_sample(sample: object) -> None:
        threads.add(threading.get_ident())
        seen.append(sample)

    sampler = TelemetrySampler(DcgmSource(server.url + "/dcgm"), ServerMetricsSource(server.url + "/metrics"),
                               interval_s=0.05, on_sample=on_sample)
    t0 = time.perf_counter_ns()
    sampler.start()
    deadline = time.monotonic() + 5
    while len(seen) < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    sampler.stop()
    t1 = time.perf_counter_ns()
    assert sampler._thread is not None and not sampler._thread.is_alive()
    n = len(seen)
    assert n >= 4 and main_thread not in threads
    time.sleep(0.12)
    assert len(seen) == n  # stopped means stopped

    last = sampler.latest()
    assert last is seen[-1] and last.gpu_source == "dcgm" and last.simulated
    assert len(last.gpus) == 8 and last.gpu_error is None
    assert last.server is not None and last.server.engine == "vllm" and last.server_error is None
    window = sampler.samples_between(t0, t1)
    assert len(window) == n and all(t0 <= s.t_ns <= t1 for s in window)
    assert sampler.samples_between(t1 + 1, t1 + 10**9) == []
    gaps_s = [(b.t_ns - a.t_ns) / 1e9 for a, b in zip(window, window[1:])]
    assert all(0.03 < g < 0.5 for g in gaps_s)  # about the interval, not a busy loop

    g = summarize_gpus(window, t0, t1, output_tokens=100, usd_per_kwh=0.1)
    assert g["source"] == "dcgm" and g["simulated"] is True and len(g["gpus"]) == 8
    assert g["gpus"][0]["energy_j"] == 0.0 and g["gpus"][0]["energy_source"] == "counter"  # static page
    assert g["gpus"][0]["util_pct_mean"] == 90.0 and g["gpus"][0]["mem_used_mib_peak"] == 72000.0
    s = summarize_server(window, t0, t1)
    assert s["engine"] == "vllm" and s["running_mean"] == 22.0 and s["generation_tokens_delta"] == 0.0


def test_sampler_without_metrics_or_gpus_says_so(server: MetricsServer) -> None:
    server.routes["/unknown"] = (200, "# TYPE up gauge\nup 1\n")
    for path, words in (("/metrics", "404"), ("/unknown", "no vLLM or llama.cpp")):
        sampler = TelemetrySampler(NoGpuSource("no GPU telemetry: test"), ServerMetricsSource(server.url + path))
        sample = sampler.sample_once()
        sampler.stop()
        assert sample.gpus == [] and sample.gpu_source == "none" and sample.gpu_error == "no GPU telemetry: test"
        assert sample.server_error is not None and words in sample.server_error
        assert summarize_server([sample], sample.t_ns, sample.t_ns)["error"] == sample.server_error
