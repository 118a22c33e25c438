"""Prometheus scrapes: a DCGM exporter (remote GPUs) and the inference server's own /metrics.

Text is parsed with prometheus_client's parser, never by hand. Scrapes are synchronous (httpx.Client) with a
short timeout: they run in the sampler's thread, never on the load loop.
"""

from __future__ import annotations

import math
from ipaddress import ip_address
from typing import Callable, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families

from befori_tui.core.telemetry.readings import GpuReading, ServerReading

T = TypeVar("T")
Series = dict[str, list[tuple[dict[str, str], float]]]


class TelemetryError(Exception):
    """A scrape that gave nothing usable; the message is one line for the panel."""


def parse_series(text: str) -> Series:
    """Sample name -> [(labels, value)]. A trailing `_total` is dropped from names, because the parser adds it
    to counters that lack it (DCGM's energy counter) and keeps it on those that have it (vLLM's)."""
    out: Series = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            value = float(s.value)
            if math.isnan(value):
                continue
            out.setdefault(s.name.removesuffix("_total"), []).append((s.labels, value))
    return out


# DCGM field -> (GpuReading attribute, factor to our unit)
_DCGM_FIELDS = {
    "DCGM_FI_DEV_GPU_UTIL": ("util_pct", 1.0),
    "DCGM_FI_DEV_MEM_COPY_UTIL": ("mem_util_pct", 1.0),
    "DCGM_FI_DEV_FB_USED": ("mem_used_mib", 1.0),  # MiB
    "DCGM_FI_DEV_POWER_USAGE": ("power_w", 1.0),  # W
    "DCGM_FI_DEV_ENFORCED_POWER_LIMIT": ("power_limit_w", 1.0),  # W, only if the exporter's CSV asks for it
    "DCGM_FI_DEV_POWER_MGMT_LIMIT": ("power_limit_w", 1.0),
    "DCGM_FI_DEV_GPU_TEMP": ("temp_c", 1.0),
    "DCGM_FI_DEV_SM_CLOCK": ("sm_clock_mhz", 1.0),  # MHz
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": ("energy_j", 1e-3),  # mJ
}
_FB_TOTAL_PARTS = ("DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE", "DCGM_FI_DEV_FB_RESERVED")


def parse_dcgm(text: str) -> list[GpuReading]:
    series = parse_series(text)
    gpus: dict[int, GpuReading] = {}
    fb: dict[int, float] = {}
    for metric, samples in series.items():
        if not metric.startswith("DCGM_FI_DEV_"):
            continue
        for labels, value in samples:
            if labels.get("GPU_I_ID"):  # a MIG instance's series; we report whole GPUs
                continue
            try:
                idx = int(labels["gpu"])
            except (KeyError, ValueError):
                continue
            r = gpus.setdefault(idx, GpuReading(index=idx))
            r.name = r.name or labels.get("modelName") or None
            if metric in _DCGM_FIELDS:
                attr, factor = _DCGM_FIELDS[metric]
                setattr(r, attr, value * factor)
            if metric in _FB_TOTAL_PARTS:
                fb[idx] = fb.get(idx, 0.0) + value
    if not gpus:
        raise TelemetryError("no DCGM_FI_DEV_* series with a gpu label")
    for idx, r in gpus.items():
        if r.mem_used_mib is not None and idx in fb:
            r.mem_total_mib = fb[idx]  # used + free (+ reserved), all MiB
    return [gpus[i] for i in sorted(gpus)]


def _sum(series: Series, name: str) -> float | None:
    values = [v for _, v in series.get(name, [])]
    return sum(values) if values else None


def _mean(series: Series, name: str) -> float | None:
    values = [v for _, v in series.get(name, [])]
    return sum(values) / len(values) if values else None


