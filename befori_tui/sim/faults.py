"""Injected faults for reliability tests: each request draws at most one fault, seeded and in arrival order."""

from __future__ import annotations

import random

FAULT_KINDS = ("http_500", "http_429", "drop", "malformed", "stall", "no_done")
STALL_S = 3600.0  # far longer than any client timeout; ends early when the client disconnects
RETRY_AFTER_S = 1


class SimulatedDrop(Exception):
    """Raised inside a response after it started: uvicorn then closes the connection mid-body."""


class FaultPlan:
    def __init__(self, rates: dict[str, float] | None = None, seed: int = 0) -> None:
        rates = dict(rates or {})
        for kind, rate in rates.items():
            if kind not in FAULT_KINDS:
                raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"fault rate for {kind} must be within [0, 1], got {rate}")
        if sum(rates.values()) > 1.0 + 1e-9:
            raise ValueError("fault rates add up to more than 1")
        self.rates = rates
        self._rng = random.Random(f"faults:{seed}")

    def draw(self) -> str | None:
        """One uniform draw per request, so each kind happens with exactly its rate."""
        if not self.rates:
            return None
        u = self._rng.random()
        acc = 0.0
        for kind, rate in self.rates.items():
            acc += rate
            if u < acc:
                return kind
        return None
