"""Requests as numpy columns, grown in place as requests finish.

The live screen summarises the current level twice a second. Pulling every field out of every record each
time is Python work that grows with the level (0.44 s per summary at 25,000 requests, in a thread that shares
the GIL with the load loop). A level (core/levelstats.py) appends the records that finished since it last
looked (`RecordColumns.add`), and the summaries become numpy work on ready arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from befori_tui.core.records import ERROR_KINDS, RequestRecord

# error_kind as a small integer: 0 = none, then ERROR_KINDS in order.
KIND_CODE = {None: 0, **{k: i + 1 for i, k in enumerate(ERROR_KINDS)}}
CANCELLED = KIND_CODE["cancelled"]
NONE_NS = -1  # a timestamp that was never taken


def _cached_tokens(r: RequestRecord) -> float:
    cached = r.server_timing.get("cached_tokens") if r.server_timing else None
    return float(cached) if isinstance(cached, int) else np.nan


class _Growing:
    """A numpy array with amortised appends."""

    __slots__ = ("buf", "n")

    def __init__(self, dtype) -> None:
        self.buf = np.empty(256, dtype=dtype)
        self.n = 0

    def extend(self, values) -> None:
        values = np.asarray(values, dtype=self.buf.dtype)
        need = self.n + len(values)
        if need > len(self.buf):
            bigger = np.empty(max(need, len(self.buf) * 3 // 2), dtype=self.buf.dtype)  # 1.5: smaller steps of memory
            bigger[: self.n] = self.buf[: self.n]
            self.buf = bigger
        self.buf[self.n: need] = values
        self.n = need

    @property
    def values(self) -> np.ndarray:
        return self.buf[: self.n]


class RecordColumns:
    """One column per field the summaries need, one row per record, in the order the records were added.

    Only finished records belong here (a record's fields must not change after it is added): the runner and the
    live model append a record to a level when it ends.
    """

    def __init__(self) -> None:
        self._cols = {name: _Growing(dtype) for name, dtype in (
            ("send", np.int64), ("first", np.int64), ("end", np.int64), ("level", np.int64), ("slot", np.int64),
            ("kind", np.int8), ("status", np.int16), ("warmup", bool), ("outlived", bool),
            ("n_in", np.float64), ("n_out", np.float64), ("itl_n", np.int64), ("itl", np.int64),
            # For the per-turn figures: the turn (0: no conversation), whether the input count is known, and
            # the simulator's cached prompt tokens (NaN: not reported).
            ("turn", np.int32), ("in_known", bool), ("cached", np.float64),
        )}

    def add(self, new: Sequence[RequestRecord]) -> RecordColumns:
        """Append these records as rows."""
        if not new:
            return self
        c = self._cols
        c["send"].extend([r.t_send_ns for r in new])
        c["first"].extend([NONE_NS if r.t_first_token_ns is None else r.t_first_token_ns for r in new])
        c["end"].extend([NONE_NS if r.t_end_ns is None else r.t_end_ns for r in new])
        c["level"].extend([r.level for r in new])
        c["slot"].extend([r.slot for r in new])
        c["kind"].extend([KIND_CODE.get(r.error_kind, len(KIND_CODE)) for r in new])
        c["status"].extend([r.http_status or 0 for r in new])
        c["warmup"].extend([r.warmup for r in new])
        c["outlived"].extend([r.outlived_level for r in new])
        c["n_in"].extend([r.input_tokens or 0 for r in new])
        c["n_out"].extend([r.output_tokens or 0 for r in new])
        # Inter-token gaps of ok requests only: nothing else ever reads them.
        gaps = [r.itl_ns if (r.error_kind is None and r.t_end_ns is not None) else () for r in new]
        c["itl_n"].extend([len(g) for g in gaps])
        parts = [np.asarray(g, dtype=np.int64) for g in gaps if len(g)]
        if parts:
            c["itl"].extend(np.concatenate(parts))
        c["turn"].extend([r.turn for r in new])
        c["in_known"].extend([r.input_tokens is not None for r in new])
        c["cached"].extend([_cached_tokens(r) for r in new])
        return self

    def append(self, other: RecordColumns) -> RecordColumns:
        """Append another's rows after these."""
        for name, col in self._cols.items():
            col.extend(other._cols[name].values)
        return self

    def compress(self, keep: np.ndarray) -> RecordColumns:
        """Only the rows where `keep` is true, in the same order (a new object)."""
        out = RecordColumns()
        for name, col in self._cols.items():
            if name == "itl":
                out._cols[name].extend(self.itl[np.repeat(keep, self.itl_n)])
            else:
                out._cols[name].extend(col.values[keep])
        return out

    def __len__(self) -> int:
        return self._cols["send"].n

    def __getattr__(self, name: str) -> np.ndarray:
        cols = self.__dict__.get("_cols")
        if cols is None or name not in cols:
            raise AttributeError(name)
        return cols[name].values

    # Masks, with the meaning of RequestRecord's properties.
    def ok(self) -> np.ndarray:
        return (self.kind == 0) & (self.end != NONE_NS)

    def steady(self) -> np.ndarray:
        return self.ok() & ~self.warmup & ~self.outlived

    def steady_with_token(self) -> np.ndarray:
        """The requests a level's latencies are over: steady, and a first token came."""
        return self.steady() & (self.first != NONE_NS)

    def ok_slot_time_share(self) -> float:
        """Of the slot time spent on measured requests (not warm-up, not outlived, not cancelled), the share
        that went to ok ones. A request's slot time runs from its send to the next send on its slot, so the
        back-off after a failure counts with the failure. 1.0 when nothing failed."""
        counted = (self.end != NONE_NS) & ~self.warmup & ~self.outlived & (self.kind != CANCELLED)
        if not counted.any():
            return 0.0
        order = np.lexsort((self.send, self.slot))
        slot, send, end = self.slot[order], self.send[order], self.end[order]
        span = end - send
        same = slot[1:] == slot[:-1]  # the next request in this order is on the same slot
        span[:-1] = np.where(same, np.maximum(send[1:], end[:-1]) - send[:-1], span[:-1])
        counted, ok = counted[order], self.ok()[order]
        total = float(span[counted].sum())
        return float(span[counted & ok].sum()) / total if total > 0 else 0.0

    def itl_of(self, mask: np.ndarray) -> np.ndarray:
        """The inter-token gaps (ns) of the records in `mask`, concatenated."""
        return self.itl[np.repeat(mask, self.itl_n)]

    def error_counts(self, mask: np.ndarray | None = None) -> dict[str, int]:
        kinds = self.kind if mask is None else self.kind[mask]
        counts = np.bincount(kinds.astype(np.int64), minlength=len(KIND_CODE) + 1)
        return {k: int(counts[KIND_CODE[k]]) for k in ERROR_KINDS if counts[KIND_CODE[k]]}

    def error_groups(self, mask: np.ndarray | None = None) -> dict[str, int]:
        """Failed requests by status and kind, the most first: `http_500`, `http_429` (an HTTP status kept
        apart per code: a 429 says slow down, a 500 says broken), then `timeout`, `connect`, … Cancelled
        requests are not failures and are left out."""
        kinds = self.kind if mask is None else self.kind[mask]
        status = self.status if mask is None else self.status[mask]
        failed = (kinds != 0) & (kinds != CANCELLED)
        out: dict[str, int] = {}
        http = failed & (kinds == KIND_CODE["http_status"])
        for code, n in zip(*np.unique(status[http], return_counts=True)):
            out[f"http_{int(code)}"] = int(n)
        for k in ERROR_KINDS:
            if k in ("http_status", "cancelled"):
                continue
            n = int((failed & (kinds == KIND_CODE[k])).sum())
            if n:
                out[k] = n
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))
