"""A level's finished requests, in memory that does not grow with the length of the run.

Keeping every request of a level as a record costs about 3.1 KiB each (its inter-token gaps as Python ints):
512 streams at ~130 requests/s grew by ~1.4 GB an hour. A level now keeps:

- its requests as numpy columns (core/columns.py), up to EXACT_MAX_REQUESTS of them: its figures are exact,
  computed from every request as before;
- from its first request on, aggregates whose size does not depend on the count: exact counts, sums and
  co-moments (means, rates, the $/M and its interval), and a DDSketch per latency (core/sketch.py: every
  percentile within 1% of the true value).

Past EXACT_MAX_REQUESTS its figures come from the aggregates, and the columns keep only the requests that
ended in the last RECENT_KEEP_S (the live screen's window). docs/results.md, "Bounded memory".

Records are handed over from the load loop (`append`, O(1), no numpy) and turned into columns and aggregates
by whoever reads the figures (`absorb`, any thread): the load loop never pays for them.
"""

from __future__ import annotations

import threading
from collections import Counter, deque

import numpy as np

from befori_tui.core.columns import CANCELLED, KIND_CODE, NONE_NS, RecordColumns
from befori_tui.core.gapcounts import GapCounts
from befori_tui.core.sketch import Sketch

EXACT_MAX_REQUESTS = 20_000
RECENT_KEEP_S = 130.0  # past the size, the columns keep this much: the longest live window (120 s) and a margin
LATENCIES = ("ttft_s", "e2e_s", "itl_s", "tpot_s", "input_tokens", "output_tokens")


class CoMoments:
    """Count, means, and centred second moments of (time, tokens) pairs, merged batch by batch (Chan's
    update): the delta method's interval of a ratio of means needs Var(t − r·n), and these give it without
    keeping the pairs and without the cancellation of raw sums of squares."""

    __slots__ = ("n", "mean_t", "mean_n", "m2_t", "m2_n", "c_tn")

    def __init__(self) -> None:
        self.n, self.mean_t, self.mean_n, self.m2_t, self.m2_n, self.c_tn = 0, 0.0, 0.0, 0.0, 0.0, 0.0

    def add(self, t: np.ndarray, n: np.ndarray) -> None:
        k = len(t)
        if not k:
            return
        mt, mn = float(t.mean()), float(n.mean())
        dt, dn = t - mt, n - mn
        total = self.n + k
        d_t, d_n = mt - self.mean_t, mn - self.mean_n
        w = self.n * k / total
        self.m2_t += float(dt @ dt) + d_t * d_t * w
        self.m2_n += float(dn @ dn) + d_n * d_n * w
        self.c_tn += float(dt @ dn) + d_t * d_n * w
        self.mean_t += d_t * k / total
        self.mean_n += d_n * k / total
        self.n = total

    def residual_sd(self) -> float:
        """The standard deviation (ddof 1) of t − r·n with r = mean t / mean n."""
        if self.n < 2 or self.mean_n == 0:
            return float("nan")
        r = self.mean_t / self.mean_n
        var = (self.m2_t - 2 * r * self.c_tn + r * r * self.m2_n) / (self.n - 1)
        return float(np.sqrt(max(var, 0.0)))

    def to_state(self) -> list:
        return [self.n, self.mean_t, self.mean_n, self.m2_t, self.m2_n, self.c_tn]

    @classmethod
    def from_state(cls, state: list) -> CoMoments:
        m = cls()
        m.n, m.mean_t, m.mean_n, m.m2_t, m.m2_n, m.c_tn = state
        return m


class SloCounts:
    """For one set of latency targets: the requests that met all of them, and their tokens."""

    __slots__ = ("met", "met_in", "met_out", "since")

    def __init__(self, since: int) -> None:
        self.met, self.met_in, self.met_out = 0, 0.0, 0.0
        self.since = since  # requests of the level before the targets were known (0: none missed)


class TurnAggregate:
    __slots__ = ("requests", "ttft_s", "in_sum", "in_n", "cached_sum", "cached_n")

    def __init__(self) -> None:
        self.requests, self.in_sum, self.in_n, self.cached_sum, self.cached_n = 0, 0.0, 0, 0.0, 0
        self.ttft_s = Sketch()


