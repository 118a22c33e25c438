"""The live monitor: a Textual app that watches a run through its socket (a RunLink).

The load runs in another process (core/controller.py, docs/architecture.md); this app only draws. It
drains the link's event queue on a timer — two frames a cell of the timeline (~4.6 Hz for a 60 s window at
160 columns), at most `fps` (10 Hz by default) and at least 2 Hz — redraws the timeline and status, and computes
the numpy summaries in a thread worker once a second; it never does work per token. Its keys
become commands to the run, which every viewer of that run then sees as events.
"""

from __future__ import annotations

import os
import select
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from textual import work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Container
from textual.message import Message
from textual.screen import Screen
from textual.theme import Theme
from textual.command import DiscoveryHit
from textual.system_commands import SystemCommandsProvider
from textual.widgets import Footer

from befori_tui.core.config import Config
from befori_tui.core import events as ev
from befori_tui.core.runlink import RunLink
from befori_tui.core.optimum import find_optimum
from befori_tui.ui.model import LiveModel, Summaries, SummaryCache
from befori_tui.ui.screens.concurrency import MAX_CONCURRENCY, ConcurrencyScreen
from befori_tui.ui.screens.help import HelpScreen
from befori_tui.ui.screens.jump import JumpScreen, needs_confirming
from befori_tui.ui.screens.quit import QuitScreen
from befori_tui.ui.themes import DEFAULT_THEME, ThemeError, all_themes
from befori_tui.ui.widgets.levels import CostChart, LevelsTable
from befori_tui.ui.widgets.panels import CostPanel, GpuPanel, MetricsPanel, StatusBar
from befori_tui.ui.widgets.timeline import WINDOWS_S, TimelinePanel
from befori_tui.ui import partial_writes

partial_writes.install()  # a partial repaint sends only its cells (see the module)

LOWER_PANELS = ("metrics", "cost", "gpus", "levels", "chart")
PANEL_TITLES = {"metrics": "Metrics", "cost": "Cost", "gpus": "GPUs", "levels": "Levels", "chart": "$/M chart"}
EXIT_INTERRUPTED = 130  # as `bench`: stopped by Ctrl-C, SIGTERM or SIGHUP, everything measured saved
MAX_FRAME_S = 0.5  # frames follow the timeline's cells, but never fewer than two a second
EXIT_HANGUP = 129  # the terminal went away (128 + SIGHUP); nobody reads it, but a parent may
NARROW_BELOW = (120, 36)  # below this many columns or rows: one lower panel at a time (v switches)


@dataclass
class UiOptions:
    fps: float = 10.0
    summary_hz: float = 1.0  # the panels; 1 Hz: percentiles over a minute gain nothing from more, and each redraw is bytes over SSH
    window_s: float = 60.0
    step: str = "x2"  # "x2" (double/halve) or "+1" (add/subtract); xN and +N work too
    theme: str | None = None
    themes_dir: Path | None = None
    live: bool = True  # False: fixed data (snapshots, screenshots): one synchronous summary, no timers
    quit_timeout_s: float = 30.0
    panel: str = "metrics"  # the lower panel shown first on a small terminal
    owns_run: bool = True  # the monitor started this run: q stops it. False (attach): q asks, d detaches
    on_hangup: str = "continue"  # what the run does when this terminal goes away: continue | stop
    # Signals that came before the screen took them over (ui/monitor.py keeps them): acted on at mount.
    signals_before_the_screen: list[int] = field(default_factory=list)


def _short_path(path: str) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return rel if not rel.startswith("..") else path


def parse_step(step: str) -> tuple[str, int]:
    """'x2' → ('x', 2); '+1' → ('+', 1). ValueError otherwise."""
    text = step.strip().lower().replace("×", "x").replace("*", "x")
    if text and text[0] in "x+" and text[1:].isdigit() and int(text[1:]) >= 1:
        if text[0] == "x" and int(text[1:]) < 2:
            raise ValueError(f"--step {step!r}: a factor must be ≥ 2")
        return text[0], int(text[1:])
    raise ValueError(f"--step must be xN (e.g. x2) or +N (e.g. +1), got {step!r}")


