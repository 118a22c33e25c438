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
from textual.geometry import Region, Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from befori_tui.core import format as fmt
from befori_tui.core.health import CLIENT_BOUND_LAG_MS
from befori_tui.ui.model import LiveModel
from befori_tui.ui.widgets.cellpanel import CellPanel, changed_span
from befori_tui.ui.timeline_cells import CANCELLED, DECODE, ERROR, GAP, PREFILL, intervals, row_runs

WINDOWS_S = (30.0, 60.0, 120.0)
# The legend under the slots, longest first: the one that fits is shown.
LEGENDS = ("light: prefill → input · dark: decode → output · ▏ first token · ×: error · -: cancelled",
           "light: prefill → input · dark: decode → output · ×: error · -: cancelled",
           "light → input · dark → output · × error · - cancelled",
           "light in · dark out · × err · - cut")
PAGE_HISTORY = 0.75  # after a page turn, this share of the window is the past; the rest fills as time passes



def workers_line(workers: tuple, width: int) -> Text:
    """'workers box-a:4242 lag 0.4ms cpu 23% · ⚠ box-b:77 lag 9.1ms cpu 98%': each load process's health
    (several local ones, or Ray actors). Shorter ('box-a:4242 0.4ms 23%') when they do not all fit, then as
    many whole as fit and how many did not; a late or lost one is marked, so the bottleneck machine shows."""

    def piece(w, compact: bool) -> Text:
        late = not w.alive or (w.loop_lag_ms_p99 or 0) > CLIENT_BOUND_LAG_MS
        text = fmt.worker_health(w.worker, w.loop_lag_ms_p99, w.cpu_pct, w.alive)
        if compact and w.alive:
            text = text.replace(" lag ", " ").replace(" cpu ", " ")
        return Text.assemble(("⚠ " if late else "", "bold"), (text, "bold" if late else ""))

    for compact in (False, True):
        line = Text("workers")
        pieces = [piece(w, compact) for w in workers]
        if line.cell_len + sum(p.cell_len + 3 for p in pieces) - 2 <= width or compact:
            break
    for k, p in enumerate(pieces):
        after = len(pieces) - k - 1
        if line.cell_len + (3 if k else 1) + p.cell_len + (len(f" +{after}") if after else 0) > width:
            line.append(f" +{len(pieces) - k}")  # those that do not fit, counted, never cut
            break
        line.append(" · " if k else " ")
        line.append_text(p)
    return line

