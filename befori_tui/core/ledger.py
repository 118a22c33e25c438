"""The occupancy method's bill (core/cost.py), over a run of any length, in bounded memory.

The occupancy method shares the server's time among the requests in flight: a request's share depends on
every request that overlapped it, whichever level sent it. Computing it from every request of the run grows
with the run. But a stretch of time is settled once every request that covered it has ended: before the
*watermark* — the send time of the oldest request still in flight (and never later than WATERMARK_MARGIN_S
ago, for events still on their way) — the number in flight is known for good. So, once it holds more than
MAX_ROWS requests, the ledger folds those that ended before the watermark into per-level sums (exact: the
same arithmetic in another order) and keeps only the cumulative share at the knots that requests still open
need. Its size follows the requests in the last margin and the longest request, not the run.
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np

from befori_tui.core.cost import share_function
from befori_tui.core.levelstats import take_all

MAX_ROWS = 20_000
WATERMARK_MARGIN_S = 10.0
_FIELDS = ("send", "first", "end", "failed", "level", "steady", "n_in", "n_out")


def watermark_ns(in_flight_send_ns, now_ns: int) -> int:
    """Before this time, every request that was in flight has ended and been received."""
    oldest = min(in_flight_send_ns, default=now_ns)
    return min(oldest, now_ns - int(WATERMARK_MARGIN_S * 1e9))


def settle_run(levels, ledger: OccupancyLedger, in_flight_send_ns, now_ns: int, slo=None) -> None:
    """Turn the records handed over by the load loop into figures, and let go of what is no longer needed:
    each level's (core/levelstats.py, counting the SLO's targets) and the ledger's, up to the watermark."""
    for lv in levels:
        if slo:
            lv.records.watch_slo(slo)
        lv.records.absorb()
    ledger.settle(levels, watermark_ns(in_flight_send_ns, now_ns))


class _Sums:
    __slots__ = ("input_s", "output_s", "failed_s", "mine_input_s", "mine_output_s", "mine_in", "mine_out")

    def __init__(self) -> None:
        self.input_s = self.output_s = self.failed_s = 0.0  # share-seconds inside the level's window
        self.mine_input_s = self.mine_output_s = self.mine_in = self.mine_out = 0.0  # its own steady requests


