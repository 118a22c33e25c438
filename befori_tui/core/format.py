"""Number formatting for the panels: short, fixed-width friendly, '—' for unknown."""

from __future__ import annotations

DASH = "—"


def dur(seconds: float | None) -> str:
    """A latency: 850µs, 12.3ms, 412ms, 2.41s, 95.0s."""
    if seconds is None:
        return DASH
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f}µs"
    if seconds < 0.1:
        return f"{seconds * 1e3:.1f}ms"
    if seconds < 1:
        return f"{seconds * 1e3:.0f}ms"
    if seconds < 100:
        return f"{seconds:.2f}s"
    return f"{seconds:.0f}s"


def rate(x: float | None) -> str:
    if x is None:
        return DASH
    if x >= 10_000:
        return f"{x / 1000:.1f}k"
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:.1f}"


def usd(x: float | None) -> str:
    """$ per million tokens: 0.00213, 0.0123, 1.23, 12.3, 1,234 — three significant digits below 1, so a
    cheap server never reads 0.00."""
    if x is None or x != x or x == float("inf"):
        return DASH
    if x >= 1000:
        return f"{x:,.0f}"
    if x >= 100:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.2f}"
    if x <= 0:
        return "0"
    return f"{x:.3g}" if x >= 1e-4 else f"{x:.1e}"


def clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:d}:{s // 60 % 60:02d}:{s % 60:02d}"


def interval_pct(summary: dict, name: str) -> float | None:
    """Half the width of the bootstrap interval, as a percentage of the point estimate."""
    mid = summary.get(f"usd_per_million_{name}")
    lo, hi = summary.get(f"usd_per_million_{name}_lo"), summary.get(f"usd_per_million_{name}_hi")
    if mid is None or lo is None or hi is None or not mid > 0:
        return None
    return max(hi - mid, mid - lo) / mid * 100


def settled_mark(summary: dict) -> str:
    """✓ when both $/M have settled (±3%), ~ while they are still moving, — before there is anything."""
    flags = [summary.get("usd_per_million_input_settled"), summary.get("usd_per_million_output_settled")]
    if all(f is None for f in flags):
        return DASH
    return "✓" if all(flags) else "~"


def error_group_name(key: str) -> str:
    """`http_500` → `HTTP 500`; a kind (`timeout`, `connect`, …) as it is."""
    return f"HTTP {key[5:]}" if key.startswith("http_") and key[5:].isdigit() else key


def errors_text(errors: dict[str, int]) -> str:
    """`HTTP 500 ×20, timeout ×4` from error groups (columns.error_groups: by status and kind), most first."""
    return ", ".join(f"{error_group_name(k)} ×{v}" for k, v in errors.items()) if errors else "none"


def bar(frac: float | None, width: int) -> tuple[str, str]:
    """(filled, empty) parts of a bar with eighth-block resolution."""
    if frac is None or width <= 0:
        return "", " " * max(width, 0)
    frac = min(max(frac, 0.0), 1.0)
    eighths = round(frac * width * 8)
    full, part = divmod(eighths, 8)
    filled = "█" * full + (" ▏▎▍▌▋▊▉"[part] if part else "")
    return filled, " " * (width - len(filled))


def price_note(pricing, short: bool = False) -> str | None:
    """What bench's start line and the cost panel say about a price the user did not set (PricingConfig.source);
    None when it is theirs (a flag or the config). `short`: for a narrow panel."""
    price = f"${pricing.usd_per_hour:g}/h"
    if pricing.source == "default":
        return f"default price {price} — set --usd-per-hour" if short else \
            f"priced at the default {price} (8×H100 rental) — set --usd-per-hour"
    if pricing.source == "simulator":
        gpus = f"{pricing.gpu_count} GPU{'s' if pricing.gpu_count != 1 else ''}"
        per_gpu = f"${pricing.usd_per_hour / pricing.gpu_count:g}/h"
        return f"{price}: price of the simulated box" if short else \
            f"priced at {price}, the price of the simulated box ({gpus} at {per_gpu})"
    return None


def short_worker(name: str) -> str:
    """'box-a.example.internal:4242' → 'box-a:4242': a load process named by its host's first label."""
    host, sep, pid = name.rpartition(":")
    return f"{host.split('.')[0]}:{pid}" if sep and host else name


def worker_health(worker: str, lag_ms: float | None, cpu_pct: float | None, alive: bool = True) -> str:
    """One load process's health, compact: 'box-a:4242 lag 0.4ms cpu 23%', or '… lost'."""
    if not alive:
        return f"{short_worker(worker)} lost"
    lag = DASH if lag_ms is None else f"{lag_ms:.1f}ms"
    cpu = DASH if cpu_pct is None else f"{cpu_pct:.0f}%"
    return f"{short_worker(worker)} lag {lag} cpu {cpu}"
