"""The slot timeline: one row per slot over a moving window, drawn with the Line API.

Only the visible rows are rendered (ScrollView + render_line), so 512 slots cost what 20 do.

What crosses an SSH link is what gets redrawn. The window's right edge moves a whole cell at a time (a cell
is window/width: 0.7 s at 160 columns and 60 s), so between those steps a row is redrawn only when a request
in it changed what it shows — not every frame. The edge is the last whole cell: nothing is drawn ahead of
the time it stands for.
"""

from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import Static

from befori_tui.ui.model import LiveModel
from befori_tui.ui.timeline_cells import DECODE, ERROR, GAP, PREFILL, intervals, row_runs

WINDOWS_S = (30.0, 60.0, 120.0)


class TimelineView(ScrollView, can_focus=True):
    COMPONENT_CLASSES = {"timeline--prefill", "timeline--decode", "timeline--error", "timeline--label"}

    def __init__(self, model: LiveModel, window_s: float = 60.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.window_s = window_s
        self.now_ns = 0
        self._drawn_key: tuple | None = None  # (cell, window, width, rows, scroll, theme) of the last full redraw
        self._rows: dict[int, list] = {}  # row -> the runs it was last drawn with
        self._styles: dict[tuple[int, int], Style] = {}
        self._label_style = Style()
        self._theme_key: object = None

    @property
    def label_width(self) -> int:
        return max(3, len(str(max(0, self.model.slot_count - 1)))) + 1

    def _cell_ns(self) -> float:
        plot_w = max(1, self.scrollable_content_region.width - self.label_width)
        return self.window_s * 1e9 / plot_w

    def tick(self) -> None:
        """Called by the app at the frame rate: redraw what has changed since the last frame."""
        cell_ns = self._cell_ns()
        now = self.model.now()  # a run that ended stands still
        cell = int(now // cell_ns)
        self.now_ns = int(cell * cell_ns)
        size = Size(self.scrollable_content_region.width, max(1, self.model.slot_count))
        if size != self.virtual_size:
            self.virtual_size = size
        dirty, self.model.dirty_slots = self.model.dirty_slots, set()
        key = (cell, self.window_s, size, int(self.scroll_offset.y), self.app.theme)
        if key != self._drawn_key:
            self._drawn_key = key
            self._rows.clear()
            self.refresh()
            return
        top = int(self.scroll_offset.y)
        for row in dirty:
            if top <= row < top + self.size.height and self._runs(row) != self._rows.get(row):
                self.refresh_lines(row - top, 1)  # a late event (a batch in transit) changed a drawn cell

    def _runs(self, row: int) -> list:
        width = self.scrollable_content_region.width
        plot_w = max(1, width - self.label_width)
        now = self.now_ns or self.model.clock()
        t0 = now - int(self.window_s * 1e9)
        spans = intervals(self.model.slots.get(row, ()), t0, now, now)
        return row_runs(spans, t0, self.window_s * 1e9 / plot_w, plot_w)

    def _prepare_styles(self) -> None:
        key = (self.app.theme, self.rich_style)
        if key == self._theme_key:
            return
        self._theme_key = key
        base = self.rich_style
        colors = {
            GAP: base.bgcolor,
            PREFILL: self.get_component_rich_style("timeline--prefill").bgcolor,
            DECODE: self.get_component_rich_style("timeline--decode").bgcolor,
            ERROR: self.get_component_rich_style("timeline--error").bgcolor,
        }
        err_fg = self.get_component_rich_style("timeline--error").color
        self._styles = {(fg, bg): Style(color=colors[fg], bgcolor=colors[bg]) for fg in colors for bg in colors}
        self._styles[(ERROR, ERROR)] = Style(color=err_fg, bgcolor=colors[ERROR], bold=True)
        self._label_style = base + self.get_component_rich_style("timeline--label")

    def render_line(self, y: int) -> Strip:
        self._prepare_styles()
        width = self.scrollable_content_region.width
        row = y + int(self.scroll_offset.y)
        if row >= self.model.slot_count or width <= 0:
            return Strip.blank(width, self.rich_style)
        lw = self.label_width
        runs = self._runs(row)
        self._rows[row] = runs
        segments = [Segment(f"{row:>{lw - 1}}▕", self._label_style)]
        for text, fg, bg in runs:
            if fg == bg == ERROR:
                text = "×" * len(text)  # marked, not only coloured: readable on any terminal
            segments.append(Segment(text, self._styles[(fg, bg)]))
        return Strip(segments).crop_extend(0, width, self.rich_style)

    def axis_text(self) -> str:
        """'-60s … now' under the plot, ticks every quarter of the window."""
        width = self.scrollable_content_region.width or self.size.width
        lw = self.label_width
        plot_w = width - lw
        if plot_w < 16:
            return ""
        chars = [" "] * plot_w
        for q in (0, 1, 2, 3):
            label = f"-{self.window_s * (4 - q) / 4:g}s"
            x = int(plot_w * q / 4)
            for i, ch in enumerate(label):
                if x + i < plot_w:
                    chars[x + i] = ch
        for i, ch in enumerate("now"):
            chars[plot_w - 3 + i] = ch
        return " " * lw + "".join(chars)


class TimelinePanel(Vertical):
    """Summary line, the rows, the time axis."""

    def __init__(self, model: LiveModel, window_s: float = 60.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.view = TimelineView(model, window_s, id="timeline-view")
        self._shown: dict[str, object] = {}

    def compose(self) -> ComposeResult:
        yield Static(id="timeline-summary")
        yield self.view
        yield Static(id="timeline-axis")

    @property
    def window_s(self) -> float:
        return self.view.window_s

    @window_s.setter
    def window_s(self, value: float) -> None:
        self.view.window_s = value

    def on_resize(self) -> None:
        self.call_after_refresh(self.tick)

    def tick(self) -> None:
        self.view.tick()
        states = self.model.slot_states()
        if states != self._shown.get("states"):  # an unchanged line is not sent to the terminal again
            self._shown["states"] = states
            waiting, decoding, idle = states
            self.query_one("#timeline-summary", Static).update(layout=False, content=Text.assemble(
                (f"{waiting}", "bold"), " waiting for a first token · ",
                (f"{decoding}", "bold"), " decoding · ",
                (f"{idle}", "bold"), " idle",
            ))
        axis = self.view.axis_text()
        if axis != self._shown.get("axis"):
            self._shown["axis"] = axis
            self.query_one("#timeline-axis", Static).update(axis, layout=False)
        title = f"Slots · {self.view.window_s:g} s"
        if title != self.border_title:
            self.border_title = title
            self.border_subtitle = "light: prefill → input · dark: decode → output · ×: error"
