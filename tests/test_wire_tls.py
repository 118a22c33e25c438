"""TLS for the load: a loopback https server with a certificate made at test time (trustme), reached with
--ca-bundle, --client-cert, --insecure, and SNI; and the proxy cases (tests/test_wire_proxy.py) use it too."""

from __future__ import annotations

import ssl

import pytest
import trustme

from befori_tui.core.client import (ClientSetupError, Endpoint, StreamClient, listed_models, make_http_client,
                                    wire_note)
from befori_tui.core.prompts import Prompt
from befori_tui.core.records import RequestRecord
from tests.wire_server import SSE_HEAD, WireServer, chunked, cmpl, models_or


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture
def pki(ca, tmp_path):
    """The CA's PEM, a server certificate for localhost, and a client certificate and key, as files."""
    server_cert = ca.issue_cert("localhost")
    client_cert = ca.issue_cert("client@example.test")
    paths = {"ca": tmp_path / "ca.pem", "client_cert": tmp_path / "client.pem", "client_key": tmp_path / "client.key",
             "client_both": tmp_path / "client-both.pem"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    client_cert.cert_chain_pems[0].write_to_path(str(paths["client_cert"]))
    client_cert.private_key_pem.write_to_path(str(paths["client_key"]))
    client_cert.private_key_and_cert_chain_pem.write_to_path(str(paths["client_both"]))
    return server_cert, paths


def server_context(ca, server_cert, require_client_cert: bool = False) -> tuple[ssl.SSLContext, list]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(ctx)
    if require_client_cert:
        ca.configure_trust(ctx)
        ctx.verify_mode = ssl.CERT_REQUIRED
    names: list = []

    def sni(sslobj, name, _ctx):
        names.append(name)

    ctx.sni_callback = sni
    return ctx, names


async def stream_ok(conn, headers, body):
    await conn.send(SSE_HEAD + chunked(b"data: " + cmpl("x") + b"\n\n", b"data: " + cmpl("y", "length") + b"\n\n",
                                       b"data: [DONE]\n\n"))


async def one_request(endpoint: Endpoint) -> RequestRecord:
    async with make_http_client(endpoint, 1, 5.0, 2.0) as http:
        client = StreamClient(http, endpoint, ignore_eos=True, timeout_s=5.0)
        return await client.send(RequestRecord(0, 0, 0, 1), Prompt("hi", 2, 2, "estimate", 2))


async def test_ca_bundle_and_sni(ca, pki):
    server_cert, paths = pki
    ctx, names = server_context(ca, server_cert)
    async with WireServer(lambda c: models_or(c, stream_ok), ssl_context=ctx) as srv:
        url = srv.url("/v1", host="localhost")
        rec = await one_request(Endpoint(url, "completions", "m", "", ca_bundle=str(paths["ca"])))
        assert rec.ok, rec.error_message
        assert names == ["localhost"]  # SNI: the server's name
        # Without the bundle the certificate is not trusted: a connect failure that says TLS.
        rec = await one_request(Endpoint(url, "completions", "m", ""))
        assert rec.error_kind == "connect" and "TLS" in rec.error_message and "CERTIFICATE_VERIFY_FAILED" in rec.error_message
        # Before a run, the same is one line that names the options.
        async with make_http_client(Endpoint(url, "completions", "m", ""), 1, 5.0, 2.0) as http:
            with pytest.raises(ClientSetupError, match="CERTIFICATE_VERIFY_FAILED.*--ca-bundle, --client-cert, --insecure"):
                await listed_models(http, url)


async def test_insecure_accepts_any_certificate_and_says_so(ca, pki):
    server_cert, _ = pki
    ctx, _ = server_context(ca, server_cert)
    async with WireServer(lambda c: models_or(c, stream_ok), ssl_context=ctx) as srv:
        endpoint = Endpoint(srv.url("/v1", host="localhost"), "completions", "m", "", verify=False)
        rec = await one_request(endpoint)
        assert rec.ok, rec.error_message
        assert "TLS certificate NOT verified" in wire_note(endpoint)


@pytest.mark.parametrize("form", ["cert:key", "one file"])
async def test_client_certificate(ca, pki, form):
    server_cert, paths = pki
    ctx, _ = server_context(ca, server_cert, require_client_cert=True)
    cert = f"{paths['client_cert']}:{paths['client_key']}" if form == "cert:key" else str(paths["client_both"])
    async with WireServer(lambda c: models_or(c, stream_ok), ssl_context=ctx) as srv:
        url = srv.url("/v1", host="localhost")
        rec = await one_request(Endpoint(url, "completions", "m", "", ca_bundle=str(paths["ca"]), client_cert=cert))
        assert rec.ok, rec.error_message
        rec = await one_request(Endpoint(url, "completions", "m", "", ca_bundle=str(paths["ca"])))
        assert not rec.ok  # the server wants a certificate


async def test_unusable_tls_files_are_one_line_errors(tmp_path):
    bad = tmp_path / "not-a-cert.pem"
    bad.write_text("hello")
    with pytest.raises(ClientSetupError, match="--ca-bundle"):
        make_http_client(Endpoint("https://localhost:1/v1", "completions", "m", "", ca_bundle=str(bad)), 1, 1, 1)
    with pytest.raises(ClientSetupError, match="--client-cert"):
        make_http_client(Endpoint("https://localhost:1/v1", "completions", "m", "", client_cert=str(bad)), 1, 1, 1)
