from __future__ import annotations

import subprocess
import sys

import pytest

from befori_tui.core.config import ConfigError, load_config, redact_url

GOOD = """
[endpoint]
url = "http://127.0.0.1:8000/v1"
api = "chat"
[workload]
input_tokens_mean = 128
output_tokens_mean = 64
[load]
concurrency = [1, 2, 4]
requests_per_level = 10
[pricing]
usd_per_hour = 3.24
gpu_count = 1
[[pricing.compare]]
name = "GPT-4o-mini"
usd_per_million_input = 0.15
usd_per_million_output = 0.60
"""


def test_good_config(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text(GOOD)
    cfg = load_config(p)
    assert cfg.endpoint.api == "chat" and cfg.load.concurrency == [1, 2, 4]
    assert cfg.pricing.usd_per_hour == 3.24 and cfg.pricing.compare[0].usd_per_million_output == 0.60


@pytest.mark.parametrize(
    "text,needle",
    [
        ("[endpoint]\nurll = 'x'", "endpoint.urll: unknown key"),
        ("[load]\nconcurrency = [1, 0]", "load.concurrency must be ≥ 1"),
        ("[load]\nconcurrency = 'many'", "load.concurrency: expected a list"),
        ("[load]\nrequests_per_level = 1.5", "load.requests_per_level: expected an integer"),
        ("[pricing]\nusd_per_hour = 'cheap'", "pricing.usd_per_hour: expected a number"),
        ("[pricing]\nusd_per_hour = -1", "pricing.usd_per_hour must be ≥ 0"),
        ("[endpoint]\nurl = 'ftp://x/v1'", "endpoint.url: not an http(s) URL"),
        ("[endpoint]\nurl = 'http://127.0.0.1:8000'", "must end in /v1"),
        ("[endpoint]\napi = 'grpc'", "endpoint.api must be"),
        ("[workload]\nignore_eos = 1", "workload.ignore_eos: expected true or false"),
        ("[[pricing.compare]]\nname = 'x'", "pricing.compare[0]: missing key"),
        ("bogus = 1", "unknown key 'bogus'"),
        ("[load\n", "invalid TOML"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path, text, needle):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    assert needle in str(exc.value)
    assert str(p) in str(exc.value)
    assert "\n" not in str(exc.value)


def test_missing_file():
    with pytest.raises(ConfigError, match="nope.toml: cannot read config"):
        load_config("nope.toml")


def test_redact_url():
    assert redact_url("http://user:secret@host:8000/v1") == "http://host:8000/v1"
    assert redact_url("http://host/v1") == "http://host/v1"


@pytest.mark.parametrize(
    "args,needle",
    [
        (["bench", "--concurrency", "0"], "--concurrency"),
        (["bench", "--concurrency", "a,b"], "--concurrency"),
        (["bench", "--url", "localhost:8000"], "not an http(s) URL"),
        (["bench", "--input-tokens", "x:y"], "--input-tokens"),
        (["bench", "--config", "/nonexistent/c.toml"], "/nonexistent/c.toml"),
        (["bench", "--prompts", "/nonexistent/p.jsonl", "--url", "http://127.0.0.1:9/v1"], "p.jsonl"),
        (["bench", "--requests-per-level", "many"], "--requests-per-level"),
        (["bench", "--api-key-env", "BEFORI_TEST_UNSET_VAR", "--url", "http://127.0.0.1:9/v1"], "BEFORI_TEST_UNSET_VAR"),
        (["cost", "--usd-per-hour", "3"], "missing --concurrency"),
        (["cost", "--usd-per-hour", "3", "--concurrency", "1", "--mean-input-tokens", "5", "--ttft", "2",
          "--mean-output-tokens", "5", "--e2e", "1"], "--e2e"),
        (["frobnicate"], "unknown command"),
        (["bench", "--timeout", "0"], "load.timeout_s must be > 0, got 0 (--timeout)"),
        (["bench", "--requests-per-level", "0"], "(--requests-per-level)"),
        (["bench", "--concurrency", ""], "--concurrency: expected a comma-separated list"),
        # Checked before the simulator starts or anything is measured:
        (["bench", "--profile", "nope"], "--profile: no simulator profile 'nope'"),
        (["monitor", "--profile", "nope"], "--profile: no simulator profile 'nope'"),
        (["bench", "--out", "/"], "--out: '/' is a directory"),
        (["bench", "--raw", "/"], "--raw: '/' is a directory"),
        (["monitor", "--out", "/dev/null/x.toml"], "'/dev/null' is a file"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(args, needle):
    proc = subprocess.run([sys.executable, "-m", "befori_tui", *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_shipped_configs_load():
    from pathlib import Path

    configs = sorted(Path(__file__).resolve().parent.parent.joinpath("configs").glob("*.toml"))
    assert len(configs) >= 3
    for path in configs:
        load_config(path)


URL = "http://127.0.0.1:8000/v1"


@pytest.mark.parametrize("argv, config, source, usd_per_hour, gpu_count", [
    (["--url", URL], None, "default", 27.78, 8),
    (["--url", URL, "--usd-per-hour", "10"], None, "flag", 10, 8),
    (["--url", URL], "[pricing]\nusd_per_hour = 3.24\n", "config", 3.24, 8),
    (["--url", URL, "--usd-per-hour", "10"], "[pricing]\nusd_per_hour = 3.24\n", "flag", 10, 8),
    (["--url", URL], "[pricing]\ngpu_count = 1\n", "default", 27.78, 1),  # a [pricing] table with no price
    ([], None, "simulator", 27.78, 8),  # the demo's simulated 8×H100 box
    (["--profile", "llama-3.1-8b-1xh100"], None, "simulator", 27.78 / 8, 1),  # one simulated H100
    (["--usd-per-hour", "10"], None, "flag", 10, 8),
    ([], "[pricing]\nusd_per_hour = 3.24\n", "config", 3.24, 8),
])
def test_the_price_says_where_it_came_from(tmp_path, argv, config, source, usd_per_hour, gpu_count):
    from befori_tui.cliargs import OneLineParser, add_run_flags, config_from_args

    if config is not None:
        (tmp_path / "c.toml").write_text(config)
        argv = [*argv, "--config", str(tmp_path / "c.toml")]
    p = OneLineParser()
    add_run_flags(p)
    pricing = config_from_args(p.parse_args(argv)).pricing
    assert (pricing.source, pricing.usd_per_hour, pricing.gpu_count) == (source, pytest.approx(usd_per_hour), gpu_count)


def test_price_note_says_when_the_price_is_not_the_users():
    from befori_tui.core.config import PricingConfig
    from befori_tui.core.format import price_note

    assert price_note(PricingConfig()) == "priced at the default $27.78/h (8×H100 rental) — set --usd-per-hour"
    assert "--usd-per-hour" in price_note(PricingConfig(), short=True)
    assert len(price_note(PricingConfig(), short=True)) < len(price_note(PricingConfig()))
    assert "price of the simulated box" in price_note(PricingConfig(source="simulator"))
    assert "price of the simulated box" in price_note(PricingConfig(source="simulator"), short=True)
    assert price_note(PricingConfig(usd_per_hour=10, source="flag")) is None
    assert price_note(PricingConfig(usd_per_hour=10, source="config")) is None


def test_pricing_source_is_not_a_config_key(tmp_path):
    # It records where the price came from; a file must not be able to claim it was given on the command line.
    p = tmp_path / "c.toml"
    p.write_text("[pricing]\nsource = 'flag'\n")
    with pytest.raises(ConfigError, match="pricing.source"):
        load_config(p)


def test_endpoint_wire_options_from_file_and_flags(tmp_path, monkeypatch):
    """[endpoint.headers], TLS and proxy keys; flags add headers and override the rest."""
    from befori_tui.cliargs import OneLineParser, add_run_flags, config_from_args
    from befori_tui.core.client import Endpoint

    monkeypatch.setenv("BEFORI_TEST_GW", "gw-secret")
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    path = tmp_path / "c.toml"
    path.write_text(f"[endpoint]\nurl = 'https://gw.example.test/v1'\nca_bundle = '{ca}'\n"
                    "[endpoint.headers]\nX-Tenant = 'acme'\nX-Key = 'env:BEFORI_TEST_GW'\n")
    p = OneLineParser(prog="befori-tui bench")
    add_run_flags(p)
    cfg = config_from_args(p.parse_args(["--config", str(path), "--header", "X-Extra: 1", "--insecure",
                                         "--no-proxy"]))
    e = cfg.endpoint
    assert e.headers == {"X-Tenant": "acme", "X-Key": "env:BEFORI_TEST_GW", "X-Extra": "1"}
    assert (e.ca_bundle, e.verify, e.proxy_from_env) == (str(ca), False, False)
    endpoint = Endpoint.from_config(cfg, "m")
    assert endpoint.headers["X-Key"] == "gw-secret" and endpoint.secrets == ["gw-secret"]
