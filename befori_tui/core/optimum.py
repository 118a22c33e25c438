"""The answer, not only the table: the cheapest concurrency that meets the latency targets (docs/optimum.md).

A pure function of level summaries (the dicts of docs/results.md, as saved or as computed live), so `bench`, the
monitor, the search (core/search.py) and `befori-tui cost run.toml` all give the same answer from the same
levels.

- The **optimum**: of the levels that meet the SLO (their own percentiles, core/slo.py), the one with the least
  $/M — blended at the config's input:output ratio by default, or input or output alone (`search.by`).
- Its **uncertainty**: its $/M interval (the level's 95% interval), and the concurrencies that cannot be told
  apart from it — every SLO-meeting level whose interval overlaps the optimum's.
- The **range**: the concurrencies whose $/M is within `range_within` (10%) of the minimum, found by walking out
  from the optimum over SLO-meeting levels and, between the last level inside and the first outside,
  interpolating the $/M linearly against log(concurrency) (concurrency grows geometrically, and that is how the
  cost curve is drawn); never past a level that misses the SLO. The prices over the range are those of the
  levels inside and the interpolated ends.
- The **highest concurrency that meets the SLO**: the highest measured level that does, and the lowest level
  above it that misses (the limit lies between).
"""

from __future__ import annotations

import math

from befori_tui.core.cost import blended_usd_per_million
from befori_tui.core.slo import SloTarget, level_failures, level_meets, slo_text

SIDES = ("input", "output")


def _price(s: dict, by: str, blend: float, suffix: str = "") -> float | None:
    """The level's $/M by `by`; suffix "_lo"/"_hi" for its interval (blended: the blend of the sides' ends)."""
    if by == "blended":
        a, b = _finite(s.get(f"usd_per_million_input{suffix}")), _finite(s.get(f"usd_per_million_output{suffix}"))
        if a is None or b is None:
            return None
        return blended_usd_per_million(a, b, blend)
    return _finite(s.get(f"usd_per_million_{by}{suffix}"))


def _finite(v) -> float | None:
    """A price that can be compared: a level with no tokens on one side has an infinite $/M there."""
    return float(v) if v is not None and math.isfinite(v) and v > 0 else None


def load_key(levels: list[dict]) -> str:
    """What the levels vary: `concurrency` (the closed loop) or `rate_per_s` (the open loop, `--rate`)."""
    return "rate_per_s" if any(s.get("rate_per_s") for s in levels) else "concurrency"


def latest_by_concurrency(levels: list[dict], x: str = "concurrency") -> list[dict]:
    """One level per concurrency (or rate: `x`), the latest measured at it (a rerun replaces an earlier one),
    in increasing order."""
    by_c: dict[float, dict] = {}
    for s in levels:
        if s.get("requests_steady", 1) and s.get("usd_per_million_input") is not None and s.get(x):
            by_c[s[x]] = s
    return [by_c[c] for c in sorted(by_c)]


def _name(x: str, value) -> str:
    return f"{value:.3g} req/s" if x == "rate_per_s" else f"c={value}"


def over_capacity(s: dict) -> bool:
    """Open loop: more than 1% of a level's arrivals waited for the cap on requests in flight — the server did
    not keep up with the rate asked, so the level does not qualify (its queue only grows)."""
    return bool(s.get("rate_per_s")) and s.get("requests_delayed_by_cap", 0) > 0.01 * max(1, s.get("requests_sent", 0))


def meets(s: dict, slo: list[SloTarget]) -> bool:
    return not over_capacity(s) and (not slo or level_meets(s, slo) is True)


def _interp(c0: float, p0: float, c1: float, p1: float, price: float) -> float:
    """The concurrency between c0 and c1 where the line through (log c0, p0), (log c1, p1) reaches `price`."""
    if p1 == p0:
        return c1
    x0, x1 = math.log(c0), math.log(c1)
    return math.exp(x0 + (price - p0) / (p1 - p0) * (x1 - x0))


def _value_at(c0: float, v0: float, c1: float, v1: float, c: float) -> float:
    if c1 == c0:
        return v0
    t = (math.log(c) - math.log(c0)) / (math.log(c1) - math.log(c0))
    return v0 + t * (v1 - v0)


