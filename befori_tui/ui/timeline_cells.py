"""One timeline row as character cells, with 1/8-cell resolution (pure Python, no Textual).

A slot's requests become intervals of four kinds; each cell is one kind (a full cell) or a split between
two (a left-eighths block character, left kind in the foreground, right kind in the background).
"""

from __future__ import annotations

from collections.abc import Iterable

from befori_tui.ui.model import Bar

GAP, PREFILL, DECODE, ERROR, CANCELLED = 0, 1, 2, 3, 4
KIND_NAMES = ("gap", "prefill", "decode", "error", "cancelled")
LEFT_EIGHTHS = " ▏▎▍▌▋▊▉█"

# A run of cells: (text, left/foreground kind, right/background kind). Full cells have fg == bg.
Run = tuple[str, int, int]


def intervals(bars: Iterable[Bar], t0_ns: int, t1_ns: int, now_ns: int) -> list[tuple[int, int, int]]:
    """(start, end, kind) within t0..t1, oldest first; in-flight requests run to `now`."""
    out = []
    for b in bars:
        end = b.t_end_ns if b.t_end_ns is not None else now_ns
        if end <= t0_ns or b.t_send_ns >= t1_ns:
            continue
        if b.failed:
            out.append((b.t_send_ns, end, ERROR))
            continue
        if b.cancelled:
            out.append((b.t_send_ns, end, CANCELLED))
            continue
        first = b.t_first_ns if b.t_first_ns is not None else end
        first = min(max(first, b.t_send_ns), end)
        if first > b.t_send_ns:
            out.append((b.t_send_ns, first, PREFILL))
        if end > first:
            out.append((first, end, DECODE))
    out.sort()
    return out


def row_runs(spans: list[tuple[int, int, int]], t0_ns: int, cell_ns: float, width: int) -> list[Run]:
    """Cells for one row, grouped into runs of identical cells."""
    runs: list[Run] = []

    def emit(text: str, fg: int, bg: int) -> None:
        if runs and runs[-1][1] == fg and runs[-1][2] == bg and (fg == bg or len(text) == 0):
            runs[-1] = (runs[-1][0] + text, fg, bg)
        else:
            runs.append((text, fg, bg))

    j, n = 0, len(spans)
    c = 0
    while c < width:
        a = t0_ns + c * cell_ns
        b = a + cell_ns
        while j < n and spans[j][1] <= a:
            j += 1
        if j >= n or spans[j][0] >= b:
            # Nothing in this cell: skip to the cell where the next span starts.
            nxt = width if j >= n else min(width, int((spans[j][0] - t0_ns) // cell_ns))
            k = max(1, nxt - c)
            emit(" " * k, GAP, GAP)
            c += k
            continue
        s, e, kind = spans[j]
        if s <= a and e >= b:
            # Whole cells inside one span: emit them all at once.
            k = max(1, min(width - c, int((e - a) // cell_ns)))
            emit(" " * k, kind, kind)
            c += k
            continue
        # A split cell: measure each kind's share, in the order they appear.
        share = [0.0] * len(KIND_NAMES)
        order: list[int] = []
        pos = a
        for s, e, kind in spans[j:]:
            if s >= b:
                break
            s, e = max(s, a), min(e, b)
            if s > pos:
                share[GAP] += s - pos
                if GAP not in order:
                    order.append(GAP)
            if e > s:
                share[kind] += e - s
                if kind not in order:
                    order.append(kind)
            pos = max(pos, e)
        if pos < b:
            share[GAP] += b - pos
            if GAP not in order:
                order.append(GAP)
        emit(*split_cell(share, order, cell_ns))
        c += 1
    return runs


def split_cell(share: list[float], order: list[int], cell_ns: float) -> Run:
    """The two kinds with the most time in the cell, split at the nearest eighth — except that a prefill is
    never rounded away: the moment of the first token is the split the cost method rests on, so a cell that
    holds it shows prefill then decode (at least an eighth of prefill, ▏) however short the prefill was."""
    if share[PREFILL] > 0 and share[DECODE] > 0 and order.index(PREFILL) < order.index(DECODE):
        top = [PREFILL, DECODE]
    else:
        top = sorted(order, key=lambda k: -share[k])[:2]
    if len(top) == 1:
        return " ", top[0], top[0]
    left, right = sorted(top, key=order.index)
    eighths = round(8 * share[left] / (share[left] + share[right]))
    if PREFILL in (left, right):
        eighths = min(7, max(1, eighths))
    if eighths <= 0:
        return " ", right, right
    if eighths >= 8:
        return " ", left, left
    return LEFT_EIGHTHS[eighths], left, right
