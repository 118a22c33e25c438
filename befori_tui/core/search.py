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
    x: str = "concurrency"  # or "rate_per_s": the open loop's search runs over arrival rates
    phase: str = "up"  # up | down | refine | done
    done_reason: str = ""

    def __post_init__(self) -> None:
        if self.x == "concurrency":
            self.start = max(1, min(self.start, self.max_concurrency))

    def _probe(self, value: float) -> float:
        """Whole slots for concurrency; three significant figures for a rate."""
        if self.x == "concurrency":
            return max(1, min(self.max_concurrency, round(value)))
        return float(f"{min(value, self.max_concurrency):.3g}")

    def _name(self, value) -> str:
        return f"{value:g} req/s" if self.x == "rate_per_s" else f"c={value}"

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
        x = self.x
        last = levels[-1]
        c_last = last[x]
        if self.price(last) is None:
            self._done(f"level {self._name(c_last)} gave no $/M (no request succeeded, or no output tokens)")
            return None
        points = [s for s in latest_by_concurrency(levels, x) if self.price(s) is not None]
        measured = {s[x] for s in points}
        ok = [meets(s, self.slo) for s in points]
        floor = 1 if x == "concurrency" else 0.0  # rates go down without a floor (but never to 0)
        if not any(ok):
            lowest = points[0][x]
            if lowest <= 1 and x == "concurrency":
                self._done("no level meets the SLO, not even c=1")
                return None
            if x == "rate_per_s" and len(levels) >= 8 and self.phase == "down":
                self._done(f"no level meets the SLO, not even {self._name(lowest)}")
                return None
            self.phase = "down"
            return max(floor, math.floor(lowest / self.factor)) if x == "concurrency" else self._probe(lowest / self.factor)
        if self.phase in ("up", "down"):
            prev = [s for s in levels[:-1] if self.price(s) is not None]
            rising = self.phase == "up" and prev and prev[-1][x] < c_last and self.price(last) >= self.price(prev[-1])
            if self.phase == "up" and meets(last, self.slo) and not rising and c_last < self.max_concurrency:
                nxt = self._probe(c_last * self.factor)
                return max(c_last + 1, nxt) if x == "concurrency" else nxt
            self.phase = "refine"
        # Refine around the cheapest SLO-meeting level.
        i = min((k for k in range(len(points)) if ok[k]), key=lambda k: self.price(points[k]))
        c = points[i][x]
        lower = points[i - 1][x] if i > 0 else None
        upper = points[i + 1][x] if i + 1 < len(points) else None
        candidates: list[tuple[float, float]] = []  # (how wide the side is, in log c; the probe)
        if lower is None:
            if c > 1 or x == "rate_per_s":  # nothing measured below the cheapest: look below it, a whole step
                below = max(1, math.floor(c / self.factor)) if x == "concurrency" else self._probe(c / self.factor)
                candidates.append((math.log(self.factor), below))
        elif c / lower > 1 + self.tolerance:
            candidates.append((math.log(c / lower), self._probe(math.sqrt(c * lower))))
        if upper is None:
            if c < self.max_concurrency:
                candidates.append((math.log(self.factor), self._probe(c * self.factor)))
        elif upper / c > 1 + self.tolerance:
            candidates.append((math.log(upper / c), self._probe(math.sqrt(c * upper))))
        for _width, probe in sorted(candidates, reverse=True):
            if probe not in measured and 0 < probe <= self.max_concurrency and (x != "concurrency" or probe >= 1):
                return probe
        lo = ("c=1" if x == "concurrency" else "nothing") if lower is None else self._name(lower)
        hi = f"the cap {self._name(self.max_concurrency)}" if upper is None else self._name(upper)
        self._done(f"cheapest {self._name(c)}, bracketed by {lo} and {hi} (±{self.tolerance * 100:.0f}% or no "
                   "value left between)")
        return None
