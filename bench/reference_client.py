"""A minimal reference client: the floor that any Python client on this box can be held against.

Raw asyncio streams, HTTP/1.1 written and read by hand (chunked transfer coding), one keep-alive
connection per slot, no HTTP library, no JSON per chunk: a chunk is a token when it carries a non-empty
`"text":"…"`; only the final event (the one with the simulator's `befori_sim` ground truth) is parsed.
The time of a token is taken as soon as the HTTP chunk that carries it has been read.

Records are plain dicts with the same fields bench/fidelity.py reads from befori-tui's RequestRecords:
`t_send_ns`, `t_first_token_ns`, `t_last_token_ns`, `tokens`, `server_timing`.

    .venv/bin/python bench/reference_client.py --url http://127.0.0.1:8000 --concurrency 64 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

_TEXT = b'"text":"'


def _request(host: str, path: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode() + body


def _tokens_in(data: bytes) -> int:
    """Events in `data` whose text is not empty (completions API, as the simulator writes it)."""
    n = 0
    i = data.find(_TEXT)
    while i >= 0:
        j = i + len(_TEXT)
        if data[j:j + 1] != b'"':
            n += 1
        i = data.find(_TEXT, j)
    return n


async def _one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> dict[str, Any]:
    perf = time.perf_counter_ns
    rec: dict[str, Any] = {"t_send_ns": perf(), "t_first_token_ns": None, "t_last_token_ns": None, "tokens": 0,
                           "server_timing": None, "ok": False}
    writer.write(req)
    status = await reader.readline()
    chunked = False
    length = -1
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"content-length":
            length = int(value)
    if not status.startswith(b"HTTP/1.1 200") or not chunked:
        if length > 0:
            await reader.readexactly(length)
        rec["error"] = status.decode(errors="replace").strip()
        return rec
    tail = b""
    while True:
        size = int((await reader.readline()).split(b";", 1)[0], 16)
        if size == 0:
            await reader.readline()  # the empty trailer
            break
        data = await reader.readexactly(size + 2)
        now = perf()
        n = _tokens_in(data)
        if n:
            if rec["t_first_token_ns"] is None:
                rec["t_first_token_ns"] = now
            rec["t_last_token_ns"] = now
            rec["tokens"] += n
        if b"befori_sim" in data:
            tail = data
    # The ground truth rides on the last events; parse just those.
    for event in tail.split(b"\n\n"):
        if b"befori_sim" in event and event.startswith(b"data: "):
            rec["server_timing"] = json.loads(event[6:])["befori_sim"]
    rec["t_end_ns"] = perf()
    rec["ok"] = rec["t_first_token_ns"] is not None and rec["server_timing"] is not None
    return rec


async def run(host: str, port: int, concurrency: int, seconds: float, body: bytes,
              path: str = "/v1/completions") -> list[dict[str, Any]]:
    """`concurrency` closed-loop slots for `seconds`; every finished request's record (in-flight ones dropped)."""
    req = _request(host, path, body)
    records: list[dict[str, Any]] = []
    stop = False

    async def slot() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while not stop:
                records.append(await _one(reader, writer, req))
        finally:
            writer.close()

    tasks = [asyncio.create_task(slot()) for _ in range(concurrency)]
    await asyncio.sleep(seconds)
    stop = True
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return records


def completions_body(model: str, prompt: str, max_tokens: int) -> bytes:
    return json.dumps({"model": model, "prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True,
                       "stream": True, "stream_options": {"include_usage": True}}).encode()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True, help="the server's root, e.g. http://127.0.0.1:8000")
    p.add_argument("--model", default="sim")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--output-tokens", type=int, default=32)
    args = p.parse_args()
    host, port = args.url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    body = completions_body(args.model, "Say something. " * 8, args.output_tokens)
    recs = asyncio.run(run(host, int(port), args.concurrency, args.seconds, body))
    ok = [r for r in recs if r["ok"]]
    ex = sorted((r["t_first_token_ns"] - r["t_send_ns"]) - (r["server_timing"]["t_first_token_ns"]
                                                              - r["server_timing"]["t_received_ns"]) for r in ok)
    if ex:
        print(f"{len(ok)} ok of {len(recs)}; client − server TTFT p50 {ex[len(ex) // 2] / 1e6:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
