"""Ori's table, built live (one row per level), and $/M against concurrency (textual-plotext)."""

from __future__ import annotations

import math

from textual.color import Color
from textual.coordinate import Coordinate
from textual.widgets import DataTable
from textual_plotext import PlotextPlot

from befori_tui.core import format as fmt
from befori_tui.core.optimum import load_key
from befori_tui.ui.widgets.cellpanel import refresh_changed, render_strips

# The $/M columns first: they are what the table is for. Columns that do not fit are left out, last first
# (DROP_ORDER), rather than hidden behind a horizontal scroll bar.
COLUMNS = (
    ("c", "c"), ("$/M in", "usd_in"), ("$/M out", "usd_out"), ("", "settled"), ("TTFT", "ttft"), ("E2E", "e2e"),
    ("ok/fail", "ok"), ("T_in/s", "t_in"), ("T_out/s", "t_out"), ("occ in", "occ_in"), ("occ out", "occ_out"),
    ("lvl", "level"),
)
DROP_ORDER = ("level", "occ_out", "occ_in", "t_out", "t_in", "ok", "e2e")


# With latency targets (--slo): whether the level meets them and the share of requests that did, and the
# $/M of the requests that met them — beside the plain $/M, as what a user who set targets reads first.
SLO_COLUMNS = (("SLO", "slo"), ("SLO $/M in", "usd_in_slo"), ("SLO $/M out", "usd_out_slo"))


def slo_cells(s: dict) -> dict[str, str]:
    share, met = s.get("slo_share_met"), s.get("slo_met")
    mark = "" if met is None else "✓" if met else "✗"
    return {"slo": ("—" if share is None else f"{share * 100:.0f}%") + mark,
            "usd_in_slo": fmt.usd(s.get("usd_per_million_input_slo")),
            "usd_out_slo": fmt.usd(s.get("usd_per_million_output_slo"))}


def level_row(s: dict) -> dict[str, str]:
    occ = s.get("occupancy", {})
    pin, pout = fmt.interval_pct(s, "input"), fmt.interval_pct(s, "output")
    return {
        "c": f"{s['rate_per_s']:g}/s" if s.get("rate_per_s") else str(s["concurrency"]),
        "usd_in": fmt.usd(s.get("usd_per_million_input")) + ("" if pin is None else f" ±{pin:.0f}%"),
        "usd_out": fmt.usd(s.get("usd_per_million_output")) + ("" if pout is None else f" ±{pout:.0f}%"),
        "settled": fmt.settled_mark(s),
        "ttft": fmt.dur(s.get("ttft_s_mean")), "e2e": fmt.dur(s.get("e2e_s_mean")),
        "ok": f"{s.get('requests_steady', 0)}/{s.get('requests_failed', 0)}",
        "t_in": fmt.rate(s.get("input_tok_per_s")), "t_out": fmt.rate(s.get("output_tok_per_s")),
        "occ_in": fmt.usd(occ.get("usd_per_million_input")), "occ_out": fmt.usd(occ.get("usd_per_million_output")),
        "level": str(s["level"]),
        **slo_cells(s),
    }


