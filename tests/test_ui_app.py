"""The app on fixed data (no server): themes, keys that need no run, the help screen, the palette, and
pure helpers (timeline cells, steps, formatting)."""

from __future__ import annotations

import io
import math
import re
from pathlib import Path

import pytest

from befori_tui.ui.app import MonitorApp, UiOptions, parse_step, step_concurrency
from befori_tui.ui.fixed import fixed_config, fixed_model
from befori_tui.ui.model import Bar
from befori_tui.ui.themes import DEFAULT_THEME, all_themes, bundled_theme_dir, load_themes
from befori_tui.ui.timeline_cells import DECODE, ERROR, GAP, PREFILL, intervals, row_runs


def fixed_app(**options) -> MonitorApp:
    cfg = fixed_config()
    return MonitorApp(cfg, fixed_model(cfg=cfg), None, UiOptions(live=False, **options))


def capture_notifications(app: MonitorApp) -> list[str]:
    seen: list[str] = []
    original = app.notify

    def notify(message, *args, **kwargs):
        seen.append(str(message))
        return original(message, *args, **kwargs)

    app.notify = notify  # type: ignore[method-assign]
    return seen


# --- themes --------------------------------------------------------------------------------------------

def test_bundled_themes_load_and_cover_dark_light_and_16_colour():
    themes, errors = load_themes(bundled_theme_dir())
    assert errors == []
    by_name = {t.name: t for t in themes}
    assert {"befori-dark", "befori-light", "befori-contrast"} <= set(by_name)
    assert by_name["befori-dark"].dark and not by_name["befori-light"].dark
    contrast = by_name["befori-contrast"]
    assert contrast.ansi and all(v.startswith("ansi_") for v in (contrast.primary, contrast.error))


def test_tcss_uses_theme_variables_only():
    css = (Path(__file__).parents[1] / "befori_tui" / "ui" / "app.tcss").read_text()
    assert not re.search(r"#[0-9a-fA-F]{3,8}\b(?![-\w])", re.sub(r"^\s*#[\w-]+.*\{", "", css, flags=re.M))
    assert not re.search(r"\b(rgb|hsl)a?\(", css)


async def test_bad_theme_files_give_one_notification_each_and_the_app_falls_back(tmp_path):
    (tmp_path / "broken.toml").write_text("name = 'x'\nprimary = ")  # not TOML
    (tmp_path / "nocolour.toml").write_text("name = 'nocolour'\nprimary = 'not-a-colour'\n")
    (tmp_path / "mine.toml").write_text("name = 'mine'\nprimary = '#ff8800'\n[variables]\ntimeline-decode = '#aa5500'\n")
    app = fixed_app(themes_dir=tmp_path, theme="broken")
    seen = capture_notifications(app)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert app.theme == DEFAULT_THEME
        bad = [m for m in seen if "theme" in m]
        assert len([m for m in bad if "broken.toml" in m]) == 1
        assert len([m for m in bad if "nocolour.toml" in m and "primary" in m]) == 1
        assert "mine" in app.theme_names  # the good user theme is registered
        app.theme = "mine"
        await pilot.pause()
        assert app.theme_variables["timeline-decode"] == "#aa5500"


async def test_t_cycles_the_themes_and_every_theme_renders():
    app = fixed_app()
    async with app.run_test(size=(80, 24)) as pilot:
        seen = [app.theme]
        for _ in app.theme_names:
            await pilot.press("t")
            seen.append(app.theme)
        assert set(seen) == set(app.theme_names)
        assert seen[-1] == seen[0]


async def test_the_cost_chart_survives_theme_changes_and_resizes_with_data_on_it():
    """At 160×48 the chart is drawn with points; redrawing it without new data (t, a resize) once took
    plotext's log scale twice and crashed the app."""
    app = fixed_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause(0.3)
        chart = app.query_one("CostChart")
        assert chart.display and chart.size.height > 5
        for _ in range(2 * len(app.theme_names)):
            await pilot.press("t")
            await pilot.pause(0.05)
        for size in ((150, 45), (170, 50), (160, 48)):
            await pilot.resize_terminal(*size)
            await pilot.pause(0.1)
        app.theme = "befori-contrast"
        await pilot.pause(0.1)
        assert chart.theme == "clear"  # its ANSI colours have no RGB: the terminal's own colours
        assert app.is_running and app.return_code is None
        svg = app.export_screenshot()
    assert "$/M tokens vs concurrency" in svg.replace("&#160;", " ")


