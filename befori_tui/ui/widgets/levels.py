"""Ori's table, built live (one row per level), and $/M against concurrency (textual-plotext)."""

from __future__ import annotations

import math

from textual.color import Color
from textual.widgets import DataTable
from textual_plotext import PlotextPlot

from befori_tui.ui import format as fmt

COLUMNS = (
    ("lvl", "level"), ("c", "c"), ("ok/fail", "ok"), ("TTFT", "ttft"), ("E2E", "e2e"),
    ("T_in/s", "t_in"), ("T_out/s", "t_out"), ("$/M in", "usd_in"), ("$/M out", "usd_out"), ("", "settled"),
    ("occ in", "occ_in"), ("occ out", "occ_out"),
)


def level_row(s: dict) -> list[str]:
    occ = s.get("occupancy", {})
    pin, pout = fmt.interval_pct(s, "input"), fmt.interval_pct(s, "output")
    return [
        str(s["level"]), str(s["concurrency"]), f"{s.get('requests_ok', 0)}/{s.get('requests_failed', 0)}",
        fmt.dur(s.get("ttft_s_mean")), fmt.dur(s.get("e2e_s_mean")),
        fmt.rate(s.get("input_tok_per_s")), fmt.rate(s.get("output_tok_per_s")),
        fmt.usd(s.get("usd_per_million_input")) + ("" if pin is None else f" ±{pin:.0f}%"),
        fmt.usd(s.get("usd_per_million_output")) + ("" if pout is None else f" ±{pout:.0f}%"),
        fmt.settled_mark(s),
        fmt.usd(occ.get("usd_per_million_input")), fmt.usd(occ.get("usd_per_million_output")),
    ]


class LevelsTable(DataTable):
    """One row per concurrency level; rows update in place as their figures firm up."""

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = True
        for label, key in COLUMNS:
            self.add_column(label, key=key)

    def show(self, levels: list[dict]) -> None:
        keys = [k for _, k in COLUMNS]
        for s in levels:
            row_key = str(s["level"])
            values = level_row(s)
            if row_key in self.rows:
                for key, value in zip(keys, values):
                    if self.get_cell(row_key, key) != value:
                        self.update_cell(row_key, key, value, update_width=True)  # "94.8ms" after "33.9ms" must not be cut
            else:
                self.add_row(*values, key=row_key)
                self.move_cursor(row=self.row_count - 1)


class CostChart(PlotextPlot):
    """$/M (befori method) against concurrency, input and output, with each level's bootstrap interval."""

    def show(self, levels: list[dict]) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title("$/M tokens vs concurrency (befori)")
        # One point per concurrency: the latest level at it (a rerun replaces an earlier one).
        by_c: dict[int, dict] = {}
        for s in levels:
            if s.get("usd_per_million_output") is not None:
                by_c[s["concurrency"]] = s
        if not by_c:
            plt.xlabel("concurrency")
            self.refresh()
            return
        cs = sorted(by_c)
        xs = [math.log2(c) for c in cs]
        tv = self.app.theme_variables
        colors = {name: _rgb(tv.get(var), default) for name, var, default in (
            ("output", "timeline-decode", (123, 63, 228)), ("input", "timeline-prefill", (205, 180, 255)))}
        for name in ("output", "input"):
            ys = [by_c[c][f"usd_per_million_{name}"] for c in cs]
            if not all(math.isfinite(y) for y in ys):
                continue
            lo = [by_c[c].get(f"usd_per_million_{name}_lo", y) for c, y in zip(cs, ys)]
            hi = [by_c[c].get(f"usd_per_million_{name}_hi", y) for c, y in zip(cs, ys)]
            plt.plot(xs, ys, marker="braille", color=colors[name], label=f"{name} $/M")
            plt.error(xs, ys, yerr=[max(h - y, y - l) for y, l, h in zip(ys, lo, hi)], color=colors[name])
        plt.xticks(xs, [str(c) for c in cs])
        plt.xlabel("concurrency")
        plt.yscale("log")
        self.refresh()


def _rgb(value: str | None, default: tuple[int, int, int]) -> tuple[int, int, int]:
    try:
        color = Color.parse(value) if value else None
    except Exception:  # an ANSI or odd value: plotext needs RGB
        color = None
    if color is None or color.ansi is not None:
        return default
    return color.rgb