def step_concurrency(c: int, step: str, up: bool) -> int:
    op, n = parse_step(step)
    if op == "x":
        new = c * n if up else max(1, c // n)
    else:
        new = c + n if up else max(1, c - n)
    return min(new, MAX_CONCURRENCY)


def step_rate(rate: float, step: str, up: bool) -> float:
    """The open loop's +/-: the same step on requests per second (×N, or ±N req/s, never below a tenth of N)."""
    op, n = parse_step(step)
    if op == "x":
        return rate * n if up else rate / n
    return rate + n if up else max(n / 10, rate - n)


class SummariesReady(Message):
    """Posted by the summary worker; only the newest matters, so a queued one is replaced (toolong)."""

    def __init__(self, summaries: Summaries) -> None:
        super().__init__()
        self.summaries = summaries

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, SummariesReady)


class CommandsInOrder(SystemCommandsProvider):
    """The palette's list before anything is typed, in the app's own order — its commands first, then
    Textual's — instead of Textual's sort by name (typing still ranks by match)."""

    async def discover(self):
        for name, help_text, callback, discover in self.app.get_system_commands(self.screen):
            if discover:
                yield DiscoveryHit(name, callback, help=help_text)


class MonitorApp(App[int]):
    CSS_PATH = "app.tcss"
    COMMANDS = {CommandsInOrder}
    TITLE = "befori-tui"
    BINDINGS = [
        Binding("plus,equals_sign", "concurrency_up", "up", id="concurrency.up"),
        Binding("minus", "concurrency_down", "down", id="concurrency.down"),
        Binding("c", "set_concurrency", "set", id="concurrency.set"),
        Binding("p", "pause", "pause", id="run.pause"),
        Binding("n", "new_level", "level", id="run.new_level"),
        Binding("o", "find_optimum", "optimum", id="run.find_optimum"),
        Binding("s", "save", "save", id="session.save"),
        Binding("t", "next_theme", "theme", id="view.theme"),
        Binding("w", "window", "window", id="view.window"),
        Binding("z", "zoom", "zoom", show=False, id="view.zoom"),
        Binding("g", "gpu_page", "GPUs", id="view.gpu_page"),
        Binding("v", "next_panel", "panel", id="view.panel"),
        Binding("question_mark,f1", "help", "help", id="app.help"),
        Binding("q", "quit", "quit", id="app.quit"),
        Binding("d", "detach", "detach", id="app.detach"),
        # Ctrl-C stops and saves like q (Textual's default only says how to quit); a second one exits at once.
        Binding("ctrl+c", "interrupt", "stop", show=False, priority=True, id="app.interrupt"),
    ]
    DESCRIPTIONS = {
        "concurrency_up": "Concurrency up one step (a new level)",
        "concurrency_down": "Concurrency down one step (a new level)",
        "set_concurrency": "Type an exact concurrency",
        "pause": "Pause / resume new requests (those in flight finish)",
        "new_level": "New level at the same concurrency",
        "find_optimum": "Find the cheapest concurrency that meets the SLO, from this level (each level until settled)",
        "save": "Save the session now",
        "next_theme": "Next theme",
        "window": "Timeline window: 30 / 60 / 120 s",
        "gpu_page": "GPUs: the next page, when they do not all fit (first: the busiest and the idlest)",
        "zoom": "Timeline zoom: a window of four requests' length at this level (E2E p90), or back",
        "next_panel": "Next panel (small terminals)",
        "help": "Keys and how to read the screen",
        "quit": "Quit: stop the run, save, exit (attached: asks first)",
        "detach": "Detach: leave the run going and exit (befori-tui attach comes back)",
        "interrupt": "Stop, save, exit (as q; also SIGINT, SIGTERM, SIGHUP); twice: exit at once, files valid",
    }

    def __init__(self, cfg: Config, model: LiveModel, link: RunLink | None = None,
                 options: UiOptions | None = None) -> None:
        self.cfg = cfg
        self.model = model
        self.link = link
        self.options = options or UiOptions()
        parse_step(self.options.step)
        self.summaries: Summaries | None = None
        self.quitting = False
        self.detached = False
        self.exit_note: str | None = None
        self.interrupted = False  # stopped by Ctrl-C or a signal: saved as such, exit code 130
        self._target_c: tuple[int, int] | None = None  # (concurrency, levels seen when asked)
        self._summary_busy = False
        self._quit_deadline = 0.0
        self._gpu_seen = -1
        self._link_noted = self._finish_noted = False
        self._cache = SummaryCache()
        self._panel = self.options.panel
        # Themes are data files: validated and registered before the CSS is built; errors shown on mount.
        self._themes, self._theme_errors = all_themes(self.options.themes_dir)
        super().__init__()
        for theme in self._themes:
            self.register_theme(theme)
        names = [t.name for t in self._themes]
        wanted = self.options.theme or DEFAULT_THEME
        if wanted not in names and wanted not in self.available_themes:
            self._theme_errors.append(ThemeError(Path(wanted), "no such theme"))
            wanted = DEFAULT_THEME
        self.theme = wanted if wanted in self.available_themes else "textual-dark"

    # --- theme ---------------------------------------------------------------------------------------

    def get_theme_variable_defaults(self) -> dict[str, str]:
        # Any theme (a Textual built-in too) gets our variables, derived from its own colours.
        cs = self.current_theme.to_color_system().generate()
        return {
            "timeline-prefill": cs["primary-lighten-2"],
            "timeline-decode": cs["primary-darken-1"],
            "timeline-error": cs["error"],
            "bar-empty": cs["panel"],
        }

    @property
    def theme_names(self) -> list[str]:
        return [t.name for t in self._themes] or ["textual-dark"]

    # --- layout --------------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        self.status = StatusBar(self.model, id="status")
        self.timeline = TimelinePanel(self.model, self.options.window_s, id="timeline", classes="panel")
        self.metrics = MetricsPanel(id="metrics", classes="panel lower")
        self.cost = CostPanel(self.cfg.pricing, id="cost", classes="panel lower")
        self.gpus = GpuPanel(id="gpus", classes="panel lower")
        self.levels = LevelsTable(slo=bool(self.cfg.slo), id="levels", classes="panel lower")
        self.chart = CostChart(id="chart", classes="panel lower")
        yield self.status
        with Container(id="body"):
            yield self.timeline
            yield self.metrics
            yield self.cost
            yield self.gpus
            yield self.levels
            yield self.chart
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        for err in self._theme_errors:
            self.notify(f"theme {err}; using {self.theme}", title="bad theme", severity="error", timeout=10)
        for name in LOWER_PANELS:
            getattr(self, name if name != "levels" else "levels").border_title = PANEL_TITLES[name]
        self.gpus.border_title = "GPUs"
        self._layout_for(self.size.width, self.size.height)
        self.gpus.show(self.model, None)
        if self.options.live:
            self.set_interval(1 / max(0.5, self.options.fps), self._tick)
            self.set_interval(1 / max(0.1, self.options.summary_hz), self._request_summaries)
            self.set_interval(5.0, self.model.prune)
            if not self.is_headless:
                loop = __import__("asyncio").get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    try:
                        loop.add_signal_handler(sig, self.action_interrupt)
                    except (NotImplementedError, RuntimeError):
                        pass
                # The terminal went away (a dropped SSH session): not through the event loop, which may be
                # stuck writing to the dead terminal — a plain handler runs in the main thread at once.
                signal.signal(signal.SIGHUP, self._on_hangup)
                if self.link is not None and self.options.owns_run:
                    what = ("goes on (befori-tui attach comes back to it)" if self.options.on_hangup == "continue"
                            else "stops and saves")
                    self.notify(f"if this terminal goes away, the run {what}", title="hangup", timeout=6)
                early = self.options.signals_before_the_screen
                if early and early[0] == signal.SIGHUP:
                    self._on_hangup(signal.SIGHUP, None)
                elif early:
                    self.action_interrupt()
        else:
            self._show_summaries(self._compute_summaries())
        self._tick(force=True)
        self.call_after_refresh(self._tick, True)  # again once the layout has sizes (the axis needs a width)
        if self.link is not None and self.options.owns_run and self.options.live:
            # The monitor's run sends its first request once this first screen is drawn (its layout and paint
            # are the viewer's costliest moment): two refreshes on, after the one the layout asks for.
            self.call_after_refresh(lambda: self.call_after_refresh(self._screen_ready))

    def _screen_ready(self) -> None:
        if self.link is not None:
            self.link.send(ev.ScreenReady())

    def on_resize(self, event) -> None:
        self._layout_for(event.size.width, event.size.height)

    def _layout_for(self, width: int, height: int) -> None:
        narrow = width < NARROW_BELOW[0] or height < NARROW_BELOW[1]
        self.screen.set_class(narrow, "-narrow")
        for name in LOWER_PANELS:
            widget = self.query_one(f"#{name}")
            widget.set_class(name == self._panel, "-current")
            title = PANEL_TITLES[name] if name != "gpus" else (self.gpus.border_title or "GPUs").split(" · v")[0]
            if narrow:
                nxt = LOWER_PANELS[(LOWER_PANELS.index(name) + 1) % len(LOWER_PANELS)]
                widget.border_subtitle = f"v: {PANEL_TITLES[nxt]} ▸"
            else:
                widget.border_subtitle = ""
            if name != "gpus":
                widget.border_title = title
        self.refresh_bindings()

    @property
    def narrow(self) -> bool:
        return self.screen.has_class("-narrow")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "next_panel":
            return self.narrow
        if action == "gpu_page":
            return self.gpus.pages > 0
        if action in ("concurrency_up", "concurrency_down", "set_concurrency", "pause", "new_level", "save",
                      "find_optimum"):
            return None if self.link is None or self.quitting or self.model.finished else True
        if action == "detach":
            return self.link is not None and not self.model.finished
        return True

    # --- the frame ---------------------------------------------------------------------------------------

    _next_frame = 0.0

    def _tick(self, force: bool = False) -> None:
        """A frame (`force`: now, as at start and once the layout has sizes; else when one is due)."""
        if self._terminal_gone():
            self._on_hangup(signal.SIGHUP, None)
        # Two frames a cell of the timeline (a 60 s window at 160 columns: ~4.6 a second), at most `fps`: between
        # them only the slot counts would change, and a frame is CPU that the load may need on the same core
        # (bench/README.md, UI).
        now = time.monotonic()
        if now < self._next_frame and not force:
            return
        half_cell_s = min(MAX_FRAME_S, self.timeline.view.cell_s / 2)  # (no width yet: a huge "cell")
        self._next_frame = now + half_cell_s - 0.5 / max(0.5, self.options.fps)
        if self.link is not None:
            self.model.drain(self.link.events)
        self._handle_notes()
        self.timeline.tick()
        self.status.refresh_status(self.quitting)
        if self.model.gpu_version != self._gpu_seen:
            self._gpu_seen = self.model.gpu_version
            self.gpus.show(self.model, self.summaries)
        if self.link is not None:
            m = self.model
            # Setup failed — before any level, or the first request had no answer (ended_by setup): exit with why.
            if m.error and (not m.levels or m.ended_by == "setup") and (m.finished or m.link_closed):
                self.exit_note = f"befori-tui monitor: {m.error}"
                self.exit(m.exit_code if m.exit_code is not None else 2)
            elif self.quitting and (m.finished or m.link_closed or time.monotonic() > self._quit_deadline):
                self.exit(EXIT_INTERRUPTED if self.interrupted else 0 if m.finished else 1)
            elif m.link_closed and not m.finished and not self.quitting and not self._link_noted:
                self._link_noted = True  # the run went away without its last word (killed?)
                self.notify(f"lost the run: {m.link_closed}", title="run", severity="error", timeout=30)
            elif m.finished and not self.quitting and not self._finish_noted:
                self._finish_noted = True  # ended by itself (its plan, max_seconds) or by another viewer
                self.notify(f"the run has ended ({m.ended_by}); q exits", title="run", timeout=8)

    def _handle_notes(self) -> None:
        notes, self.model.notes = self.model.notes, []
        for kind, text in notes:
            if kind == "sweep":
                self.notify(text, title="sweep", timeout=4)
            elif kind == "note":
                self.notify(text, severity="warning", timeout=8)
            elif kind == "error":
                self.notify(text, title="error", severity="error", timeout=15)
        saved = self.model.last_saved
        if saved is not None and saved != getattr(self, "_saved_seen", None):
            self._saved_seen = saved
            if not self.quitting:
                # The path on a line of its own, relative where it can be: a notice must not break it mid-name.
                self.notify(f"{saved[1]} requests recorded; saved to\n{_short_path(saved[0])}", title="session",
                            timeout=5)

    # --- summaries, off the UI thread ------------------------------------------------------------------

    def _compute_summaries(self) -> Summaries:
        levels, occupancy, samples = self.model.snapshot()
        return self._cache.compute(levels, occupancy, samples, self.cfg.pricing, self.model.now(),
                                   self.timeline.window_s, self.cfg.slo)

    def _request_summaries(self) -> None:
        if self._summary_busy or not self.model.levels:
            return
        self._summary_busy = True
        snapshot = self.model.snapshot()
        self._summaries_worker(snapshot, self.model.now(), self.timeline.window_s)

    # A fixed description: without one, Textual builds it from repr() of the arguments — every record of the
    # session, twice a second on the UI thread (a quarter of its CPU at 512 slots, growing with the session).
    @work(thread=True, exclusive=True, group="summaries", description="summaries")
    def _summaries_worker(self, snapshot, now_ns: int, window_s: float) -> None:
        levels, occupancy, samples = snapshot
        summaries = self._cache.compute(levels, occupancy, samples, self.cfg.pricing, now_ns, window_s, self.cfg.slo)
        self.post_message(SummariesReady(summaries))

    def on_summaries_ready(self, message: SummariesReady) -> None:
        self._summary_busy = False
        self._show_summaries(message.summaries)

    def _show_summaries(self, summaries: Summaries, force: bool = False) -> None:
        previous, self.summaries = self.summaries, summaries
        self.status.summaries = summaries
        self.status.refresh_status(self.quitting)
        if not summaries.levels:
            return
        if not force and previous is not None and (previous.levels, previous.window, previous.gpu, previous.window_s) == (
                summaries.levels, summaries.window, summaries.gpu, summaries.window_s):
            return  # nothing new (a paused or ended run): drawing it again would only send bytes
        self.metrics.show(summaries)
        self.cost.show(summaries)
        self.levels.show(summaries.levels)
        self.chart.show(summaries.levels, self._optimum(summaries.levels))
        self.gpus.show(self.model, summaries)

    def _optimum(self, levels: list[dict]) -> dict:
        """The cheapest SLO-meeting concurrency so far, as `bench` and `cost` compute it (core/optimum.py)."""
        c = self.cfg
        return find_optimum(levels, c.slo, c.search.by, c.search.range_within, c.pricing.blend_input_per_output)

    # --- actions -------------------------------------------------------------------------------------

    def _current_c(self) -> int:
        # A change asked for but not yet seen as a level (fast repeated presses build on it).
        if self._target_c is not None and len(self.model.levels) <= self._target_c[1]:
            return self._target_c[0]
        return self.model.concurrency or 1

    def _set_c(self, c: int) -> None:
        if self.link is None:
            return
        current = self._current_c()
        if needs_confirming(current, c):  # a large jump asks first (screens/jump.py)
            self.push_screen(JumpScreen(current, c), lambda yes: self._send_c(c) if yes else None)
            return
        self._send_c(c)

    def _send_c(self, c: int) -> None:
        if self.link is None:
            return
        self._target_c = (c, len(self.model.levels))
        self.link.send(ev.SetConcurrency(c))
        self.notify(f"concurrency {c}: new level", timeout=2)

    def _open_loop_rate(self) -> float:
        lv = self.model.level
        return lv.rate_per_s if lv is not None else 0.0

    def _step_rate(self, up: bool) -> None:
        """Open loop: + and - change the arrival rate (a new level), as they change the slots otherwise."""
        if self.link is None:
            return
        rate = step_rate(self._open_loop_rate(), self.options.step, up)
        self.link.send(ev.SetRate(rate))
        self.notify(f"rate {rate:g} req/s: new level", timeout=2)

    def action_concurrency_up(self) -> None:
        if self._open_loop_rate() > 0:
            self._step_rate(up=True)
            return
        self._set_c(step_concurrency(self._current_c(), self.options.step, up=True))

    def action_concurrency_down(self) -> None:
        if self._open_loop_rate() > 0:
            self._step_rate(up=False)
            return
        c = self._current_c()
        new = step_concurrency(c, self.options.step, up=False)
        if new != c:
            self._set_c(new)
        else:
            self.notify(f"concurrency is already {c}, the least", timeout=2)

    def action_set_concurrency(self) -> None:
        def done(value: int | None) -> None:
            if value == self._current_c():  # Enter on the value shown: nothing to change (n opens a new level)
                self.notify(f"concurrency stays {value}", timeout=2)
            elif value is not None:
                self._set_c(value)
        self.push_screen(ConcurrencyScreen(self._current_c()), done)

    def action_pause(self) -> None:
        if self.link is None:
            return
        pause = not self.model.paused  # the run's state, as its events said: the same for every viewer
        self.link.send(ev.Pause() if pause else ev.Resume())
        self.notify("paused: no new requests (p to resume)" if pause else "resumed", timeout=3)

    def action_new_level(self) -> None:
        if self.link is not None:
            self.link.send(ev.NewLevel())
            self.notify(f"new level at c={self._current_c()}", timeout=2)

    def action_find_optimum(self) -> None:
        if self.link is None:
            return
        self.link.send(ev.FindOptimum())
        slo = ", ".join(t.text() for t in self.cfg.slo) or "no SLO"
        self.notify(f"searching for the cheapest concurrency ({slo}) from c={self.model.concurrency}", timeout=4)

    def action_save(self) -> None:
        if self.link is None:
            self.notify("nothing to save: fixed data", severity="warning")
            return
        self.link.send(ev.Save())  # the path comes back as an event; the notification says where

    def action_next_theme(self) -> None:
        names = self.theme_names
        i = names.index(self.theme) if self.theme in names else -1
        self.theme = names[(i + 1) % len(names)]
        if self.summaries is not None:
            self._show_summaries(self.summaries, force=True)  # the panels' colours come from the theme
        self.notify(f"theme {self.theme}", timeout=2)

    def action_window(self) -> None:
        i = WINDOWS_S.index(self.timeline.window_s) if self.timeline.window_s in WINDOWS_S else 0
        self.timeline.window_s = WINDOWS_S[(i + 1) % len(WINDOWS_S)]
        self.timeline.tick()

    def action_gpu_page(self) -> None:
        self.gpus.next_page()

    def action_zoom(self) -> None:
        """Fit the window to the level: a request (its E2E p90) spans a quarter of it, so its split at the
        first token is wide enough to read. Again: back to the window before."""
        if getattr(self, "_unzoomed_s", None) is not None:
            self.timeline.window_s, self._unzoomed_s = self._unzoomed_s, None
            self.timeline.tick()
            return
        e2e_s = (self.summaries.current if self.summaries else {}).get("e2e_s_p90")
        if not e2e_s:
            self.notify("no finished request at this level yet: nothing to fit the window to", timeout=3)
            return
        self._unzoomed_s = self.timeline.window_s
        self.timeline.window_s = round(min(max(2.0, 4 * e2e_s), WINDOWS_S[-1]), 1)  # bars older than the longest are dropped
        self.timeline.tick()

    def action_next_panel(self) -> None:
        self._panel = LOWER_PANELS[(LOWER_PANELS.index(self._panel) + 1) % len(LOWER_PANELS)]
        self._layout_for(self.size.width, self.size.height)

    def action_help(self) -> None:
        rows = []
        for b in self.BINDINGS:
            if b.action != "interrupt" and self.check_action(b.action, ()) is False:
                continue  # a key that does nothing at this size or in this state is not offered
            keys = ", ".join(self.get_key_display(Binding(k.strip(), b.action)) for k in b.key.split(","))
            rows.append((keys, self.DESCRIPTIONS.get(b.action, b.description), b.id or ""))
        self.push_screen(HelpScreen(rows))

    async def action_quit(self) -> None:
        if self.link is None or self.model.finished or self.model.link_closed:
            self.exit(EXIT_INTERRUPTED if self.interrupted else 0)
            return
        if self.quitting:
            self.notify("still saving… (the measured records are safe on disk)", timeout=3)
            return
        if not self.options.owns_run and not self.interrupted:
            self.push_screen(QuitScreen(), self._quit_answer)  # attached: the run is not only this viewer's
            return
        self._stop_run()

    def _quit_answer(self, answer: str | None) -> None:
        if answer == "stop":
            self._stop_run()
        elif answer == "detach":
            self.action_detach()

    def _stop_run(self) -> None:
        self.quitting = True
        self._quit_deadline = time.monotonic() + self.options.quit_timeout_s
        self.notify("stopping and saving…", timeout=10)
        self.link.send(ev.Stop("signal" if self.interrupted else "quit"))

    def action_detach(self) -> None:
        """Leave the run going; it saves as usual and can be attached to again."""
        if self.link is None:
            return
        self.detached = True
        self.link.close()
        self.exit(0)

    def action_interrupt(self) -> None:
        first = not self.interrupted or not self.quitting
        self.interrupted = True
        if first or self.link is None or self.model.finished:
            self.call_later(self.action_quit)
        else:
            self._exit_at_once()

    def _exit_at_once(self) -> None:
        """The second Ctrl-C: the run flushes its raw lines, writes its TOML and exits; so does this, now."""
        try:
            if self.link.send(ev.Stop("signal", at_once=True)):
                self.link.closed.wait(1.5)  # the run has flushed, saved and exited: its files are whole
        finally:
            self._restore_terminal()
            os._exit(EXIT_INTERRUPTED)

    _tty_poll = None

    def _terminal_gone(self) -> bool:
        """A terminal that hung up without a SIGHUP to say so — its SIGHUP ignored (nohup), or a pseudo-terminal
        that is not this process's controlling terminal: reads then return nothing, and Textual's input thread
        spins on them (a whole core) while the screen writes into nothing. poll() says POLLHUP."""
        if self.is_headless or not self.options.live:
            return False
        if self._tty_poll is None:
            fd = getattr(self._driver, "fileno", None)
            if not isinstance(fd, int):
                return False
            self._tty_poll = select.poll()
            self._tty_poll.register(fd, select.POLLIN)
        return any(e & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for _fd, e in self._tty_poll.poll(0))

    def _on_hangup(self, signum, frame) -> None:
        """The terminal is gone: tell the run what was chosen, exit without drawing (nothing can be written
        to a dead terminal, and Textual's shutdown would wait on it)."""
        if self.link is not None and self.options.owns_run and self.options.on_hangup == "stop":
            self.link.send(ev.Stop("signal"))
        os._exit(EXIT_HANGUP)

    def _restore_terminal(self) -> None:
        # os._exit skips Textual's clean-up: put the terminal back (cooked mode, main screen, no mouse).
        driver = self._driver
        try:
            import termios

            if getattr(driver, "attrs_before", None) is not None:
                termios.tcsetattr(driver.fileno, termios.TCSANOW, driver.attrs_before)
            os.write(driver.fileno, b"\x1b[<u\x1b[?1049l\x1b[?25h\x1b[?1004l\x1b[?1000l\x1b[?1003l"
                                    b"\x1b[?1015l\x1b[?1006l\x1b[?2004l\n")
        except Exception:  # noqa: BLE001 — no terminal left (SIGHUP): nothing to restore
            pass

    def get_system_commands(self, screen: Screen):
        """Ours first (every key's action, by name), then Textual's that add something (the theme picker, a
        screenshot) — not its Quit and Keys, which would stand beside ours with other meanings."""
        for b in self.BINDINGS:
            if b.action == "interrupt" or self.check_action(b.action, ()) is not True:
                continue
            yield SystemCommand(self.DESCRIPTIONS[b.action].split(":")[0].split(" (")[0],
                                f"{self.DESCRIPTIONS[b.action]} [{b.key.split(',')[0]}]",
                                lambda action=b.action: self.run_action(action))
        for command in super().get_system_commands(screen):
            if command.title not in ("Quit", "Keys", "Maximize", "Minimize"):
                yield command

    # exposed for tests
    def registered_theme(self, name: str) -> Theme | None:
        return self.available_themes.get(name)