def test_log_ticks_span_the_data():
    from befori_tui.ui.widgets.levels import log_ticks

    assert log_ticks(math.log10(0.05), math.log10(3.0)) == pytest.approx([0.1, 1.0])  # a decade or more
    assert log_ticks(math.log10(0.15), math.log10(0.9)) == pytest.approx([0.2, 0.5])  # within a decade: 1-2-5
    assert log_ticks(math.log10(2.4), math.log10(2.6)) == pytest.approx([2.4, 2.6])  # narrower than 1-2-5


def test_theme_dir_that_does_not_exist_is_reported(tmp_path):
    _, errors = all_themes(tmp_path / "missing")
    assert [e.path.name for e in errors] == ["missing"]


# --- keys, help, palette ---------------------------------------------------------------------------------

def test_bindings_carry_ids_and_descriptions():
    for b in MonitorApp.BINDINGS:
        assert b.id, b
        assert b.action in MonitorApp.DESCRIPTIONS
    keys = {k for b in MonitorApp.BINDINGS for k in b.key.split(",")}
    assert {"plus", "minus", "c", "p", "n", "s", "t", "w", "q"} <= keys


@pytest.mark.parametrize("size", [(100, 40), (160, 48)])
async def test_help_screen_lists_every_key_that_does_something_here(size):
    app = fixed_app()
    async with app.run_test(size=size) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        from befori_tui.ui.screens.help import HelpScreen

        assert isinstance(app.screen, HelpScreen)
        ids = [row[2] for row in app.screen.rows]
        # Not offered: d (no run to detach from: fixed data), g (every GPU fits, or the panel is not shown), and v
        # where every panel is already on screen.
        hidden = {"app.detach", "view.gpu_page"} | ({"view.panel"} if size[0] >= 120 else set())
        assert ids == [b.id for b in MonitorApp.BINDINGS if b.id not in hidden]
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_command_palette_offers_the_actions():
    app = fixed_app()
    async with app.run_test(size=(100, 40)):
        titles = [c.title for c in app.get_system_commands(app.screen)]
    for title in ("Next theme", "Timeline window", "Quit"):
        assert any(t.startswith(title) for t in titles), titles


async def test_window_key_cycles_30_60_120_and_v_switches_panels_when_small():
    app = fixed_app()
    async with app.run_test(size=(80, 24)) as pilot:
        windows = []
        for _ in range(3):
            await pilot.press("w")
            windows.append(app.timeline.window_s)
        assert windows == [120.0, 30.0, 60.0]
        assert app.narrow
        assert app.query_one("#metrics").display and not app.query_one("#cost").display
        await pilot.press("v")
        assert app.query_one("#cost").display and not app.query_one("#metrics").display
    app = fixed_app()
    async with app.run_test(size=(160, 48)):
        assert not app.narrow
        assert all(app.query_one(f"#{n}").display for n in ("metrics", "cost", "gpus", "levels", "chart"))


async def test_fixed_data_fills_the_panels():
    app = fixed_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        assert [s["concurrency"] for s in app.summaries.levels] == [1, 8, 32, 64]
        assert app.levels.row_count == 4
        assert app.summaries.gpu["joules_per_output_token"] > 0
        waiting, decoding, idle = app.model.slot_states()
        assert waiting + decoding + idle == 64 and decoding > 0


