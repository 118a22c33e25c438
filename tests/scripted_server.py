"""A scripted OpenAI-style streaming server on 127.0.0.1 for client tests (real sockets, real HTTP).

Each test registers a script: a list of (delay_s, bytes) pieces written as separate chunks, or a status,
headers and body. Served by uvicorn + starlette in a background thread.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class Script:
    pieces: list[tuple[float, bytes]] = field(default_factory=list)
    status: int = 200
    content_type: str = "text/event-stream"
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None  # a whole non-streamed body instead of pieces
    abort_after: bool = False  # drop the connection after the pieces


def completion_chunk(text: str, finish: str | None = None, **extra) -> bytes:
    obj = {"id": "x", "object": "text_completion", "model": "m",
           "choices": [{"index": 0, "text": text, "finish_reason": finish}], **extra}
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def usage_chunk(prompt_tokens: int, completion_tokens: int) -> bytes:
    obj = {"id": "x", "object": "text_completion", "model": "m", "choices": [],
           "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                     "total_tokens": prompt_tokens + completion_tokens}}
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"


def timed_stream(ttft_s: float, itl_s: float, n_tokens: int, prompt_tokens: int = 10) -> Script:
    pieces = [(ttft_s, completion_chunk("tok"))]
    for i in range(1, n_tokens):
        pieces.append((itl_s, completion_chunk("tok", "length" if i == n_tokens - 1 else None)))
    pieces += [(0.0, usage_chunk(prompt_tokens, n_tokens)), (0.0, DONE)]
    return Script(pieces)


class _Abort(Exception):
    pass


class ScriptedServer:
    def __init__(self) -> None:
        self.script = Script()
        self.requests: list[dict] = []
        self.headers_seen: list[dict[str, str]] = []
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._sock = sock
        self.port = sock.getsockname()[1]
        app = Starlette(routes=[
            Route("/v1/completions", self._handle, methods=["POST"]),
            Route("/v1/chat/completions", self._handle, methods=["POST"]),
            Route("/v1/models", self._models),
        ])
        config = uvicorn.Config(app, log_level="critical", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("scripted server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)

    async def _models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "scripted-model", "object": "model"}]})

    async def _handle(self, request: Request) -> Response:
        self.requests.append(await request.json())
        self.headers_seen.append(dict(request.headers))
        script = self.script
        if script.body is not None:
            return Response(script.body, status_code=script.status, media_type=script.content_type,
                            headers=script.headers)

        async def gen():
            for delay_s, data in script.pieces:
                if delay_s:
                    await asyncio.sleep(delay_s)
                yield data
            if script.abort_after:
                raise _Abort("drop the connection mid-stream")

        return StreamingResponse(gen(), status_code=script.status, media_type=script.content_type,
                                 headers=script.headers)
