"""The simulated OpenAI-compatible server: a Starlette app over the engine model, served by uvicorn.

Streaming endpoints are raw ASGI callables (no StreamingResponse): each token costs one prebuilt bytes
concatenation and one `send`. Ground truth: `t_received_ns` when the app is called, `t_first_token_ns` /
`t_last_token_ns` just before the first / last token's bytes go to `send` (time.perf_counter_ns, i.e.
CLOCK_MONOTONIC, comparable with a client's perf_counter_ns on the same machine). For non-streamed
responses t_first_token_ns is when the engine produced the first token.
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from befori_tui.sim import tokenizer
from befori_tui.sim.engine import TTFT_BUCKETS_S, Engine, Seq, block_hashes
from befori_tui.sim.faults import RETRY_AFTER_S, STALL_S, FaultPlan, SimulatedDrop
from befori_tui.sim.gpu import GpuModel
from befori_tui.sim.profile import Profile

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

GPU_TICK_S = 0.5
DEBUG_KEEP = 2000  # requests kept for GET /debug/requests
_WORDS_B = tuple(w.encode() for w in tokenizer.WORDS)
_N_WORDS = len(_WORDS_B)
_DONE = b"data: [DONE]\n\n"
_SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "BadRequestError") -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


def _error_body(status: int, message: str, kind: str) -> bytes:
    return _dumps({"object": "error", "message": message, "type": kind, "param": None, "code": status})


async def _send_bytes(send: Send, status: int, body: bytes, content_type: bytes = b"application/json",
                      extra_headers: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra_headers or [])})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class _Asgi:
    """Lets Starlette route to a bound coroutine as a raw ASGI app."""

    def __init__(self, fn: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.fn = fn

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.fn(scope, receive, send)


class SimServer:
    def __init__(self, profile: Profile, time_scale: float = 1.0, faults: dict[str, float] | None = None,
                 seed: int = 0) -> None:
        if not time_scale > 0:
            raise ValueError("time_scale must be > 0")
        self.profile = profile
        self.time_scale = time_scale
        self.model = profile.model.served_name
        self.faults = FaultPlan(faults, seed)
        self._rng = random.Random(f"eos:{seed}")
        self._counter = 0
        self._gc_t0 = 0.0
        self.records: deque[dict[str, Any]] = deque(maxlen=DEBUG_KEEP)
        self.engine: Engine | None = None
        self.gpu: GpuModel | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)  # type: ignore[arg-type]  (we are the Collector)
        self.app = Starlette(
            routes=[
                Route("/v1/completions", _Asgi(self._completions), methods=["POST"]),
                Route("/v1/chat/completions", _Asgi(self._chat_completions), methods=["POST"]),
                Route("/v1/models", self._models),
                Route("/health", self._health),
                Route("/version", self._version),
                Route("/tokenize", self._tokenize, methods=["POST"]),
                Route("/metrics", self._metrics),
                Route("/debug/requests", self._debug_requests),
                Route("/debug/engine", self._debug_engine),
            ],
            lifespan=self._lifespan,
        )

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.engine = Engine(self.profile, self.time_scale)
        self.engine.start()
        self.gpu = GpuModel(self.engine)
        ticker = asyncio.create_task(self._gpu_ticker(), name="sim-gpu")
        # Full collections that walk every module object stall the loop for tens of ms under load: keep
        # what startup made out of the collector's way (as vLLM does) and collect young objects less often.
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 20, 50)
        gc.callbacks.append(self._gc_timer)
        try:
            yield
        finally:
            gc.callbacks.remove(self._gc_timer)
            ticker.cancel()
            await self.engine.stop()

    def _gc_timer(self, phase: str, info: dict[str, int]) -> None:
        assert self.engine is not None
        st = self.engine.stats
        if phase == "start":
            self._gc_t0 = time.perf_counter()
            return
        pause = time.perf_counter() - self._gc_t0
        st.gc_pauses += 1
        st.gc_pause_s_total += pause
        st.gc_pause_s_max = max(st.gc_pause_s_max, pause)

    async def _gpu_ticker(self) -> None:
        assert self.gpu is not None
        while True:
            await asyncio.sleep(GPU_TICK_S)
            self.gpu.update()

    # -- generation --------------------------------------------------------------------------------------
    async def _completions(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._generate(receive, send, chat=False)

    async def _chat_completions(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._generate(receive, send, chat=True)

    def _check_model(self, req: dict[str, Any]) -> None:
        name = req.get("model")
        if name is not None and name not in (self.model, self.profile.name):
            raise ApiError(404, f"The model `{name}` does not exist.", "NotFoundError")

    def _parse(self, body: bytes, chat: bool) -> tuple[dict[str, Any], int, int, tuple[int, ...]]:
        """Validate a request as vLLM would; returns (request, prompt_tokens, max_tokens, prefix-cache blocks)."""
        try:
            req = json.loads(body)
        except ValueError:
            raise ApiError(400, "request body is not valid JSON") from None
        if not isinstance(req, dict):
            raise ApiError(400, "request body must be a JSON object")
        self._check_model(req)
        if req.get("n", 1) != 1:
            raise ApiError(400, "the simulator supports n=1 only")
        if chat:
            messages = req.get("messages")
            if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
                raise ApiError(400, "messages must be a non-empty list of objects")
            ids = tokenizer.chat_ids(messages)
            max_tokens = req.get("max_completion_tokens", req.get("max_tokens"))
        else:
            prompt = req.get("prompt")
            if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
                prompt = prompt[0]
            if isinstance(prompt, str):
                ids = tokenizer.prompt_ids(prompt)
            elif isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
                ids = tokenizer.prompt_ids(prompt)
            else:
                raise ApiError(400, "prompt must be a string or a list of token ids (one prompt per request)")
            max_tokens = req.get("max_tokens", 16)  # vLLM's default for completions
        prompt_tokens = len(ids)
        max_len = self.profile.model.max_model_len
        if max_tokens is None:
            max_tokens = max_len - prompt_tokens  # vLLM's default for chat: the rest of the context
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise ApiError(400, "max_tokens must be an integer >= 1")
        if prompt_tokens + max_tokens > max_len:
            raise ApiError(400, f"This model's maximum context length is {max_len} tokens. However, you "
                                f"requested {prompt_tokens + max_tokens} tokens ({prompt_tokens} in the "
                                f"messages, {max_tokens} in the completion). Please reduce the length of the "
                                f"messages or completion.")
        blocks = block_hashes(ids) if self.profile.engine.prefix_cache_tokens else ()
        return req, prompt_tokens, max_tokens, blocks

    async def _generate(self, receive: Receive, send: Send, chat: bool) -> None:
        t_received_ns = time.perf_counter_ns()
        body = bytearray()
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body += msg.get("body", b"")
            if not msg.get("more_body", False):
                break
        try:
            req, prompt_tokens, max_tokens, blocks = self._parse(bytes(body), chat)
        except ApiError as err:
            await _send_bytes(send, err.status, _error_body(err.status, err.message, err.kind))
            return
        assert self.engine is not None
        engine = self.engine

        # Seeded draws happen here, synchronously, so they follow arrival order.
        self._counter += 1
        n = self._counter
        fault = self.faults.draw()
        target, reason = max_tokens, "length"
        if not req.get("ignore_eos", False):
            p = 1.0 / max(1.0, self.profile.model.eos_mean_tokens)
            eos_at = 1 + int(math.log(1.0 - self._rng.random()) / math.log(1.0 - p)) if p < 1 else 1
            if eos_at < max_tokens:
                target, reason = eos_at, "stop"
        request_id = f"{'chatcmpl' if chat else 'cmpl'}-sim-{n}"
        stream = bool(req.get("stream", False))
        rec: dict[str, Any] = {
            "request_id": request_id, "endpoint": "chat" if chat else "completions", "stream": stream,
            "fault": fault, "status": 200, "prompt_tokens": prompt_tokens, "max_tokens": max_tokens,
            "completion_tokens": 0, "finish_reason": None, "t_received_ns": t_received_ns,
            "t_admitted_ns": None, "t_first_token_ns": None, "t_last_token_ns": None, "completed": False,
            "cached_tokens": 0,
        }
        if fault in ("http_500", "http_429"):
            status = 500 if fault == "http_500" else 429
            kind = "InternalServerError" if status == 500 else "RateLimitError"
            extra = [(b"retry-after", str(RETRY_AFTER_S).encode())] if status == 429 else None
            rec["status"] = status
            self.records.append(rec)
            await _send_bytes(send, status, _error_body(status, f"simulated {fault}", kind), extra_headers=extra)
            return

        # The frontend delay counts from arrival: reading and parsing the body is part of the frontend's work, so
        # it must not add to TTFT on top of the profile's figure (perf_counter and perf_counter_ns share a clock).
        ready_s = t_received_ns / 1e9 + self.profile.engine.frontend_ms / 1000.0 / self.time_scale
        seq = Seq(request_id, prompt_tokens, target, reason, t_received_ns, ready_s, blocks)
        engine.submit(seq)
        disconnected = asyncio.Event()

        async def watch_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            if not rec["completed"]:
                seq.aborted = True
                disconnected.set()
                engine.kick()

        watcher = asyncio.create_task(watch_disconnect())
        ctx = _Ctx(self, req, seq, rec, fault, chat, n, disconnected)
        try:
            if stream:
                await ctx.stream(send)
            else:
                await ctx.respond(send)
        finally:
            watcher.cancel()
            if not seq.finished:
                seq.aborted = True
            rec["t_admitted_ns"] = seq.t_admitted_ns or None
            rec["cached_tokens"] = seq.cached_tokens
            rec["completion_tokens"] = ctx.sent
            if ctx.sent == seq.target_tokens:
                rec["finish_reason"] = seq.finish_reason
            self.records.append(rec)

    # -- the other endpoints -----------------------------------------------------------------------------
    async def _models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{
            "id": self.model, "object": "model", "created": 0, "owned_by": "befori-sim", "root": self.model,
            "parent": None, "max_model_len": self.profile.model.max_model_len, "permission": [],
        }]})

    async def _health(self, request: Request) -> Response:
        return Response(status_code=200)

    async def _version(self, request: Request) -> Response:
        return JSONResponse({"version": "befori-sim", "profile": self.profile.name})

    async def _tokenize(self, request: Request) -> Response:
        try:
            req = await request.json()
            if not isinstance(req, dict):
                raise ApiError(400, "request body must be a JSON object")
            self._check_model(req)
            if "messages" in req:
                messages = req["messages"]
                if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
                    raise ApiError(400, "messages must be a list of objects")
                ids = tokenizer.chat_ids(messages, bool(req.get("add_generation_prompt", True)))
            elif isinstance(req.get("prompt"), str):
                ids = tokenizer.prompt_ids(req["prompt"], bool(req.get("add_special_tokens", True)))
            else:
                raise ApiError(400, "give either prompt (a string) or messages")
        except ValueError:
            return Response(_error_body(400, "request body is not valid JSON", "BadRequestError"), 400,
                            media_type="application/json")
        except ApiError as err:
            return Response(_error_body(err.status, err.message, err.kind), err.status,
                            media_type="application/json")
        return JSONResponse({"count": len(ids), "max_model_len": self.profile.model.max_model_len,
                             "tokens": ids, "token_strs": None})

    async def _metrics(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    async def _debug_requests(self, request: Request) -> Response:
        try:
            limit = int(request.query_params.get("limit", DEBUG_KEEP))
        except ValueError:
            return Response(_error_body(400, "limit must be an integer", "BadRequestError"), 400,
                            media_type="application/json")
        records = list(self.records)
        return JSONResponse(records[-limit:] if limit > 0 else [])

    async def _debug_engine(self, request: Request) -> Response:
        assert self.engine is not None
        e = self.engine
        return JSONResponse({
            "profile": self.profile.name, "model": self.model, "time_scale": self.time_scale,
            "running": len(e.running), "waiting": len(e.waiting), "kv_used_tokens": e.kv_used_tokens,
            "faults": self.faults.rates, **e.stats_dict(),
        })

    # -- Prometheus collector ----------------------------------------------------------------------------
    def describe(self) -> list[Metric]:
        return []  # keeps the registry from calling collect() at registration

    def collect(self) -> Iterator[Metric]:
        if self.engine is None or self.gpu is None:
            return
        e, m = self.engine, [self.model]
        lab = ["model_name"]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=lab)
            g.add_metric(m, value)
            return g

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            c = CounterMetricFamily(name, doc, labels=lab)
            c.add_metric(m, value)
            return c

        yield gauge("vllm:num_requests_running", "Number of requests in model execution batches.", len(e.running))
        yield gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", len(e.waiting))
        yield gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.",
                    e.kv_used_tokens / self.profile.engine.kv_cache_tokens)
        yield counter("vllm:prompt_tokens", "Number of prefill tokens processed.", e.stats.prompt_tokens_total)
        yield counter("vllm:generation_tokens", "Number of generation tokens processed.",
                      e.stats.generation_tokens_total)
        yield counter("vllm:request_success", "Count of successfully processed requests.",
                      e.stats.requests_finished)
        yield counter("vllm:prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens.",
                      e.stats.prefix_cache_queries)
        yield counter("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.",
                      e.stats.prefix_cache_hits)
        h = HistogramMetricFamily("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
                                  labels=lab)
        cum, buckets = 0, []
        for le, c in zip([*map(str, TTFT_BUCKETS_S), "+Inf"], e.ttft_bucket_counts):
            cum += c
            buckets.append((le, cum))
        h.add_metric(m, buckets, e.ttft_sum_s)
        yield h

        # DCGM-exporter style GPU series; the modelName label says they are simulated.
        spec = self.profile.gpu
        glabels = ["gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname"]
        fields = [
            ("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", "util_pct"),
            ("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", "fb_used_mib"),
            ("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).", "fb_free_mib"),
            ("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).", "power_w"),
            ("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).", "temp_c"),
            ("DCGM_FI_DEV_SM_CLOCK", "SM clock frequency (in MHz).", "sm_clock_mhz"),
            # A counter in DCGM, exposed as a gauge here so the sample name has no _total suffix.
            ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "Total energy consumption since boot (in mJ).", "energy_mj"),
        ]
        states = self.gpu.states()
        for name, doc, attr in fields:
            fam = GaugeMetricFamily(name, doc, labels=glabels)
            for s in states:
                fam.add_metric([str(s.index), f"GPU-5135a1e0-0000-4000-8000-{s.index:012d}",
                                f"00000000:{0x18 + 0x10 * s.index:02X}:00.0", f"nvidia{s.index}",
                                f"{spec.name} (simulated)", "befori-sim"], getattr(s, attr))
            yield fam


class _Ctx:
    """One generation request's response writer (streamed or not)."""

    def __init__(self, server: SimServer, req: dict[str, Any], seq: Seq, rec: dict[str, Any], fault: str | None,
                 chat: bool, n: int, disconnected: asyncio.Event) -> None:
        self.server, self.engine, self.seq, self.rec, self.fault = server, server.engine, seq, rec, fault
        self.chat = chat
        self.word0 = n * 7  # where this request's text starts in the word list
        self.disconnected = disconnected
        self.created = int(time.time())
        self.sent = 0  # tokens handed to send
        self.include_usage = bool((req.get("stream_options") or {}).get("include_usage", False))
        self.obj = ("chat.completion.chunk" if req.get("stream") else "chat.completion") if chat else "text_completion"

    def _ground_truth(self, t_first_ns: int | None, t_last_ns: int) -> dict[str, Any]:
        seq, rec = self.seq, self.rec
        rec["t_first_token_ns"], rec["t_last_token_ns"] = t_first_ns, t_last_ns
        return {"t_received_ns": seq.t_received_ns, "t_first_token_ns": t_first_ns, "t_last_token_ns": t_last_ns,
                "request_id": seq.request_id, "t_admitted_ns": seq.t_admitted_ns or None,
                "prompt_tokens": seq.prompt_tokens, "cached_tokens": seq.cached_tokens}

    def _usage(self, completion_tokens: int) -> dict[str, Any]:
        p = self.seq.prompt_tokens
        return {"prompt_tokens": p, "completion_tokens": completion_tokens, "total_tokens": p + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": self.seq.cached_tokens}}

    def _text(self, start: int, stop: int) -> str:
        words = tokenizer.WORDS
        return "".join(words[(self.word0 + i) % _N_WORDS] for i in range(start, stop))

    async def _wait_tokens(self, count: int) -> bool:
        """Wait until `count` tokens exist; False if the client went away."""
        seq, engine = self.seq, self.engine
        assert engine is not None
        while seq.generated < count:
            if seq.aborted:
                return False
            await engine.step_future
        return not seq.aborted

    async def _stall(self) -> None:
        try:
            await asyncio.wait_for(self.disconnected.wait(), STALL_S)
        except asyncio.TimeoutError:
            pass

    async def respond(self, send: Send) -> None:
        seq, rec = self.seq, self.rec
        if not await self._wait_tokens(seq.target_tokens):
            return
        if self.fault == "stall":
            await self._stall()
            if self.disconnected.is_set():
                return
        text = self._text(0, seq.target_tokens)
        choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": seq.finish_reason,
                                  "stop_reason": None}
        if self.chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        t_last_ns = time.perf_counter_ns()
        payload = {"id": seq.request_id, "object": self.obj, "created": self.created, "model": self.server.model,
                   "choices": [choice], "usage": self._usage(seq.target_tokens),
                   "befori_sim": self._ground_truth(seq.t_first_gen_ns, t_last_ns)}
        body = _dumps(payload)
        if self.fault == "malformed":
            body = body[: len(body) // 2]
        if self.fault == "drop":
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
            raise SimulatedDrop(seq.request_id)
        rec["completed"] = True
        self.sent = seq.target_tokens
        await _send_bytes(send, 200, body)

    async def stream(self, send: Send) -> None:
        seq, rec, chat = self.seq, self.rec, self.chat
        n = seq.target_tokens
        model = self.server.model
        usage_null = b',"usage":null' if self.include_usage else b""
        prefix = _dumps({"id": seq.request_id, "object": self.obj, "created": self.created, "model": model})[:-1]
        if chat:
            head = b"data: " + prefix + b',"choices":[{"index":0,"delta":{"content":"'
            tail = b'"},"logprobs":null,"finish_reason":null}]' + usage_null + b"}\n\n"
            role = (b"data: " + prefix + b',"choices":[{"index":0,"delta":{"role":"assistant","content":""},'
                    b'"logprobs":null,"finish_reason":null}]' + usage_null + b"}\n\n")
        else:
            head = b"data: " + prefix + b',"choices":[{"index":0,"text":"'
            tail = b'","logprobs":null,"finish_reason":null}]' + usage_null + b"}\n\n"
            role = b""
        words, w0 = _WORDS_B, self.word0
        fault = self.fault if self.fault in ("drop", "malformed", "stall") else None
        fault_at = n // 2  # tokens sent before a mid-stream fault fires

        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        sent = 0
        t_first_ns: int | None = None
        while sent < n:
            if seq.aborted:
                return
            if fault is not None and sent == fault_at:
                if fault == "drop":
                    raise SimulatedDrop(seq.request_id)
                if fault == "stall":
                    await self._stall()
                    if self.disconnected.is_set():
                        return
                else:  # malformed: one event whose JSON is cut off, then the stream goes on
                    await send({"type": "http.response.body", "body": head[:-12] + b"\n\n", "more_body": True})
                fault = None
            stop = n if fault is None else fault_at
            if seq.generated <= sent and not await self._wait_tokens(sent + 1):
                return
            upto = min(seq.generated, stop)
            last = upto == n
            parts = [role] if sent == 0 and role else []
            for i in range(sent, upto - 1 if last else upto):
                parts.append(head + words[(w0 + i) % _N_WORDS] + tail)
            if last:
                t_last_ns = time.perf_counter_ns()
                if t_first_ns is None:
                    t_first_ns = t_last_ns
                parts.append(self._final_chunks(n, t_first_ns, t_last_ns))
            elif t_first_ns is None:
                t_first_ns = time.perf_counter_ns()
            if last:
                rec["completed"] = True
            await send({"type": "http.response.body", "body": b"".join(parts), "more_body": not last})
            sent = self.sent = upto

    def _final_chunks(self, n: int, t_first_ns: int, t_last_ns: int) -> bytes:
        """The last token with finish_reason and ground truth, the usage chunk if asked, and [DONE]."""
        seq = self.seq
        gt = self._ground_truth(t_first_ns, t_last_ns)
        word = tokenizer.WORDS[(self.word0 + n - 1) % _N_WORDS]
        choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": seq.finish_reason,
                                  "stop_reason": None}
        if self.chat:
            choice["delta"] = {"content": word}
        else:
            choice["text"] = word
        base = {"id": seq.request_id, "object": self.obj, "created": self.created, "model": self.server.model}
        last: dict[str, Any] = {**base, "choices": [choice]}
        if self.include_usage:
            last["usage"] = None
        last["befori_sim"] = gt
        out = [b"data: " + _dumps(last) + b"\n\n"]
        if self.include_usage:
            out.append(b"data: " + _dumps({**base, "choices": [], "usage": self._usage(n), "befori_sim": gt})
                       + b"\n\n")
        if self.fault != "no_done":
            out.append(_DONE)
        return b"".join(out)
