"""The seam between the load loop and whatever displays it (docs/architecture.md).

Observers are called from the load loop's own thread and event loop. They must return quickly: the
headless printer writes a line now and then, the TUI only puts events on a queue it drains on a timer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from befori_tui.core.loadgen import Level
    from befori_tui.core.records import RequestRecord


class RunObserver(Protocol):
    def on_request_start(self, record: RequestRecord) -> None: ...
    def on_first_token(self, record: RequestRecord) -> None: ...
    def on_record(self, record: RequestRecord) -> None: ...
    def on_level_change(self, old: Level | None, new: Level) -> None: ...
    def on_level_end(self, level: Level) -> None: ...
    def on_sample(self, sample: Any) -> None: ...
    def on_finish(self) -> None: ...


class NullObserver:
    """Does nothing; subclass and override what you need."""

    def on_request_start(self, record: RequestRecord) -> None:
        pass

    def on_first_token(self, record: RequestRecord) -> None:
        pass

    def on_record(self, record: RequestRecord) -> None:
        pass

    def on_level_change(self, old: Level | None, new: Level) -> None:
        pass

    def on_level_end(self, level: Level) -> None:
        """A paused level has drained and ended without a new one beginning."""

    def on_drain(self, level: Level) -> None:
        """The level's drain changed: `level.draining` requests of removed slots are still in flight (0: the
        drain ended at `level.t_drained_ns`)."""

    def on_sample(self, sample: Any) -> None:
        pass

    def on_finish(self) -> None:
        pass


class FanOut(NullObserver):
    """Calls several observers in order."""

    def __init__(self, *observers: Any) -> None:
        self.observers = [o for o in observers if o is not None]

    def on_request_start(self, record: RequestRecord) -> None:
        for o in self.observers:
            o.on_request_start(record)

    def on_first_token(self, record: RequestRecord) -> None:
        for o in self.observers:
            o.on_first_token(record)

    def on_record(self, record: RequestRecord) -> None:
        for o in self.observers:
            o.on_record(record)

    def on_level_change(self, old: Level | None, new: Level) -> None:
        for o in self.observers:
            o.on_level_change(old, new)

    def on_level_end(self, level: Level) -> None:
        for o in self.observers:
            getattr(o, "on_level_end", lambda _level: None)(level)

    def on_drain(self, level: Level) -> None:
        for o in self.observers:
            getattr(o, "on_drain", lambda _level: None)(level)

    def on_sample(self, sample: Any) -> None:
        for o in self.observers:
            o.on_sample(sample)

    def on_finish(self) -> None:
        for o in self.observers:
            o.on_finish()
