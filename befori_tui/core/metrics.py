"""Per-level figures from request records (DESIGN §2), with numpy."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from befori_tui.core.config import PricingConfig
from befori_tui.core.cost import befori_cost, blended_usd_per_million, occupancy, occupancy_window
from befori_tui.core.records import ERROR_KINDS, RequestRecord

PERCENTILES = (50, 90, 99)
SETTLED_REL = 0.03  # a level's $/M has settled when its 95% interval is within ±3%


def _stats(prefix: str, values: np.ndarray, out: dict) -> None:
    if len(values) == 0:
        return
    out[f"{prefix}_mean"] = float(values.mean())
    for p, v in zip(PERCENTILES, np.percentile(values, PERCENTILES)):
        out[f"{prefix}_p{p}"] = float(v)


def counts_by_outcome(records: Iterable[RequestRecord]) -> dict[str, int]:
    errors = Counter(r.error_kind for r in records if r.error_kind)
    return {k: errors.get(k, 0) for k in ERROR_KINDS if errors.get(k, 0)}


def latency_stats(records: Sequence[RequestRecord]) -> dict[str, float]:
    """TTFT, ITL, TPOT, E2E and token statistics over ok requests."""
    out: dict[str, float] = {}
    ok = [r for r in records if r.ok and r.t_first_token_ns is not None]
    if not ok:
        return out
    send = np.fromiter((r.t_send_ns for r in ok), dtype=np.int64, count=len(ok))
    first = np.fromiter((r.t_first_token_ns for r in ok), dtype=np.int64, count=len(ok))
    end = np.fromiter((r.t_end_ns for r in ok), dtype=np.int64, count=len(ok))
    _stats("ttft_s", (first - send) / 1e9, out)
    _stats("e2e_s", (end - send) / 1e9, out)
    gaps = [np.asarray(r.itl_ns, dtype=np.int64) for r in ok if len(r.itl_ns)]
    _stats("itl_s", np.concatenate(gaps) / 1e9 if gaps else np.zeros(0), out)
    tpot = np.array([t for r in ok if (t := r.tpot_s) is not None])
    _stats("tpot_s", tpot, out)
    _stats("input_tokens", np.array([r.input_tokens or 0 for r in ok], dtype=float), out)
    _stats("output_tokens", np.array([r.output_tokens or 0 for r in ok], dtype=float), out)
    return out


def befori_interval(
    records: Sequence[RequestRecord], concurrency: int, usd_per_hour: float, rounds: int = 300, seed: int = 0
) -> dict[str, float]:
    """95% bootstrap interval of the befori $/M over the level's requests (resampled with replacement)."""
    n = len(records)
    if n < 5:
        return {}
    n_in = np.array([r.input_tokens or 0 for r in records], dtype=float)
    n_out = np.array([r.output_tokens or 0 for r in records], dtype=float)
    ttft = np.array([r.ttft_s for r in records])
    decode = np.array([r.e2e_s for r in records]) - ttft
    idx = np.random.default_rng(seed).integers(0, n, size=(rounds, n))
    rate = usd_per_hour / 3600.0
    with np.errstate(divide="ignore", invalid="ignore"):
        usd_in = rate * ttft[idx].mean(1) / (concurrency * n_in[idx].mean(1)) * 1e6
        usd_out = rate * decode[idx].mean(1) / (concurrency * n_out[idx].mean(1)) * 1e6
    out = {}
    for name, arr in (("input", usd_in), ("output", usd_out)):
        arr = arr[np.isfinite(arr)]
        if len(arr):
            lo, hi = np.percentile(arr, (2.5, 97.5))
            out[f"usd_per_million_{name}_lo"] = float(lo)
            out[f"usd_per_million_{name}_hi"] = float(hi)
    return out


