"""A large jump in concurrency asks first: c to more than JUMP_CONFIRM_FACTOR × the current value can swamp a
server (and a mistyped 2560 for 256 is easy)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label

JUMP_CONFIRM_FACTOR = 4


def needs_confirming(current: int, new: int) -> bool:
    return current > 0 and new > JUMP_CONFIRM_FACTOR * current


class JumpScreen(ModalScreen[bool]):
    DEFAULT_CSS = """
    #jump-dialog {
        width: 60;
        height: auto;
        border: round $warning;
        border-title-color: $warning;
        background: $surface;
        padding: 0 1;
    }
    """
    BINDINGS = [
        Binding("y,enter", "answer(True)", "go to the new concurrency", id="jump.yes"),
        Binding("escape,n", "answer(False)", "cancel", id="jump.cancel"),
    ]

    def __init__(self, current: int, new: int) -> None:
        super().__init__()
        self.current, self.new = current, new

    def compose(self) -> ComposeResult:
        with Vertical(id="jump-dialog") as box:
            box.border_title = "large jump"
            yield Label(f"c={self.current} → c={self.new}: {self.new / self.current:.0f}× the load at once. "
                        "y/enter: go · esc/n: cancel")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)
