"""`befori-tui compare A.toml B.toml [C.toml…]`: the same levels of several runs side by side.

Levels are matched by concurrency (by arrival rate when every level of every run has one); a run that holds a
concurrency twice is matched by occurrence (the second c=16 of A with the second c=16 of B). Each later run is
set against the first: its value, the ratio to the first's, and whether the difference is beyond the 95%
intervals — the two intervals do not overlap.

Intervals: $/M input and output carry theirs in the TOML (docs/results.md). Latency percentiles and throughput
do not; they get a bootstrap interval from the raw records beside the TOML (the level's steady requests,
resampled by request, 300 rounds, at most BOOTSTRAP_REQUESTS requests — a subsample only widens it). Without
the raw records a figure has no interval and "beyond" is unknown (`—`), never guessed.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from befori_tui.core.format import usd
from befori_tui.report.sessions import LoadedSession, level_axis

# (key in [[levels]], label, how to print it)
METRICS: tuple[tuple[str, str, str], ...] = (
    ("usd_per_million_input", "$/M input", "usd"),
    ("usd_per_million_output", "$/M output", "usd"),
    ("ttft_s_p50", "TTFT p50", "s"),
    ("ttft_s_p99", "TTFT p99", "s"),
    ("itl_s_p50", "ITL p50", "s"),
    ("itl_s_p99", "ITL p99", "s"),
    ("output_tok_per_s_total", "output tok/s", "rate"),
    ("requests_per_s", "requests/s", "rate"),
)
BOOTSTRAP_ROUNDS = 300
BOOTSTRAP_REQUESTS = 2000
BOOTSTRAP_SEED = 0


@dataclass
class Cell:
    value: float | None
    lo: float | None = None
    hi: float | None = None


@dataclass
class Row:
    axis_value: float
    occurrence: int  # 0 for the first level at this concurrency in a run, 1 for the second, …
    metric: str
    label: str
    cells: list[Cell] = field(default_factory=list)  # one per session, in the order given

    def ratio(self, i: int) -> float | None:
        a, b = self.cells[0].value, self.cells[i].value
        if a is None or b is None or a == 0:
            return None
        return b / a

    def beyond(self, i: int) -> bool | None:
        """True when the intervals of the first run and run i do not overlap; None when one is unknown."""
        a, b = self.cells[0], self.cells[i]
        if None in (a.lo, a.hi, b.lo, b.hi):
            return None
        return bool(b.lo > a.hi or b.hi < a.lo)


def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _weighted_quantile(sorted_values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The smallest value whose cumulative weight reaches q of the total (values sorted ascending)."""
    cum = np.cumsum(weights)
    return float(sorted_values[min(int(np.searchsorted(cum, q * cum[-1])), len(sorted_values) - 1)])


def bootstrap_intervals(records: list, concurrency: float, share: float | None) -> dict[str, tuple[float, float]]:
    """95% intervals of the level's latency percentiles and throughput from its raw records (RequestRecord).

    Steady requests as the level's own figures count them (ok, not warm-up, not outlived). Requests are
    resampled as a whole, so a request's inter-token gaps stay together (they are not independent)."""
    from befori_tui.core.columns import NONE_NS, RecordColumns

    cols = RecordColumns().add(records)
    mask = cols.steady() & (cols.first != NONE_NS)
    idx = np.flatnonzero(mask)
    if len(idx) < 5:  # as the session's own $/M intervals: fewer requests give none
        return {}
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    if len(idx) > BOOTSTRAP_REQUESTS:
        idx = np.sort(rng.choice(idx, BOOTSTRAP_REQUESTS, replace=False))
    n = len(idx)
    send, first, end = cols.send[idx], cols.first[idx], cols.end[idx]
    ttft = (first - send) / 1e9
    e2e = (end - send) / 1e9
    n_out = cols.n_out[idx].astype(float)
    # Every steady request's inter-token gaps, tagged with its position in idx (RecordColumns keeps them flat,
    # request after request, `itl_n` of each).
    all_owner = np.repeat(np.arange(len(cols.send)), cols.itl_n)
    pos = np.full(len(cols.send), -1)
    pos[idx] = np.arange(n)
    keep = pos[all_owner] >= 0
    gaps = cols.itl[keep] / 1e9
    owner = pos[all_owner[keep]]
    order = np.argsort(gaps, kind="stable")
    gaps, owner = gaps[order], owner[order]

    stats: dict[str, list[float]] = defaultdict(list)
    for _ in range(BOOTSTRAP_ROUNDS):
        pick = rng.integers(0, n, n)
        t = ttft[pick]
        stats["ttft_s_p50"].append(float(np.percentile(t, 50)))
        stats["ttft_s_p99"].append(float(np.percentile(t, 99)))
        mean_e2e = float(e2e[pick].mean())
        if share is not None and mean_e2e > 0:
            per_s = concurrency * share / mean_e2e
            stats["requests_per_s"].append(per_s)
            stats["output_tok_per_s_total"].append(per_s * float(n_out[pick].mean()))
        if len(gaps):
            weight = np.bincount(pick, minlength=n)[owner]
            if weight.sum() > 0:
                stats["itl_s_p50"].append(_weighted_quantile(gaps, weight, 0.50))
                stats["itl_s_p99"].append(_weighted_quantile(gaps, weight, 0.99))
    return {k: (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))) for k, v in stats.items() if v}


def _level_intervals(session: LoadedSession, level: dict, cache: dict) -> dict[str, tuple[float, float]]:
    if session.path not in cache:
        cache[session.path] = _records_by_level(session)
    records = cache[session.path].get(level.get("level"))
    if not records:
        return {}
    c = _num(level.get("concurrency"))
    return bootstrap_intervals(records, c or 0.0, _num(level.get("slot_time_ok_share")) if c else None)


