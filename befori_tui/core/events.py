"""What a run tells whoever watches it, and what a viewer may ask of it: typed, versioned messages.

A run (core/controller.py) turns what the load loop does into the events below; they travel in `Batch`es —
a few a second, never one per token — over a Unix socket (core/runserver.py) to every viewer
(core/runlink.py). Viewers send `Command`s back on the same socket. docs/architecture.md describes the flow.

Encoding: msgpack through msgspec. Every message is a frozen `msgspec.Struct` (a frozen dataclass with a
compact, validated wire form): `array_like`, so a message is `[tag, field, field, …]`. Compatible changes
append fields with defaults at the end; anything else raises SCHEMA_VERSION, which `Hello` carries first on
every connection. Frames are a 4-byte big-endian length and that many bytes of msgpack.

Times are `time.perf_counter_ns()` of the process that took them (CLOCK_MONOTONIC). A viewer never assumes
it shares that clock: each batch carries its sender's clock when sent (`Batch.sent_ns`), from which the
viewer estimates the offset (`ClockOffset`).
"""

from __future__ import annotations

import asyncio
import socket
import struct
from array import array
from typing import Any, Union

import msgspec

from befori_tui.core.config import PricingConfig
from befori_tui.core.records import RequestRecord
from befori_tui.core.telemetry.readings import TelemetrySample

SCHEMA_VERSION = 3  # 2: a viewer that attaches gets levels as LevelState, not one RequestEnded per request;
#                    3: the command ScreenReady
MAX_FRAME_BYTES = 64 * 1024 * 1024  # a bigger length prefix means a broken or hostile peer


class _Message(msgspec.Struct, frozen=True, array_like=True, tag_field="kind"):
    pass


# --- the wire form of one finished request ---------------------------------------------------------------

class WireRecord(msgspec.Struct, frozen=True, array_like=True):
    """RequestRecord on the wire: the same fields, the inter-token gaps as packed int64 bytes."""

    request_id: int
    slot: int
    level: int
    concurrency: int
    t_send_ns: int
    t_headers_ns: int | None
    t_first_token_ns: int | None
    t_end_ns: int | None
    itl_ns: bytes
    input_tokens: int | None
    input_tokens_source: str
    output_tokens: int | None
    output_tokens_source: str
    content_chunks: int
    finish_reason: str | None
    http_status: int | None
    error_kind: str | None
    error_message: str | None
    warmup: bool
    outlived_level: bool
    server_timing: dict[str, Any] | None
    turn: int = 0


def record_to_wire(r: RequestRecord, slot: int | None = None, concurrency: int | None = None) -> WireRecord:
    """`slot`, `concurrency`: the run's numbering, when a load process's own differs (core/worker.py)."""
    return WireRecord(r.request_id, r.slot if slot is None else slot, r.level,
                      r.concurrency if concurrency is None else concurrency, r.t_send_ns, r.t_headers_ns,
                      r.t_first_token_ns, r.t_end_ns, r.itl_ns.tobytes(), r.input_tokens, r.input_tokens_source,
                      r.output_tokens, r.output_tokens_source, r.content_chunks, r.finish_reason, r.http_status,
                      r.error_kind, r.error_message, r.warmup, r.outlived_level, r.server_timing, r.turn)


def record_from_wire(w: WireRecord) -> RequestRecord:
    itl = array("q")
    itl.frombytes(w.itl_ns)
    return RequestRecord(w.request_id, w.slot, w.level, w.concurrency, w.t_send_ns, w.t_headers_ns,
                         w.t_first_token_ns, w.t_end_ns, itl, w.input_tokens, w.input_tokens_source,
                         w.output_tokens, w.output_tokens_source, w.content_chunks, w.finish_reason,
                         w.http_status, w.error_kind, w.error_message, w.warmup, w.outlived_level,
                         w.server_timing, w.turn)


# --- events: run → viewers -------------------------------------------------------------------------------

class Hello(_Message, tag="hello"):
    """First on every connection. `results` and `raw` are the paths the run saves to."""

    schema_version: int
    run_id: str
    pid: int
    results: str
    raw: str
    started_at: str  # ISO 8601, UTC
    on_hangup: str = "continue"  # what the run does when its own viewer's terminal goes away
    # The run's prices: every viewer computes $/M with them, never with its own defaults.
    pricing: PricingConfig = msgspec.field(default_factory=PricingConfig)
    # The run's latency targets (core.slo, as `--slo` takes them): an attached viewer judges levels by them.
    slo: str = ""


class Connecting(_Message, tag="connecting"):
    """Setup under way: what is being waited for (the server's model list, /tokenize, …)."""

    what: str
    url: str