class LevelsTable(DataTable):
    """One row per concurrency level; rows update in place as their figures firm up.

    A changed cell repaints that cell: DataTable.update_cell repaints the whole table, every second, which
    was a sixth of what the monitor sent to the terminal."""

    _one_cell = False  # set while update_cell runs: its whole-table refresh is replaced by the cell's
    _levels: list[dict] = []
    _keys: tuple[str, ...] = ()

    def refresh(self, *regions, **kwargs):
        if self._one_cell and not regions and not kwargs:
            return self
        return super().refresh(*regions, **kwargs)

    def __init__(self, *args, slo: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # The SLO's columns right after the plain $/M and its mark: with targets set, they are the answer.
        self.columns_shown = COLUMNS[:4] + (SLO_COLUMNS if slo else ()) + COLUMNS[4:]

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = True
        self.show_horizontal_scrollbar = False
        self._set_columns()

    def on_resize(self) -> None:
        self._set_columns()

    def _fitting_keys(self) -> tuple[str, ...]:
        rows = [level_row(s) for s in self._levels]
        width = self.size.width or 200

        def natural(key: str, label: str) -> int:
            return max([len(label)] + [len(r[key]) for r in rows]) + 2  # DataTable pads each cell by one each side

        keys = [k for _, k in self.columns_shown]
        labels = dict((k, lbl) for lbl, k in self.columns_shown)
        for drop in DROP_ORDER:
            if sum(natural(k, labels[k]) for k in keys) <= width:
                break
            keys.remove(drop)
        return tuple(keys)

    def _set_columns(self) -> None:
        keys = self._fitting_keys()
        if keys == self._keys:
            return
        self._keys = keys
        self.clear(columns=True)
        labels = dict((k, lbl) for lbl, k in self.columns_shown)
        for key in keys:
            self.add_column(labels[key], key=key)
        for s in self._levels:
            row = level_row(s)
            self.add_row(*[row[k] for k in keys], key=str(s["level"]))
        if self.row_count:
            self.move_cursor(row=self.row_count - 1)

    def show(self, levels: list[dict]) -> None:
        self._levels = levels
        self._set_columns()
        keys = self._keys
        for s in levels:
            row_key = str(s["level"])
            row = level_row(s)
            if row_key in self.rows:
                for key in keys:
                    value = row[key]
                    if self.get_cell(row_key, key) != value:
                        # A wider value widens its column ("94.8ms" after "9.8ms" must not be cut); only then
                        # is the table laid out again, which repaints far more than the cell.
                        wider = len(str(value)) > self.columns[key].content_width
                        if wider:
                            self.update_cell(row_key, key, value, update_width=True)
                            continue
                        self._one_cell = True
                        try:
                            self.update_cell(row_key, key, value)
                        finally:
                            self._one_cell = False
                        self.refresh_coordinate(Coordinate(self.get_row_index(row_key), self.get_column_index(key)))
            else:
                self.add_row(*[row[k] for k in keys], key=row_key)
                self.move_cursor(row=self.row_count - 1)


_CHART_KEYS = tuple(f"usd_per_million_{n}{e}" for n in ("input", "output") for e in ("", "_lo", "_hi"))


class CostChart(PlotextPlot):
    """$/M (befori method) against concurrency, input and output, with each level's bootstrap interval.

    Both axes are logarithmic, computed here: plotext's own log scale transforms the stored data in place at
    every build, so a redraw without new data (a theme change, a resize) took the log twice and crashed.
    """

    _levels: list[dict] = []
    _optimum: dict | None = None
    _drawn: tuple | None = None
    _strips: list = []  # the chart as last sent, to send only the cells a new one changes

    _built: tuple | None = None  # (size, the plot as text) last built: Textual's repaint draws it, not a rebuild

    def render(self):
        if self._built is not None and self._built[0] == self.size:
            return self._built[1]
        return super().render()

    def _refresh_changed(self) -> None:
        """Build the chart once, and repaint only the cells it changes (a point moving, a tick label)."""
        width, height = self.size.width, self.size.height
        self._built = None
        plot = super().render()
        self._built = (self.size, plot)
        new = render_strips(self, plot, width, height) if width > 0 and height > 0 else []
        old, self._strips = self._strips, new
        refresh_changed(self, old, new, whole=not new)

    def on_mount(self) -> None:
        super().on_mount()
        # Colours come from the theme: draw again when it changes.
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self.show(self._levels, self._optimum))

    def show(self, levels: list[dict], optimum: dict | None = None) -> None:
        """`optimum`: core.optimum.find_optimum over the same levels — its concurrency is marked ◆ on the
        curve it was chosen by, and its range (within 10% of the least $/M) shaded behind the curves."""
        self._levels, self._optimum = levels, optimum
        found = optimum if optimum and optimum.get("found") else None
        x = load_key(levels)  # concurrency, or the open loop's arrival rate
        mark = (found[x], found[f"range_{x}_min"], found[f"range_{x}_max"], found["by"]) if found and x in found \
            else None
        if len({s.get(x) for s in levels if s.get("usd_per_million_output") is not None}) < 2:
            mark = None  # the cheapest of one load says nothing (and its band would fill the chart)
        # Drawn again only when what it shows changes (at the chart's resolution: three figures), or its
        # theme or size: a chart is many bytes to send to a terminal, twice a second.
        key = (self.app.theme, self.size, tuple(
            (s.get(x), *(f"{s.get(k):.3g}" if s.get(k) is not None else "" for k in _CHART_KEYS))
            for s in levels), mark)
        if key == self._drawn:
            return
        self._drawn = key
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        ansi = bool(getattr(self.app.current_theme, "ansi", False))
        # A 16-colour theme's colours have no RGB: draw in the terminal's own colours ("clear").
        wanted = "clear" if ansi else "auto"
        if self.theme != wanted:
            self.theme = wanted
        xname = "rate (req/s)" if x == "rate_per_s" else "concurrency"
        cheapest = "" if mark is None else f" · cheapest {mark[0]:g} req/s" if x == "rate_per_s" else f" · cheapest c={mark[0]}"
        plt.title(f"$/M tokens vs {'rate' if x == 'rate_per_s' else 'concurrency'} (befori)" + cheapest)
        # One point per concurrency: the latest level at it (a rerun replaces an earlier one).
        by_c: dict[int, dict] = {}
        for s in levels:
            if s.get("usd_per_million_output") is not None and s.get(x):
                by_c[s[x]] = s
        if not by_c:
            plt.xlabel(xname)
            self._refresh_changed()
            return
        cs = sorted(by_c)
        xs = [math.log2(c) for c in cs]
        tv = self.app.theme_variables
        colors = {name: (named if ansi else _rgb(tv.get(var), default)) for name, var, default, named in (
            ("output", "timeline-decode", (123, 63, 228), "magenta+"),
            ("input", "timeline-prefill", (205, 180, 255), "white"))}
        shown: list[float] = []
        if mark is not None:
            self._shade_range(plt, mark, by_c, ansi, tv)
        for name, marker in (("output", "braille"), ("input", "dot")):
            ys = [by_c[c][f"usd_per_million_{name}"] for c in cs]
            if not all(math.isfinite(y) and y > 0 for y in ys):
                continue
            lo = [by_c[c].get(f"usd_per_million_{name}_lo", y) for c, y in zip(cs, ys)]
            hi = [by_c[c].get(f"usd_per_million_{name}_hi", y) for c, y in zip(cs, ys)]
            log_y = [math.log10(y) for y in ys]
            # The interval in log space, made symmetric (plotext draws one length each way).
            err = [max(math.log10(h) - ly if h > 0 else 0.0, ly - math.log10(lw) if lw > 0 else 0.0)
                   for ly, lw, h in zip(log_y, lo, hi)]
            plt.plot(xs, log_y, marker=marker, color=colors[name], label=f"{name} $/M")
            plt.error(xs, log_y, yerr=err, color=colors[name])
            shown += [ly - e for ly, e in zip(log_y, err)] + [ly + e for ly, e in zip(log_y, err)]
            if mark is not None and mark[0] in by_c and (mark[3] == name or (mark[3] == "blended" and name == "output")):
                plt.scatter([math.log2(mark[0])], [math.log10(by_c[mark[0]][f"usd_per_million_{name}"])],
                            marker="◆", color=colors[name])
        plt.xticks(xs, [f"{c:g}" for c in cs])
        if shown:
            ticks = log_ticks(min(shown), max(shown))
            plt.yticks([math.log10(t) for t in ticks], [fmt.usd(t) for t in ticks])
        plt.xlabel(xname)
        self._refresh_changed()


    def _shade_range(self, plt, mark: tuple, by_c: dict[int, dict], ansi: bool, tv: dict) -> None:
        """The range within 10% of the least $/M: a light band over the chart's whole height."""
        values = [math.log10(s[k]) for s in by_c.values() for k in _CHART_KEYS
                  if s.get(k) and s[k] > 0 and math.isfinite(s[k])]
        if not values:
            return
        lo_c, hi_c = mark[1], mark[2]
        x0, x1 = math.log2(lo_c), math.log2(hi_c)
        if x1 - x0 < 0.05:  # one concurrency: a thin band still shows where
            x0, x1 = x0 - 0.05, x1 + 0.05
        color = "gray" if ansi else _rgb(tv.get("bar-empty"), (70, 70, 90))
        # Vertical strokes close together, bottom to top of the data (plotext's fill stops at y = 0, and these
        # axes are logarithmic): one per chart column the range spans, at most.
        n = max(2, min(64, int((x1 - x0) * max(8, self.size.width) / max(1.0, math.log2(max(by_c)) + 0.5)) + 2))
        for k in range(n):
            x = x0 + (x1 - x0) * k / (n - 1)
            plt.plot([x, x], [min(values), max(values)], marker="░", color=color)


def log_ticks(lo_log10: float, hi_log10: float) -> list[float]:
    """Tick values spanning [10^lo, 10^hi]: the powers of ten when the data spans a decade or more, else
    1, 2, 5 × 10^k, else the two ends. Few enough that no two share a row of a small chart."""
    def within(values):
        return [v for v in values if lo_log10 - 1e-9 <= math.log10(v) <= hi_log10 + 1e-9]

    ks = range(math.floor(lo_log10) - 1, math.ceil(hi_log10) + 2)
    ticks = within([10.0 ** k for k in ks])
    if len(ticks) < 2:
        ticks = within([m * 10.0 ** k for k in ks for m in (1, 2, 5)])
    if len(ticks) < 2:
        ticks = [10 ** lo_log10, 10 ** hi_log10] if hi_log10 > lo_log10 else [10 ** lo_log10]
    return ticks


def _rgb(value: str | None, default: tuple[int, int, int]) -> tuple[int, int, int]:
    try:
        color = Color.parse(value) if value else None
    except Exception:  # an ANSI or odd value: plotext needs RGB
        color = None
    if color is None or color.ansi is not None:
        return default
    return color.rgb
