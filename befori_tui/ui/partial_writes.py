"""Send the terminal only the cells a partial repaint covers.

Textual 8.2.8 writes a partial repaint (`ChopsUpdate.render_segments`) from the left edge of each widget it
touches to the right end of the dirty cells: a one-cell change at column 90 of a line rewrites the 89 cells
before it too, colour codes included. The timeline grows by one cell per row every 0.4 s at 160 columns, so
nearly every row of it was sent again each time (about 14 KB a step, most of what the monitor wrote). This
module replaces that one method with one that also crops the start: the same moves and cells, from the first
dirty column. What is on screen is the same; what crosses an SSH link is a fraction (bench/README.md).

`install()` is called once by the app. It checks that the method it replaces is the one it was written for
(Textual is pinned in pyproject.toml); if Textual changes, the original stays and nothing breaks.
"""

from __future__ import annotations

import inspect

from rich.console import Console
from rich.control import Control
from textual._compositor import ChopsUpdate

_ORIGINAL = ChopsUpdate.render_segments
# Lines of the original that this replacement was written against (a changed Textual leaves it alone).
_EXPECTED = ("strip = strip.crop(0, min(end, x2) - x)", "append(move_to(x, y).segment.text)")


def render_segments(self: ChopsUpdate, console: Console) -> str:
    """As ChopsUpdate.render_segments, but each chop is cut to the dirty span at both ends."""
    sequences: list[str] = []
    append = sequences.append
    move_to = Control.move_to
    chops, chop_ends = self.chops, self.chop_ends
    last_y = self.spans[-1][0]
    for y, x1, x2 in self.spans:
        line = chops[y]
        for end, (x, strip) in zip(chop_ends[y], line.items()):
            if strip is None or x >= x2 or end <= x1:
                continue
            start = max(x, x1)
            if start > x or end > x2:
                strip = strip.crop(start - x, min(end, x2) - x)
            append(move_to(start, y).segment.text)
            append(strip.render(console))
        if y != last_y:
            append("\n")
    return "".join(sequences)


def install() -> bool:
    """Replace Textual's method when it is the one this was written for; True when the replacement is in."""
    if ChopsUpdate.render_segments is render_segments:
        return True
    try:
        source = inspect.getsource(_ORIGINAL)
    except (OSError, TypeError):
        return False
    if not all(line in source for line in _EXPECTED):
        return False
    ChopsUpdate.render_segments = render_segments
    return True