class Ready(_Message, tag="ready"):
    url: str
    model: str
    api: str
    prompt_count_source: str
    simulated: bool = False
    # What carries the load when not a plain connection: proxy (no credentials), TLS not verified, header names.
    wire: str = ""
    # Who sends it: a load process says its host and process id (the raw records name it, docs/results.md).
    host: str = ""
    pid: int = 0


class RequestStarted(_Message, tag="start"):
    request_id: int
    slot: int
    level: int
    t_send_ns: int


class FirstToken(_Message, tag="first"):
    request_id: int
    slot: int
    t_first_token_ns: int


class RequestEnded(_Message, tag="end"):
    record: WireRecord


class LevelOpened(_Message, tag="level"):
    index: int
    concurrency: int
    t_start_ns: int
    warmup_target: int
    reason: str  # start | sweep | user | new | resume
    rate_per_s: float = 0.0  # open loop: the arrival rate (then `concurrency` is the cap in flight)


class LevelEnded(_Message, tag="level_end"):
    """A paused level drained and ended, with no new level after it (yet)."""

    index: int
    t_end_ns: int


class Draining(_Message, tag="draining"):
    """After a decrease, the level `level` drains: `in_flight` requests of removed slots are still on the
    server. Sent when it begins and as it shrinks; 0 at `t_ns` (the run's clock) ends it — the level's steady
    figures start there."""

    level: int
    in_flight: int
    t_ns: int


class Paused(_Message, tag="paused"):
    """The run paused (by: "sweep" when a sweep finished and waits, "user" when a viewer asked)."""

    by: str


class Resumed(_Message, tag="resumed"):
    pass


class Sample(_Message, tag="sample"):
    sample: TelemetrySample


class WorkerHealth(msgspec.Struct, frozen=True, array_like=True):
    """One load process's health: its loop's lag p99 over the same span as Health's, its CPU (100 = one core)
    over the last 10 s."""

    worker: str  # host:pid
    loop_lag_ms_p99: float | None
    cpu_pct: float | None
    alive: bool = True


class Health(_Message, tag="health"):
    """The load loop's own lag: its p99 over the current level (less its first second) and at most the last
    minute, once it holds 200 samples (core/health.py, LIVE_WINDOW_S) — whether the client, not the server, is
    the limit.
    With several load processes (local or on a Ray cluster), each one's lag and CPU too."""

    loop_lag_ms_p99: float | None
    workers: list[WorkerHealth] = msgspec.field(default_factory=list)


class LevelState(_Message, tag="level_state"):
    """For a viewer that attaches: a level's finished requests as the run holds them (core/levelstats.py:
    columns, aggregates and sketches; msgpack), instead of one RequestEnded per request since the start."""

    index: int
    sent: int
    measured_done: int
    state: bytes


class LedgerState(_Message, tag="ledger_state"):
    """For a viewer that attaches: the run's occupancy ledger as it stands (core/ledger.py; msgpack)."""

    state: bytes


class Saved(_Message, tag="saved"):
    path: str
    raw_path: str
    requests_written: int


class SweepNote(_Message, tag="sweep"):
    text: str


class Note(_Message, tag="note"):
    text: str
    severity: str = "warning"  # information | warning | error


class Failed(_Message, tag="error"):
    """Setup failed, or the run broke: `text` is the one-line reason."""

    text: str


class Finished(_Message, tag="finish"):
    """The run has stopped, closed and saved: nothing follows."""

    ended_by: str  # completed | max_seconds | signal | quit | hangup | error | setup
    exit_code: int


class LagSamples(_Message, tag="lag"):
    """A load process's loop-lag probes since its last batch: (time, lag) pairs, its own clock. Only between
    load processes and the run; viewers get `Health`."""

    t_ns: list[int]
    lag_ns: list[int]
    # The process's CPU time so far (all its threads) and when it was read, its own clock: the run turns two
    # of these into a CPU share.
    cpu_t_ns: int = 0
    cpu_ns: int = 0


Event = Union[Hello, Connecting, Ready, RequestStarted, FirstToken, RequestEnded, LevelOpened, LevelEnded,
              Draining, Paused, Resumed, Sample, Health, Saved, SweepNote, Note, Failed, Finished, LagSamples,
              LevelState, LedgerState]


class Batch(msgspec.Struct, frozen=True, array_like=True):
    """What one frame from a run holds: the events since the last batch, in order."""

    sent_ns: int  # the sender's perf_counter_ns when it sent this batch
    events: list[Event]


# --- commands: viewer → run ------------------------------------------------------------------------------

class SetConcurrency(_Message, tag="set_concurrency"):
    concurrency: int


class NewLevel(_Message, tag="new_level"):
    pass


class Pause(_Message, tag="pause"):
    pass


class Resume(_Message, tag="resume"):
    pass


class Save(_Message, tag="save"):
    pass