def _records_by_level(session: LoadedSession) -> dict:
    """Every raw record of the run grouped by level, read once; {} when the JSONL is not there. Each line
    becomes a RequestRecord at once (its gaps a packed array, not a list of Python ints): a long run's file
    fits in memory several times smaller than as parsed JSON."""
    from befori_tui.core.records import RequestRecord

    by_level: dict = defaultdict(list)
    try:
        with open(session.raw_path, encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn last line of a killed run; the interval is then from the whole ones
                if isinstance(rec, dict):
                    try:
                        by_level[rec.get("level")].append(RequestRecord.from_json_dict(rec))
                    except TypeError:
                        continue  # not a request record (a field missing): it cannot be counted
    except OSError:
        return {}
    return by_level


def compare_rows(sessions: list[LoadedSession], intervals_from_raw: bool = True) -> tuple[str, list[Row]]:
    """(axis key, rows): for each level of any run (matched by axis value and occurrence), each metric."""
    axis, _ = level_axis(sessions)
    keyed: list[dict[tuple[float, int], dict]] = []
    for s in sessions:
        seen: dict[float, int] = defaultdict(int)
        mine = {}
        for lv in s.levels:
            v = _num(lv.get(axis))
            if v is None:
                continue
            mine[(v, seen[v])] = lv
            seen[v] += 1
        keyed.append(mine)
    keys = sorted({k for m in keyed for k in m})
    cache: dict = {}
    rows = []
    for key in keys:
        intervals = []
        for s, m in zip(sessions, keyed):
            lv = m.get(key)
            intervals.append(_level_intervals(s, lv, cache) if (lv and intervals_from_raw) else {})
        for metric, label, _fmt in METRICS:
            row = Row(key[0], key[1], metric, label)
            for m, iv in zip(keyed, intervals):
                lv = m.get(key) or {}
                lo, hi = _num(lv.get(metric + "_lo")), _num(lv.get(metric + "_hi"))
                if (lo is None or hi is None) and metric in iv:
                    lo, hi = iv[metric]
                row.cells.append(Cell(_num(lv.get(metric)), lo, hi))
            rows.append(row)
    return axis, rows


# --- output -------------------------------------------------------------------------------------------------

def _fmt(value: float | None, kind: str) -> str:
    if value is None:
        return "—"
    if kind == "usd":
        return usd(value)
    if kind == "s":
        return f"{value * 1e3:.1f} ms" if value < 1 else f"{value:.2f} s"
    return f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"


def _yes_no(b: bool | None) -> str:
    return "—" if b is None else ("yes" if b else "no")


def _axis_text(axis: str, value: float, occurrence: int) -> str:
    v = f"{value:g}"
    name = "c" if axis == "concurrency" else "rate"
    return f"{name}={v}" + (f" (#{occurrence + 1})" if occurrence else "")


def format_table(sessions: list[LoadedSession], axis: str, rows: list[Row]) -> str:
    letters = [chr(ord("A") + i) for i in range(len(sessions))]
    kinds = {m: k for m, _l, k in METRICS}
    out = ["  ".join(f"{L} = {s.path}" for L, s in zip(letters, sessions))]
    head = f"  {'':<14}" + "".join(f"{L:>12}" for L in letters)
    head += "".join(f"{f'{L}/A':>8}{'beyond':>8}" for L in letters[1:])
    last = None
    for row in rows:
        if (row.axis_value, row.occurrence) != last:
            last = (row.axis_value, row.occurrence)
            out += ["", _axis_text(axis, row.axis_value, row.occurrence), head]
        line = f"  {row.label:<14}" + "".join(f"{_fmt(c.value, kinds[row.metric]):>12}" for c in row.cells)
        for i in range(1, len(sessions)):
            r = row.ratio(i)
            line += f"{'—' if r is None else f'{r:.2f}×':>8}{_yes_no(row.beyond(i)):>8}"
        out.append(line)
    out += ["", "beyond: the two 95% intervals do not overlap (— when one is unknown). $/M intervals are the "
                "session's; the others a bootstrap of the raw records beside it."]
    return "\n".join(out)


def flat_rows(sessions: list[LoadedSession], axis: str, rows: list[Row]) -> list[dict]:
    """One object per (level, metric): each run's value and interval, then each later run's ratio to the
    first and whether the difference is beyond the intervals."""
    labels = [s.label for s in sessions]
    out = []
    for row in rows:
        d: dict = {axis: row.axis_value, "occurrence": row.occurrence, "metric": row.metric}
        for label, c in zip(labels, row.cells):
            d[label] = c.value
            d[f"{label} lo"] = c.lo
            d[f"{label} hi"] = c.hi
        for i in range(1, len(sessions)):
            d[f"{labels[i]} / {labels[0]}"] = row.ratio(i)
            d[f"{labels[i]} beyond"] = row.beyond(i)
        out.append(d)
    return out


def format_csv(flat: list[dict]) -> str:
    from befori_tui.report.export import cell, columns

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cols = columns(flat)
    w.writerow(cols)
    for d in flat:
        w.writerow([cell(d.get(c)) for c in cols])
    return buf.getvalue()


def format_json(sessions: list[LoadedSession], flat: list[dict]) -> str:
    return json.dumps({"sessions": [{"label": s.label, "path": str(s.path)} for s in sessions], "rows": flat},
                      indent=1, ensure_ascii=False) + "\n"
