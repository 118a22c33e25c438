"""Memory over 10,000 `Connection: close` replies: does the load's transport keep anything per request?

A gateway that closes after each reply (some nginx and Envoy set-ups, a server at its keep-alive limit) makes
every request a new connection. Before core/transport.py read replies with llhttp, each closed connection
stayed in the transport's list: memory grew with every request of an hour-long run. This script sends
`--requests` streamed completions, `--concurrency` at a time, through befori-tui's own client (StreamClient
over LeanTransport) to a loopback server in this process that answers each with a short SSE stream and
`Connection: close`, and prints every `--every` requests: the process's RSS, the connections the transport
still holds, and the open file descriptors.

    .venv/bin/python bench/conn_close.py                        # 10,000 requests, 8 at a time
    .venv/bin/python bench/conn_close.py --requests 2000 --server-keeps-open
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from befori_tui.core.client import Endpoint, StreamClient, make_http_client  # noqa: E402
from befori_tui.core.prompts import Prompt  # noqa: E402
from befori_tui.core.records import RequestRecord  # noqa: E402


def _chunk(text: str, finish: str | None) -> bytes:
    data = json.dumps({"choices": [{"index": 0, "text": text, "finish_reason": finish}]}).encode()
    return b"data: " + data + b"\n\n"


BODY = _chunk("a", None) + _chunk("b", None) + _chunk("c", "length") + b"data: [DONE]\n\n"
REPLY = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\ncontent-length: %d\r\n\r\n"
         % len(BODY)) + BODY


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def main_async(args) -> int:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            writer.write(REPLY)
            await writer.drain()
            if args.server_keeps_open:
                await reader.read()  # the client must close: it was told Connection: close
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    endpoint = Endpoint(f"http://127.0.0.1:{port}/v1", "completions", "m", "")
    http = make_http_client(endpoint, args.concurrency, 10.0, 5.0)
    transport = http._transport
    client = StreamClient(http, endpoint, ignore_eos=True, timeout_s=10.0)
    done = failed = 0
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} UTC, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
          f"load average {os.getloadavg()[0]:.2f}; {args.requests} requests, {args.concurrency} at a time, "
          f"server {'keeps its side open' if args.server_keeps_open else 'closes after each reply'}")
    print("| requests | RSS MiB | connections held (in flight included) | open fds | failed |")
    print("|---|---|---|---|---|")
    counter = iter(range(args.requests))

    async def slot(i: int) -> None:
        nonlocal done, failed
        for n in counter:
            rec = await client.send(RequestRecord(n, i, 0, args.concurrency), Prompt("hi", 2, 2, "estimate", 3))
            done += 1
            failed += not rec.ok
            if done % args.every == 0:
                mark = done
                await asyncio.sleep(0.05)  # the last closes land
                gc.collect()
                # len(_all): the figure the hand-written transport had too (it had no open_connections).
                print(f"| {mark} | {rss_kib() / 1024:.1f} | {len(transport._all)} | {open_fds()} | {failed} |",
                      flush=True)

    t0 = time.perf_counter()
    await asyncio.gather(*(slot(i) for i in range(args.concurrency)))
    wall_s = time.perf_counter() - t0
    await http.aclose()
    server.close()
    print(f"# {done} requests in {wall_s:.1f} s; connections opened {transport.connections_opened}; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MiB; "
          f"load average after {os.getloadavg()[0]:.2f}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=10_000)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--every", type=int, default=1000)
    p.add_argument("--server-keeps-open", action="store_true", help="the server says close but does not close")
    return asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
