"""A run's events on a Unix socket, for any number of viewers; their commands back to the run.

A thread of its own (with its own asyncio loop) takes the controller's pending events every
`batch_interval_s` (50 ms: two batches per frame at the monitor's 10 Hz), encodes them once and writes the
frame to every viewer. A viewer that connects gets `Hello`, then a snapshot of the run so far (built on the
run's loop, encoded here), then the live batches after it. A viewer that leaves changes nothing; one that
reads too slowly is dropped rather than let the run's memory grow (it may attach again).

The socket is private to its user: mode 0600, made so before it can be connected to. Beside it nothing is
listening on TCP. Runs are also listed in a per-user runtime folder (`runs_dir()`), so that
`befori-tui attach` finds a run from anywhere.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import socket
import struct
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from befori_tui.core import events as ev

SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes; longer paths go to the runtime folder
MAX_VIEWER_BACKLOG_BYTES = 64 * 1024 * 1024
SNAPSHOT_EVENTS_PER_BATCH = 2000


def runtime_dir() -> Path:
    """A folder only this user can enter: $XDG_RUNTIME_DIR/befori-tui, else <tmp>/befori-tui-<uid>."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    path = Path(base) / "befori-tui" if base and Path(base).is_dir() else \
        Path(tempfile.gettempdir()) / f"befori-tui-{os.getuid()}"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise PermissionError(f"{path} is not private to this user; remove it or set XDG_RUNTIME_DIR")
    return path


def runs_dir() -> Path:
    path = runtime_dir() / "runs"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def socket_path_for(results: Path, run_id: str) -> Path:
    """Beside the results (session-….sock), unless that path is too long for a Unix socket."""
    beside = results.with_suffix(".sock").absolute()
    if len(os.fsencode(str(beside))) <= SOCKET_PATH_MAX:
        return beside
    return runtime_dir() / f"{run_id}.sock"


def bind_private_socket(path: Path) -> socket.socket:
    """A listening Unix socket at `path`, mode 0600 from the start. A stale socket (its run is gone) is
    replaced; a live one is an error."""
    if path.exists() or path.is_symlink():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            path.unlink(missing_ok=True)
        else:
            raise FileExistsError(f"{path}: another run is listening there")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # the socket file is created by bind(): private before anyone can connect
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(16)
    sock.setblocking(False)
    return sock


@dataclass
class _Viewer:
    writer: asyncio.StreamWriter
    after_seq: int = -1  # events up to this number came in its snapshot
    backlog: list[tuple[int | None, Any]] | None = field(default_factory=list)  # until its snapshot is sent


