"""Percentiles in bounded memory: DDSketch (the `ddsketch` package, Datadog's reference implementation).

A DDSketch answers any quantile within a *relative* error of the true value — here RELATIVE_ERROR, 1%: a
true p99 TTFT of 250 ms reads between 247.5 and 252.5 ms, at any size of the data, in the tail as in the
middle. (A rank-error sketch such as t-digest or KLL promises the rank instead, which in a long tail can be a
value far off.) Its memory grows with the logarithm of the range of values (about 1,100 buckets from 1 µs
to one hour), not with their count, and two sketches with the same error merge exactly: the merge is the
sketch of the union. docs/results.md, "Bounded memory", says when a level's figures come from sketches.
"""

from __future__ import annotations

import numpy as np
from ddsketch import DDSketch

RELATIVE_ERROR = 0.01


class Sketch:
    """Values of one figure (seconds, or tokens) and their exact count, sum, min and max."""

    __slots__ = ("dd",)

    def __init__(self) -> None:
        self.dd = DDSketch(relative_accuracy=RELATIVE_ERROR)

    def add_many(self, values: np.ndarray) -> None:
        """As DDSketch.add for each value, with the bucket keys computed by numpy and one store update per
        distinct key: a second of a run at 512 streams is ~30,000 gaps between tokens, 14 ms of CPU one by one
        (0.47 µs each, beside the load loop), ~1 ms this way."""
        v = np.asarray(values, dtype=float)
        if not len(v):
            return
        d = self.dd
        tiny = d._mapping.min_possible
        pos, neg = v > tiny, v < -tiny
        for store, mask, sign in ((d._store, pos, 1.0), (d._negative_store, neg, -1.0)):
            if mask.any():
                keys, counts = np.unique(self._keys(sign * v[mask]), return_counts=True)
                for k, c in zip(keys.tolist(), counts.tolist()):
                    store.add(k, float(c))
        d._zero_count += float(len(v) - pos.sum() - neg.sum())
        d._count += float(len(v))
        d._sum += float(v.sum())
        d._min = min(d._min, float(v.min()))
        d._max = max(d._max, float(v.max()))

    def _keys(self, v: np.ndarray) -> np.ndarray:
        """LogarithmicMapping.key, vectorised: ceil(log2(v) · multiplier) + offset."""
        m = self.dd._mapping
        return (np.ceil(np.log2(v) * m._multiplier) + m._offset).astype(np.int64)

    def merge(self, other: Sketch) -> None:
        self.dd.merge(other.dd)

    @property
    def count(self) -> int:
        return int(self.dd.count)

    @property
    def mean(self) -> float:
        return self.dd.sum / self.dd.count if self.dd.count else float("nan")

    def quantile(self, q: float) -> float:
        """The value at quantile q (0–1), within RELATIVE_ERROR of the true one."""
        return float(self.dd.get_quantile_value(q))

    # --- as plain data, for a viewer that attaches to a run (core/events.py) --------------------------------
    # The package has no serialisation without protobuf; its stores are plain lists with an offset. A test
    # (tests/test_bounded.py) rebuilds sketches through this and compares every quantile, and another checks
    # add_many's keys against the package's own add, so a change in the package's layout fails there, not on
    # a user's screen.

    def to_state(self) -> list:
        d = self.dd
        return [d._count, d._zero_count, d._sum, d._min, d._max,
                _store_state(d._store), _store_state(d._negative_store)]

    @classmethod
    def from_state(cls, state: list) -> Sketch:
        s = cls()
        d = s.dd
        d._count, d._zero_count, d._sum, d._min, d._max = state[:5]
        _store_load(d._store, state[5])
        _store_load(d._negative_store, state[6])
        return s


def _store_state(store) -> list | None:
    if not store.count:
        return None  # an empty store's key bounds are the package's own infinities: a fresh one is the same
    return [store.count, int(store.min_key), int(store.max_key), store.offset, list(store.bins)]


def _store_load(store, state: list | None) -> None:
    if state is None:
        return
    store.count, store.min_key, store.max_key, store.offset, bins = state
    store.bins = list(bins)
