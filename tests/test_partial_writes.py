"""A partial repaint sends only its cells (befori_tui/ui/partial_writes.py), and the same cells as Textual would."""

from __future__ import annotations

import io

from rich.console import Console
from textual.geometry import Region

from befori_tui.ui import partial_writes
from befori_tui.ui.app import MonitorApp, UiOptions
from befori_tui.ui.fixed import fixed_config, fixed_model


def _update(app: MonitorApp, *regions: Region):
    comp = app.screen._compositor
    comp._dirty_regions.clear()
    comp._dirty_regions.update(regions)
    return comp.render_partial_update()


def _console() -> Console:
    return Console(file=io.StringIO(), force_terminal=True, color_system="256", width=160)


async def test_a_one_cell_repaint_writes_that_cell_only_and_whole_lines_are_written_as_textual_writes_them():
    assert partial_writes.install(), "Textual's ChopsUpdate.render_segments changed: check partial_writes.py"
    cfg = fixed_config()
    app = MonitorApp(cfg, fixed_model(cfg=cfg), None, UiOptions(live=False))
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        # One cell in the middle of a timeline row (the row starts at column 1): a move to it and one cell.
        out = partial_writes.render_segments(_update(app, Region(40, 5, 1, 1)), _console())
        assert out.startswith("\x1b[6;41H") and len(out) < 40
        original = partial_writes._ORIGINAL(_update(app, Region(40, 5, 1, 1)), _console())
        assert original.startswith("\x1b[6;2H") and len(original) > 10 * len(out)  # from the widget's left edge
        # Whole lines (every widget from its left edge): byte for byte what Textual writes.
        full = [Region(0, y, 160, 1) for y in range(3, 30)]
        assert partial_writes.render_segments(_update(app, *full), _console()) == \
            partial_writes._ORIGINAL(_update(app, *full), _console())
        # A span that starts inside one widget and ends inside the next: both cut, nothing outside written.
        out = partial_writes.render_segments(_update(app, Region(85, 10, 10, 1)), _console())
        assert out.startswith("\x1b[11;86H")
        text = "".join(ch for ch in __import__("re").sub(r"\x1b\[[0-9;]*[A-Za-z]", "", out))
        assert len(text) == 10


def _screen_cells(screen) -> list[list[tuple[str, str, str]]]:
    return [[(screen.buffer[y][x].data, screen.buffer[y][x].fg, screen.buffer[y][x].bg) for x in range(screen.columns)]
            for y in range(screen.lines)]


async def test_a_terminal_fed_only_partial_repaints_shows_what_a_full_repaint_shows():
    """Nothing is lost on screen: a terminal emulator (pyte) gets one full paint, then only the partial
    repaints the app sends as the timeline's time passes cell by cell; at the end its cells (characters and
    colours) equal a fresh full paint's."""
    import pyte
    assert partial_writes.install()
    from textual._compositor import CompositorUpdate

    cfg = fixed_config()
    app = MonitorApp(cfg, fixed_model(cfg=cfg), None, UiOptions(live=False))
    cols, rows = 160, 48
    async with app.run_test(size=(cols, rows)) as pilot:
        await pilot.pause()
        console = _console()
        screen = pyte.Screen(cols, rows)
        stream = pyte.Stream(screen)
        full_paint = app.screen._compositor.render_update(full=True).render_segments(console)
        stream.feed(full_paint)
        sent = []
        display = app._display

        def capture(scr, renderable):
            if isinstance(renderable, CompositorUpdate):
                sent.append(renderable.render_segments(console))
            return display(scr, renderable)

        app._display = capture
        view, model = app.timeline.view, app.model
        now = [model.now()]
        model.ended_ns, model.clock = None, (lambda: now[0])
        app.timeline.tick()  # may turn the page: the whole timeline is drawn
        await pilot.pause()
        first = len(sent)
        for _ in range(12):  # twelve cells of time: bars in flight grow, the ▲ moves along the axis
            now[0] += view._cell_ns()
            app.timeline.tick()
            await pilot.pause()
        assert sent, "no partial repaint was sent"
        for data in sent:
            stream.feed(data)
        fresh = pyte.Screen(cols, rows)
        pyte.Stream(fresh).feed(app.screen._compositor.render_update(full=True).render_segments(console))
        assert _screen_cells(screen) == _screen_cells(fresh)
        # … and each cell of time cost a small part of one full paint
        stepped = sum(map(len, sent[first:]))
        print(f"{stepped} bytes sent for 12 steps; a full paint is {len(full_paint)}")
        assert stepped < 12 * len(full_paint) / 5  # whole rows at each step (before) sent ~ 12 × 28 KB