async def test_the_timeline_redraws_only_the_edge_of_time_and_turns_the_page_at_its_end():
    """What is redrawn is sent to the terminal (over SSH). Within one cell of time a frame draws nothing; when
    a cell's time has passed only the cells that changed are drawn — one line each, at the edge where bars
    grew; when the edge reaches the right, the page turns and the view is drawn again."""
    from befori_tui.ui.widgets.timeline import PAGE_HISTORY

    app = fixed_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        view = app.timeline.view
        model = app.model
        now = [model.now()]
        model.ended_ns, model.clock = None, (lambda: now[0])
        view.tick()
        await pilot.pause()  # drawn whole once: what the terminal shows is known
        cell_ns = view._cell_ns()
        calls: list = []
        view.refresh = lambda *regions, **kw: calls.append(regions)
        edge = view._edge_col
        now[0] = view.page_t0_ns + (edge + 0.5) * cell_ns  # later in the same cell
        view.tick()
        assert calls == []
        now[0] += cell_ns
        view.tick()
        lw = view.label_width
        (regions,) = calls
        assert len(regions) > 10  # the bars in flight grew …
        assert all(r.height == 1 and lw + edge - 1 <= r.x and r.right <= lw + edge + 2 for r in regions)  # … by a cell
        assert len({r.y for r in regions}) == len(regions) <= view.size.height
        page = view.page_t0_ns
        now[0] = page + view.window_s * 1e9 + 1  # the edge reaches the right
        view.tick()
        assert calls[-1] == () and view.page_t0_ns == int(now[0] - PAGE_HISTORY * view.window_s * 1e9)
        assert "▲" in view.axis_text()


# --- pure helpers ----------------------------------------------------------------------------------------

def test_timeline_row_splits_at_the_first_token_with_eighth_blocks():
    # One cell = 100 ns. Prefill 0..250, decode 250..1000, a gap, a failed request, one in flight.
    bars = [Bar(0, 250, 1000), Bar(1500, None, 1700, failed=True), Bar(1800, 1850, None)]
    spans = intervals(bars, 0, 2000, now_ns=2000)
    assert spans == [(0, 250, PREFILL), (250, 1000, DECODE), (1500, 1700, ERROR), (1800, 1850, PREFILL),
                     (1850, 2000, DECODE)]
    runs = row_runs(spans, 0, 100.0, 20)
    cells = []
    for text, fg, bg in runs:
        cells += [(ch, fg, bg) for ch in text]
    assert len(cells) == 20
    assert cells[0] == (" ", PREFILL, PREFILL) and cells[1] == (" ", PREFILL, PREFILL)
    assert cells[2] == ("▌", PREFILL, DECODE)  # half prefill, half decode
    assert all(c[1] == DECODE for c in cells[3:10])
    assert all(c[1] == GAP for c in cells[10:15])
    assert cells[15][1] == cells[16][1] == ERROR
    assert cells[18] == ("▌", PREFILL, DECODE)
    assert cells[19] == (" ", DECODE, DECODE)


def test_a_first_token_stays_visible_however_short_the_prefill():
    """86 ms of prefill in a 3.1 s request, cells of 0.4 s: the cell that holds the first token shows it."""
    cell = 400e6
    for send in (0, 150e6, 330e6):  # at a cell's start, inside it, and near its end (the token in the next)
        bars = [Bar(int(send), int(send + 86e6), int(send + 3.1e9))]
        spans = intervals(bars, 0, int(4e9), now_ns=int(4e9))
        cells = [(ch, fg, bg) for text, fg, bg in row_runs(spans, 0, cell, 10) for ch in text]
        marked = [c for c in cells if PREFILL in (c[1], c[2])]
        assert len(marked) >= 1, (send, cells)
        i = cells.index(marked[-1])
        assert cells[i + 1][1] == DECODE  # the prefill mark is followed by decode
    # a prefill of 2% of a cell at its very start still shows as one eighth: ▏ light on dark
    cells = [(ch, fg, bg) for text, fg, bg in row_runs([(0, 8, PREFILL), (8, 400, DECODE)], 0, 400.0, 1) for ch in text]
    assert cells == [("▏", PREFILL, DECODE)]


def test_timeline_row_is_cheap_for_long_requests():
    runs = row_runs([(0, 10**12, DECODE)], 0, 1e6, 200)
    assert runs == [(" " * 200, DECODE, DECODE)]


@pytest.mark.parametrize("step, c, up, expected", [
    ("x2", 4, True, 8), ("x2", 4, False, 2), ("x2", 1, False, 1), ("+1", 4, True, 5), ("+1", 1, False, 1),
    ("x4", 3, True, 12), ("+8", 10, False, 2), ("x2", 4096, True, 4096),
])
def test_concurrency_steps(step, c, up, expected):
    assert step_concurrency(c, step, up) == expected


