"""A panel that sends the terminal only the cells that changed.

Textual writes a widget's whole region whenever its content is updated (a `Static.update` repaints every cell
of it), and each cell of a styled panel costs several bytes of colour codes. The panels below the timeline
change a few numbers a second, yet repainting them whole was most of what the monitor wrote (≈ 6,800 cells a
second at 160×48, bench/README.md). This widget renders its content to lines itself (the Line API), compares
them with what it drew last, and marks dirty only the span of each line that differs — so a GPU's power
changing from 305 to 306 W sends three cells, not the panel.
"""

from __future__ import annotations

from rich.cells import cell_len
from rich.console import RenderableType
from rich.style import Style
from rich.text import Text
from textual.geometry import Region
from textual.strip import Strip
from textual.widget import Widget


def _cells(strip: Strip) -> list[tuple[str, Style | None]] | None:
    """One (character, style) per cell; None when a character is not one cell wide (then the line is
    compared whole)."""
    out: list[tuple[str, Style | None]] = []
    for seg in strip:
        if cell_len(seg.text) != len(seg.text):
            return None
        out.extend((ch, seg.style) for ch in seg.text)
    return out


def changed_span(old: Strip | None, new: Strip) -> tuple[int, int] | None:
    """The first and one-past-the-last cell where two lines differ; None when they are the same."""
    if old is None:
        return 0, new.cell_length
    if old == new:
        return None
    a, b = _cells(old), _cells(new)
    if a is None or b is None or len(a) != len(b):
        return 0, max(new.cell_length, old.cell_length)
    first = next((i for i in range(len(a)) if a[i] != b[i]), None)
    if first is None:
        return None
    last = next(i for i in range(len(a) - 1, -1, -1) if a[i] != b[i])
    return first, last + 1


def render_strips(widget: Widget, renderable: RenderableType, width: int, height: int) -> list[Strip]:
    """`renderable` as `height` lines of `width` cells in the widget's base style, as the terminal shows it."""
    base = widget.rich_style
    console = widget.app.console
    options = console.options.update(width=width, height=height, highlight=False)
    if isinstance(renderable, str):
        renderable = Text(renderable)
    lines = console.render_lines(renderable, options, style=base, pad=True)
    strips = [Strip(line, width).crop_extend(0, width, base) for line in lines[:height]]
    return strips + [Strip.blank(width, base)] * (height - len(strips))


def changed_regions(old: list[Strip], new: list[Strip]) -> list[Region]:
    """One region per line that differs, covering only the cells that differ (content coordinates)."""
    regions = []
    for y, new_line in enumerate(new):
        span = changed_span(old[y] if y < len(old) else None, new_line)
        if span is not None:
            regions.append(Region(span[0], y, span[1] - span[0], 1))
    return regions


def refresh_changed(widget: Widget, old: list[Strip], new: list[Strip], whole: bool = False) -> None:
    """Mark dirty only the cells where `new` differs from `old` (what the terminal shows); the whole widget when
    `whole`, or when the lines' shape changed."""
    if whole or not old or len(old) != len(new) or old[0].cell_length != new[0].cell_length:
        widget.refresh()
        return
    regions = changed_regions(old, new)
    if regions:
        widget.refresh(*regions)


class CellPanel(Widget):
    """Like `Static` for a Rich renderable (`update(renderable)`), but a repaint covers only changed cells.

    For panels of a fixed size (a grid cell): the content is cut to the panel's height."""

    def __init__(self, renderable: RenderableType = "", **kwargs) -> None:
        super().__init__(**kwargs)
        self._renderable: RenderableType = renderable
        self._lines: list[Strip] = []
        self._drawn_for: tuple | None = None  # (width, height, base style) the lines were made for

    @property
    def content(self) -> RenderableType:
        """What the panel shows (as `Static.content`)."""
        return self._renderable

    def update(self, renderable: RenderableType = "", layout: bool = False) -> None:
        """Show `renderable`; the cells that differ from what is on screen are sent. (`layout` is accepted for
        Static's signature; the panel's size never depends on its content.)"""
        self._renderable = renderable
        self._render_lines(partial=True)

    def _render_lines(self, partial: bool, announce: bool = True) -> None:
        width, height = self.content_region.width, self.content_region.height
        if width <= 0 or height <= 0 or not self.is_mounted:
            self._lines, self._drawn_for = [], None
            return
        key = (width, height, self.rich_style)
        new = render_strips(self, self._renderable, width, height)
        old, whole = self._lines, not partial or key != self._drawn_for
        self._lines, self._drawn_for = new, key
        if announce:
            refresh_changed(self, old, new, whole)

    def on_resize(self) -> None:
        self._render_lines(partial=False)

    def render_line(self, y: int) -> Strip:
        width, height = self.content_region.width, self.content_region.height
        if self._drawn_for != (width, height, self.rich_style):
            self._render_lines(partial=False, announce=False)  # a resize or a new theme: everything is drawn again
        if 0 <= y < len(self._lines):
            return self._lines[y]
        return Strip.blank(width, self.rich_style)
