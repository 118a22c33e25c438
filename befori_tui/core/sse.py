"""Incremental Server-Sent Events parsing, bytes in, event data out.

Survives events split across reads (even inside a line), CRLF or LF line ends, keep-alive comments
(`: ping`), multi-line data (joined with "\\n", as the SSE spec says) and a stream that ends without a
blank line. The buffer is bounded: a line longer than `max_line_bytes` is a protocol error, so one
enormous line cannot eat the client's memory.
"""

from __future__ import annotations


class SSEError(Exception):
    """The bytes are not a usable event stream."""


class SSEParser:
    __slots__ = ("_buf", "_data", "max_line_bytes")

    def __init__(self, max_line_bytes: int = 4 << 20) -> None:
        self._buf = b""
        self._data: list[bytes] = []
        self.max_line_bytes = max_line_bytes

    def feed(self, chunk: bytes) -> list[bytes]:
        """Add bytes; return the data of every event completed by them, in order."""
        buf = self._buf + chunk if self._buf else chunk
        events: list[bytes] = []
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            line = buf[start:nl]
            start = nl + 1
            if line.endswith(b"\r"):
                line = line[:-1]
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
