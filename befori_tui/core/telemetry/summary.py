"""Per-level telemetry summaries: plain dicts for the results TOML (no None: a missing value is a missing key).

Counters (GPU energy, server token totals) are read at the level's edges by linear interpolation between the
samples either side of t0 and t1, so a 1 Hz sampler does not lose up to two intervals per level. Pass the
samples around the window (e.g. all of them, or t0 - 2 s .. t1 + 2 s); only the nearest one outside each edge
is used for that, and only samples inside t0..t1 count for means and maxima.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from befori_tui.core.telemetry.readings import GpuReading, ServerReading, TelemetrySample

J_PER_KWH = 3.6e6
Point = tuple[int, float]


def _around(samples: Iterable[TelemetrySample], t0_ns: int, t1_ns: int) -> tuple[list[TelemetrySample], list[TelemetrySample]]:
    """(inside t0..t1, inside plus the nearest sample before t0 and after t1), oldest first."""
    ordered = sorted(samples, key=lambda s: s.t_ns)
    inside = [s for s in ordered if t0_ns <= s.t_ns <= t1_ns]
    before = [s for s in ordered if s.t_ns < t0_ns][-1:]
    after = [s for s in ordered if s.t_ns > t1_ns][:1]
    return inside, before + inside + after


def _lerp(a: Point, b: Point, t: int) -> float:
    return a[1] + (b[1] - a[1]) * (t - a[0]) / (b[0] - a[0])


def _clip(points: list[Point], t0_ns: int, t1_ns: int) -> list[Point]:
    """Points inside t0..t1, with the series' value at t0 and t1 interpolated in where it spans an edge."""
    out = [p for p in points if t0_ns <= p[0] <= t1_ns]
    before = [p for p in points if p[0] < t0_ns][-1:]
    after = [p for p in points if p[0] > t1_ns][:1]
    if before and (out or after) and not (out and out[0][0] == t0_ns):
        out.insert(0, (t0_ns, _lerp(before[0], (out or after)[0], t0_ns)))
    if after and out and out[-1][0] != t1_ns:
        out.append((t1_ns, _lerp(out[-1], after[0], t1_ns)))
    return out


def _trapezoid_j(points: list[Point]) -> float:
    return sum((b[0] - a[0]) * 1e-9 * (a[1] + b[1]) / 2 for a, b in zip(points, points[1:]))


def _counter_delta(points: list[Point]) -> float | None:
    """Last minus first, or None when the counter went backwards (GPU reset, server restart)."""
    if len(points) < 2 or any(b[1] < a[1] for a, b in zip(points, points[1:])):
        return None
    return points[-1][1] - points[0][1]


_AGGREGATES: dict[str, Callable[[list[float]], float]] = {
    "mean": lambda v: sum(v) / len(v),
    "max": max,
    "peak": max,
}


def _stats(out: dict[str, Any], key: str, values: list[float | None], *kinds: str) -> None:
    vals = [v for v in values if v is not None]
    for kind in kinds if vals else ():
        out[f"{key}_{kind}"] = float(_AGGREGATES[kind](vals))


def _gpu_summary(index: int, inside: list[GpuReading], around: list[tuple[int, GpuReading]],
                 t0_ns: int, t1_ns: int) -> dict[str, Any]:
    g: dict[str, Any] = {"index": index}
    name = next((r.name for _, r in around if r.name), None)
    if name:
        g["name"] = name
    g["samples"] = len(inside)
    _stats(g, "util_pct", [r.util_pct for r in inside], "mean", "max")
    _stats(g, "mem_util_pct", [r.mem_util_pct for r in inside], "mean")
    _stats(g, "mem_used_mib", [r.mem_used_mib for r in inside], "peak")
    _stats(g, "power_w", [r.power_w for r in inside], "mean", "max")
    _stats(g, "temp_c", [r.temp_c for r in inside], "max")
    _stats(g, "sm_clock_mhz", [r.sm_clock_mhz for r in inside], "mean")
    for key in ("mem_total_mib", "power_limit_w"):
        vals = [getattr(r, key) for r in inside if getattr(r, key) is not None]
        if vals:
            g[key] = max(vals)

    def series(attr: str) -> list[Point]:
        return _clip([(t, getattr(r, attr)) for t, r in around if getattr(r, attr) is not None], t0_ns, t1_ns)

    energy = _counter_delta(series("energy_j"))
    if energy is not None:
        g["energy_j"], g["energy_source"] = energy, "counter"
    else:
        power = series("power_w")
        if len(power) >= 2:
            g["energy_j"], g["energy_source"] = _trapezoid_j(power), "power_integral"
    errors = [r.error for r in inside if r.error]
    if errors:
        g["error"] = errors[-1]
    return g


