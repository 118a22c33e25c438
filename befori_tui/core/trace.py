"""Trace replay: requests sent at the times a production trace says, with its lengths (docs/workloads.md).

Two formats, told apart by the file's first non-blank character:

- Mooncake's JSONL: one request a line, {"timestamp": ms from the trace's start, "input_length": tokens,
  "output_length": tokens, "hash_ids": [int, …]} — hash_ids optional: each names a block of BLOCK_TOKENS
  prompt tokens, and requests whose hash_ids begin alike share that much leading text.
- Azure's LLM inference trace (CSV with a header): TIMESTAMP (a date-time, or seconds as a number),
  ContextTokens → input_length, GeneratedTokens → output_length; timestamps made relative to the first row.
  Azure's traces carry no prefix information, so their requests share nothing.

Read once, at start; a bad file is one line naming the file and line (ConfigError), before anything is sent.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from befori_tui.core.config import ConfigError

BLOCK_TOKENS = 512  # tokens of prompt per hash id, as the Mooncake traces use
LATE_MS = 5.0  # a request sent more than this after its time is counted late


@dataclass(slots=True)
class TraceEntry:
    line: int  # the file's line (1-based) the request came from
    t_ms: float  # when it is sent, from the trace's start
    input_length: int
    output_length: int
    hash_ids: tuple[int, ...] = ()


@dataclass
class Trace:
    path: str
    entries: list[TraceEntry] = field(default_factory=list)

    @property
    def span_s(self) -> float:
        return (self.entries[-1].t_ms - self.entries[0].t_ms) / 1000.0 if self.entries else 0.0

    def mean_rate_per_s(self, speed: float) -> float:
        """Arrivals per second over the whole trace at `speed` (what the level says it asked)."""
        n = len(self.entries)
        span = self.span_s / speed
        return (n - 1) / span if n > 1 and span > 0 else float(n)


def _int(value, name: str, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < minimum:
        raise ConfigError(f"{where}: {name} must be an integer ≥ {minimum}, got {value!r}")
    return int(value)


def _check_order(entries: list[TraceEntry], entry: TraceEntry, where: str) -> None:
    if entries and entry.t_ms < entries[-1].t_ms:
        raise ConfigError(f"{where}: timestamp {entry.t_ms:g} ms goes back from the line before "
                          f"({entries[-1].t_ms:g} ms); a trace must be in time order")
    entries.append(entry)


def _mooncake(path: str, text: str) -> list[TraceEntry]:
    entries: list[TraceEntry] = []
    for n, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        where = f"{path}:{n}"
        try:
            rec = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}: not JSON ({exc.msg})") from None
        if not isinstance(rec, dict):
            raise ConfigError(f"{where}: expected an object with timestamp, input_length, output_length")
        for key in ("timestamp", "input_length", "output_length"):
            if key not in rec:
                raise ConfigError(f"{where}: no {key!r} (a trace line has timestamp, input_length, output_length)")
        t = rec["timestamp"]
        if isinstance(t, bool) or not isinstance(t, (int, float)) or t < 0:
            raise ConfigError(f"{where}: timestamp must be milliseconds ≥ 0, got {t!r}")
        hash_ids = rec.get("hash_ids") or []
        if not isinstance(hash_ids, list) or any(isinstance(h, bool) or not isinstance(h, int) for h in hash_ids):
            raise ConfigError(f"{where}: hash_ids must be a list of integers")
        _check_order(entries, TraceEntry(n, float(t), _int(rec["input_length"], "input_length", where, 1),
                                         _int(rec["output_length"], "output_length", where, 1),
                                         tuple(hash_ids)), where)
    return entries


def _azure_time_s(value: str, where: str) -> float:
    value = value.strip()
    try:
        return float(value)  # seconds
    except ValueError:
        pass
    # "2023-11-16 18:15:46.6805900": seven digits of fraction, more than datetime reads; microseconds are plenty.
    head, dot, frac = value.partition(".")
    try:
        t = datetime.fromisoformat(head)
    except ValueError:
        raise ConfigError(f"{where}: TIMESTAMP {value!r} is neither a date-time nor seconds") from None
    if dot:
        digits = "".join(c for c in frac if c.isdigit())
        return t.timestamp() + (float("0." + digits) if digits else 0.0)
    return t.timestamp()


def _azure(path: str, text: str) -> list[TraceEntry]:
    rows = csv.reader(text.splitlines())
    header = next(rows, None)
    cols = {name.strip(): i for i, name in enumerate(header or [])}
    for key in ("TIMESTAMP", "ContextTokens", "GeneratedTokens"):
        if key not in cols:
            raise ConfigError(f"{path}:1: no {key!r} column (Azure's trace has TIMESTAMP, ContextTokens, "
                              "GeneratedTokens)")
    entries: list[TraceEntry] = []
    t0 = None
    for n, row in enumerate(rows, 2):
        if not any(c.strip() for c in row):
            continue
        where = f"{path}:{n}"
        if len(row) < len(cols):
            raise ConfigError(f"{where}: {len(row)} columns, the header has {len(cols)}")
        t = _azure_time_s(row[cols["TIMESTAMP"]], where)
        t0 = t if t0 is None else t0
        values = []
        for key in ("ContextTokens", "GeneratedTokens"):
            try:
                values.append(_int(float(row[cols[key]]), key, where, 1))
            except ValueError:
                raise ConfigError(f"{where}: {key} must be an integer, got {row[cols[key]]!r}") from None
        _check_order(entries, TraceEntry(n, (t - t0) * 1000.0, values[0], values[1]), where)
    return entries


def load_trace(path: str) -> Trace:
    """The trace in `path`. Raises ConfigError naming the file (and line) when it is not a usable trace."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the trace ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    first = text.lstrip()[:1]
    entries = _mooncake(path, text) if first in ("{", "[", "") or not first.isalpha() else _azure(path, text)
    if not entries:
        raise ConfigError(f"{path}: the trace is empty")
    # Times from the first request: a trace cut out of a longer one starts at once.
    t0 = entries[0].t_ms
    for e in entries:
        e.t_ms -= t0
    return Trace(path, entries)
