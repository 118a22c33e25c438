"""The help screen: every key (from the app's bindings, so remapped keys show as they are) and how to read
the screen."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

# One line per paragraph: the screen wraps them to its width.
READING = "\n\n".join([
    "Slots: one row per slot; each request is a bar split at its first token. Light shade before it (prefill, "
    "billed to input tokens), dark shade after it (decode, billed to output tokens), blank when the slot is "
    "idle, × when the request failed. A cell that holds a first token always shows at least an eighth of "
    "light (▏), however short the prefill: z zooms the window to four requests' length to see the split.",
    "Header: the current level's $/M input and output (befori method), each ± its 95% interval, its mark, "
    "the concurrency; below, the blended price beside the first API price and what the hourly price rests on.",
    "Cost: the befori method (Ori's: throughput from mean TTFT and decode time) with its 95% interval, and the "
    "occupancy method (the server's time shared among the requests in flight; idle time on its own).",
    "Marks: ✓ both befori $/M intervals are within ±3% (settled: time to move on) · ~ still settling (the interval is wider than ±3%) · — not "
    "enough requests yet.",
    "Words: T_in/s and T_out/s are the befori method's rates, R × mean tokens / mean TTFT (input) or / mean "
    "decode time (output): what it bills, not the tokens/s served (Metrics). occ: $/M by the occupancy method. "
    "blend 3:1: one price for a workload of 3 input tokens per output token (pricing.blend_input_per_output). "
    "meas/fail: requests in the figures (ok, not warm-up, not outlived) / failed requests. client-bound: the "
    "load loop itself ran late (lag p99 over 5 ms, over this level's last minute, once it has 20 s of samples), so the "
    "client may be adding time to what it measures.",
    "Ctrl+P opens the command palette: every key's action by name.",
])


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark,f1", "dismiss", "close", id="help.close")]

    def __init__(self, bindings: list[tuple[str, str, str]]) -> None:
        super().__init__()
        self.rows = bindings

    def compose(self) -> ComposeResult:
        keys = Table(box=None, padding=(0, 2), show_header=True, header_style="bold")
        keys.add_column("key")
        keys.add_column("does")
        keys.add_column("id", style="dim")
        for key, text, binding_id in self.rows:
            keys.add_row(key, text, binding_id)
        with VerticalScroll(id="help-body") as body:
            body.border_title = "befori-tui · keys"
            body.border_subtitle = "esc to close"
            yield Static(keys)
            yield Static(Text(READING), id="help-reading")
