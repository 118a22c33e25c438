"""Cost per token (README, "The cost methods"; docs/results.md).

befori — Ori's BeFOri method, kept for comparability: with R slots and hourly price H,
    T_in = R·mean(N_in)/mean(TTFT),  T_out = R·mean(N_out)/mean(E2E − TTFT),  $/token = (H/3600)/T.
occupancy — ours: at every instant the server's cost is shared equally by the requests in flight; a
    request's share before its first token is billed to its input tokens, afterwards to its output tokens,
    and time with nothing in flight is idle. Input + output + idle (+ failed requests' share) = the bill.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BeforiCost:
    input_tok_per_s: float
    output_tok_per_s: float
    usd_per_input_token: float
    usd_per_output_token: float

    @property
    def usd_per_million_input(self) -> float:
        return self.usd_per_input_token * 1e6

    @property
    def usd_per_million_output(self) -> float:
        return self.usd_per_output_token * 1e6

    def as_dict(self) -> dict[str, float]:
        return {
            "input_tok_per_s": self.input_tok_per_s,
            "output_tok_per_s": self.output_tok_per_s,
            "usd_per_input_token": self.usd_per_input_token,
            "usd_per_output_token": self.usd_per_output_token,
            "usd_per_million_input": self.usd_per_million_input,
            "usd_per_million_output": self.usd_per_million_output,
        }


def _per_token(usd_per_hour: float, tok_per_s: float) -> float:
    return usd_per_hour / 3600.0 / tok_per_s if tok_per_s > 0 else math.inf


def befori_cost(
    usd_per_hour: float,
    concurrency: float,
    mean_input_tokens: float,
    mean_ttft_s: float,
    mean_output_tokens: float,
    mean_e2e_s: float,
) -> BeforiCost:
    t_in = concurrency * mean_input_tokens / mean_ttft_s if mean_ttft_s > 0 else 0.0
    decode_s = mean_e2e_s - mean_ttft_s
    t_out = concurrency * mean_output_tokens / decode_s if decode_s > 0 else 0.0
    return BeforiCost(t_in, t_out, _per_token(usd_per_hour, t_in), _per_token(usd_per_hour, t_out))


@dataclass
class Occupancy:
    """Per-request billed dollars, and the cumulative share function used to split any time window."""

    usd_input: np.ndarray  # per request, before its first token
    usd_output: np.ndarray  # per request, from its first token to its end
    knots_ns: np.ndarray  # breakpoints of the share function
    share_cum: np.ndarray  # ∫ 1/n(t) dt up to each knot, in seconds (n = requests in flight)
    busy_cum: np.ndarray  # ∫ [n(t) > 0] dt up to each knot, in seconds
    usd_per_hour: float

    def _at(self, cum: np.ndarray, t_ns: np.ndarray | float) -> np.ndarray:
        if len(self.knots_ns) == 0:
            return np.zeros_like(np.asarray(t_ns, dtype=float))
        return np.interp(np.asarray(t_ns, dtype=float), self.knots_ns, cum)


def share_function(t_send_ns: np.ndarray, t_end_ns: np.ndarray, t_from_ns: int | None = None,
                   base: tuple[float, float] = (0.0, 0.0)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Knots (ns) and, at each, the cumulative share ∫ 1/n(t) dt and busy time ∫ [n(t) > 0] dt in seconds, n being
    the requests in flight ([send, end)). From `t_from_ns` on when given (a send before it counts from it), the
    integrals starting at `base`; between knots both are linear, so np.interp reads them exactly."""
    s = np.asarray(t_send_ns, dtype=np.int64)
    e = np.asarray(t_end_ns, dtype=np.int64)
    if t_from_ns is not None:
        s = np.maximum(s, t_from_ns)
    knots = np.unique(np.concatenate([s, e] + ([[t_from_ns]] if t_from_ns is not None else [])))
    # n on each segment [knots[i], knots[i+1]): starts minus ends at or before knots[i].
    starts = np.searchsorted(np.sort(s), knots, side="right")
    ends = np.searchsorted(np.sort(e), knots, side="right")
    n = (starts - ends)[:-1].astype(float)
    seg_s = np.diff(knots).astype(float) / 1e9
    share = base[0] + np.concatenate([[0.0], np.cumsum(np.where(n > 0, seg_s / np.maximum(n, 1), 0.0))])
    busy = base[1] + np.concatenate([[0.0], np.cumsum(np.where(n > 0, seg_s, 0.0))])
    return knots.astype(float), share, busy