class LevelAggregates:
    """What a level's figures need, summed over every request it has absorbed. Each request is added once,
    in the order the level received it (per slot, that is the order they were sent)."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()  # ok, failed, cancelled, steady, warmup, outlived, measured, sent_known
        self.kinds = np.zeros(len(KIND_CODE) + 1, dtype=np.int64)
        self.http_status: Counter = Counter()  # failed with an HTTP status: by code
        self.sketches = {name: Sketch() for name in LATENCIES}  # steady requests with a first token
        self.sums: Counter = Counter()  # steady_in, steady_out, ok_out_in_level
        self.send_min_ns, self.send_max_ns = None, None
        self.moments_in, self.moments_out = CoMoments(), CoMoments()  # (TTFT, input), (decode, output)
        # Slot time (see RecordColumns.ok_slot_time_share): spans closed by the next send on their slot, and
        # each slot's last request, whose span may still grow: (send, end, counted, ok).
        self.span_counted_ns, self.span_ok_ns = 0, 0
        self.last_on_slot: dict[int, tuple[int, int, bool, bool]] = {}
        self.slo: dict[str, SloCounts] = {}
        self.turns: dict[int, TurnAggregate] = {}

    def add(self, new: RecordColumns, before: int, slo_targets: dict[str, list]) -> None:
        """Add these requests (the level had `before` already). O(the new requests): this runs every second
        in the run process, beside its load loop."""
        kind, end, send = new.kind, new.end, new.send
        ok, steady = new.ok(), new.steady()
        warm, outl = new.warmup, new.outlived
        c = self.counts
        c["ok"] += int(ok.sum())
        c["failed"] += int(((kind != 0) & (kind != CANCELLED)).sum())
        c["cancelled"] += int((kind == CANCELLED).sum())
        c["steady"] += int(steady.sum())
        c["warmup"] += int(warm.sum())
        c["outlived"] += int(outl.sum())
        measured = (end != NONE_NS) & ~warm & ~outl & (kind != CANCELLED)
        c["measured"] += int(measured.sum())
        self.kinds += np.bincount(kind.astype(np.int64), minlength=len(self.kinds))[: len(self.kinds)]
        self.http_status.update(int(s) for s in new.status[kind == KIND_CODE["http_status"]])
        n_in, n_out = new.n_in, new.n_out
        self.sums["steady_in"] += float(n_in[steady].sum())
        self.sums["steady_out"] += float(n_out[steady].sum())
        self.sums["ok_out_in_level"] += float(n_out[ok & ~outl].sum())
        sent = send[send > 0]
        if len(sent):
            c["sent_known"] += len(sent)
            lo, hi = int(sent.min()), int(sent.max())
            self.send_min_ns = lo if self.send_min_ns is None else min(self.send_min_ns, lo)
            self.send_max_ns = hi if self.send_max_ns is None else max(self.send_max_ns, hi)
        self._add_spans(new.slot, send, end, measured, ok)
        # Latencies of the steady requests that received a token (as metrics.column_latency_stats).
        m = new.steady_with_token()
        if m.any():
            first = new.first[m]
            s, e = send[m], end[m]
            ttft_s, e2e_s = (first - s) / 1e9, (e - s) / 1e9
            sk = self.sketches
            sk["ttft_s"].add_many(ttft_s)
            sk["e2e_s"].add_many(e2e_s)
            sk["itl_s"].add_many(new.itl_of(m) / 1e9)
            no = n_out[m]
            many = no >= 2
            sk["tpot_s"].add_many((e[many] - first[many]) / 1e9 / (no[many] - 1))
            sk["input_tokens"].add_many(n_in[m])
            sk["output_tokens"].add_many(no)
            self.moments_in.add(ttft_s, n_in[m])
            self.moments_out.add(e2e_s - ttft_s, no)
            self._add_turns(new, m, ttft_s)
        if slo_targets:
            from befori_tui.core.slo import requests_meeting

            for key, targets in slo_targets.items():
                counts = self.slo.get(key)
                if counts is None:
                    counts = self.slo[key] = SloCounts(before)
                meets = requests_meeting(new, steady, targets)
                counts.met += int(meets.sum())
                counts.met_in += float(n_in[meets].sum())
                counts.met_out += float(n_out[meets].sum())

    def _add_spans(self, slot, send, end, counted, ok) -> None:
        last = self.last_on_slot
        for i in np.lexsort((send, slot)).tolist():
            s = int(slot[i])
            prev = last.get(s)
            if prev is not None:
                p_send, p_end, p_counted, p_ok = prev
                if p_counted:
                    span = max(int(send[i]), p_end) - p_send
                    self.span_counted_ns += span
                    if p_ok:
                        self.span_ok_ns += span
            last[s] = (int(send[i]), int(end[i]), bool(counted[i]), bool(ok[i]))

    def ok_slot_time_share(self) -> float:
        counted, ok = self.span_counted_ns, self.span_ok_ns
        any_counted = False
        for send, end, c, k in self.last_on_slot.values():
            if c:
                any_counted = True
                counted += end - send
                if k:
                    ok += end - send
        if not counted and not (any_counted or self.span_counted_ns):
            return 0.0
        return ok / counted if counted > 0 else 0.0

    def _add_turns(self, new: RecordColumns, m: np.ndarray, ttft_s: np.ndarray) -> None:
        turn = new.turn[m]
        if not turn.any():
            return
        known, n_in, cached = new.in_known[m], new.n_in[m], new.cached[m]
        for t in np.unique(turn[turn > 0]).tolist():
            rows = turn == t
            agg = self.turns.setdefault(int(t), TurnAggregate())
            agg.requests += int(rows.sum())
            agg.ttft_s.add_many(ttft_s[rows])
            agg.in_sum += float(n_in[rows & known].sum())
            agg.in_n += int((rows & known).sum())
            has = rows & ~np.isnan(cached)
            agg.cached_sum += float(cached[has].sum())
            agg.cached_n += int(has.sum())

    def error_counts(self) -> dict[str, int]:
        from befori_tui.core.records import ERROR_KINDS

        return {k: int(self.kinds[KIND_CODE[k]]) for k in ERROR_KINDS if self.kinds[KIND_CODE[k]]}

    def error_groups(self) -> dict[str, int]:
        """As RecordColumns.error_groups."""
        from befori_tui.core.records import ERROR_KINDS

        out = {f"http_{code}": n for code, n in sorted(self.http_status.items())}
        for k in ERROR_KINDS:
            if k in ("http_status", "cancelled"):
                continue
            n = int(self.kinds[KIND_CODE[k]])
            if n:
                out[k] = n
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    # --- as plain data, for a viewer that attaches (core/events.py) --------------------------------------

    def to_state(self) -> dict:
        return {
            "counts": dict(self.counts), "kinds": self.kinds.tolist(), "http_status": dict(self.http_status),
            "sketches": {k: s.to_state() for k, s in self.sketches.items()}, "sums": dict(self.sums),
            "send": [self.send_min_ns, self.send_max_ns],
            "moments": [self.moments_in.to_state(), self.moments_out.to_state()],
            "spans": [self.span_counted_ns, self.span_ok_ns, [[s, *v] for s, v in self.last_on_slot.items()]],
            "slo": {k: [v.met, v.met_in, v.met_out, v.since] for k, v in self.slo.items()},
            "turns": {t: [a.requests, a.ttft_s.to_state(), a.in_sum, a.in_n, a.cached_sum, a.cached_n]
                      for t, a in self.turns.items()},
        }

    @classmethod
    def from_state(cls, d: dict) -> LevelAggregates:
        a = cls()
        a.counts = Counter(d["counts"])
        a.kinds = np.asarray(d["kinds"], dtype=np.int64)
        a.http_status = Counter({int(k): v for k, v in d["http_status"].items()})
        a.sketches = {k: Sketch.from_state(v) for k, v in d["sketches"].items()}
        a.sums = Counter(d["sums"])
        a.send_min_ns, a.send_max_ns = d["send"]
        a.moments_in, a.moments_out = (CoMoments.from_state(m) for m in d["moments"])
        a.span_counted_ns, a.span_ok_ns, last = d["spans"]
        a.last_on_slot = {int(s): (send, end, bool(c), bool(k)) for s, send, end, c, k in last}
        for k, (met, met_in, met_out, since) in d["slo"].items():
            counts = a.slo[k] = SloCounts(since)
            counts.met, counts.met_in, counts.met_out = met, met_in, met_out
        for t, (n, sk, in_sum, in_n, cached_sum, cached_n) in d["turns"].items():
            agg = a.turns[int(t)] = TurnAggregate()
            agg.requests, agg.ttft_s = n, Sketch.from_state(sk)
            agg.in_sum, agg.in_n, agg.cached_sum, agg.cached_n = in_sum, in_n, cached_sum, cached_n
        return a


class LevelRecords:
    """A level's finished requests: `append` from the load loop (or an event reader), `absorb` before
    reading figures. `len()` is the number finished. With `keep=False` (a load process whose records are
    kept by the run process) only the count is kept."""

    def __init__(self, keep: bool = True, exact_max: int = EXACT_MAX_REQUESTS, recent_keep_s: float = RECENT_KEEP_S) -> None:
        self.keep = keep
        self.exact_max = exact_max
        self.recent_keep_s = recent_keep_s
        self.count = 0
        self._pending: deque = deque()  # appended by one thread, drained by another: deque ops are atomic
        self._lock = threading.Lock()
        self.cols = RecordColumns()
        self.itl_counts: GapCounts | None = GapCounts()  # the steady gaps while the columns hold them all
        self.agg = LevelAggregates()
        self.absorbed = 0
        self._kept = 0  # rows kept at the last let-go
        self.kept_since_ns: int | None = None  # None: the columns hold every request (exact)
        self.exact = True  # the columns hold every request absorbed; False once the oldest were let go
        self.slo_targets: dict[str, list] = {}
        self.first_error: str | None = None

    def append(self, r) -> None:
        self.count += 1
        if self.first_error is None and r.error_message:
            self.first_error = r.error_message  # for a run where nothing succeeded: say what went wrong
        if self.keep:
            self._pending.append(r)

    def extend(self, records) -> None:
        for r in records:
            self.append(r)

    def __len__(self) -> int:
        return self.count

    def __bool__(self) -> bool:
        return self.count > 0

    def watch_slo(self, targets) -> None:
        """Count the requests that meet these targets from now on (and over every request kept, while the
        columns still hold them all). The run's SLO is known at its start: nothing is missed."""
        targets = list(targets or [])
        if not targets:
            return
        key = slo_key(targets)
        with self._lock:
            if key in self.slo_targets:
                return
            self.slo_targets[key] = targets
            if self.absorbed and self.exact:  # catch up on the rows already absorbed
                counts = SloCounts(0)
                from befori_tui.core.slo import requests_meeting

                meets = requests_meeting(self.cols, self.cols.steady(), targets)
                counts.met, counts.met_in = int(meets.sum()), float(self.cols.n_in[meets].sum())
                counts.met_out = float(self.cols.n_out[meets].sum())
                self.agg.slo[key] = counts
            elif self.absorbed:
                self.agg.slo[key] = SloCounts(self.absorbed)

    def absorb(self) -> LevelRecords:
        """Turn the records handed over since the last call into columns and aggregates (any thread)."""
        with self._lock:
            batch = take_all(self._pending)
            if batch:
                new = RecordColumns().add(batch)
                self.agg.add(new, self.absorbed, self.slo_targets)
                self.cols.append(new)
                if self.itl_counts is not None:
                    self.itl_counts.add(new.itl_of(new.steady_with_token()))
                self.absorbed += len(batch)
                # Let go in steps (each one copies what it keeps): when a quarter as many again have come.
                if self.absorbed > self.exact_max and len(self.cols) > self._kept + max(1_000, self._kept // 4):
                    self._let_go()
        return self

    def _let_go(self) -> None:
        """Keep only the requests that ended in the last recent_keep_s (past the size, the level's figures come
        from the aggregates; the columns serve the live window)."""
        end = self.cols.end
        newest = int(end.max()) if len(end) else 0
        cutoff = newest - int(self.recent_keep_s * 1e9)
        keep = end >= cutoff
        self.cols = self.cols.compress(keep)
        # The columns hold every request that ended after this (a state taken from a run that kept less may
        # already say a later time: the later of the two).
        self.kept_since_ns = cutoff if self.kept_since_ns is None else max(self.kept_since_ns, cutoff)
        self._kept = len(self.cols)
        self.exact = False
        self.itl_counts = None  # the level's ITL comes from its sketch now

    def ok_output_tokens(self) -> float:
        """Output tokens of the ok requests that ended within the level (energy per token)."""
        self.absorb()
        if self.exact:
            c = self.cols
            return float(c.n_out[c.ok() & ~c.outlived].sum())
        return self.agg.sums["ok_out_in_level"]

    # --- as plain data, for a viewer that attaches -------------------------------------------------------

    def to_state(self) -> dict:
        self.absorb()
        with self._lock:
            cols = {name: [str(col.values.dtype), col.values.tobytes()] for name, col in self.cols._cols.items()}
            slo = {k: [[t.metric, t.percentile, t.limit_s] for t in v] for k, v in self.slo_targets.items()}
            return {"count": self.count, "absorbed": self.absorbed, "exact": self.exact, "cols": cols,
                    "kept_since": self.kept_since_ns, "agg": self.agg.to_state(), "slo": slo}

    def load_state(self, d: dict) -> None:
        """Take a run's level as it stands (the records still pending in the run are sent after this)."""
        from befori_tui.core.slo import SloTarget

        with self._lock:
            self.count += d["absorbed"]
            self.absorbed = d["absorbed"]
            self.exact = d["exact"]
            self.kept_since_ns = d["kept_since"]
            cols = RecordColumns()
            for name, (dtype, data) in d["cols"].items():
                cols._cols[name].extend(np.frombuffer(data, dtype=np.dtype(dtype)).copy())
            self.cols = cols
            self.itl_counts = GapCounts.of(cols.itl_of(cols.steady_with_token())) if self.exact else None
            self.agg = LevelAggregates.from_state(d["agg"])
            self.slo_targets = {k: [SloTarget(*t) for t in v] for k, v in d["slo"].items()}


def take_all(pending: deque) -> list:
    """Everything in a deque another thread appends to (popleft and append are atomic; a lock-free hand-over)."""
    out = []
    pop = pending.popleft
    while True:
        try:
            out.append(pop())
        except IndexError:
            return out


def slo_key(targets) -> str:
    return ",".join(sorted(f"{t.metric}_p{t.percentile}={t.limit_s!r}" for t in targets))
