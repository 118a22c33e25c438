"""A load process: some of a run's slots, on an interpreter of their own (core/pool.py starts and drives it).

It holds its own HTTP client, prompts and load runner; every timestamp of its requests is taken here, on its
own clock. It sends what happens — a request sent, its first token, its end, a drained level, its loop's
lag — in batches every 20 ms over a socket to the run, and does what the run asks: open a level with these
slots, pause, resume, stop. It never decides a level itself, so its level numbers stay the run's.

If the run goes away (its socket closes), it cancels what is in flight and exits.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Any

from befori_tui.core import events as ev
from befori_tui.core.client import Endpoint, StreamClient, make_http_client
from befori_tui.core.config import Config
from befori_tui.core.loadgen import Level, LoadRunner
from befori_tui.core.observer import NullObserver
from befori_tui.core.prompts import PromptSource
from befori_tui.core.records import RequestRecord

BATCH_INTERVAL_S = 0.02  # a request's end reaches the run within this (plus the socket)


@dataclass
class WorkerSpec:
    cfg: Config
    model: str
    index: int  # this load process's number, 0…n-1
    id_step: int  # request ids: index, index + id_step, … (unique across the run)
    max_slots: int
    line_tokens: list[float] | None = None  # the run's /tokenize counts of the prompt lines, when it had them
    count_source: str = "estimate"
    run_tag: str = ""  # the run's prompt tag: every load process makes the same shared prefixes
    head_tokens: float = 0.0  # a unique first line's tokens, as the run counted them


class _Relay(NullObserver):
    """On the load loop: the run's numbering for slots and whole-level concurrency, one small event each."""

    def __init__(self, out: deque) -> None:
        self.out = out
        self.slots: dict[int, list[int]] = {}  # level → the run's slot of each local slot
        self.concurrency: dict[int, int] = {}  # level → its whole concurrency

    def slot(self, record: RequestRecord) -> int:
        return self.slots[record.level][record.slot]

    def on_request_start(self, record: RequestRecord) -> None:
        self.out.append(ev.RequestStarted(record.request_id, self.slot(record), record.level, record.t_send_ns))

    def on_first_token(self, record: RequestRecord) -> None:
        self.out.append(ev.FirstToken(record.request_id, self.slot(record), record.t_first_token_ns))

    def on_record(self, record: RequestRecord) -> None:
        self.out.append(ev.RequestEnded(ev.record_to_wire(record, self.slot(record),
                                                          self.concurrency[record.level])))

    def on_level_end(self, level: Level) -> None:
        self.out.append(ev.LevelEnded(level.index, level.t_end_ns))


async def serve(spec: WorkerSpec, sock: socket.socket) -> None:
    cfg = spec.cfg
    ld = cfg.load
    endpoint = Endpoint.from_config(cfg, spec.model)
    http = make_http_client(endpoint, spec.max_slots, ld.timeout_s, ld.connect_timeout_s)
    # Its own draws of prompt and output lengths (seeded apart), the run's token counts of the lines.
    workload = replace(cfg.workload, seed=cfg.workload.seed + 1000 * (spec.index + 1))
    prompts = PromptSource(workload)
    if spec.run_tag:
        prompts.run_tag = spec.run_tag
    if spec.line_tokens is not None:
        prompts.line_tokens = list(spec.line_tokens)
        prompts.count_source = spec.count_source
        prompts.lines_counted = True
        prompts.head_tokens = spec.head_tokens
    prompts.attach(http, endpoint.root_url, spec.model)
    out: deque = deque()
    relay = _Relay(out)
    runner = LoadRunner(StreamClient(http, endpoint, cfg.workload.ignore_eos, ld.timeout_s), prompts, relay,
                        honor_retry_after=ld.retry_after, id_start=spec.index, id_step=spec.id_step,
                        keep_records=False)  # the run process keeps them
    runner.t_start_ns = time.perf_counter_ns()
    runner.health.start()
    # A socket pair from core/pool.py, or a TCP connection back to the run from a Ray actor (core/raypool.py).
    opener = asyncio.open_unix_connection if sock.family == socket.AF_UNIX else asyncio.open_connection
    reader, writer = await opener(sock=sock)
    lag_sent = 0

    def send(final: list[Any] | None = None) -> None:
        nonlocal lag_sent
        items = []
        while True:
            try:
                items.append(out.popleft())
            except IndexError:
                break
        h = runner.health
        n = min(len(h.t_ns), len(h.lag_ns))
        if n > lag_sent:
            items.append(ev.LagSamples(h.t_ns[lag_sent:n].tolist(), h.lag_ns[lag_sent:n].tolist(),
                                       time.perf_counter_ns(), time.process_time_ns()))
            lag_sent = n
        items += final or []
        if items:
            writer.write(ev.encode_batch(time.perf_counter_ns(), items))

    async def sender() -> None:
        while True:
            await asyncio.sleep(BATCH_INTERVAL_S)
            send()
            await writer.drain()

    send([ev.Ready(endpoint.base_url, spec.model, cfg.endpoint.api, prompts.count_source, False,
                   host=socket.gethostname(), pid=os.getpid())])
    sending = asyncio.create_task(sender())
    drain_s = 0.0
    try:
        while True:
            payload = await ev.read_frame_async(reader)
            if payload is None:
                break  # the run is gone: stop at once
            command = ev.decode_worker_command(payload)
            if isinstance(command, ev.OpenLevel):
                relay.slots[command.index] = list(command.slots)
                relay.concurrency[command.index] = command.concurrency
                runner.set_concurrency(len(command.slots), command.reason, command.warmup_target,
                                       cancel_removed=command.cancel_removed)
                if runner.level.index != command.index:  # never expected: the numbering is the run's
                    raise ev.ProtocolError(f"level {command.index} opened as {runner.level.index}")
            elif isinstance(command, ev.Pause):
                runner.pause()
            elif isinstance(command, ev.Resume):
                runner.resume(open_level=False)
            elif isinstance(command, ev.WorkerStop):
                drain_s = command.drain_s
                break
    finally:
        await runner.stop(drain_s)  # what is still in flight ends as cancelled, and is sent
        sending.cancel()
        await asyncio.gather(sending, return_exceptions=True)
        try:
            send([ev.Finished("completed", 0)])
            await writer.drain()
            writer.close()
        except (ConnectionError, OSError):
            pass
        runner.health.stop()
        await http.aclose()


def main() -> int:
    spec, fd = pickle.load(sys.stdin.buffer)
    # The run decides when this process stops: a Ctrl-C in the terminal (sent to the whole process group)
    # or a hangup is the run's to handle, not this process's.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    sock = socket.socket(fileno=fd)
    asyncio.run(serve(spec, sock))
    return 0


if __name__ == "__main__":
    sys.exit(main())
