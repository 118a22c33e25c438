"""Type an exact concurrency."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label

MAX_CONCURRENCY = 4096


class ConcurrencyScreen(ModalScreen[int | None]):
    BINDINGS = [Binding("escape", "cancel", "cancel", id="concurrency.cancel")]

    def __init__(self, current: int) -> None:
        super().__init__()
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(id="concurrency-dialog") as box:
            box.border_title = "concurrency"
            yield Label(f"now {self.current} · 1 to {MAX_CONCURRENCY} · enter to apply, esc to cancel")
            yield Input(str(self.current), type="integer", id="concurrency-input")
            yield Label("", id="concurrency-error")

    def on_mount(self) -> None:
        inp = self.query_one(Input)
        inp.focus()
        inp.select_all()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        try:
            value = int(event.value)
        except ValueError:
            value = 0
        if not 1 <= value <= MAX_CONCURRENCY:
            self.query_one("#concurrency-error", Label).update(f"not a concurrency: {event.value!r}")
            return
        self.dismiss(value)

    def action_cancel(self) -> None:
        self.dismiss(None)