def optimum_for(results: dict, slo: list[SloTarget] | None, search) -> dict:
    """find_optimum over a results dict (Session.results(), or a saved session) with a SearchConfig."""
    blend = results.get("pricing", {}).get("blend_input_per_output", 3.0)
    return find_optimum(results.get("levels", []), slo, search.by, search.range_within, blend)


def find_optimum(levels: list[dict], slo: list[SloTarget] | None = None, by: str = "blended",
                 range_within: float = 0.10, blend_input_per_output: float = 3.0) -> dict:
    """The [optimum] table of docs/results.md. `found` is False (with `reason`) when nothing qualifies."""
    slo = list(slo or [])
    x = load_key(levels)  # in the open loop the same answer, over arrival rates: keys named rate_per_s
    out: dict = {"found": False, "by": by, "slo": slo_text(slo), "range_within": range_within}
    points = [s for s in latest_by_concurrency(levels, x) if _price(s, by, blend_input_per_output) is not None]
    out["levels_considered"] = len(points)
    if not points:
        out["reason"] = f"no level has a {by} $/M yet"
        out["sentence"] = f"No optimum: {out['reason']}."
        return out
    ok = [meets(s, slo) for s in points]
    if not any(ok):
        first = points[0]
        missed = "over capacity: arrivals waited for the cap in flight" if over_capacity(first) else \
            ", ".join(level_failures(first, slo)) or "its percentiles are not known yet"
        what = f"{out['slo'] or 'none'}" + (", at the rate asked" if x == "rate_per_s" else "")
        out["reason"] = (f"no level meets the SLO ({what}): even the lowest, {_name(x, first[x])}, "
                         f"misses it ({missed})")
        out["sentence"] = f"No optimum: {out['reason']}."
        return out
    prices = [_price(s, by, blend_input_per_output) for s in points]
    i = min((k for k in range(len(points)) if ok[k]), key=lambda k: prices[k])
    best = points[i]
    out["found"] = True
    out[x] = best[x]
    out["level"] = best.get("level")
    for side in SIDES:
        for suffix in ("", "_lo", "_hi"):
            v = _finite(best.get(f"usd_per_million_{side}{suffix}"))
            if v is not None:
                out[f"usd_per_million_{side}{suffix}"] = v
    if by == "blended":
        out["usd_per_million_blended"] = prices[i]
    # Uncertainty: the SLO-meeting levels whose interval overlaps the optimum's cannot be told apart from it.
    best_lo = _price(best, by, blend_input_per_output, "_lo")
    best_hi = _price(best, by, blend_input_per_output, "_hi")
    if best_lo is not None and best_hi is not None:
        twins = []
        for k, s in enumerate(points):
            lo = _price(s, by, blend_input_per_output, "_lo")
            if ok[k] and (prices[k] if lo is None else lo) <= best_hi:
                twins.append(s[x])
        out[f"{x}_candidates_min"] = min(twins)
        out[f"{x}_candidates_max"] = max(twins)
    # The range within range_within of the minimum.
    limit = prices[i] * (1 + range_within)
    lo_k = hi_k = i
    while lo_k - 1 >= 0 and ok[lo_k - 1] and prices[lo_k - 1] <= limit:
        lo_k -= 1
    while hi_k + 1 < len(points) and ok[hi_k + 1] and prices[hi_k + 1] <= limit:
        hi_k += 1
    c_lo, c_hi = float(points[lo_k][x]), float(points[hi_k][x])
    left = lo_k - 1 if lo_k - 1 >= 0 and ok[lo_k - 1] else None  # cost rises past the limit there: interpolate
    right = hi_k + 1 if hi_k + 1 < len(points) and ok[hi_k + 1] else None
    if left is not None:
        c_lo = _interp(points[lo_k][x], prices[lo_k], points[left][x], prices[left], limit)
    if right is not None:
        c_hi = _interp(points[hi_k][x], prices[hi_k], points[right][x], prices[right], limit)
    if x == "concurrency":  # whole slots, inside the range
        out["range_concurrency_min"] = max(1, math.ceil(c_lo - 1e-9))
        out["range_concurrency_max"] = max(out["range_concurrency_min"], math.floor(c_hi + 1e-9))
    else:
        out[f"range_{x}_min"], out[f"range_{x}_max"] = float(f"{c_lo:.3g}"), float(f"{c_hi:.3g}")
    for side in SIDES:
        values = [_finite(s.get(f"usd_per_million_{side}")) for s in points[lo_k: hi_k + 1]]
        for edge, c_edge in ((left, c_lo), (right, c_hi)):
            if edge is not None:
                inner = lo_k if edge == left else hi_k
                a, b = _finite(points[inner].get(f"usd_per_million_{side}")), _finite(points[edge].get(f"usd_per_million_{side}"))
                if a is not None and b is not None:
                    values.append(_value_at(points[inner][x], a, points[edge][x], b, c_edge))
                else:
                    values.append(None)
        if values and all(v is not None for v in values):
            out[f"range_usd_per_million_{side}_min"] = min(values)
            out[f"range_usd_per_million_{side}_max"] = max(values)
    # The highest measured concurrency that meets the SLO, and the lowest above it that misses.
    top = max(k for k in range(len(points)) if ok[k])
    out[f"max_{x}_meeting_slo"] = points[top][x]
    above = [s[x] for k, s in enumerate(points) if k > top and not ok[k]]
    if above:
        out[f"min_{x}_missing_slo"] = above[0]
    out["sentence"] = sentence(out)
    return out


