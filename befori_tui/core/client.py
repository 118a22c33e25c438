"""Streaming OpenAI-compatible requests, measured.

One long-lived httpx.AsyncClient per run, its pool sized to the slots so no request waits for a
connection. Timestamps are taken in the loop that reads the stream, once per network read. Every
failure ends up in the record by kind (connect, timeout, http_status, protocol, cancelled); nothing is
raised out of `send` except the CancelledError the caller asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import os
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import httpx

from befori_tui.core.config import Config, header_values, redact_url
from befori_tui.core.prompts import Prompt
from befori_tui.core.records import RequestRecord
from befori_tui.core.sse import SSEError, SSEParser
from befori_tui.core.transport import LeanTransport, NoReplyError, environment_proxy, proxy_display

ERROR_BODY_BYTES = 512  # how much of an error reply to keep in the record
MAX_ERROR_MESSAGE = 300


class ClientSetupError(Exception):
    """The endpoint cannot be used at all (unreachable, no model): one line for the user."""


@dataclass
class Endpoint:
    base_url: str  # ends in /v1, no credentials
    api: str
    model: str
    api_key: str  # from the environment; never written anywhere
    headers: dict[str, str] = field(default_factory=dict)  # extra headers, env:VAR already read
    secrets: list[str] = field(default_factory=list)  # header values from the environment: scrubbed from messages
    ca_bundle: str = ""
    client_cert: str = ""  # CERT or CERT:KEY
    verify: bool = True
    proxy_from_env: bool = True

    @classmethod
    def from_config(cls, cfg: Config, model: str) -> Endpoint:
        e = cfg.endpoint
        headers, secrets = header_values(e.headers)
        # Credentials in the URL are dropped: httpx would send them as Basic auth, and the URL is shown.
        return cls(redact_url(e.url).rstrip("/"), e.api, model, api_key_from_env(cfg), headers, secrets,
                   e.ca_bundle, e.client_cert, e.verify, e.proxy_from_env)

    @property
    def root_url(self) -> str:
        return self.base_url.rstrip("/").removesuffix("/v1")

    @property
    def path(self) -> str:
        return "/chat/completions" if self.api == "chat" else "/completions"


def api_key_from_env(cfg: Config) -> str:
    return os.environ.get(cfg.endpoint.api_key_env, "") if cfg.endpoint.api_key_env else ""


def ssl_context(endpoint: Endpoint) -> ssl.SSLContext:
    """TLS as the endpoint asks: its CA bundle or the default roots, a client certificate, or no verification.
    Raises ClientSetupError naming the option when a file cannot be used."""
    try:
        if not endpoint.verify:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif endpoint.ca_bundle:
            ctx = ssl.create_default_context(cafile=endpoint.ca_bundle)
        else:
            ctx = httpx.create_ssl_context()  # httpx's roots, as the telemetry scrape uses
    except (OSError, ssl.SSLError) as exc:
        raise ClientSetupError(f"endpoint.ca_bundle / --ca-bundle: cannot use {endpoint.ca_bundle!r} ({exc})") from None
    if endpoint.client_cert:
        cert, _, key = endpoint.client_cert.partition(":")
        try:
            ctx.load_cert_chain(cert, key or None)
        except (OSError, ssl.SSLError) as exc:
            raise ClientSetupError(f"endpoint.client_cert / --client-cert: cannot use {endpoint.client_cert!r} "
                                   f"({exc})") from None
    return ctx


def make_http_client(endpoint: Endpoint, slots: int, timeout_s: float, connect_timeout_s: float) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
    headers.update(endpoint.headers)
    # Room for every slot plus the odd side request (/tokenize, /v1/models).
    limits = httpx.Limits(max_connections=slots + 8, max_keepalive_connections=slots + 8)
    timeout = httpx.Timeout(timeout_s, connect=connect_timeout_s, pool=connect_timeout_s)
    # LeanTransport: httpx's own transport and aiohttp both added TTFT and CPU at 64+ streams (bench/README.md,
    # "Transport choice"). It reads proxies from the environment itself, so httpx's trust_env stays off.
    # The TLS context is built now when asked for (a bad file is one line before anything runs), else on the
    # first https connection (loading the default roots costs ~20 ms).
    wants_tls = endpoint.base_url.startswith("https:") or endpoint.ca_bundle or endpoint.client_cert
    verify = ssl_context(endpoint) if wants_tls else True
    transport = LeanTransport(verify=verify, proxy_from_env=endpoint.proxy_from_env)
    return httpx.AsyncClient(headers=headers, limits=limits, timeout=timeout, trust_env=False, transport=transport)


def load_proxy(endpoint: Endpoint) -> str | None:
    """The proxy URL (credentials included: not for display) that carries the load, or None."""
    return environment_proxy(httpx.URL(endpoint.base_url)) if endpoint.proxy_from_env else None


def wire_note(endpoint: Endpoint) -> str:
    """What carries the load when it is not a plain direct connection: for the start line and the screen."""
    parts = []
    proxy = load_proxy(endpoint)
    if proxy:
        parts.append(f"through the proxy {proxy_display(proxy)}")
    if endpoint.base_url.startswith("https:") and not endpoint.verify:
        parts.append("TLS certificate NOT verified (--insecure)")
    if endpoint.headers:
        parts.append("headers " + ", ".join(endpoint.headers))  # names only: values may be secrets
    return " · ".join(parts)


def wire_facts(endpoint: Endpoint) -> dict:
    """The same for the results file: proxy URL without credentials, TLS options, header names (no values)."""
    proxy = load_proxy(endpoint)
    return {"proxy": proxy_display(proxy) if proxy else "", "proxy_from_env": endpoint.proxy_from_env,
            "tls_verify": endpoint.verify, "ca_bundle": endpoint.ca_bundle,
            "client_cert": endpoint.client_cert, "headers": sorted(endpoint.headers)}


async def listed_models(client: httpx.AsyncClient, base_url: str) -> list[str]:
    """The model ids the server lists at /v1/models. Raises ClientSetupError when it cannot be read."""
    url = base_url.rstrip("/") + "/models"
    try:
        resp = await client.get(url)
    except httpx.HTTPError as exc:
        detail = type(exc).__name__
        if isinstance(exc, (httpx.ConnectError, httpx.ProxyError)):
            detail += f": {exc}"  # the OS, TLS or proxy reason; never holds credentials
        if "TLS" in detail:
            detail += "; see --ca-bundle, --client-cert, --insecure"
        raise ClientSetupError(f"{redact_url(url)}: cannot reach the server ({detail})") from None
    if resp.status_code != 200:
        raise ClientSetupError(f"{redact_url(url)}: HTTP {resp.status_code}; {setup_cause(resp.status_code, base_url)}")
    try:
        return [str(m["id"]) for m in resp.json()["data"]]
    except (ValueError, KeyError, TypeError):
        raise ClientSetupError(f"{redact_url(url)}: not a model list; set endpoint.model or --model") from None


def setup_cause(status: int, base_url: str) -> str:
    """The likely cause of an error status on /v1/models, in words a user can act on."""
    if status == 404:
        return (f"is the URL's path /v1 right? This server has no {httpx.URL(base_url).path.rstrip('/')}/models: it "
                "may serve the API under a prefix (…/openai/v1), or this port may be another service")
    if status in (401, 403):
        return "the server wants an API key: put it in an environment variable and name it with --api-key-env"
    if status == 405:
        return "this is not an OpenAI-compatible API (GET /v1/models is not allowed); check --url"
    if status >= 500:
        return "the server failed (is it still loading the model?); try again, or set --model to skip the list"
    return "set endpoint.model or --model"


async def discover_model(client: httpx.AsyncClient, base_url: str) -> str:
    """The first model the server lists at /v1/models."""
    models = await listed_models(client, base_url)
    if not models:
        raise ClientSetupError(f"{redact_url(base_url)}/models: no model listed; set endpoint.model or --model")
    return models[0]


async def check_model(client: httpx.AsyncClient, base_url: str, model: str) -> None:
    """A model the server's list does not name would fail every request (vLLM, SGLang, Ollama answer 404):
    say so before the run. Servers that list nothing readable, or serve any name, are given the benefit."""
    try:
        models = await listed_models(client, base_url)
    except ClientSetupError:
        return
    if models and model not in models:
        shown = ", ".join(models[:5]) + (" …" if len(models) > 5 else "")
        raise ClientSetupError(f"--model / endpoint.model: {model!r} is not among the models the server lists ({shown})")


def build_payload(endpoint: Endpoint, prompt: Prompt, ignore_eos: bool) -> dict:
    body: dict = {
        "model": endpoint.model,
        "max_tokens": prompt.max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if ignore_eos:
        body["ignore_eos"] = True  # vLLM, SGLang and llama.cpp honour it; it makes output lengths exact
    if endpoint.api == "chat":
        # A conversation's history or a shared system prompt travels as messages; else one user message.
        body["messages"] = prompt.messages or [{"role": "user", "content": prompt.text}]
    else:
        body["prompt"] = prompt.text
    return body


# The fast path reads a standard compact chunk (vLLM, SGLang, llama.cpp, the simulator) without json.loads:
# most chunks only matter for whether they carry text. Anything else it is unsure of goes to json.loads.
_TEXT_MARK = b'"text":"'
_CONTENT_MARK = b'"content":"'
_FINISH_NULL = b'"finish_reason":null'
_SLOW_NEEDLES = (b'"error"', b"befori_sim", b"reasoning_content")


def fast_chunk_has_text(data: bytes, chat: bool) -> bool | None:
    """True / False: a one-choice chunk with non-empty / empty text, no finish_reason, no usage, no error.

    None when unsure: the caller parses the chunk with json.loads. A quote inside a JSON string is always
    escaped, so an unescaped `"text":"` is a key and its value; one occurrence only, or we are unsure.
    Checks the shape, not full JSON validity: a chunk that ends in "}" and has exactly this shape is taken.
    """
    mark = _CONTENT_MARK if chat else _TEXT_MARK
    i = data.find(mark)
    if i <= 0 or data[i - 1] == 0x5C or data.find(mark, i + len(mark)) >= 0:  # 0x5C: backslash
        return None
    if not data.endswith(b"}") or _FINISH_NULL not in data:
        return None
    if b'"usage"' in data and b'"usage":null' not in data:
        return None
    for needle in _SLOW_NEEDLES:
        if needle in data:
            return None
    return data[i + len(mark)] != 0x22  # 0x22: the closing quote of an empty string


def _chunk_text(obj: dict, chat: bool) -> tuple[str, str | None]:
    choices = obj.get("choices")
    if not choices:
        return "", None  # e.g. the usage-only chunk
    choice = choices[0]
    if chat:
        delta = choice.get("delta") or {}
        text = delta.get("content") or delta.get("reasoning_content") or ""
    else:
        text = choice.get("text") or ""
    return text, choice.get("finish_reason")


class StreamClient:
    """Sends one streamed request and fills in its RequestRecord."""

    def __init__(self, http: httpx.AsyncClient, endpoint: Endpoint, ignore_eos: bool, timeout_s: float) -> None:
        self.http = http
        self.endpoint = endpoint
        self.ignore_eos = ignore_eos
        self.timeout_s = timeout_s
        self.url = endpoint.base_url.rstrip("/") + endpoint.path
        self.chat = endpoint.api == "chat"
        self._lean_request: tuple | None = None  # URL, headers, extensions: built once
        # Retry-After of failed requests, by request id, in seconds; LoadRunner pops each after the request.
        self.retry_after_s: dict[int, float] = {}

    @contextlib.asynccontextmanager
    async def _open_stream(self, body: bytes) -> AsyncIterator[httpx.Response]:
        """The streamed POST. Over LeanTransport (or a transport that says `direct_requests`, such as
        bench/aiohttp_transport.py) the request goes to the transport directly: AsyncClient.send's
        auth, redirect, cookie and hook layers cost ~15% of the client's CPU at 256 streams and do nothing here
        (no redirects are followed, no cookies kept; the API key is in the client's default headers)."""
        transport = getattr(self.http, "_transport", None)
        if not getattr(transport, "direct_requests", False):
            async with self.http.stream("POST", self.url, content=body,
                                        headers={"Content-Type": "application/json"}) as resp:
                yield resp
            return
        if self._lean_request is None:
            headers = self.http.headers.copy()
            headers["Content-Type"] = "application/json"
            self._lean_request = (httpx.URL(self.url), headers, {"timeout": self.http.timeout.as_dict()})
        url, headers, extensions = self._lean_request
        request = httpx.Request("POST", url, headers=headers, content=body, extensions=extensions)
        resp = await transport.handle_async_request(request)
        resp.request = request
        try:
            yield resp
        finally:
            await resp.aclose()

    def _scrub(self, text: str) -> str:
        for secret in (self.endpoint.api_key, *self.endpoint.secrets):
            if secret:
                text = text.replace(secret, "***")
        return text[:MAX_ERROR_MESSAGE]

    async def send(
        self,
        record: RequestRecord,
        prompt: Prompt,
        on_first_token: Callable[[RequestRecord], None] | None = None,
    ) -> RequestRecord:
        payload = build_payload(self.endpoint, prompt, self.ignore_eos)
        body = json.dumps(payload).encode()
        record.input_tokens = prompt.counted_tokens
        record.input_tokens_source = prompt.count_source
        try:
            async with asyncio.timeout(self.timeout_s):
                # A conversation's turn keeps the reply's text: the next turn re-sends it, as a chat client does.
                reply: list[str] | None = [] if prompt.turn else None
                await self._stream(record, body, prompt.max_tokens, on_first_token, reply)
                if reply:
                    prompt.reply = "".join(reply)
        except asyncio.CancelledError:
            self._fail(record, "cancelled", "stopped before the request ended")
            raise
        except TimeoutError:
            self._fail(record, "timeout", f"no complete reply within {self.timeout_s:g} s")
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.ProxyError) as exc:
            self._fail(record, "connect", f"{type(exc).__name__}: {exc}")
        except NoReplyError as exc:
            self._fail(record, "no_reply", str(exc))
        except (httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout) as exc:
            self._fail(record, "timeout", f"{type(exc).__name__}: {exc}")
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, httpx.DecodingError, SSEError) as exc:
            self._fail(record, "protocol", f"{type(exc).__name__}: {exc}")
        except httpx.HTTPError as exc:
            self._fail(record, "protocol", f"{type(exc).__name__}: {exc}")
        return record

    def _fail(self, record: RequestRecord, kind: str, message: str) -> None:
        if record.error_kind is None:
            record.error_kind = kind
            record.error_message = self._scrub(message)
        if record.t_end_ns is None:
            record.t_end_ns = time.perf_counter_ns()

    async def _stream(
        self, record: RequestRecord, body: bytes, max_tokens: int, on_first_token: Callable | None,
        reply: list[str] | None = None,
    ) -> None:
        perf = time.perf_counter_ns
        chat = self.chat
        parser = SSEParser()
        # A stream that goes on well past max_tokens is broken; cut it off rather than read forever.
        chunk_limit = 2 * max_tokens + 16
        record.t_send_ns = perf()
        async with self._open_stream(body) as resp:
            record.t_headers_ns = perf()
            record.http_status = resp.status_code
            if resp.status_code != 200:
                text = await _read_some(resp, ERROR_BODY_BYTES)
                retry = resp.headers.get("retry-after")
                extra = f" (Retry-After: {retry})" if retry else ""
                wait_s = parse_retry_after(retry) if retry else None
                if wait_s is not None:
                    self.retry_after_s[record.request_id] = wait_s  # the load loop pops it
                self._fail(record, "http_status", f"HTTP {resp.status_code}{extra}: {text}")
                return
            ctype = resp.headers.get("content-type", "")
            if "text/event-stream" not in ctype:
                text = await _read_some(resp, ERROR_BODY_BYTES)
                self._fail(record, "protocol", f"expected text/event-stream, got {ctype or 'no content type'}: {text}")
                return
            if resp.headers.get("content-encoding"):
                reader = resp.aiter_bytes()
            else:  # LeanBody directly: two generator layers fewer per network read
                reader = resp.stream if getattr(resp.stream, "direct_reads", False) else resp.aiter_raw()
            t_last = 0
            done = False
            usage = None
            timings = None
            async for raw in reader:
                now = perf()
                for data in parser.feed(raw):
                    # Keeping the reply's text needs every chunk parsed: conversations only.
                    has_text = fast_chunk_has_text(data, chat) if reply is None else None
                    obj = None
                    if has_text is None:
                        if data == b"[DONE]":
                            done = True
                            break
                        try:
                            obj = json.loads(data)
                        except (json.JSONDecodeError, UnicodeDecodeError):
                            self._fail(record, "protocol", f"malformed JSON in a chunk: {data[:80]!r}")
                            return
                        if not isinstance(obj, dict):
                            self._fail(record, "protocol", f"a chunk is not a JSON object: {data[:80]!r}")
                            return
                        if "error" in obj and not obj.get("choices"):
                            self._fail(record, "protocol", f"error in stream: {json.dumps(obj['error'])[:200]}")
                            return
                        text, finish = _chunk_text(obj, chat)
                        if reply is not None and text:
                            reply.append(text)
                        has_text = bool(text)
                    if has_text:
                        record.content_chunks += 1
                        if record.t_first_token_ns is None:
                            record.t_first_token_ns = now
                            if on_first_token is not None:
                                on_first_token(record)
                        else:
                            record.itl_ns.append(now - t_last)
                        t_last = now
                        if record.content_chunks > chunk_limit:
                            self._fail(record, "protocol", f"stream ran past {chunk_limit} chunks (max_tokens {max_tokens})")
                            return
                    if obj is None:
                        continue  # the fast path: no finish_reason, usage or ground truth in this chunk
                    if finish:
                        record.finish_reason = finish
                    if obj.get("usage"):
                        usage = obj["usage"]
                    if obj.get("timings"):
                        timings = obj["timings"]  # llama.cpp's server: its own counts and speeds
                    if "befori_sim" in obj:
                        record.server_timing = obj["befori_sim"]
                if done:
                    break
            end = perf()
            if not done:
                for data in parser.finish():
                    if data == b"[DONE]":
                        done = True
            record.t_end_ns = end
            if usage:
                # A gateway can put a placeholder usage of zeros on every chunk and never send the real one
                # (LiteLLM 1.55's proxy on /v1/completions). 0 output tokens beside text that arrived, or 0 prompt
                # tokens, is no count: the record keeps its own then, rather than dividing dollars by zero.
                out_n = usage.get("completion_tokens")
                if isinstance(out_n, int) and (out_n > 0 or record.content_chunks == 0):
                    record.output_tokens = out_n
                    record.output_tokens_source = "usage"
                in_n = usage.get("prompt_tokens")
                if isinstance(in_n, int) and in_n > 0:
                    record.input_tokens = in_n
                    record.input_tokens_source = "usage"
            if record.output_tokens is None and isinstance(timings, dict) and isinstance(timings.get("predicted_n"), int):
                # llama.cpp without usage: predicted_n is the tokens it generated. (Its prompt_n leaves out the
                # prompt tokens served from its cache, so it is not an input count.)
                record.output_tokens = timings["predicted_n"]
                record.output_tokens_source = "timings"
            if record.output_tokens is None:
                record.output_tokens = record.content_chunks
                record.output_tokens_source = "estimate"
            if record.t_first_token_ns is None:
                self._fail(record, "protocol", "the stream ended without any token")
            elif record.finish_reason is None and not done:
                # No [DONE] is tolerated when the last chunk said why it finished; otherwise it was cut.
                self._fail(record, "protocol", "the stream ended before a finish_reason or [DONE]")


def parse_retry_after(value: str) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date (RFC 9110 §10.2.3); None if neither."""
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


async def _read_some(resp: httpx.Response, limit: int) -> str:
    """The start of a reply's body, decoded (a gateway's error page may be gzip'd), as one line."""
    data = b""
    async for chunk in resp.aiter_bytes():
        data += chunk
        if len(data) >= limit:
            break
    return data[:limit].decode("utf-8", errors="replace").strip().replace("\n", " ")