def occupancy(
    t_send_ns: np.ndarray, t_first_ns: np.ndarray, t_end_ns: np.ndarray, usd_per_hour: float
) -> Occupancy:
    """Bill every request its share of the server. A request without a first token (failed early) has
    t_first = t_end: all its time counts as waiting for input."""
    s = np.asarray(t_send_ns, dtype=np.int64)
    e = np.asarray(t_end_ns, dtype=np.int64)
    f = np.clip(np.asarray(t_first_ns, dtype=np.int64), s, e)
    rate = usd_per_hour / 3600.0
    if len(s) == 0:
        empty = np.zeros(0)
        return Occupancy(empty, empty, empty, empty, empty, usd_per_hour)
    knots_f, share_cum, busy_cum = share_function(s, e)
    c_s, c_f, c_e = (np.interp(x.astype(float), knots_f, share_cum) for x in (s, f, e))
    return Occupancy(rate * (c_f - c_s), rate * (c_e - c_f), knots_f, share_cum, busy_cum, usd_per_hour)


def occupancy_window(
    occ: Occupancy,
    t_send_ns: np.ndarray,
    t_first_ns: np.ndarray,
    t_end_ns: np.ndarray,
    failed: np.ndarray,
    t0_ns: int,
    t1_ns: int,
) -> dict[str, float]:
    """Split the bill for [t0, t1] into input, output, failed requests and idle. They sum to the bill."""
    rate = occ.usd_per_hour / 3600.0
    bill = rate * (t1_ns - t0_ns) / 1e9
    if len(t_send_ns) == 0:
        return {"usd_bill": bill, "usd_input": 0.0, "usd_output": 0.0, "usd_failed": 0.0, "usd_idle": bill}
    s = np.clip(np.asarray(t_send_ns, dtype=float), t0_ns, t1_ns)
    e = np.clip(np.asarray(t_end_ns, dtype=float), t0_ns, t1_ns)
    f = np.clip(np.asarray(t_first_ns, dtype=float), s, e)
    c = lambda x: occ._at(occ.share_cum, x)  # noqa: E731
    inp = rate * (c(f) - c(s))
    out = rate * (c(e) - c(f))
    failed = np.asarray(failed, dtype=bool)
    lo = max(min(float(t0_ns), occ.knots_ns[-1]), occ.knots_ns[0])
    hi = max(min(float(t1_ns), occ.knots_ns[-1]), occ.knots_ns[0])
    busy_s = float(occ._at(occ.busy_cum, hi) - occ._at(occ.busy_cum, lo))
    idle = bill - rate * busy_s
    if abs(idle) <= 1e-9 * bill:
        idle = 0.0  # a difference of two sums: round-off (-5.5e-17 read as money is noise), not idle time
    return {
        "usd_bill": bill,
        "usd_input": float(inp[~failed].sum()),
        "usd_output": float(out[~failed].sum()),
        "usd_failed": float((inp + out)[failed].sum()),
        "usd_idle": idle,
    }


def blended_usd_per_million(usd_per_million_input: float, usd_per_million_output: float, input_per_output: float) -> float:
    """The price of a million tokens of a workload with `input_per_output` input tokens per output token."""
    total = input_per_output + 1.0
    return (input_per_output * usd_per_million_input + usd_per_million_output) / total