def summarize_gpus(
    samples: Iterable[TelemetrySample],
    t0_ns: int,
    t1_ns: int,
    output_tokens: int | None = None,
    usd_per_kwh: float | None = None,
) -> dict[str, Any]:
    inside, around = _around(samples, t0_ns, t1_ns)
    ref = inside or around
    out: dict[str, Any] = {"source": ref[-1].gpu_source if ref else "none", "samples": len(inside)}
    if any(s.simulated for s in ref):
        out["simulated"] = True
    errors = [s.gpu_error for s in inside if s.gpu_error]
    if errors:
        out["error"] = errors[-1]
    indices = sorted({g.index for s in around for g in s.gpus})
    gpus = [
        _gpu_summary(
            i,
            [g for s in inside for g in s.gpus if g.index == i],
            [(s.t_ns, g) for s in around for g in s.gpus if g.index == i],
            t0_ns,
            t1_ns,
        )
        for i in indices
    ]
    out["gpus"] = gpus
    if gpus:
        out.update(gpus_overall(gpus))
    with_energy = [g for g in gpus if "energy_j" in g]
    if not with_energy:
        return out
    total_j = sum(g["energy_j"] for g in with_energy)
    sources = {g["energy_source"] for g in with_energy}
    out["energy_j_total"] = total_j
    out["energy_source"] = sources.pop() if len(sources) == 1 else "mixed"
    out["energy_all_gpus"] = len(with_energy) == len(gpus)  # False: the total misses some GPUs
    if output_tokens:
        out["joules_per_output_token"] = total_j / output_tokens
    if usd_per_kwh is not None:
        out["usd_per_kwh"] = float(usd_per_kwh)
        out["usd_energy"] = total_j / J_PER_KWH * usd_per_kwh
        if output_tokens:
            out["usd_energy_per_million_output"] = total_j / output_tokens * 1e6 / J_PER_KWH * usd_per_kwh
    return out


def summarize_server(samples: Iterable[TelemetrySample], t0_ns: int, t1_ns: int) -> dict[str, Any]:
    inside, around = _around(samples, t0_ns, t1_ns)
    readings_in = [s.server for s in inside if s.server is not None]
    known = [r for r in readings_in if r.engine != "unknown"]
    out: dict[str, Any] = {"engine": known[-1].engine if known else "unknown", "samples": len(known)}
    errors = [s.server_error for s in inside if s.server_error]
    if errors:
        out["error"] = errors[-1]
    _stats(out, "running", [r.running for r in known], "mean", "max")
    _stats(out, "waiting", [r.waiting for r in known], "mean", "max")
    _stats(out, "kv_cache_usage_frac", [r.kv_cache_usage_frac for r in known], "mean", "max")

    def counter(get: Callable[[ServerReading], float | None]) -> list[Point]:
        pts = [(s.t_ns, get(s.server)) for s in around if s.server is not None and get(s.server) is not None]
        return _clip(pts, t0_ns, t1_ns)  # type: ignore[arg-type]

    for key, get in (("prompt_tokens", lambda r: r.prompt_tokens_total),
                     ("generation_tokens", lambda r: r.generation_tokens_total)):
        pts = counter(get)
        delta = _counter_delta(pts)
        if delta is None:
            continue
        out[f"{key}_delta"] = delta
        span_s = (pts[-1][0] - pts[0][0]) * 1e-9
        if span_s > 0:
            out[f"{key.removesuffix('_tokens')}_tok_per_s"] = delta / span_s
    return out


def gpus_overall(gpus: list[dict[str, Any]]) -> dict[str, Any]:
    """One line for the whole box over a level, from the per-GPU figures: a session file keeps this and leaves
    the per-GPU tables out unless asked (`gpu_detail`): eight blocks per level made files unreadable."""
    out: dict[str, Any] = {"gpu_count": len(gpus)}
    for key, agg in (("util_pct_mean", "mean"), ("util_pct_max", "max"), ("power_w_mean", "sum"),
                     ("power_w_max", "sum"), ("mem_used_mib_peak", "sum"), ("mem_total_mib", "sum"),
                     ("temp_c_max", "max"), ("sm_clock_mhz_mean", "mean")):
        vals = [g[key] for g in gpus if g.get(key) is not None]
        if vals:
            name = {"power_w_mean": "power_w_mean_total", "power_w_max": "power_w_max_total",
                    "mem_used_mib_peak": "mem_used_mib_peak_total", "mem_total_mib": "mem_total_mib_total"}.get(key, key)
            out[name] = sum(vals) / len(vals) if agg == "mean" else max(vals) if agg == "max" else sum(vals)
    return out