def parse_server(text: str) -> ServerReading:
    """vLLM or llama.cpp series; anything else is engine "unknown" with every field None.
    Several vLLM engines (data parallel) or models: counts and counters are summed, KV usage averaged."""
    s = parse_series(text)
    if any(k.startswith("vllm:") for k in s):
        kv = "vllm:kv_cache_usage_perc" if "vllm:kv_cache_usage_perc" in s else "vllm:gpu_cache_usage_perc"
        return ServerReading(
            engine="vllm",
            running=_sum(s, "vllm:num_requests_running"),
            waiting=_sum(s, "vllm:num_requests_waiting"),
            kv_cache_usage_frac=_mean(s, kv),  # "perc" but 0..1 (1 = 100 %)
            prompt_tokens_total=_sum(s, "vllm:prompt_tokens"),
            generation_tokens_total=_sum(s, "vllm:generation_tokens"),
        )
    if any(k.startswith("llamacpp:") for k in s):
        return ServerReading(
            engine="llamacpp",
            running=_sum(s, "llamacpp:requests_processing"),
            waiting=_sum(s, "llamacpp:requests_deferred"),
            kv_cache_usage_frac=_mean(s, "llamacpp:kv_cache_usage_ratio"),  # older llama.cpp only
            prompt_tokens_total=_sum(s, "llamacpp:prompt_tokens"),
            generation_tokens_total=_sum(s, "llamacpp:tokens_predicted"),
        )
    return ServerReading(engine="unknown")


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


class _Scraper:
    def __init__(self, url: str, timeout_s: float) -> None:
        self.url = url
        self.timeout_s = timeout_s
        # Loopback never goes through an HTTP(S)_PROXY from the environment.
        self._client = httpx.Client(timeout=timeout_s, trust_env=not _is_loopback(url), follow_redirects=True)

    def get(self) -> str:
        shown = _redacted(self.url)
        try:
            resp = self._client.get(self.url)
        except httpx.TimeoutException:
            raise TelemetryError(f"timed out after {self.timeout_s:g} s scraping {shown}") from None
        except httpx.HTTPError as err:
            raise TelemetryError(f"cannot scrape {shown}: {type(err).__name__}: {err}") from None
        if resp.status_code == 404:
            raise TelemetryError(f"no metrics at {shown} (HTTP 404)")
        if resp.status_code != 200:
            raise TelemetryError(f"HTTP {resp.status_code} from {shown}")
        return resp.text

    def parse(self, parser: Callable[[str], T], text: str) -> T:
        try:
            return parser(text)
        except TelemetryError as err:
            raise TelemetryError(f"{err} at {_redacted(self.url)}") from None
        except ValueError:
            raise TelemetryError(f"{_redacted(self.url)} did not return Prometheus text") from None

    def close(self) -> None:
        self._client.close()


class DcgmSource:
    """GPUs from a DCGM exporter's /metrics (set its collect interval near 1 s: its default is 30 s)."""

    name = "dcgm"

    def __init__(self, url: str, timeout_s: float = 2.0) -> None:
        self.url = url
        self._scraper = _Scraper(url, timeout_s)

    def read(self) -> list[GpuReading]:
        return self._scraper.parse(parse_dcgm, self._scraper.get())

    def close(self) -> None:
        self._scraper.close()


class ServerMetricsSource:
    """The inference server's /metrics (vLLM, llama.cpp started with --metrics)."""

    def __init__(self, url: str, timeout_s: float = 2.0) -> None:
        self.url = url
        self._scraper = _Scraper(url, timeout_s)

    def read(self) -> ServerReading:
        return self._scraper.parse(parse_server, self._scraper.get())

    def close(self) -> None:
        self._scraper.close()


def default_server_metrics_url(base_url: str) -> str:
    """The server root's /metrics: "http://h:8000/v1" -> "http://h:8000/metrics"."""
    parts = urlsplit(base_url)
    path = parts.path.rstrip("/").removesuffix("/v1")
    return urlunsplit((parts.scheme, parts.netloc, path + "/metrics", "", ""))