class Stop(_Message, tag="stop"):
    """Stop the run, save, end. `ended_by`: quit | signal | hangup | error. `at_once`: no draining and no
    waiting — flush the raw lines, write the TOML, exit (a second Ctrl-C)."""

    ended_by: str = "quit"
    at_once: bool = False


class SetRate(_Message, tag="set_rate"):
    """Open loop: a new level at this arrival rate (requests per second)."""

    rate_per_s: float


class FindOptimum(_Message, tag="find_optimum"):
    """Search for the cheapest concurrency that meets the run's SLO, from the current level (core/search.py)."""

    pass


class ScreenReady(_Message, tag="screen_ready"):
    """The monitor's viewer has drawn its first screen: a run told to wait for it (RunSpec.wait_for_screen_s)
    may send its first requests."""

    pass


Command = Union[SetConcurrency, NewLevel, Pause, Resume, Save, Stop, FindOptimum, SetRate, ScreenReady]


# --- the run → its load processes (core/pool.py, core/worker.py) -------------------------------------------

class OpenLevel(_Message, tag="open_level"):
    """A new level: this load process's slots in it (the run's slot number of each of its local slots, in
    order; none is allowed), the level's whole concurrency (for the records) and this process's share of
    the level's warm-up."""

    index: int
    slots: list[int]
    concurrency: int
    warmup_target: int
    reason: str
    cancel_removed: bool = False  # the slots it no longer has: cancel their requests (load.on_decrease)


class WorkerStop(_Message, tag="worker_stop"):
    drain_s: float = 0.0


WorkerCommand = Union[OpenLevel, Pause, Resume, WorkerStop]


# --- encoding and framing --------------------------------------------------------------------------------

_batch_encoder = msgspec.msgpack.Encoder()
_batch_decoder = msgspec.msgpack.Decoder(Batch)
_command_decoder = msgspec.msgpack.Decoder(Command)
_worker_command_decoder = msgspec.msgpack.Decoder(WorkerCommand)
_LENGTH = struct.Struct(">I")


class ProtocolError(Exception):
    """A frame that is not what the schema says (a bad peer, or another schema version)."""


def frame(payload: bytes) -> bytes:
    return _LENGTH.pack(len(payload)) + payload


def encode_batch(sent_ns: int, events: list) -> bytes:
    return frame(_batch_encoder.encode(Batch(sent_ns, events)))


def encode_command(command: Any) -> bytes:
    return frame(_batch_encoder.encode(command))


def decode_batch(payload: bytes) -> Batch:
    try:
        return _batch_decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"not a batch of schema {SCHEMA_VERSION}: {exc}") from None


def decode_command(payload: bytes) -> Any:
    try:
        return _command_decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"not a command of schema {SCHEMA_VERSION}: {exc}") from None


def decode_worker_command(payload: bytes) -> Any:
    try:
        return _worker_command_decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"not a load-process command of schema {SCHEMA_VERSION}: {exc}") from None


async def read_frame_async(reader) -> bytes | None:
    """One frame from an asyncio StreamReader; None at a clean end of stream."""
    try:
        head = await reader.readexactly(_LENGTH.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise ProtocolError("the stream ended inside a frame") from None
        return None
    (n,) = _LENGTH.unpack(head)
    if n > MAX_FRAME_BYTES:
        raise ProtocolError(f"a frame of {n} bytes is over the limit of {MAX_FRAME_BYTES}")
    try:
        return await reader.readexactly(n)
    except asyncio.IncompleteReadError:
        raise ProtocolError("the stream ended inside a frame") from None


def read_frame(sock: socket.socket) -> bytes | None:
    """One frame from a blocking socket; None at a clean end of stream."""
    head = _recv_exactly(sock, _LENGTH.size)
    if head is None:
        return None
    (n,) = _LENGTH.unpack(head)
    if n > MAX_FRAME_BYTES:
        raise ProtocolError(f"a frame of {n} bytes is over the limit of {MAX_FRAME_BYTES}")
    body = _recv_exactly(sock, n)
    if body is None:
        raise ProtocolError("the stream ended inside a frame")
    return body


def _recv_exactly(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            if buf:
                raise ProtocolError("the stream ended inside a frame")
            return None
        buf += chunk
    return bytes(buf)


class ClockOffset:
    """Maps a sender's perf_counter_ns onto ours: offset = min over batches of (received − sent). The minimum
    is the batch that waited least in transit, so the estimate only gets better; on one machine it is the
    socket's latency (tens of µs), across machines it absorbs the clocks' difference."""

    def __init__(self) -> None:
        self.offset_ns: int | None = None

    def observe(self, sent_ns: int, received_ns: int) -> None:
        d = received_ns - sent_ns
        if self.offset_ns is None or d < self.offset_ns:
            self.offset_ns = d
