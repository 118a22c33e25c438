"""Telemetry (docs/telemetry.md): GPUs through NVML or a DCGM exporter, the inference server's /metrics, sampled at
about 1 Hz in a daemon thread, summarised per level for the results."""

from __future__ import annotations

from befori_tui.core.telemetry.prometheus import (
    DcgmSource,
    ServerMetricsSource,
    TelemetryError,
    default_server_metrics_url,
    parse_dcgm,
    parse_server,
)
from befori_tui.core.telemetry.readings import GpuReading, GpuSource, NoGpuSource, ServerReading, TelemetrySample
from befori_tui.core.telemetry.sampler import TelemetrySampler
from befori_tui.core.telemetry.summary import summarize_gpus, summarize_server

__all__ = [
    "DcgmSource", "GpuReading", "GpuSource", "NoGpuSource", "NvmlSource", "ServerMetricsSource", "ServerReading",
    "TelemetryError", "TelemetrySample", "TelemetrySampler", "default_server_metrics_url", "open_gpu_source",
    "open_server_source", "parse_dcgm", "parse_server", "summarize_gpus", "summarize_server",
]

TELEMETRY_SPEC_HELP = "nvml | dcgm:URL | none (default: NVML when it loads, else none)"


def __getattr__(name: str) -> object:
    if name == "NvmlSource":  # keeps `import pynvml` out of plain imports of this package
        from befori_tui.core.telemetry.nvml import NvmlSource

        return NvmlSource
    raise AttributeError(name)


def _dcgm_url(url: str) -> str:
    """Accept "host:9400" as well as a full URL; a bare host:port gets the exporter's /metrics path."""
    if "://" not in url:
        url = "http://" + url
    scheme, _, rest = url.partition("://")
    if scheme not in ("http", "https") or not rest.strip("/"):
        raise ValueError(f"--telemetry dcgm:URL needs an http(s) URL, got {url!r}")
    if "/" not in rest.rstrip("/"):
        url = url.rstrip("/") + "/metrics"
    return url


def open_gpu_source(spec: str | None) -> tuple[GpuSource, str | None]:
    """`spec`: "nvml", "dcgm:URL", "none" or None (auto). Returns (source, note): the note is None, or one line
    saying why there is no GPU telemetry (NVML asked for or auto, but it did not load). Bad spec -> ValueError."""
    text = (spec or "").strip()
    kind, _, rest = text.partition(":")
    kind = kind.lower()
    if kind == "none" and not rest:
        return NoGpuSource("GPU telemetry off (--telemetry none)"), None
    if kind == "dcgm":
        if not rest.strip():
            raise ValueError("--telemetry dcgm:URL needs a URL, e.g. dcgm:http://gpu-box:9400/metrics")
        return DcgmSource(_dcgm_url(rest.strip())), None
    if text and not (kind == "nvml" and not rest):
        raise ValueError(f"--telemetry must be nvml, dcgm:URL or none, got {spec!r}")
    try:
        from befori_tui.core.telemetry.nvml import NvmlSource

        return NvmlSource(), None
    except ImportError:
        reason = "no GPU telemetry: nvidia-ml-py (pynvml) is not installed"
    except Exception as err:  # NVMLError_LibraryNotFound, DriverNotLoaded, no GPUs, ...
        reason = f"no GPU telemetry: NVML did not load ({err})"
    return NoGpuSource(reason), reason


def open_server_source(spec: str | None, base_url: str, timeout_s: float = 2.0) -> ServerMetricsSource | None:
    """`--server-metrics URL|off`; None means the endpoint's server root + /metrics."""
    text = (spec or "").strip()
    if text.lower() == "off":
        return None
    if text and not text.startswith(("http://", "https://")):
        raise ValueError(f"--server-metrics must be an http(s) URL or off, got {spec!r}")
    return ServerMetricsSource(text or default_server_metrics_url(base_url), timeout_s)
