from __future__ import annotations

import pytest

from befori_tui.core.sse import SSEError, SSEParser

STREAM = (
    b": keep-alive\n\n"
    b'data: {"a": 1}\r\n\r\n'
    b"event: message\nid: 7\ndata: line one\ndata: line two\n\n"
    b"data:no-space\n\n"
    b"retry: 100\n\n"
    b"data: [DONE]\n\n"
)
EXPECTED = [b'{"a": 1}', b"line one\nline two", b"no-space", b"[DONE]"]


def test_whole_stream():
    p = SSEParser()
    assert p.feed(STREAM) + p.finish() == EXPECTED


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 13])
def test_split_across_reads_anywhere(size):
    p = SSEParser()
    out = []
    for i in range(0, len(STREAM), size):
        out += p.feed(STREAM[i:i + size])
    assert out + p.finish() == EXPECTED


def test_missing_final_blank_line_and_done():
    p = SSEParser()
    assert p.feed(b'data: {"x": 1}\n\ndata: {"y": 2}') == [b'{"x": 1}']
    assert p.finish() == [b'{"y": 2}']
    assert p.finish() == []


def test_usage_only_chunk_is_an_event():
    p = SSEParser()
    assert p.feed(b'data: {"choices": [], "usage": {"completion_tokens": 3}}\n\n') == [
        b'{"choices": [], "usage": {"completion_tokens": 3}}'
    ]


def test_enormous_line_is_refused_not_buffered():
    p = SSEParser(max_line_bytes=1024)
    p.feed(b"data: " + b"x" * 1000)
    with pytest.raises(SSEError):
        p.feed(b"x" * 100)
    # The parser dropped its buffer, so memory stays bounded.
    assert len(p._buf) == 0
