"""What one telemetry sample holds (docs/telemetry.md). Plain dataclasses; None means n/a."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(slots=True)
class GpuReading:
    index: int
    name: str | None = None
    util_pct: float | None = None
    mem_util_pct: float | None = None
    mem_used_mib: float | None = None
    mem_total_mib: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    temp_c: float | None = None
    sm_clock_mhz: float | None = None
    energy_j: float | None = None  # cumulative counter (since boot / driver load), not per sample
    error: str | None = None  # e.g. "GPU is lost": every metric above is then None


@dataclass(slots=True)
class ServerReading:
    engine: str = "unknown"  # "vllm" | "llamacpp" | "unknown"
    running: float | None = None
    waiting: float | None = None
    kv_cache_usage_frac: float | None = None  # 0..1
    prompt_tokens_total: float | None = None  # cumulative counters
    generation_tokens_total: float | None = None


@dataclass(slots=True)
class TelemetrySample:
    t_ns: int  # time.perf_counter_ns(), same clock as RequestRecord
    gpu_source: str  # "nvml" | "dcgm" | "none"
    gpus: list[GpuReading] = field(default_factory=list)
    server: ServerReading | None = None
    gpu_error: str | None = None
    server_error: str | None = None
    simulated: bool = False  # a GPU name says "simulated" (the befori-tui sim's DCGM series)


class GpuSource(Protocol):
    name: str

    def read(self) -> list[GpuReading]: ...
    def close(self) -> None: ...


class NoGpuSource:
    """No GPU telemetry; `reason` says why, for the panel."""

    name = "none"

    def __init__(self, reason: str = "GPU telemetry off") -> None:
        self.reason = reason

    def read(self) -> list[GpuReading]:
        return []

    def close(self) -> None:
        pass