def summarize_level(
    level,
    pricing: PricingConfig,
    all_records: Sequence[RequestRecord],
    now_ns: int | None = None,
) -> dict:
    """The flat per-level table of DESIGN §5, plus sub-tables `occupancy`, `errors` and `api_compare`.

    `all_records` is every finished request of the run: the occupancy method shares the server among all
    requests in flight, whichever level they were sent in.
    """
    records = level.records
    steady = [r for r in records if r.steady]
    t_end = level.t_end_ns if level.t_end_ns is not None else now_ns
    out: dict = {
        "level": level.index,
        "concurrency": level.concurrency,
        "reason": level.reason,
        "duration_s": level.duration_s(now_ns),
        "requests_sent": level.sent,
        "requests_ok": sum(1 for r in records if r.ok),
        "requests_failed": sum(1 for r in records if r.error_kind and r.error_kind != "cancelled"),
        "requests_cancelled": sum(1 for r in records if r.error_kind == "cancelled"),
        "requests_in_flight": level.in_flight,
        "requests_steady": len(steady),
        "requests_warmup": sum(1 for r in records if r.warmup),
        "requests_outlived": sum(1 for r in records if r.outlived_level),
    }
    out.update(latency_stats(steady))
    if steady and out.get("e2e_s_mean", 0) > 0:
        # Closed loop: every slot is always busy with one request, so the level's rates are R requests per
        # mean E2E. (Dividing the steady requests' tokens by their span would miss the tokens that warm-up
        # and outlived requests made in the same time.)
        per_s = level.concurrency / out["e2e_s_mean"]
        out["requests_per_s"] = per_s
        out["input_tok_per_s_total"] = per_s * out["input_tokens_mean"]
        out["output_tok_per_s_total"] = per_s * out["output_tokens_mean"]
    if steady:
        c = befori_cost(
            pricing.usd_per_hour, level.concurrency,
            out["input_tokens_mean"], out["ttft_s_mean"], out["output_tokens_mean"], out["e2e_s_mean"],
        )
        out.update(c.as_dict())
        out.update(befori_interval(steady, level.concurrency, pricing.usd_per_hour))
        for name in ("input", "output"):
            lo, hi = out.get(f"usd_per_million_{name}_lo"), out.get(f"usd_per_million_{name}_hi")
            mid = out[f"usd_per_million_{name}"]
            if lo is not None and hi is not None and mid > 0:
                out[f"usd_per_million_{name}_settled"] = bool(max(hi - mid, mid - lo) <= SETTLED_REL * mid)
        out["usd_per_million_blended"] = blended_usd_per_million(
            c.usd_per_million_input, c.usd_per_million_output, pricing.blend_input_per_output
        )
    if t_end is not None:
        out["occupancy"] = occupancy_summary(level, steady, all_records, pricing, t_end)
    out["errors"] = counts_by_outcome(records)
    return out


def occupancy_summary(level, steady, all_records, pricing: PricingConfig, t_end_ns: int) -> dict:
    recs = [r for r in all_records if r.t_end_ns is not None]
    send = np.array([r.t_send_ns for r in recs], dtype=np.int64)
    end = np.array([r.t_end_ns for r in recs], dtype=np.int64)
    first = np.array([r.t_first_token_ns if r.t_first_token_ns is not None else r.t_end_ns for r in recs],
                     dtype=np.int64)
    failed = np.array([not r.ok for r in recs], dtype=bool)
    occ = occupancy(send, first, end, pricing.usd_per_hour)
    out = occupancy_window(occ, send, first, end, failed, level.t_start_ns, t_end_ns)
    pos = {id(r): i for i, r in enumerate(recs)}
    idx = np.array([pos[id(r)] for r in steady], dtype=int)
    n_in = sum(r.input_tokens or 0 for r in steady)
    n_out = sum(r.output_tokens or 0 for r in steady)
    if len(idx) and n_in and n_out:
        usd_in = float(occ.usd_input[idx].sum())
        usd_out = float(occ.usd_output[idx].sum())
        out["usd_per_million_input"] = usd_in / n_in * 1e6
        out["usd_per_million_output"] = usd_out / n_out * 1e6
        out["usd_per_million_blended"] = blended_usd_per_million(
            out["usd_per_million_input"], out["usd_per_million_output"], pricing.blend_input_per_output
        )
    return out


def api_comparison(pricing: PricingConfig) -> list[dict]:
    return [
        {
            "name": a.name,
            "usd_per_million_input": a.usd_per_million_input,
            "usd_per_million_output": a.usd_per_million_output,
            "usd_per_million_blended": blended_usd_per_million(
                a.usd_per_million_input, a.usd_per_million_output, pricing.blend_input_per_output
            ),
        }
        for a in pricing.compare
    ]
