"""Inter-token gaps counted per microsecond: their percentiles without sorting them again each second.

A level at 512 streams and 64 tokens holds over a million gaps; the live screen's window as many again.
Taking their p50/p90/p99 with numpy reorders every gap (~10 ms for each set), once a second, in a viewer
that shares a core with the load on a small box — the largest part of what the viewer cost the load there
(bench/README.md, "UI"). Counting each gap in a bin of one microsecond instead makes a new request cost
O(its gaps) and a percentile O(the largest gap in µs), and it can take gaps out again (a request that left the
window). The figures are numpy's (linear interpolation between order statistics) over the gaps rounded to the
nearest microsecond: within 0.5 µs of the unrounded ones, far below what a client's clock resolves. The mean
and the count are exact.

Gaps of DENSE_MAX_US or more (stalls; rare) are kept as values, sorted, beside the bins.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NS_PER_US = 1000
DENSE_MAX_US = 1 << 20  # bins up to ~1.05 s: at most 8 MB, allocated only as far as the largest gap seen


class GapCounts:
    """A multiset of gaps (ns), counted per µs. `add` and `remove` take numpy arrays of int64 nanoseconds."""

    __slots__ = ("bins", "long_us", "n", "sum_ns")

    def __init__(self) -> None:
        self.bins = np.zeros(0, dtype=np.int64)  # bins[u]: gaps that round to u µs
        self.long_us = np.zeros(0, dtype=np.int64)  # the gaps of DENSE_MAX_US or more, in µs, sorted
        self.n = 0
        self.sum_ns = 0

    @classmethod
    def of(cls, gaps_ns: np.ndarray) -> GapCounts:
        out = cls()
        out.add(gaps_ns)
        return out

    def add(self, gaps_ns: np.ndarray) -> None:
        self._change(gaps_ns, +1)

    def remove(self, gaps_ns: np.ndarray) -> None:
        """Take out gaps that were added (each as many times as it was)."""
        self._change(gaps_ns, -1)

    def _change(self, gaps_ns: np.ndarray, sign: int) -> None:
        if not len(gaps_ns):
            return
        gaps_ns = np.asarray(gaps_ns, dtype=np.int64)
        us = (np.maximum(gaps_ns, 0) + NS_PER_US // 2) // NS_PER_US
        short = us < DENSE_MAX_US
        s = us[short] if not short.all() else us
        if len(s):
            top = int(s.max()) + 1
            if top > len(self.bins):
                grown = np.zeros(min(DENSE_MAX_US, max(top, 2 * len(self.bins))), dtype=np.int64)
                grown[: len(self.bins)] = self.bins
                self.bins = grown
            counted = np.bincount(s, minlength=top)
            if sign > 0:
                self.bins[:top] += counted
            else:
                self.bins[:top] -= counted
        if len(s) < len(us):
            self.long_us = self._changed_long(us[~short], sign)
        self.n += sign * len(gaps_ns)
        self.sum_ns += sign * int(gaps_ns.sum())

    def _changed_long(self, values_us: np.ndarray, sign: int) -> np.ndarray:
        if sign > 0:
            return np.sort(np.concatenate([self.long_us, values_us]))
        out = self.long_us
        for v in np.sort(values_us)[::-1]:  # few: each is a stall of a second or more
            i = int(np.searchsorted(out, v))
            if i < len(out) and out[i] == v:
                out = np.delete(out, i)
        return out

    def __len__(self) -> int:
        return self.n

    def mean_s(self) -> float:
        return self.sum_ns / self.n / 1e9

    def percentiles_s(self, ps: Sequence[float]) -> list[float]:
        """numpy.percentile's default (linear) over the gaps in µs, in seconds. Needs n ≥ 1."""
        cum = np.cumsum(self.bins)
        long_us = self.long_us
        in_bins = int(cum[-1]) if len(cum) else 0
        n = in_bins + len(long_us)  # what these arrays hold (another thread may be adding to them)

        def order_stat(k: int) -> int:  # the k-th smallest (0-based), in µs
            if k < in_bins:
                return int(np.searchsorted(cum, k, side="right"))
            return int(long_us[k - in_bins])

        out = []
        for p in ps:
            idx = p / 100 * (n - 1)
            lo = int(np.floor(idx))
            hi = min(lo + 1, n - 1)
            a, b = order_stat(lo), order_stat(hi)
            out.append((a + (b - a) * (idx - lo)) / 1e6)
        return out


class WindowGaps:
    """The gaps of the rows of a level's columns that a mask selects, kept up to date as the mask moves
    (requests entering and leaving a window of time): each call costs the rows that changed, not the window.
    Columns replaced by new ones (a level letting old rows go, a viewer taking a run's state) start afresh."""

    def __init__(self) -> None:
        self.counts = GapCounts()
        self._cols = None
        self._rows = 0
        self._in = np.zeros(0, dtype=bool)

    def update(self, cols, mask: np.ndarray) -> GapCounts:
        """`cols`: a RecordColumns (grown in place since the last call, or another one); `mask`: its rows to hold."""
        if cols is not self._cols or len(cols) < self._rows:
            self.counts, self._cols = GapCounts(), cols
            self._in = np.zeros(0, dtype=bool)
        rows = len(mask)
        held = np.zeros(rows, dtype=bool)
        held[: len(self._in)] = self._in[:rows]
        self._rows = rows
        enter, leave = mask & ~held, held & ~mask
        if enter.any() or leave.any():
            itl_n = cols.itl_n[:rows]
            starts = np.concatenate([[0], np.cumsum(itl_n)[:-1]])
            self.counts.add(_gaps_of_rows(cols.itl, starts, itl_n, enter))
            self.counts.remove(_gaps_of_rows(cols.itl, starts, itl_n, leave))
        self._in = mask.copy()
        return self.counts


def _gaps_of_rows(itl: np.ndarray, starts: np.ndarray, lengths: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The gaps of the selected rows, gathered without a mask over every gap."""
    s, n = starts[rows], lengths[rows]
    total = int(n.sum())
    if not total:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(s - np.concatenate([[0], np.cumsum(n)[:-1]]), n)
    return itl[offsets + np.arange(total)]