class OccupancyLedger:
    def __init__(self, max_rows: int = MAX_ROWS) -> None:
        self.max_rows = max_rows
        self._pending: deque = deque()
        self._lock = threading.Lock()
        self.rows = {name: np.zeros(0, dtype=np.int64 if name in ("send", "first", "end", "level") else
                                    (bool if name in ("failed", "steady") else np.float64)) for name in _FIELDS}
        self.t_final_ns: int | None = None  # the share function is final before this; no row ends before it
        # The cumulative share ∫1/n dt and busy time ∫[n>0] dt (seconds) at knots up to t_final, kept from the
        # oldest send of a row still held; and their values at the level boundaries already passed.
        self.knots = np.zeros(0)
        self.share_cum = np.zeros(0)
        self.busy_cum = np.zeros(0)
        self.marks: dict[int, tuple[float, float]] = {}
        self.sums: dict[int, _Sums] = {}
        self.folded = 0

    @classmethod
    def of(cls, records) -> OccupancyLedger:
        ledger = cls()
        for r in records:
            ledger.append(r)
        return ledger

    def append(self, r) -> None:
        self._pending.append(r)

    def __len__(self) -> int:
        return len(self.rows["send"]) + len(self._pending)

    def absorb(self) -> None:
        with self._lock:
            self._absorb()

    def _absorb(self) -> None:
        batch = [r for r in take_all(self._pending) if r.t_end_ns is not None]
        if not batch:
            return
        end = np.array([r.t_end_ns for r in batch], dtype=np.int64)
        new = {
            "send": np.array([r.t_send_ns for r in batch], dtype=np.int64),
            # A request without a first token counts all its time as waiting for input.
            "first": np.array([r.t_first_token_ns if r.t_first_token_ns is not None else r.t_end_ns
                               for r in batch], dtype=np.int64),
            "end": end,
            "failed": np.array([not r.ok for r in batch], dtype=bool),
            "level": np.array([r.level for r in batch], dtype=np.int64),
            "steady": np.array([r.steady for r in batch], dtype=bool),
            "n_in": np.array([r.input_tokens or 0 for r in batch], dtype=np.float64),
            "n_out": np.array([r.output_tokens or 0 for r in batch], dtype=np.float64),
        }
        new["first"] = np.clip(new["first"], new["send"], end)
        for name in _FIELDS:
            self.rows[name] = np.concatenate([self.rows[name], new[name]])

    # --- the share function ----------------------------------------------------------------------------

    def _function(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Knots and cumulative share and busy time over the kept knots and every row held."""
        if not len(self.rows["send"]):
            return self.knots, self.share_cum, self.busy_cum
        base = (self.share_cum[-1], self.busy_cum[-1]) if len(self.share_cum) else (0.0, 0.0)
        # Before t_final the kept knots hold the function; the rows held give it from there.
        knots, share, busy = share_function(self.rows["send"], self.rows["end"], self.t_final_ns, base)
        if len(self.knots):
            return (np.concatenate([self.knots, knots]), np.concatenate([self.share_cum, share]),
                    np.concatenate([self.busy_cum, busy]))
        return knots, share, busy

    # --- folding -----------------------------------------------------------------------------------------

    def settle(self, levels, watermark: int) -> None:
        """Fold the rows that ended before `watermark` (see watermark_ns) when more than max_rows are held.
        `levels`: the run's levels (t_start_ns, t_end_ns, index), for the windows the folded rows fall in."""
        with self._lock:
            self._absorb()
            if len(self.rows["send"]) <= self.max_rows or (self.t_final_ns is not None and watermark <= self.t_final_ns):
                return
            knots, share_cum, busy_cum = self._function()
            if not len(knots):
                return
            r = self.rows
            done = r["end"] < watermark
            if done.any():
                c = lambda x: np.interp(x.astype(float), knots, share_cum)  # noqa: E731
                s, f, e = r["send"][done], r["first"][done], r["end"][done]
                failed, level, steady = r["failed"][done], r["level"][done], r["steady"][done]
                cs, cf, ce = c(s), c(f), c(e)
                for lv in levels:
                    t1 = lv.t_end_ns
                    over = (e >= lv.t_start_ns) & ((s <= t1) if t1 is not None else True)
                    mine = steady & (level == lv.index)
                    if not (over.any() or mine.any()):
                        continue
                    sums = self.sums.setdefault(lv.index, _Sums())
                    if over.any():
                        hi = float(t1) if t1 is not None else np.inf
                        ws = np.clip(s[over].astype(float), lv.t_start_ns, hi)
                        we = np.clip(e[over].astype(float), lv.t_start_ns, hi)
                        wf = np.clip(f[over].astype(float), ws, we)
                        inp, out = c(wf) - c(ws), c(we) - c(wf)
                        bad = failed[over]
                        sums.input_s += float(inp[~bad].sum())
                        sums.output_s += float(out[~bad].sum())
                        sums.failed_s += float((inp + out)[bad].sum())
                    if mine.any():
                        sums.mine_input_s += float((cf - cs)[mine].sum())
                        sums.mine_output_s += float((ce - cf)[mine].sum())
                        sums.mine_in += float(r["n_in"][done][mine].sum())
                        sums.mine_out += float(r["n_out"][done][mine].sum())
                self.folded += int(done.sum())
                for name in _FIELDS:
                    r[name] = r[name][~done]
            # The function's values at level boundaries about to be forgotten, then its knots up to the
            # watermark from the oldest send still held.
            w = float(watermark)
            for lv in levels:
                for t in (lv.t_start_ns, lv.t_end_ns):
                    if t is not None and t not in self.marks and t <= watermark:
                        self.marks[t] = (float(np.interp(t, knots, share_cum)), float(np.interp(t, knots, busy_cum)))
            keep_from = float(min(int(r["send"].min()) if len(r["send"]) else watermark, watermark))
            i = max(0, int(np.searchsorted(knots, keep_from, side="right")) - 1)
            j = int(np.searchsorted(knots, w, side="left"))
            at_w = (float(np.interp(w, knots, share_cum)), float(np.interp(w, knots, busy_cum)))
            self.knots = np.concatenate([knots[i:j], [w]])
            self.share_cum = np.concatenate([share_cum[i:j], [at_w[0]]])
            self.busy_cum = np.concatenate([busy_cum[i:j], [at_w[1]]])
            self.t_final_ns = watermark

    # --- a level's bill ----------------------------------------------------------------------------------

    def level_bill(self, level, t_end_ns: int) -> tuple[dict[str, float], dict[str, float]]:
        """Share-seconds of the level's window [t_start, t_end]: input, output, failed, busy — and of its own
        steady requests: input, output, and their tokens."""
        with self._lock:
            self._absorb()
            knots, share_cum, busy_cum = self._function()
            r = self.rows
            t0, t1 = level.t_start_ns, t_end_ns
            folded = self.sums.get(level.index, _Sums())
            out = {"input_s": folded.input_s, "output_s": folded.output_s, "failed_s": folded.failed_s}
            mine = {"input_s": folded.mine_input_s, "output_s": folded.mine_output_s,
                    "n_in": folded.mine_in, "n_out": folded.mine_out}
            if len(knots):
                c = lambda x: np.interp(np.asarray(x, dtype=float), knots, share_cum)  # noqa: E731
                s, f, e = r["send"], r["first"], r["end"]
                ws = np.clip(s.astype(float), t0, t1)
                we = np.clip(e.astype(float), t0, t1)
                wf = np.clip(f.astype(float), ws, we)
                inp, outp = c(wf) - c(ws), c(we) - c(wf)
                bad = r["failed"]
                out["input_s"] += float(inp[~bad].sum())
                out["output_s"] += float(outp[~bad].sum())
                out["failed_s"] += float((inp + outp)[bad].sum())
                m = r["steady"] & (r["level"] == level.index)
                cs, cf, ce = c(s[m]), c(f[m]), c(e[m])
                mine["input_s"] += float((cf - cs).sum())
                mine["output_s"] += float((ce - cf).sum())
                mine["n_in"] += float(r["n_in"][m].sum())
                mine["n_out"] += float(r["n_out"][m].sum())
            out["busy_s"] = self._busy_at(t1, knots, busy_cum) - self._busy_at(t0, knots, busy_cum)
            return out, mine

    def _busy_at(self, t: int, knots, busy_cum) -> float:
        if t in self.marks:
            return self.marks[t][1]
        if not len(knots):
            return 0.0
        return float(np.interp(float(t), knots, busy_cum))

    # --- as plain data, for a viewer that attaches (core/events.py) --------------------------------------

    def to_state(self) -> dict:
        with self._lock:
            self._absorb()
            arr = lambda a: [str(a.dtype), a.tobytes()]  # noqa: E731
            return {"rows": {k: arr(v) for k, v in self.rows.items()}, "t_final": self.t_final_ns,
                    "knots": arr(self.knots), "share": arr(self.share_cum), "busy": arr(self.busy_cum),
                    "marks": [[t, a, b] for t, (a, b) in self.marks.items()], "folded": self.folded,
                    "sums": [[i, [getattr(s, k) for k in _Sums.__slots__]] for i, s in self.sums.items()]}

    def load_state(self, d: dict) -> None:
        arr = lambda v: np.frombuffer(v[1], dtype=np.dtype(v[0])).copy()  # noqa: E731
        with self._lock:
            self.rows = {k: arr(v) for k, v in d["rows"].items()}
            self.t_final_ns = d["t_final"]
            self.knots, self.share_cum, self.busy_cum = arr(d["knots"]), arr(d["share"]), arr(d["busy"])
            self.marks = {int(t): (a, b) for t, a, b in d["marks"]}
            self.folded = d["folded"]
            self.sums = {}
            for i, values in d["sums"]:
                s = self.sums[int(i)] = _Sums()
                for k, v in zip(_Sums.__slots__, values):
                    setattr(s, k, v)