class RunServer:
    """Serves one controller's events; `start()` binds and returns, `close()` waits for the last frames."""

    def __init__(self, controller, socket_path: Path, hello: ev.Hello, batch_interval_s: float = 0.05,
                 health_interval_s: float = 1.0) -> None:
        self.controller = controller
        self.socket_path = Path(socket_path)
        self.hello = hello
        self.batch_interval_s = batch_interval_s
        self.health_interval_s = health_interval_s
        self.viewers: list[_Viewer] = []
        self.viewers_seen = 0
        self._sock: socket.socket | None = None
        self._thread = threading.Thread(target=self._thread_main, name="befori-events", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = threading.Event()
        self._done = threading.Event()
        self._last_health_ns = 0
        self._registry: Path | None = None

    # --- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        self._sock = bind_private_socket(self.socket_path)
        self._register()
        self._thread.start()

    def close(self, timeout_s: float = 3.0) -> None:
        """Publish what is pending (the run's last events), let viewers read it, stop listening."""
        self._closing.set()
        if threading.current_thread() is not self._thread:  # on its own thread it cannot wait for itself
            self._done.wait(timeout_s)
        self._cleanup()

    def flush_now(self, timeout_s: float = 1.0) -> None:
        """From any thread: publish what is pending now and wait (at most timeout_s) until it is written."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if threading.current_thread() is self._thread:
            self._publish()  # a write on an idle socket goes out at once; there is no waiting on oneself
            return
        fut = asyncio.run_coroutine_threadsafe(self._flush_and_drain(), loop)
        try:
            fut.result(timeout_s)
        except (concurrent.futures.TimeoutError, RuntimeError):
            pass

    def _register(self) -> None:
        try:
            entry = {"socket": str(self.socket_path), "results": self.hello.results, "pid": self.hello.pid,
                     "run_id": self.hello.run_id, "started_at": self.hello.started_at}
            self._registry = runs_dir() / f"{self.hello.run_id}.json"
            self._registry.write_text(json.dumps(entry))
        except OSError:
            self._registry = None  # attach by path still works

    def _cleanup(self) -> None:
        for path in (self.socket_path, self._registry):
            if path is not None:
                try:
                    path.unlink(missing_ok=True)
                except OSError:
                    pass

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._serve())
        finally:
            self._done.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        server = await asyncio.start_unix_server(self._on_viewer, sock=self._sock)
        try:
            while True:
                finished = self.controller.finished.is_set() or self._closing.is_set()
                self._publish()
                if finished:
                    break
                await asyncio.sleep(self.batch_interval_s)
            await self._drain_all(2.0)
        finally:
            server.close()
            for v in list(self.viewers):
                v.writer.close()
            self._cleanup()

    async def _flush_and_drain(self) -> None:
        self._publish()
        await self._drain_all(1.0)

    async def _drain_all(self, timeout_s: float) -> None:
        writers = [v.writer for v in self.viewers]
        if writers:
            await asyncio.wait([asyncio.ensure_future(w.drain()) for w in writers], timeout=timeout_s)

    # --- publishing ----------------------------------------------------------------------------------------

    def _take_pending(self) -> list[tuple[int | None, Any]]:
        pending = self.controller.pending
        items = []
        while True:
            try:
                items.append(pending.popleft())
            except IndexError:
                break
        now = time.perf_counter_ns()
        if now - self._last_health_ns >= self.health_interval_s * 1e9:
            self._last_health_ns = now
            items.append((None, ev.Health(self.controller.loop_lag_ms_p99(), self.controller.worker_health())))
        return items

    def _publish(self) -> None:
        items = self._take_pending()
        if not items:
            return
        now = time.perf_counter_ns()
        last_seq = max((s for s, _ in items if s is not None), default=-1)
        whole: bytes | None = None
        for v in list(self.viewers):
            if v.backlog is not None:  # its snapshot is still being sent: keep the events for after it
                v.backlog.extend(items)
                continue
            if v.after_seq >= 0 and last_seq >= 0 and v.after_seq >= min(s for s, _ in items if s is not None):
                # Events emitted before its snapshot but still waiting here: the snapshot has them already.
                mine = [e for s, e in items if s is None or s > v.after_seq]
                if mine:
                    self._write(v, ev.encode_batch(now, mine))
                continue
            if whole is None:
                whole = ev.encode_batch(now, [e for _, e in items])
            self._write(v, whole)

    def _write(self, v: _Viewer, data: bytes) -> None:
        transport = v.writer.transport
        if transport.is_closing():
            self._drop(v)
            return
        if transport.get_write_buffer_size() > MAX_VIEWER_BACKLOG_BYTES:
            self._drop(v)  # it does not read: the run must not hold its backlog
            return
        v.writer.write(data)

    def _drop(self, v: _Viewer) -> None:
        if v in self.viewers:
            self.viewers.remove(v)
        v.writer.close()

    # --- a viewer --------------------------------------------------------------------------------------------

    async def _on_viewer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        v = _Viewer(writer)
        self.viewers.append(v)  # from now on, live events wait in its backlog
        self.viewers_seen += 1
        try:
            writer.write(ev.encode_batch(time.perf_counter_ns(), [self.hello]))
            seq, history = await self._snapshot()
            self._send_snapshot(v, history)
            later = [(s, e) for s, e in v.backlog or [] if s is None or s > seq]
            v.backlog, v.after_seq = None, seq
            if later:
                self._write(v, ev.encode_batch(time.perf_counter_ns(), [e for _, e in later]))
            await self._read_commands(reader)
        except (ConnectionError, asyncio.IncompleteReadError, ev.ProtocolError, OSError):
            pass
        except asyncio.CancelledError:
            pass  # the run is over and its loop is closing: nothing more to read
        finally:
            self._drop(v)

    async def _snapshot(self) -> tuple[int, list]:
        """The controller's snapshot, taken on the run's loop (where its state changes) when it runs."""
        c = self.controller
        loop = c.loop
        if loop is None or loop.is_closed() or c.finished.is_set():
            return c.snapshot()
        fut: concurrent.futures.Future = concurrent.futures.Future()

        def take() -> None:
            try:
                fut.set_result(c.snapshot())
            except BaseException as exc:  # noqa: BLE001
                fut.set_exception(exc)
        try:
            loop.call_soon_threadsafe(take)
        except RuntimeError:  # closed in between: nothing changes any more
            return c.snapshot()
        return await asyncio.wrap_future(fut)

    def _send_snapshot(self, v: _Viewer, history: list) -> None:
        events = [ev.RequestEnded(ev.record_to_wire(item[1])) if isinstance(item, tuple) else item
                  for item in history]
        for i in range(0, len(events), SNAPSHOT_EVENTS_PER_BATCH):
            v.writer.write(ev.encode_batch(time.perf_counter_ns(), events[i:i + SNAPSHOT_EVENTS_PER_BATCH]))

    async def _read_commands(self, reader: asyncio.StreamReader) -> None:
        length = struct.Struct(">I")
        while True:
            head = await reader.readexactly(length.size)
            (n,) = length.unpack(head)
            if n > ev.MAX_FRAME_BYTES:
                raise ev.ProtocolError("command frame too large")
            command = ev.decode_command(await reader.readexactly(n))
            self.controller.submit(command)