@pytest.mark.parametrize("bad", ["x1", "*", "+0", "2", "x-2", ""])
def test_bad_steps_are_refused(bad):
    with pytest.raises(ValueError):
        parse_step(bad)


def _plain(renderable) -> str:
    from rich.console import Console

    console = Console(width=160, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


async def test_the_servers_queue_shows_without_gpu_telemetry_and_before_the_gpu_lines():
    from befori_tui.core.telemetry.readings import ServerReading, TelemetrySample

    app = fixed_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause(0.2)
        with_gpus = _plain(app.gpus.content)
        assert "vllm: " in with_gpus and with_gpus.index("vllm: ") < with_gpus.index("H100")  # first, not cut
        app.model.samples.append(TelemetrySample(app.model.clock(), "none", [], ServerReading("llamacpp", 3, 5),
                                                 gpu_error="no GPU telemetry: NVML did not load"))
        app.gpus.show(app.model, app.summaries)
        await pilot.pause(0.1)
        text = _plain(app.gpus.content)
        assert "NVML did not load" in text and "llamacpp: 3 running, 5 waiting" in text


async def test_a_narrow_header_keeps_the_endpoint_line_when_the_client_bound_warning_shows():
    app = fixed_app()
    async with app.run_test(size=(80, 24)) as pilot:
        app.status.client_lag_p99_ms = lambda: 12.0
        app.status.sweep_text = "level settled · sweep to c=128"
        app.status.refresh_status(False)
        await pilot.pause(0.1)
        from rich.console import Console

        console = Console(width=app.status.size.width, record=True, file=io.StringIO())
        console.print(app.status.content)
        lines = console.export_text().rstrip("\n").splitlines()
        assert len(lines) == 2, lines  # cut at the edge, never wrapped
        assert "http://127.0.0.1:8000/v1" in lines[1]


def _drawn(widget) -> list[str]:
    """The panel as it is drawn on the screen, border included: what a user sees, not what was handed to it."""
    from textual.geometry import Region

    return [strip.text for strip in widget.render_lines(Region(0, 0, *widget.outer_size))]


@pytest.mark.parametrize("size", [(160, 48), (200, 60)], ids=["160x48", "200x60"])
async def test_every_gpu_of_eight_is_drawn_under_column_headings(size):
    app = fixed_app()
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        lines = _drawn(app.gpus)
        assert any("Σ 8 GPUs" in line for line in lines), lines
        headings = [line for line in lines if re.search(r"#\s+name\s+util\s+mem\s+power\s+temp\s+clock", line)]
        assert len(headings) == 1, lines
        rows = [int(m[1]) for line in lines if (m := re.match(r"│\s+(\d+) H100", line))]
        assert rows == list(range(8)), lines
        assert lines[-1].startswith("╰"), lines  # the bottom border: nothing below the last GPU was cut


@pytest.mark.parametrize("size, panel", [((160, 48), "metrics"), ((80, 24), "gpus")], ids=["160x48", "80x24"])
async def test_more_gpus_than_rows_shows_the_busiest_and_the_idlest_and_counts_the_rest(size, panel):
    from befori_tui.ui.fixed import FixedRun

    cfg = fixed_config()
    app = MonitorApp(cfg, fixed_model(FixedRun(gpus=24), cfg=cfg), None, UiOptions(live=False, panel=panel))
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        lines = _drawn(app.gpus)
        assert any("Σ 24 GPUs" in line for line in lines), lines
        gpus = app.model.samples[-1].gpus
        busiest = max(gpus, key=lambda g: g.util_pct)
        idlest = min(gpus, key=lambda g: g.util_pct)
        rows = [int(m[1]) for line in lines if (m := re.match(r"│\s+(\d+) H100", line))]
        assert rows == [busiest.index, idlest.index], lines
        assert any("+22 more" in line for line in lines), lines
        assert lines[-1].startswith("╰"), lines


@pytest.mark.parametrize("size", [(160, 48), (120, 40), (80, 24)], ids=["160x48", "120x40", "80x24"])
async def test_the_cost_panel_says_when_the_price_is_a_default(size):
    cfg = fixed_config()
    cfg.pricing.source = "default"
    app = MonitorApp(cfg, fixed_model(cfg=cfg), None, UiOptions(live=False, panel="cost"))
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        text = "\n".join(_drawn(app.cost))
        # The whole note where it fits, a short one on a narrow panel: either way the price and what to do.
        assert re.search(r"⚠ .*default.*\$27\.78/h.* — set --usd-per-hour", text), text
        if size[0] >= 160:
            assert "priced at the default $27.78/h (8×H100 rental) — set --usd-per-hour" in text, text


@pytest.mark.parametrize("source, expected", [("flag", None), ("config", None),
                                              ("simulator", "price of the simulated box")])
async def test_the_cost_panel_names_a_price_that_is_not_the_users_only(source, expected):
    cfg = fixed_config()
    cfg.pricing.source = source
    app = MonitorApp(cfg, fixed_model(cfg=cfg), None, UiOptions(live=False))
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        text = "\n".join(_drawn(app.cost))
        assert "--usd-per-hour" not in text and "default" not in text, text
        if expected:
            assert expected in text, text


@pytest.mark.parametrize("size", [(80, 24), (100, 30), (120, 40), (160, 48)])
async def test_the_headline_is_on_the_first_screen_and_no_figure_is_cut_at_every_size(size):
    """The $/M by the befori method (with ± and settled mark) and the concurrency are in the header at every
    size from 80×24; nowhere is a number cut with an ellipsis; at 160×48 all eight GPUs are listed."""
    app = fixed_app()
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        lines = ["".join(seg.text for seg in strip) for strip in app.screen._compositor.render_strips()]
        header = lines[0]
        assert "c=64" in header and "$/M in 0.0192 ±2%" in header and "out 2.43 ±0% ✓" in header, header
        assert "blend 3:1 0.623" in lines[1] and "example-api 1.80" in lines[1], lines[1]
        for line in lines:
            assert not re.search(r"[0-9$%.,±]…", line), f"a figure cut at {size}: {line!r}"
        if size == (160, 48):
            gpu_rows = [line for line in lines if re.search(r"│\s+[0-7] H100", line)]
            assert len(gpu_rows) == 8, "\n".join(lines)


@pytest.mark.parametrize("size", [(80, 24), (100, 30), (160, 48)])
async def test_the_metrics_panel_cuts_no_figure_at_512_streams(size):
    """Six-digit token rates beside millisecond tails, as a real run at 512 streams showed them (the tok/s
    row once made the tables wider than the panel, and the ITL p99 read "25.6…")."""
    from befori_tui.ui.model import Summaries

    figures = {"level": 0, "concurrency": 512, "requests_ok": 20_232, "requests_failed": 0,
               "input_tok_per_s_total": 106_200.0, "output_tok_per_s_total": 28_800.0, "requests_per_s": 192.0}
    for key, (p50, p90, p99) in {"ttft_s": (1.36, 1.37, 1.39), "itl_s": (0.0069, 0.0195, 0.0256),
                                 "tpot_s": (0.0088, 0.0089, 0.0089), "e2e_s": (2.67, 2.69, 2.70)}.items():
        figures.update({f"{key}_p50": p50, f"{key}_p90": p90, f"{key}_p99": p99})
    app = fixed_app()
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        app.metrics.show(Summaries(levels=[figures], window={**figures, "span_s": 60.0}))
        await pilot.pause()
        text = "\n".join(_drawn(app.metrics))
        if "TTFT" not in text:
            return  # at this size the panel is paged away (v); the test above covers what is on screen
        assert "106.2k" in text and "25.6ms" in text and "192" in text, text
        assert not re.search(r"[0-9$%.,±]…", text), text


async def test_gpus_that_do_not_fit_are_paged_with_g():
    app = fixed_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        await pilot.press("v", "v")  # metrics → cost → GPUs
        await pilot.pause()
        text = _plain(app.gpus.content)
        assert "+6 more (shown: the busiest and the idlest)" in text and app.gpus.pages >= 2
        seen = set()
        for page in range(1, app.gpus.pages + 1):
            await pilot.press("g")
            await pilot.pause()
            text = _plain(app.gpus.content)
            assert f"page {page} of {app.gpus.pages}" in text
            seen |= {int(m) for m in re.findall(r"^\s*([0-7]) H100", text, re.M)}
        assert seen == set(range(8))  # every GPU, a page at a time
        await pilot.press("g")
        await pilot.pause()
        assert "busiest and the idlest" in _plain(app.gpus.content)


def test_cancelled_requests_have_a_mark_of_their_own():
    from befori_tui.ui.timeline_cells import CANCELLED

    bars = [Bar(0, 100, 400), Bar(500, None, 800, cancelled=True), Bar(900, None, 1000, failed=True)]
    spans = intervals(bars, 0, 1000, now_ns=1000)
    assert (500, 800, CANCELLED) in spans and (900, 1000, ERROR) in spans
    cells = [(ch, fg) for text, fg, bg in row_runs(spans, 0, 100.0, 10) for ch in text]
    assert [fg for _, fg in cells[5:8]] == [CANCELLED] * 3 and cells[9][1] == ERROR


async def test_with_an_slo_the_levels_table_and_cost_panel_show_it_and_the_chart_marks_the_optimum():
    from befori_tui.core.slo import parse_slo

    cfg = fixed_config()
    cfg.slo = parse_slo("ttft_p99=60s")
    app = MonitorApp(cfg, fixed_model(cfg=cfg), None, UiOptions(live=False))
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause(0.3)
        labels = [c.label.plain for c in app.levels.columns.values()]
        assert labels[1:7] == ["$/M in", "$/M out", "", "SLO", "SLO $/M in", "SLO $/M out"]  # beside the plain $/M
        row = app.levels.get_row("3")
        assert row[4].endswith("✓") and row[5] != "—"
        def text(widget) -> str:
            return "\n".join("".join(seg.text for seg in strip) for strip in widget.render_lines(widget.size.region))

        cost, chart = text(app.cost), text(app.chart)
        opt = app._optimum(app.summaries.levels)
    assert "SLO-met ✓" in cost and "SLO ttft_p99=60s: 99% met · goodput" in cost, cost
    assert opt["found"] and f"cheapest c={opt['concurrency']}" in chart, chart


def test_rate_steps():
    from befori_tui.ui.app import step_rate

    assert step_rate(10.0, "x2", True) == 20.0 and step_rate(10.0, "x2", False) == 5.0
    assert step_rate(10.0, "+5", True) == 15.0 and step_rate(3.0, "+5", False) == 0.5


async def test_the_header_says_what_carries_the_load():
    """A proxy, TLS not verified, gateway headers (names only): on the endpoint line, as the start line says."""
    from befori_tui.core import events as ev

    app = fixed_app()
    async with app.run_test(size=(200, 30)) as pilot:
        wire = "through the proxy http://10.0.0.5:3128 · TLS certificate NOT verified (--insecure) · headers X-Tenant"
        app.model.apply(ev.Ready("https://gw.example.test/v1", "m", "chat", "usage", wire=wire))
        app.status.refresh_status(False)
        await pilot.pause(0.1)
        assert wire in " ".join(" ".join(line.plain for line in app.status.content.renderables).split())  # (the 160-column console wraps it)


async def test_the_palette_lists_our_commands_first_and_textuals_after_without_duplicates():
    app = fixed_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("ctrl+p")
        await pilot.pause(0.5)
        options = app.screen.query_one("CommandList")
        titles = [str(options.get_option_at_index(i).prompt).split("\n")[0] for i in range(options.option_count)]
    ours = [t for t in titles if t not in ("Theme", "Screenshot")]
    assert titles[:len(ours)] == ours and "Next theme" in ours and "Quit" in ours, titles
    assert titles.count("Quit") == 1 and "Keys" not in titles and "Maximize" not in titles, titles


async def test_the_header_shows_the_rate_in_the_open_loop():
    from befori_tui.core import events as ev

    app = fixed_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        app.model.apply(ev.LevelOpened(9, 64, app.model.clock(), 0, "user", rate_per_s=12.5))
        app.status.refresh_status(False)
        await pilot.pause()
        header = app.status.content.renderables[0].plain
    assert "rate 12.5/s (≤64 in flight)" in header and "c=64" not in header, header
