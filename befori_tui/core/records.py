"""What one request was, as measured by the client (docs/results.md, "Raw records")."""

from __future__ import annotations

import dataclasses
from array import array
from dataclasses import dataclass, field
from typing import Any

# Error kinds stored in RequestRecord.error_kind; never raised out of the load loop.
# "lost": in flight in a load process that died; its outcome is unknown.
# "no_reply": the server closed the connection after the request was sent and before any reply; the request
# is not sent again (it may have been read: RFC 9112 §9.3.1), the slot goes on.
ERROR_KINDS = ("connect", "timeout", "http_status", "protocol", "cancelled", "lost", "no_reply")

# Where a token count came from: the server's `usage`, its /tokenize, llama.cpp's `timings` block (output
# only), or an estimate (characters, or content chunks for output).
COUNT_SOURCES = ("usage", "tokenize", "timings", "estimate")


@dataclass(slots=True)
class RequestRecord:
    """One request. Times are `time.perf_counter_ns()` taken in the loop that reads the stream."""

    request_id: int
    slot: int
    level: int
    concurrency: int
    t_send_ns: int = 0
    t_headers_ns: int | None = None
    t_first_token_ns: int | None = None
    t_end_ns: int | None = None
    # Gaps between consecutive content chunks after the first, in ns (the first token's latency is not an ITL).
    # array('q'), not a list: 8 bytes a gap instead of ~36, and every finished record stays in memory for the
    # percentiles (a 20-minute soak at 64 slots kept 34k records).
    itl_ns: array = field(default_factory=lambda: array("q"))
    input_tokens: int | None = None
    input_tokens_source: str = "estimate"
    output_tokens: int | None = None
    output_tokens_source: str = "estimate"
    content_chunks: int = 0
    finish_reason: str | None = None
    http_status: int | None = None
    error_kind: str | None = None
    error_message: str | None = None
    # True when the request was part of its level's warm-up, or was still running when its level ended:
    # recorded and counted, but kept out of steady-state figures.
    warmup: bool = False
    outlived_level: bool = False
    # Server-side ground truth (the simulator sends it); keys are the server's own.
    server_timing: dict[str, Any] | None = None
    # The turn's number in a conversation of several turns (1, 2, …); 0: a request on its own.
    turn: int = 0
    # Trace replay (--trace): the trace file's line this request came from (1-based); 0: not from a trace.
    trace_line: int = 0
    # The load process that sent it, {"host": …, "pid": …}, when the load ran in several (core/pool.py, or Ray
    # actors: core/raypool.py); None when the run carried the load itself. One dict shared by its records.
    worker: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.error_kind is None and self.t_end_ns is not None

    @property
    def steady(self) -> bool:
        return self.ok and not self.warmup and not self.outlived_level

    @property
    def ttft_s(self) -> float | None:
        if self.t_first_token_ns is None:
            return None
        return (self.t_first_token_ns - self.t_send_ns) / 1e9

    @property
    def e2e_s(self) -> float | None:
        if self.t_end_ns is None:
            return None
        return (self.t_end_ns - self.t_send_ns) / 1e9

    @property
    def tpot_s(self) -> float | None:
        """(E2E − TTFT) / (N_out − 1), for N_out > 1."""
        if self.t_first_token_ns is None or self.t_end_ns is None or not self.output_tokens:
            return None
        if self.output_tokens < 2:
            return None
        return (self.t_end_ns - self.t_first_token_ns) / 1e9 / (self.output_tokens - 1)

    def to_json_dict(self) -> dict[str, Any]:
        # Not dataclasses.asdict: its recursive copy cost ~43 µs per record (one per request, on the load loop);
        # the same dict built by hand costs ~1.3 µs. The fields are scalars, one list of ints and one flat dict.
        out = {name: getattr(self, name) for name in _FIELD_NAMES}
        out["itl_ns"] = list(self.itl_ns)
        if self.server_timing is not None:
            out["server_timing"] = dict(self.server_timing)
        if self.worker is not None:
            out["worker"] = dict(self.worker)
        return out

    @classmethod
    def from_json_dict(cls, data: dict[str, Any]) -> RequestRecord:
        kwargs = {k: v for k, v in data.items() if k in _FIELD_NAMES}
        kwargs["itl_ns"] = array("q", kwargs.get("itl_ns") or ())
        return cls(**kwargs)


_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(RequestRecord))
