"""q in an attached viewer: the run is not only this viewer's, so ask — stop it, or leave it going."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label


class QuitScreen(ModalScreen[str | None]):
    BINDINGS = [
        Binding("y", "answer('stop')", "stop the run", id="quit.stop"),
        Binding("d", "answer('detach')", "detach", id="quit.detach"),
        Binding("escape,n", "answer(None)", "cancel", id="quit.cancel"),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(id="quit-dialog") as box:
            box.border_title = "quit"
            yield Label("Stop the run for everyone and save?  y: stop · d: detach, the run goes on · esc: cancel")

    def action_answer(self, answer: str | None) -> None:
        self.dismiss(answer)