class TimelineView(ScrollView, can_focus=True):
    COMPONENT_CLASSES = {"timeline--prefill", "timeline--decode", "timeline--error", "timeline--label"}

    def __init__(self, model: LiveModel, window_s: float = 60.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.window_s = window_s
        self.now_ns = 0  # the edge of time on the page: the end of the last whole cell
        self.page_t0_ns: int | None = None  # the page's left edge, on the run's clock
        self._drawn_key: tuple | None = None  # (page, window, size, scroll, theme) of the last full redraw
        self._edge_col = 0  # the cell the edge was last drawn at
        self._sent: dict[int, Strip] = {}  # visible line → the strip last drawn there (what the terminal shows)
        self._styles: dict[tuple[int, int], Style] = {}
        self._label_style = Style()
        self._theme_key: object = None

    @property
    def label_width(self) -> int:
        return max(3, len(str(max(0, self.model.slot_count - 1)))) + 1

    def _cell_ns(self) -> float:
        plot_w = max(1, self.scrollable_content_region.width - self.label_width)
        return self.window_s * 1e9 / plot_w

    @property
    def cell_s(self) -> float:
        """The time one column of the timeline covers (before layout: the whole window)."""
        return self._cell_ns() / 1e9

    def tick(self) -> None:
        """Called by the app at the frame rate: draw what has changed since the last frame — usually nothing.

        The window is a page: its left edge stays put while the edge of time (`now_ns`, the last whole cell)
        moves right across it; when it reaches the right, the page turns and keeps the last PAGE_HISTORY of
        the window in view. So a cell's worth of time passing redraws only the cells that changed — at that
        edge, and wherever a late event landed — not every row: what is drawn is what crosses an SSH link."""
        cell_ns = self._cell_ns()
        window_ns = self.window_s * 1e9
        now = self.model.now()  # a run that ended stands still
        page, start = self.page_t0_ns, self.model.t_start_ns
        if page is None or now >= page + window_ns or now < page or (start is not None and page < start):
            base = now - PAGE_HISTORY * window_ns
            if start is not None:
                base = max(base, start)  # a young run starts at the left edge
            page = self.page_t0_ns = int(base)
        col = int((now - page) // cell_ns)
        self.now_ns = int(page + col * cell_ns)
        size = Size(self.scrollable_content_region.width, max(1, self.model.slot_count))
        if size != self.virtual_size:
            self.virtual_size = size
        key = (page, self.window_s, size, int(self.scroll_offset.y), self.app.theme)
        if key != self._drawn_key:
            self._drawn_key, self._edge_col = key, col
            self._sent.clear()
            self.refresh()
            return
        if col != self._edge_col:
            # Each visible row is made again and compared with what the terminal shows: only the cells that
            # differ are sent — usually the one its bar grew into, and any a late event changed.
            self._edge_col = col
            regions = []
            for y in range(self.size.height):
                new = self._make_line(y)
                span = changed_span(self._sent.get(y), new)
                if span is not None:
                    self._sent[y] = new
                    regions.append(Region(span[0], y, span[1] - span[0], 1))
            if regions:
                self.refresh(*regions)

    def _runs(self, row: int) -> list:
        width = self.scrollable_content_region.width
        plot_w = max(1, width - self.label_width)
        page = self.page_t0_ns if self.page_t0_ns is not None else self.model.now()
        now = self.now_ns or page
        spans = intervals(self.model.slots.get(row, ()), page, now, now)
        return row_runs(spans, page, self.window_s * 1e9 / plot_w, plot_w)

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
            CANCELLED: base.bgcolor,
        }
        err_fg = self.get_component_rich_style("timeline--error").color
        self._styles = {(fg, bg): Style(color=colors[fg], bgcolor=colors[bg]) for fg in colors for bg in colors}
        self._styles[(ERROR, ERROR)] = Style(color=err_fg, bgcolor=colors[ERROR], bold=True)
        muted = self.get_component_rich_style("timeline--label").color
        self._styles[(CANCELLED, CANCELLED)] = Style(color=muted, bgcolor=colors[CANCELLED])
        self._label_style = base + self.get_component_rich_style("timeline--label")

    def render_line(self, y: int) -> Strip:
        # What tick() decided to send, exactly: a line made afresh here could hold changes outside the cells
        # being repainted, which the terminal would then never get.
        strip = self._sent.get(y)
        if strip is None or strip.cell_length != self.scrollable_content_region.width:
            strip = self._sent[y] = self._make_line(y)
        return strip

    def _make_line(self, y: int) -> Strip:
        self._prepare_styles()
        width = self.scrollable_content_region.width
        row = y + int(self.scroll_offset.y)
        if row >= self.model.slot_count or width <= 0:
            return Strip.blank(width, self.rich_style)
        lw = self.label_width
        runs = self._runs(row)
        segments = [Segment(f"{row:>{lw - 1}}▕", self._label_style)]
        for text, fg, bg in runs:
            if fg == bg == ERROR:
                text = "×" * len(text)  # marked, not only coloured: readable on any terminal
            elif fg == bg == CANCELLED:
                text = "-" * len(text)  # cut short by the run (a stop, a decrease): neither billed nor failed
            segments.append(Segment(text, self._styles[(fg, bg)]))
        return Strip(segments).crop_extend(0, width, self.rich_style)

    def axis_text(self) -> str:
        """The run's time (m:ss since it began) every quarter of the page, and ▲ under the edge of time."""
        width = self.scrollable_content_region.width or self.size.width
        lw = self.label_width
        plot_w = width - lw
        if plot_w < 16 or self.page_t0_ns is None:
            return ""
        chars = [" "] * plot_w
        start = self.model.t_start_ns if self.model.t_start_ns is not None else self.page_t0_ns
        edge = min(plot_w - 1, max(0, self._edge_col))
        for q in (0, 1, 2, 3):
            s = max(0, int((self.page_t0_ns + self.window_s * 1e9 * q / 4 - start) / 1e9))
            label = f"{s // 60}:{s % 60:02d}"
            x = int(plot_w * q / 4)
            if x - 1 <= edge <= x + len(label):
                continue  # the edge's mark wins over a label it would cut
            for i, ch in enumerate(label):
                if x + i < plot_w:
                    chars[x + i] = ch
        chars[edge] = "▲"
        return " " * lw + "".join(chars)


class TimelinePanel(Vertical):
    """Summary line, the rows, the time axis."""

    def __init__(self, model: LiveModel, window_s: float = 60.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.view = TimelineView(model, window_s, id="timeline-view")
        self._shown: dict[str, object] = {}

    def compose(self) -> ComposeResult:
        # One line each, sent by the changed cells only (the ▲ moving, a count changing).
        yield CellPanel(id="timeline-summary")
        yield CellPanel(id="timeline-workers")  # each load process's lag and CPU, when there are several
        yield self.view
        yield CellPanel(id="timeline-axis")

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
        width = self.size.width
        workers = tuple(self.model.workers)
        if (states, width, workers) != self._shown.get("states"):  # an unchanged line is not sent again
            self._shown["states"] = (states, width, workers)
            waiting, decoding, idle = states
            first = " waiting for a first token · " if width >= 60 else " before 1st token · "
            line = Text.assemble(
                (f"{waiting}", "bold"), first, (f"{decoding}", "bold"), " decoding · ", (f"{idle}", "bold"), " idle",
            )
            self.query_one("#timeline-summary", CellPanel).update(line)
            panel = self.query_one("#timeline-workers", CellPanel)
            if workers:  # a line of its own, only with several load processes
                panel.display = True
                panel.update(workers_line(workers, width - 2))
        axis = self.view.axis_text()
        if axis != self._shown.get("axis"):
            self._shown["axis"] = axis
            self.query_one("#timeline-axis", CellPanel).update(axis, layout=False)
        total = self.model.slot_count
        rows = self.view.size.height
        title = f"Slots · {self.view.window_s:g} s"
        if 0 < rows < total:  # rows out of view: say how many, and how to reach them
            top = int(self.view.scroll_offset.y)
            title += f" · {top}–{min(total, top + rows) - 1} of {total} shown, ↓ for more"
        if title != self.border_title:
            self.border_title = title
        subtitle = next(t for t in LEGENDS if len(t) + 6 <= width or t is LEGENDS[-1])
        if subtitle != self.border_subtitle:
            self.border_subtitle = subtitle
