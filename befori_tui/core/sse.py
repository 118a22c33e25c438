"""Incremental Server-Sent Events parsing, bytes in, event data out.

Survives events split across reads (even inside a line or between the CR and LF of a CRLF), CRLF, LF or bare
CR line ends (all three are line ends in the SSE spec), `event:` / `id:` / `retry:` lines, keep-alive comments
(`: ping`), multi-line data (joined with "\\n", as the SSE spec says) and a stream that ends without a
blank line. The buffer is bounded: a line longer than `max_line_bytes` is a protocol error, so one
enormous line cannot eat the client's memory.
"""

from __future__ import annotations


class SSEError(Exception):
    """The bytes are not a usable event stream."""


class SSEParser:
    __slots__ = ("_buf", "_data", "_skip_lf", "max_line_bytes")

    def __init__(self, max_line_bytes: int = 4 << 20) -> None:
        self._buf = b""
        self._data: list[bytes] = []
        self._skip_lf = False  # the last read ended in CR: an LF that starts the next one is its CRLF's
        self.max_line_bytes = max_line_bytes

    def feed(self, chunk: bytes) -> list[bytes]:
        """Add bytes; return the data of every event completed by them, in order."""
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:
            # CR is a line end now, not when the next read shows whether an LF follows: no event waits a read.
            self._skip_lf = buf.endswith(b"\r")
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        events: list[bytes] = []
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            line = buf[start:nl]
            start = nl + 1
            if not line:  # blank line: the event is complete
                if self._data:
                    events.append(b"\n".join(self._data))
                    self._data = []
                continue
            if line.startswith(b"data:"):
                value = line[5:]
                if value.startswith(b" "):
                    value = value[1:]
                self._data.append(value)
            elif line == b"data":  # a field name alone: the field with an empty value
                self._data.append(b"")
            # Comments (":…") and the fields event/id/retry carry nothing we use.
        rest = buf[start:]
        if len(rest) > self.max_line_bytes:
            self._buf = b""
            raise SSEError(f"an SSE line exceeded {self.max_line_bytes} bytes")
        self._buf = rest
        return events

    def finish(self) -> list[bytes]:
        """The stream ended: return an event left without its closing blank line, if any."""
        events = self.feed(b"\n\n") if self._buf else []
        if self._data:
            events.append(b"\n".join(self._data))
            self._data = []
        return events
