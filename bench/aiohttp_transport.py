"""aiohttp under httpx's API, for bench/fidelity.py's `aiohttp` mode only (aiohttp is not a dependency).

The load loop speaks httpx (requests, responses, exceptions); this transport carries its requests over one
aiohttp ClientSession (llhttp parser, a read per network read through `iter_any`), so the comparison with
core/transport.py's LeanTransport is of the wire work alone. Like LeanTransport it takes the direct path in
core/client.py (`direct_requests`, `direct_reads`): no AsyncClient.send layers, no httpx stream wrappers per
read. Only what the benchmark needs: errors become httpx's nearest exception, bodies are not decompressed
here (httpx does it where asked).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import httpx


class _Body(httpx.AsyncByteStream):
    direct_reads = True

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for data in self._resp.content.iter_any():
                yield data
        except aiohttp.ClientPayloadError as exc:
            raise httpx.RemoteProtocolError(str(exc)) from exc
        except aiohttp.ClientError as exc:
            raise httpx.ReadError(str(exc)) from exc
        except asyncio.TimeoutError as exc:
            raise httpx.ReadTimeout(str(exc)) from exc

    async def aclose(self) -> None:
        self._resp.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    direct_requests = True

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # limit=0: no pool limit (the slots bound what is in flight, as with LeanTransport).
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False,
                                                  trust_env=False)
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout") or {}
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeouts.get("connect"),
                                        sock_read=timeouts.get("read"))
        body = b"".join([part async for part in request.stream])  # type: ignore[union-attr]
        headers = [(k.decode(), v.decode()) for k, v in request.headers.raw if k.lower() != b"host"]
        try:
            resp = await self._get_session().request(request.method, str(request.url), data=body or None,
                                                     headers=headers, timeout=timeout,
                                                     skip_auto_headers=("User-Agent", "Content-Type"))
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(str(exc)) from exc
        except aiohttp.ClientError as exc:
            raise httpx.RemoteProtocolError(str(exc)) from exc
        except asyncio.TimeoutError as exc:
            raise httpx.ReadTimeout(str(exc)) from exc
        return httpx.Response(resp.status, headers=list(resp.raw_headers), stream=_Body(resp),
                              extensions={"http_version": b"HTTP/1.1"})

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
