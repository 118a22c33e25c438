"""A viewer's end of a run's socket: events in (on a queue, decoded on a thread of their own), commands out.

No Textual here: the monitor reads `events` on its frame timer, a test reads it directly.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import threading
import time
from pathlib import Path
from typing import Any

from befori_tui.core import events as ev
from befori_tui.core.runserver import runs_dir


class LinkClosed:
    """Put on the queue when the run's socket closes (the run ended, or went away). `reason`: why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"LinkClosed({self.reason!r})"


class AttachError(Exception):
    """No run to attach to, or the socket is not a run's. The message is one line for the user."""


class RunLink:
    def __init__(self, socket_path: str | os.PathLike[str]) -> None:
        self.socket_path = Path(socket_path)
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.hello: ev.Hello | None = None
        self.clock_offset = ev.ClockOffset()
        self.closed = threading.Event()
        self.close_reason = ""
        self._sock: socket.socket | None = None
        self._send_lock = threading.Lock()
        self._reader: threading.Thread | None = None

    def connect(self, timeout_s: float = 5.0) -> ev.Hello:
        """Connect and read the run's Hello; AttachError when there is no run there."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout_s)
        try:
            sock.connect(str(self.socket_path))
            payload = ev.read_frame(sock)
            batch = ev.decode_batch(payload) if payload is not None else None
        except (OSError, ev.ProtocolError) as exc:
            sock.close()
            raise AttachError(f"{self.socket_path}: no run answers there ({exc})") from None
        if batch is None or not batch.events or not isinstance(batch.events[0], ev.Hello):
            sock.close()
            raise AttachError(f"{self.socket_path}: not a befori-tui run")
        hello = batch.events[0]
        if hello.schema_version != ev.SCHEMA_VERSION:
            sock.close()
            raise AttachError(f"{self.socket_path}: the run speaks event schema {hello.schema_version}, "
                              f"this befori-tui {ev.SCHEMA_VERSION}")
        sock.settimeout(None)
        self._sock = sock
        self.hello = hello
        self.clock_offset.observe(batch.sent_ns, time.perf_counter_ns())
        self._reader = threading.Thread(target=self._read, name="befori-link", daemon=True)
        self._reader.start()
        return hello

    def _read(self) -> None:
        reason = "the run ended"
        try:
            while True:
                payload = ev.read_frame(self._sock)
                if payload is None:
                    break
                batch = ev.decode_batch(payload)
                self.clock_offset.observe(batch.sent_ns, time.perf_counter_ns())
                for event in batch.events:
                    self.events.put(event)
        except ev.ProtocolError as exc:
            reason = f"bad data from the run: {exc}"
        except OSError as exc:
            reason = f"the connection broke ({exc.strerror or exc})"
        self.close_reason = reason
        self.closed.set()
        self.events.put(LinkClosed(reason))

    def clock(self) -> int:
        """Now, on the run's clock."""
        return time.perf_counter_ns() - (self.clock_offset.offset_ns or 0)

    def send(self, command: Any) -> bool:
        """Send a command; False when the run is gone."""
        sock = self._sock
        if sock is None or self.closed.is_set():
            return False
        try:
            with self._send_lock:
                sock.sendall(ev.encode_command(command))
            return True
        except OSError:
            return False

    def close(self) -> None:
        """Leave: the run goes on."""
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


# --- finding runs ------------------------------------------------------------------------------------------

def _answers(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


def find_runs(where: Path | None = None) -> list[dict]:
    """Runs that answer: sockets in `where` (default ./befori-results) and those listed in the runtime folder.
    Each: {"socket", "results", "pid", "started_at"} (the last three when known)."""
    found: dict[str, dict] = {}
    folder = where if where is not None else Path("befori-results")
    if folder.is_dir():
        for sock in sorted(folder.glob("*.sock")):
            found[str(sock.absolute())] = {"socket": str(sock.absolute()), "results": str(sock.with_suffix(".toml"))}
    for info in _listed():
        if where is not None and Path(info.get("socket", "")).parent != where.absolute():
            continue
        found.setdefault(str(info.get("socket")), {}).update(info)
    runs = [r for r in found.values() if r.get("socket") and _answers(Path(r["socket"]))]
    for info in _listed():  # entries of runs that are gone (a killed run leaves its entry): tidy them away
        if not _answers(Path(info.get("socket", ""))) and not _pid_alive(info.get("pid")):
            (runs_dir() / f"{info.get('run_id')}.json").unlink(missing_ok=True)
    return sorted(runs, key=lambda r: r.get("started_at", ""))


def _pid_alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def resolve_target(target: str | None) -> list[dict]:
    """`attach`'s argument: a socket, a results TOML (its .sock beside it), a folder, or nothing."""
    if target is None:
        return find_runs()
    p = Path(target)
    if p.is_dir():
        return find_runs(p)
    if p.suffix == ".toml" and not p.with_suffix(".sock").exists():
        # A results path too long for a socket beside it: the run listed itself in the runtime folder.
        results = str(p.absolute())
        return [r for r in _listed() if r.get("results") == results and _answers(Path(r["socket"]))]
    if p.suffix == ".toml":
        p = p.with_suffix(".sock")
    if not p.exists():
        raise AttachError(f"{target}: no such socket, results file or folder")
    return [{"socket": str(p)}] if _answers(p) else []


def _listed() -> list[dict]:
    out = []
    try:
        for entry in runs_dir().glob("*.json"):
            try:
                out.append(json.loads(entry.read_text()))
            except (OSError, ValueError):
                continue
    except OSError:
        pass
    return out
