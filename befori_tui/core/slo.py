"""Latency targets (SLOs): what "meets ttft_p99=2s" means, per request and per level (docs/results.md, "SLOs").

A target is a metric (ttft, itl, tpot, e2e), a percentile (50, 90, 99) and a limit in seconds.

- A **request** meets a target when its own figure is within the limit: its TTFT, TPOT or E2E (one number per
  request, so the percentile does not apply to it), or — for ITL, of which a request has many — the same
  percentile of its own inter-token gaps. A request meets the SLO when it meets every target; a failed request
  meets none.
- A **level** meets a target when the level's figure (`ttft_s_p99`, …: the percentile over its steady requests,
  for ITL over all their gaps, as the level table reports) is within the limit; it meets the SLO when it meets
  every target.

Goodput and the SLO-met $/M count only the requests that met the SLO.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

METRICS = ("ttft", "itl", "tpot", "e2e")
SLO_PERCENTILES = (50, 90, 99)
_KEY = re.compile(r"^(ttft|itl|tpot|e2e)_p(50|90|99)$")
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|s|us|µs)?\s*$")


class SloError(ValueError):
    """Bad SLO input; the message is one line naming what was wrong."""


@dataclass(frozen=True)
class SloTarget:
    metric: str  # ttft | itl | tpot | e2e
    percentile: int  # 50 | 90 | 99
    limit_s: float

    @property
    def key(self) -> str:
        return f"{self.metric}_p{self.percentile}"

    @property
    def summary_key(self) -> str:
        """The level summary's figure this target is checked against."""
        return f"{self.metric}_s_p{self.percentile}"

    def text(self) -> str:
        return f"{self.key}={format_duration(self.limit_s)}"


def format_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1e3:g}ms"
    return f"{seconds:g}s"


def parse_duration(value, where: str) -> float:
    """'2s', '60ms', '1.5', 2 → seconds. A bare number is seconds."""
    if isinstance(value, bool):
        raise SloError(f"{where}: expected a duration such as 2s or 60ms, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        m = _DURATION.match(str(value))
        if not m:
            raise SloError(f"{where}: expected a duration such as 2s or 60ms, got {value!r}")
        unit = m.group(2) or "s"
        seconds = float(m.group(1)) * {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6}[unit]
    if not seconds > 0 or seconds != seconds or seconds == float("inf"):
        raise SloError(f"{where}: a limit must be > 0, got {value!r}")
    return seconds


def parse_slo(text: str, where: str = "--slo") -> list[SloTarget]:
    """'ttft_p99=2s,itl_p99=60ms,e2e_p99=30s' (any subset) → targets, in the order given."""
    targets: dict[str, SloTarget] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq:
            raise SloError(f"{where}: expected KEY=LIMIT such as ttft_p99=2s, got {part!r}")
        targets[key] = target_from(key, value.strip(), where)
    if not targets:
        raise SloError(f"{where}: no target given (e.g. ttft_p99=2s,itl_p99=60ms,e2e_p99=30s)")
    return list(targets.values())


def target_from(key: str, value, where: str) -> SloTarget:
    m = _KEY.match(key)
    if not m:
        raise SloError(f"{where}: unknown target {key!r} (known: {{ttft,itl,tpot,e2e}}_p{{50,90,99}}, "
                       "e.g. ttft_p99)")
    return SloTarget(m.group(1), int(m.group(2)), parse_duration(value, f"{where} {key}"))


def slo_text(targets: list[SloTarget]) -> str:
    return ",".join(t.text() for t in targets)


def level_meets(summary: dict, targets: list[SloTarget]) -> bool | None:
    """Whether a level's own percentiles meet every target; None when a figure is not known yet."""
    for t in targets:
        value = summary.get(t.summary_key)
        if value is None:
            return None
        if value > t.limit_s:
            return False
    return True


def level_failures(summary: dict, targets: list[SloTarget]) -> list[str]:
    """The targets a level misses, as 'ttft_p99 3.1s > 2s'."""
    out = []
    for t in targets:
        value = summary.get(t.summary_key)
        if value is not None and value > t.limit_s:
            shown = f"{value * 1e3:.3g}ms" if value < 1 else f"{value:.3g}s"  # a measured figure: 3 digits
            out.append(f"{t.key} {shown} > {format_duration(t.limit_s)}")
    return out


def requests_meeting(cols, mask: np.ndarray, targets: list[SloTarget]) -> np.ndarray:
    """Of the requests in `mask` (RecordColumns rows), which met every target: a boolean array over all rows.
    Only ok requests with a first token can meet one."""
    from befori_tui.core.columns import NONE_NS

    meets = mask & cols.ok() & (cols.first != NONE_NS)
    if not targets or not meets.any():
        return meets
    send, first, end, n_out = cols.send, cols.first, cols.end, cols.n_out
    for t in targets:
        if t.metric == "ttft":
            meets &= (first - send) <= t.limit_s * 1e9
        elif t.metric == "e2e":
            meets &= (end - send) <= t.limit_s * 1e9
        elif t.metric == "tpot":
            with np.errstate(divide="ignore", invalid="ignore"):
                tpot_ns = np.where(n_out >= 2, (end - first) / np.maximum(n_out - 1, 1), 0.0)
            meets &= tpot_ns <= t.limit_s * 1e9
        else:  # itl: the request's own percentile of its gaps (none: nothing to miss)
            meets &= _itl_percentile_ns(cols, meets, t.percentile) <= t.limit_s * 1e9
    return meets


def _itl_percentile_ns(cols, mask: np.ndarray, percentile: int) -> np.ndarray:
    """Each row's own ITL percentile (ns, linear interpolation as numpy's), 0 for rows outside `mask` or without
    gaps. Vectorised (one sort of all gaps by row, then value): the live screen computes this twice a second."""
    counts = cols.itl_n
    out = np.zeros(len(mask))
    use = mask & (counts > 0)
    if not use.any():
        return out
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    rows = np.repeat(np.arange(len(counts)), counts)
    ordered = cols.itl[np.lexsort((cols.itl, rows))].astype(float)
    idx = np.flatnonzero(use)
    pos = percentile / 100.0 * (counts[idx] - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.ceil(pos).astype(np.int64)
    a, b = ordered[starts[idx] + lo], ordered[starts[idx] + hi]
    out[idx] = a + (b - a) * (pos - lo)
    return out
