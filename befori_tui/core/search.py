"""The optimum search: which concurrency to measure next, from the levels measured so far (docs/optimum.md).

A pure decision — level summaries in, the next concurrency (or None, with the reason) out — so the run
controller (core/controller.py) only measures what it is told, and tests can drive it with made-up levels.

1. **Up**: from the start, concurrency × `factor` (2) each level, until a level misses the SLO, its $/M stops
   falling, or `max_concurrency` is reached. A start that misses the SLO steps down instead (÷ factor) until a
   level meets it, or c=1 misses it too: then nothing does.
2. **Refine**: the cheapest SLO-meeting level so far, c*, sits between its measured neighbours L < c* < U
   (the bracket). Measure the geometric middle of the wider side (bisection in log c); the new level either
   becomes c* or narrows the bracket. A side is closed when its neighbour is within ±`tolerance` of c*, when
   c* is 1 or the cap, or when no integer is left between them.
3. **Stop** when both sides are closed (the cheapest is bracketed within ±tolerance), after `max_levels`
   levels, or when a level gives no $/M (every request failed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from befori_tui.core.optimum import _price, latest_by_concurrency, meets


@dataclass
class OptimumSearch:
    start: int = 1
    max_concurrency: int = 1024
    slo: list = field(default_factory=list)
    by: str = "blended"
    tolerance: float = 0.10
    factor: float = 2.0
    blend_input_per_output: float = 3.0
    max_levels: int = 40  # a bound on the search, whatever the levels say
    phase: str = "up"  # up | down | refine | done
    done_reason: str = ""

    def __post_init__(self) -> None:
        self.start = max(1, min(self.start, self.max_concurrency))

    def price(self, s: dict) -> float | None:
        return _price(s, self.by, self.blend_input_per_output)

    def _done(self, reason: str) -> None:
        self.phase, self.done_reason = "done", reason

    def next(self, levels: list[dict]) -> int | None:
        """`levels`: the summaries of the levels this search measured, in the order measured (the last is the
        one just finished). The next concurrency to measure, or None when done (see `done_reason`)."""
        if self.phase == "done":
            return None
        if not levels:
            return self.start
        if len(levels) >= self.max_levels:
            self._done(f"stopped after {self.max_levels} levels")
            return None
        last = levels[-1]
        c_last = last["concurrency"]
        if self.price(last) is None:
            self._done(f"level c={c_last} gave no $/M (no request succeeded, or no output tokens)")
            return None
        points = [s for s in latest_by_concurrency(levels) if self.price(s) is not None]
        measured = {s["concurrency"] for s in points}
        ok = [meets(s, self.slo) for s in points]
        if not any(ok):
            lowest = points[0]["concurrency"]
            if lowest <= 1:
                self._done("no level meets the SLO, not even c=1")
                return None
            self.phase = "down"
            return max(1, math.floor(lowest / self.factor))
        if self.phase in ("up", "down"):
            prev = [s for s in levels[:-1] if self.price(s) is not None]
            rising = self.phase == "up" and prev and prev[-1]["concurrency"] < c_last and \
                self.price(last) >= self.price(prev[-1])
            if self.phase == "up" and meets(last, self.slo) and not rising and c_last < self.max_concurrency:
                return min(self.max_concurrency, max(c_last + 1, round(c_last * self.factor)))
            self.phase = "refine"
        # Refine around the cheapest SLO-meeting level.
        i = min((k for k in range(len(points)) if ok[k]), key=lambda k: self.price(points[k]))
        c = points[i]["concurrency"]
        lower = points[i - 1]["concurrency"] if i > 0 else None
        upper = points[i + 1]["concurrency"] if i + 1 < len(points) else None
        candidates: list[tuple[float, int]] = []  # (how wide the side is, in log c; the probe)
        if lower is None:
            if c > 1:  # nothing measured below the cheapest: look below it, a whole step
                candidates.append((math.log(self.factor), max(1, math.floor(c / self.factor))))
        elif c / lower > 1 + self.tolerance:
            candidates.append((math.log(c / lower), round(math.sqrt(c * lower))))
        if upper is None:
            if c < self.max_concurrency:
                candidates.append((math.log(self.factor), min(self.max_concurrency, round(c * self.factor))))
        elif upper / c > 1 + self.tolerance:
            candidates.append((math.log(upper / c), round(math.sqrt(c * upper))))
        for _width, probe in sorted(candidates, reverse=True):
            if probe not in measured and 1 <= probe <= self.max_concurrency:
                return probe
        lo = "c=1" if lower is None else f"c={lower}"
        hi = f"the cap c={self.max_concurrency}" if upper is None else f"c={upper}"
        self._done(f"cheapest c={c}, bracketed by {lo} and {hi} (±{self.tolerance * 100:.0f}% or no "
                   "concurrency left between)")
        return None