def _span(x: str, lo, hi) -> str:
    return f"{lo:.3g}–{hi:.3g} req/s" if x == "rate_per_s" else f"c={lo}–{hi}"


def _usd(x: float | None) -> str:
    if x is None:
        return "—"
    return f"${x:,.0f}" if x >= 1000 else f"${x:,.2f}" if x >= 1 else f"${x:.3g}"


def _pm(out: dict, side: str) -> str:
    mid, lo, hi = (out.get(f"usd_per_million_{side}{s}") for s in ("", "_lo", "_hi"))
    if mid is None:
        return f"—/M {side}"
    if lo is not None and hi is not None and mid > 0:
        return f"{_usd(mid)}/M {side} (±{max(hi - mid, mid - lo) / mid * 100:.0f}%)"
    return f"{_usd(mid)}/M {side}"


def sentence(out: dict) -> str:
    """The answer in one sentence, as the seed's author wrote it by hand from the table."""
    if not out.get("found"):
        return f"No optimum: {out.get('reason', 'nothing qualifies')}."
    slo = out.get("slo")
    x = "rate_per_s" if "rate_per_s" in out else "concurrency"
    c = out[x]
    head = f"Cheapest {'meeting ' + slo if slo else 'level'}" + (f" (by {out['by']} $/M)" if out["by"] != "blended" else "")
    parts = [f"{head}: {_name(x, c)} at {_pm(out, 'input')} and {_pm(out, 'output')}"]
    cmin, cmax = out.get(f"{x}_candidates_min"), out.get(f"{x}_candidates_max")
    if cmin is not None and (cmin, cmax) != (c, c):
        parts[0] += f", indistinguishable within the intervals from {_span(x, cmin, cmax)}"
    rmin, rmax = out[f"range_{x}_min"], out[f"range_{x}_max"]
    prices = []
    for side in SIDES:
        a, b = out.get(f"range_usd_per_million_{side}_min"), out.get(f"range_usd_per_million_{side}_max")
        if a is not None:
            prices.append(f"{_usd(a)}–{_usd(b)}/M {side}")
    rng = _span(x, rmin, rmax) if rmin != rmax else f"{_name(x, rmin)} only"
    parts.append(f"within {out['range_within'] * 100:.0f}% of that: {rng}" + (f", {' and '.join(prices)}" if prices else ""))
    if slo:
        miss = out.get(f"min_{x}_missing_slo")
        parts.append(f"the SLO holds up to {_name(x, out[f'max_{x}_meeting_slo'])}"
                     + (f" (missed at {_name(x, miss)})" if miss is not None else " (the highest measured)"))
    return "; ".join(parts) + "."
