"""Per-level figures from request records (docs/results.md, "Raw records"), with numpy."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from befori_tui.core.columns import CANCELLED, NONE_NS, RecordColumns
from befori_tui.core.config import PricingConfig
from befori_tui.core.cost import befori_cost, blended_usd_per_million
from befori_tui.core.gapcounts import GapCounts
from befori_tui.core.ledger import OccupancyLedger
from befori_tui.core.levelstats import LevelAggregates
from befori_tui.core.records import RequestRecord

PERCENTILES = (50, 90, 99)
SETTLED_REL = 0.03  # a level's $/M has settled when its 95% interval is within ±3%


def _stats(prefix: str, values: np.ndarray, out: dict, scale: float = 1.0) -> None:
    """Mean and percentiles of `values` × `scale`. `values` is a temporary that this reorders: no copy of
    millions of inter-token gaps."""
    if len(values) == 0:
        return
    out[f"{prefix}_mean"] = float(values.mean()) * scale
    for p, v in zip(PERCENTILES, np.percentile(values, PERCENTILES, overwrite_input=True)):
        out[f"{prefix}_p{p}"] = float(v) * scale


def column_latency_stats(cols: RecordColumns, mask: np.ndarray, itl_counts: GapCounts | None = None) -> dict[str, float]:
    """TTFT, ITL, TPOT, E2E and token statistics over the ok requests in `mask` that have a first token.
    `itl_counts`: those requests' gaps, already counted (core/gapcounts.py); else they are counted here. ITL
    percentiles are to the microsecond (gapcounts), every other figure exact."""
    out: dict[str, float] = {}
    mask = mask & cols.ok() & (cols.first != NONE_NS)
    if not mask.any():
        return out
    send, first, end = cols.send[mask], cols.first[mask], cols.end[mask]
    _stats("ttft_s", (first - send) / 1e9, out)
    _stats("e2e_s", (end - send) / 1e9, out)
    gaps = itl_counts if itl_counts is not None else GapCounts.of(cols.itl_of(mask))
    if len(gaps):
        out["itl_s_mean"] = gaps.mean_s()
        out.update(zip((f"itl_s_p{p}" for p in PERCENTILES), gaps.percentiles_s(PERCENTILES)))
    n_out = cols.n_out[mask]
    many = n_out >= 2  # TPOT needs a second token
    _stats("tpot_s", (end[many] - first[many]) / 1e9 / (n_out[many] - 1), out)
    _stats("input_tokens", cols.n_in[mask], out)
    _stats("output_tokens", n_out, out)
    return out


# Up to this many requests the interval is a bootstrap; above, the delta method's normal interval for a ratio of
# means, which agrees with the bootstrap to well under 1% of the estimate at this size and costs O(n), not
# O(300·n) time and memory (at 25,000 requests the bootstrap took 0.35 s and ~240 MB twice a second).
BOOTSTRAP_MAX_N = 2000
Z_95 = 1.959964


def delta_bounds(mean_t: float, mean_n: float, residual_sd: float, n: int, scale: float) -> tuple[float, float]:
    """95% bounds of scale · mean_t / mean_n by the delta method: Var(mean_t / mean_n) ≈ Var(t − ratio·n) /
    (n · mean_n²), the first-order expansion. `residual_sd`: the standard deviation (ddof 1) of t − ratio·n."""
    ratio = mean_t / mean_n
    sd = residual_sd / (np.sqrt(n) * mean_n)
    return scale * (ratio - Z_95 * sd), scale * (ratio + Z_95 * sd)


def befori_interval_arrays(
    n_in: np.ndarray, n_out: np.ndarray, ttft_s: np.ndarray, decode_s: np.ndarray, concurrency: int,
    usd_per_hour: float, rounds: int = 300, seed: int = 0, bootstrap_max_n: int = BOOTSTRAP_MAX_N,
) -> dict[str, float]:
    """95% interval of the befori $/M: a bootstrap over the requests (resampled with replacement) up to
    `bootstrap_max_n` of them, the delta method above."""
    n = len(n_in)
    if n < 5:
        return {}
    rate = usd_per_hour / 3600.0
    out = {}
    for name, time_s, tokens in (("input", ttft_s, n_in), ("output", decode_s, n_out)):
        if n <= bootstrap_max_n:
            idx = np.random.default_rng(seed).integers(0, n, size=(rounds, n))
            with np.errstate(divide="ignore", invalid="ignore"):
                arr = rate * time_s[idx].mean(1) / (concurrency * tokens[idx].mean(1)) * 1e6
            arr = arr[np.isfinite(arr)]
            if not len(arr):
                continue
            lo, hi = np.percentile(arr, (2.5, 97.5))
        else:
            mean_t, mean_n = float(time_s.mean()), float(tokens.mean())
            if mean_n <= 0:
                continue
            residual_sd = float(np.std(time_s - mean_t / mean_n * tokens, ddof=1))
            lo, hi = delta_bounds(mean_t, mean_n, residual_sd, n, rate / concurrency * 1e6)
        out[f"usd_per_million_{name}_lo"] = float(lo)
        out[f"usd_per_million_{name}_hi"] = float(hi)
    return out


def summarize_level(
    level,
    pricing: PricingConfig,
    ledger: OccupancyLedger | Sequence[RequestRecord] | None = None,
    now_ns: int | None = None,
    slo: Sequence | None = None,
) -> dict:
    """The flat per-level table of docs/results.md, plus sub-tables `occupancy`, `errors` and `api_compare`.

    `level.records` (core/levelstats.py): the level's requests — every one as columns up to a size, and past
    it aggregates and sketches (`figures_from` says which). `ledger`: the run's occupancy bill (core/ledger.py;
    the occupancy method shares the server among all requests in flight, whichever level sent them).
    (Fixed data may pass the run's records instead.) `slo`: latency targets (core.slo.SloTarget); with them,
    the level's SLO figures (slo_figures).
    """
    if ledger is not None and not isinstance(ledger, OccupancyLedger):
        ledger = OccupancyLedger.of(ledger)
    lr = level.records
    if slo:
        lr.watch_slo(slo)
    lr.absorb()
    t_end = level.t_end_ns if level.t_end_ns is not None else now_ns
    f = ColumnFigures(lr.cols, lr.itl_counts) if lr.exact else AggregateFigures(lr.agg)
    out: dict = {
        "level": level.index,
        "concurrency": level.concurrency,
        "reason": level.reason,
        "duration_s": level.duration_s(now_ns),
        "requests_sent": level.sent,
        **f.counts(),
        "requests_in_flight": level.in_flight,
    }
    if not lr.exact:
        out["figures_from"] = "sketches"  # percentiles within sketch.RELATIVE_ERROR; counts and means exact
    t_drained = getattr(level, "t_drained_ns", None)
    if t_drained is not None and t_drained > level.t_start_ns:
        # After a decrease: how long the old load took to leave; steady requests were all sent after it.
        out["drain_s"] = (t_drained - level.t_start_ns) / 1e9
    elif t_drained is None and getattr(level, "draining", 0):
        out["draining"] = level.draining
    out.update(f.latency_stats())
    # R, the requests in flight: the slots in a closed loop; in the open loop (docs/results.md) the mean number in
    # flight by Little's law, L = λ·W: the measured arrival rate times the mean E2E of the steady requests.
    r = level.concurrency
    if getattr(level, "rate_per_s", 0.0) > 0:
        out["rate_per_s"] = level.rate_per_s
        out["requests_delayed_by_cap"] = level.delayed
        rate = f.arrival_rate_per_s()
        if rate is not None:
            out["arrival_rate_per_s"] = rate
        if "arrival_rate_per_s" in out and out.get("e2e_s_mean", 0) > 0:
            out["mean_in_flight"] = out["arrival_rate_per_s"] * out["e2e_s_mean"]
        r = out.get("mean_in_flight", 0.0)
    if out["requests_steady"] and out.get("e2e_s_mean", 0) > 0 and r > 0:
        # Closed loop: every slot is always busy with one request, so the level's rates are R requests per
        # mean E2E. (Dividing the steady requests' tokens by their span would miss the tokens that warm-up
        # and outlived requests made in the same time.) Slots busy with failures, or backing off after
        # them, serve nothing: only the ok share of the slot time counts.
        share = f.ok_slot_time_share()
        out["slot_time_ok_share"] = share
        per_s = r * share / out["e2e_s_mean"]
        out["requests_per_s"] = per_s
        out["input_tok_per_s_total"] = per_s * out["input_tokens_mean"]
        out["output_tok_per_s_total"] = per_s * out["output_tokens_mean"]
    if "ttft_s_mean" in out and r > 0:
        c = befori_cost(
            pricing.usd_per_hour, r,
            out["input_tokens_mean"], out["ttft_s_mean"], out["output_tokens_mean"], out["e2e_s_mean"],
        )
        out.update(c.as_dict())
        out.update(f.interval(r, pricing.usd_per_hour))
        for name in ("input", "output"):
            lo, hi = out.get(f"usd_per_million_{name}_lo"), out.get(f"usd_per_million_{name}_hi")
            mid = out[f"usd_per_million_{name}"]
            if lo is not None and hi is not None and mid > 0:
                out[f"usd_per_million_{name}_settled"] = bool(max(hi - mid, mid - lo) <= SETTLED_REL * mid)
        out["usd_per_million_blended"] = blended_usd_per_million(
            c.usd_per_million_input, c.usd_per_million_output, pricing.blend_input_per_output
        )
    if slo:
        out.update(slo_figures(out, f, list(slo)))
    if t_end is not None and ledger is not None:
        out["occupancy"] = occupancy_summary(level, ledger, pricing, t_end)
    out["errors"] = f.error_counts()
    out["error_groups"] = f.error_groups()  # by status and kind: http_500, http_429, timeout, …
    out.update(missing_reasons(out))
    return out


class ColumnFigures:
    """A level's figures from every one of its requests (numpy columns): exact."""

    def __init__(self, cols: RecordColumns, itl_counts: GapCounts | None = None) -> None:
        self.cols = cols
        self.steady = cols.steady()
        self.itl_counts = itl_counts  # the gaps of the steady requests, counted as they came (LevelRecords)

    def counts(self) -> dict[str, int]:
        cols = self.cols
        return {
            "requests_ok": int(cols.ok().sum()),
            "requests_failed": int(((cols.kind != 0) & (cols.kind != CANCELLED)).sum()),
            "requests_cancelled": int((cols.kind == CANCELLED).sum()),
            "requests_steady": int(self.steady.sum()),
            "requests_warmup": int(cols.warmup.sum()),
            "requests_outlived": int(cols.outlived.sum()),
        }

    def latency_stats(self) -> dict[str, float]:
        return column_latency_stats(self.cols, self.steady, self.itl_counts)

    def arrival_rate_per_s(self) -> float | None:
        sends = np.sort(self.cols.send[self.cols.send > 0])
        if len(sends) >= 2 and sends[-1] > sends[0]:
            return (len(sends) - 1) / ((sends[-1] - sends[0]) / 1e9)
        return None

    def ok_slot_time_share(self) -> float:
        return self.cols.ok_slot_time_share()

    def interval(self, r: float, usd_per_hour: float) -> dict[str, float]:
        cols = self.cols
        m = self.steady & (cols.first != NONE_NS)
        ttft = (cols.first[m] - cols.send[m]) / 1e9
        return befori_interval_arrays(cols.n_in[m], cols.n_out[m], ttft, (cols.end[m] - cols.send[m]) / 1e9 - ttft,
                                      r, usd_per_hour)

    def slo_counts(self, targets: list) -> tuple[int, int, float, float, float, float]:
        """(met, measured, met input tokens, met output tokens, steady input tokens, steady output tokens)."""
        from befori_tui.core.slo import requests_meeting

        cols, steady = self.cols, self.steady
        # Measured: ended in the level, not warm-up, not cancelled at a stop — ok or failed. A failure meets nothing.
        measured = (cols.end != NONE_NS) & ~cols.warmup & ~cols.outlived & (cols.kind != CANCELLED)
        meets = requests_meeting(cols, steady, targets)
        return (int(meets.sum()), int(measured.sum()), float(cols.n_in[meets].sum()), float(cols.n_out[meets].sum()),
                float(cols.n_in[steady].sum()), float(cols.n_out[steady].sum()))

    def error_counts(self) -> dict[str, int]:
        return self.cols.error_counts()

    def error_groups(self) -> dict[str, int]:
        return self.cols.error_groups()


class AggregateFigures:
    """A level's figures from its aggregates (core/levelstats.py): counts, sums and means exact, percentiles
    from sketches (within sketch.RELATIVE_ERROR), the interval by the delta method."""

    def __init__(self, agg: LevelAggregates) -> None:
        self.agg = agg

    def counts(self) -> dict[str, int]:
        c = self.agg.counts
        return {"requests_ok": c["ok"], "requests_failed": c["failed"], "requests_cancelled": c["cancelled"],
                "requests_steady": c["steady"], "requests_warmup": c["warmup"], "requests_outlived": c["outlived"]}

    def latency_stats(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for prefix, sk in self.agg.sketches.items():
            if not sk.count:
                continue
            out[f"{prefix}_mean"] = sk.mean
            for p in PERCENTILES:
                out[f"{prefix}_p{p}"] = sk.quantile(p / 100)
        return out

    def arrival_rate_per_s(self) -> float | None:
        a = self.agg
        if a.counts["sent_known"] >= 2 and a.send_max_ns > a.send_min_ns:
            return (a.counts["sent_known"] - 1) / ((a.send_max_ns - a.send_min_ns) / 1e9)
        return None

    def ok_slot_time_share(self) -> float:
        return self.agg.ok_slot_time_share()

    def interval(self, r: float, usd_per_hour: float) -> dict[str, float]:
        out = {}
        scale = usd_per_hour / 3600.0 / r * 1e6
        for name, m in (("input", self.agg.moments_in), ("output", self.agg.moments_out)):
            if m.n < 5 or m.mean_n <= 0:
                continue
            lo, hi = delta_bounds(m.mean_t, m.mean_n, m.residual_sd(), m.n, scale)
            out[f"usd_per_million_{name}_lo"] = float(lo)
            out[f"usd_per_million_{name}_hi"] = float(hi)
        return out

    def slo_counts(self, targets: list) -> tuple[int, int, float, float, float, float] | None:
        from befori_tui.core.levelstats import slo_key

        counts = self.agg.slo.get(slo_key(targets))
        if counts is None or counts.since:
            return None  # the targets came after requests were let go: not counted over the whole level
        a = self.agg
        return (counts.met, a.counts["measured"], counts.met_in, counts.met_out, a.sums["steady_in"],
                a.sums["steady_out"])

    def error_counts(self) -> dict[str, int]:
        return self.agg.error_counts()

    def error_groups(self) -> dict[str, int]:
        return self.agg.error_groups()


def missing_reasons(s: dict) -> dict[str, str]:
    """Every figure a level lacks, with why — a missing key alone reads as a bug, or is not noticed at all.
    `cost_missing`: no latencies, throughput or $/M; `interval_missing`: $/M without its 95% interval;
    `occupancy_missing`: no occupancy $/M."""
    from befori_tui.core.format import errors_text

    out: dict[str, str] = {}
    if "usd_per_million_input" not in s:
        ok, failed, cancelled = s["requests_ok"], s["requests_failed"], s["requests_cancelled"]
        if not s["requests_sent"]:
            why = "no request was sent in this level"
        elif not ok and failed:
            why = f"every request failed ({errors_text(s.get('error_groups') or {})})"
        elif not ok and cancelled and not s["requests_in_flight"]:
            why = "every request was cancelled (the run stopped, or the level's slots were removed)"
        elif not ok:
            why = "no request has finished yet"
        elif not s["requests_steady"]:
            why = ("no steady requests: the level ended during warm-up" if s["requests_warmup"] >= ok
                   else "no steady requests: those that succeeded were warm-up or outlived the level")
        else:
            why = "no steady request received a token"
        out["cost_missing"] = why
    elif "usd_per_million_input_lo" not in s:
        out["interval_missing"] = f"fewer than 5 steady requests ({s['requests_steady']})"
    occ = s.get("occupancy")
    if occ is not None and "usd_per_million_input" not in occ:
        out["occupancy_missing"] = out.get("cost_missing", "the steady requests counted no input or output tokens")
    elif occ is None:
        out["occupancy_missing"] = "the level has not started on the run's clock"
    return out


def slo_figures(out: dict, figures, targets: list) -> dict:
    """Per level (core/slo.py has what "meets" means): whether the level's percentiles meet the SLO, the share of
    measured requests that met it, goodput, and the befori $/M charged to the tokens of those requests only —
    the same bill, over the tokens that were worth having."""
    from befori_tui.core.slo import level_failures, level_meets, slo_text

    res: dict = {"slo": slo_text(targets)}
    met = level_meets(out, targets)
    if met is not None:
        res["slo_met"] = met
        missed = level_failures(out, targets)
        if missed:
            res["slo_missed"] = missed
    counts = figures.slo_counts(targets)
    if counts is None:
        res["slo_counts_missing"] = "the SLO was set after the level's first requests were let go"
        return res
    n_met, n_measured, met_in, met_out, steady_in, steady_out = counts
    n_steady = out["requests_steady"]
    res["requests_met_slo"] = n_met
    if n_measured:
        res["slo_share_met"] = n_met / n_measured
    if n_steady and "requests_per_s" in out:
        good = out["requests_per_s"] * n_met / n_steady
        res["goodput_requests_per_s"] = good
        res["goodput_input_tok_per_s"] = out["requests_per_s"] * met_in / n_steady
        res["goodput_output_tok_per_s"] = out["requests_per_s"] * met_out / n_steady
    if n_met:
        for name, all_tokens, met_tokens in (("input", steady_in, met_in), ("output", steady_out, met_out)):
            plain = out.get(f"usd_per_million_{name}")
            if plain is not None and met_tokens > 0:
                res[f"usd_per_million_{name}_slo"] = plain * all_tokens / met_tokens
    return res


def occupancy_summary(level, ledger: OccupancyLedger, pricing: PricingConfig, t_end_ns: int) -> dict:
    """The level's bill split into input, output, failed requests and idle (they sum to the bill), and the
    occupancy $/M of its own steady requests."""
    rate = pricing.usd_per_hour / 3600.0
    window, mine = ledger.level_bill(level, t_end_ns)
    bill = rate * (t_end_ns - level.t_start_ns) / 1e9
    idle = bill - rate * window["busy_s"]
    if abs(idle) <= 1e-9 * bill:
        idle = 0.0  # a difference of two sums: round-off (-5.5e-17 read as money is noise), not idle time
    out = {"usd_bill": bill, "usd_input": rate * window["input_s"], "usd_output": rate * window["output_s"],
           "usd_failed": rate * window["failed_s"], "usd_idle": idle}
    if mine["n_in"] and mine["n_out"]:
        out["usd_per_million_input"] = rate * mine["input_s"] / mine["n_in"] * 1e6
        out["usd_per_million_output"] = rate * mine["output_s"] / mine["n_out"] * 1e6
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


def turn_stats(lr) -> list[dict]:
    """Per turn of a conversation (1, 2, …), over the steady requests: how TTFT and the prompt grow as each
    turn re-sends the history — what a server's prefix cache does shows here. Empty when no request was a
    conversation's turn. `lr`: a level's LevelRecords (exact from columns, or from its per-turn aggregates)."""
    lr.absorb()
    out = []
    if lr.exact:
        cols = lr.cols
        m = cols.steady() & (cols.first != NONE_NS) & (cols.turn > 0)
        for turn in np.unique(cols.turn[m]).tolist():
            rows = m & (cols.turn == turn)
            row: dict = {"turn": int(turn), "requests": int(rows.sum())}
            _stats("ttft_s", (cols.first[rows] - cols.send[rows]) / 1e9, row)
            known = rows & cols.in_known
            if known.any():
                row["input_tokens_mean"] = float(cols.n_in[known].mean())
            cached = cols.cached[rows]
            cached = cached[~np.isnan(cached)]
            if len(cached):
                row["cached_tokens_mean"] = float(cached.mean())  # the simulator's ground truth
            out.append(row)
        return out
    for turn in sorted(lr.agg.turns):
        a = lr.agg.turns[turn]
        row = {"turn": turn, "requests": a.requests, "ttft_s_mean": a.ttft_s.mean}
        for p in PERCENTILES:
            row[f"ttft_s_p{p}"] = a.ttft_s.quantile(p / 100)
        if a.in_n:
            row["input_tokens_mean"] = a.in_sum / a.in_n
        if a.cached_n:
            row["cached_tokens_mean"] = a.cached_sum / a.cached_n
        out.append(row)
    return out
