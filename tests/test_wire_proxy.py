"""Proxies for the load, read from the environment as curl and httpx read them: HTTP_PROXY (absolute-form
requests), HTTPS_PROXY (a CONNECT tunnel, TLS inside it), NO_PROXY, --no-proxy; through a loopback proxy
written in tests/wire_server.py. The start line and the results name the proxy without its credentials."""

from __future__ import annotations

import asyncio
import base64
import os
import sys
import tomllib

import pytest

from befori_tui.core.client import Endpoint, wire_facts, wire_note
from tests.hostile_server import HostileServer
from tests.test_wire_tls import one_request, server_context, stream_ok
from tests.test_wire_tls import ca, pki  # noqa: F401 — fixtures
from tests.wire_server import Proxy, WireServer, models_or

PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
              "NO_PROXY")


@pytest.fixture
def clean_env(monkeypatch):
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


async def test_http_target_through_http_proxy_with_credentials(clean_env):
    async with Proxy() as proxy, WireServer(lambda c: models_or(c, stream_ok)) as srv:
        clean_env.setenv("HTTP_PROXY", f"http://user:pw-secret@127.0.0.1:{proxy.port}")
        endpoint = Endpoint(srv.url("/v1"), "completions", "m", "")
        rec = await one_request(endpoint)
        assert rec.ok, rec.error_message
        line, auth = proxy.seen[0]
        assert line == f"POST {srv.url('/v1/completions')} HTTP/1.1"  # absolute form
        assert auth == "Basic " + base64.b64encode(b"user:pw-secret").decode()
        note, facts = wire_note(endpoint), wire_facts(endpoint)
        assert note == f"through the proxy http://127.0.0.1:{proxy.port}"
        assert facts["proxy"] == f"http://127.0.0.1:{proxy.port}" and "pw-secret" not in repr(facts)


async def test_https_target_through_connect_tunnel(clean_env, ca, pki):  # noqa: F811
    server_cert, paths = pki
    ctx, names = server_context(ca, server_cert)
    async with Proxy() as proxy, WireServer(lambda c: models_or(c, stream_ok), ssl_context=ctx) as srv:
        clean_env.setenv("https_proxy", proxy.url)
        rec = await one_request(Endpoint(srv.url("/v1", host="localhost"), "completions", "m", "",
                                         ca_bundle=str(paths["ca"])))
        assert rec.ok, rec.error_message
        assert proxy.seen == [(f"CONNECT localhost:{srv.port} HTTP/1.1", "")]
        assert names == ["localhost"]  # SNI inside the tunnel is the server's name


async def test_no_proxy_and_the_no_proxy_flag_go_direct(clean_env):
    async with Proxy() as proxy, WireServer(lambda c: models_or(c, stream_ok)) as srv:
        clean_env.setenv("HTTP_PROXY", proxy.url)
        clean_env.setenv("NO_PROXY", "example.test,127.0.0.1")
        endpoint = Endpoint(srv.url("/v1"), "completions", "m", "")
        assert (await one_request(endpoint)).ok and wire_note(endpoint) == ""
        clean_env.delenv("NO_PROXY")
        endpoint = Endpoint(srv.url("/v1"), "completions", "m", "", proxy_from_env=False)  # --no-proxy
        assert (await one_request(endpoint)).ok and wire_facts(endpoint)["proxy"] == ""
        assert proxy.seen == []


async def test_a_proxy_that_refuses_is_a_connect_error_naming_it(clean_env, ca, pki):  # noqa: F811
    async def refuse(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        clean_env.setenv("HTTPS_PROXY", f"http://u:secret-pw@127.0.0.1:{port}")
        rec = await one_request(Endpoint("https://localhost:9/v1", "completions", "m", ""))
    assert rec.error_kind == "connect" and "407" in rec.error_message and "refused CONNECT" in rec.error_message
    assert "secret-pw" not in rec.error_message


async def test_bench_says_a_proxy_carried_the_load(clean_env, tmp_path):
    """`befori-tui bench` through HTTP_PROXY: the start line and the TOML name the proxy, without credentials."""
    out = tmp_path / "p.toml"
    with HostileServer(modes=["ok"]) as server:
        async with Proxy() as proxy:
            env = {**os.environ, "HTTP_PROXY": f"http://someone:pw-PROXY-77@127.0.0.1:{proxy.port}"}
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "befori_tui", "bench", "--url", server.base_url, "--concurrency", "2",
                "--requests-per-level", "4", "--input-tokens", "20", "--output-tokens", "4", "--telemetry", "none",
                "--server-metrics", "off", "--out", str(out), env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, stderr.decode()[-2000:]
    assert f"through the proxy http://127.0.0.1:{proxy.port}" in stderr.decode()
    assert any("/v1/completions" in line for line, _ in proxy.seen)
    data = tomllib.loads(out.read_text())
    assert data["endpoint"]["proxy"] == f"http://127.0.0.1:{proxy.port}"
    for text in (out.read_text(), out.with_suffix(".jsonl").read_text(), stdout.decode(), stderr.decode()):
        assert "pw-PROXY-77" not in text


async def test_an_https_proxy_url_is_said_to_be_unsupported(clean_env):
    from befori_tui.core.client import ClientSetupError, listed_models, make_http_client

    clean_env.setenv("HTTP_PROXY", "https://u:pw-x@127.0.0.1:9")
    endpoint = Endpoint("http://127.0.0.1:9/v1", "completions", "m", "")
    async with make_http_client(endpoint, 1, 5.0, 2.0) as http:
        with pytest.raises(ClientSetupError, match=r"proxy https://127.0.0.1:9: only http:// proxies are supported"):
            await listed_models(http, endpoint.base_url)
