"""Bad input is checked before anything starts, in both front ends: one line naming the file (and line or key),
exit code 2, no traceback, no secret from a URL echoed back."""

from __future__ import annotations

import pytest

import befori_tui.cli as cli

URL = "http://127.0.0.1:9/v1"  # nothing listens there: an error must come before any connection

PROMPT_FILES = {
    "not-json.jsonl": (b'{"prompt": "a"}\nnot json\n', "not-json.jsonl:2: not JSON"),
    "empty.jsonl": (b"\n\n", "empty.jsonl: the dataset is empty"),
    "binary.jsonl": (b"\xff\xfe\x00garbage\n", "binary.jsonl: not UTF-8 text"),
    "no-prompt.jsonl": (b'{"text": "a"}\n', 'no-prompt.jsonl:1: each line needs a non-empty string "prompt"'),
    "bad-length.jsonl": (b'{"prompt": "a", "output_tokens": 0}\n', 'bad-length.jsonl:1: "output_tokens" must be'),
}

CONFIGS = {
    "retry-type.toml": ("[load]\nretry_after = 'yes'\n", "load.retry_after: expected true or false"),
    "unknown.toml": ("[load]\nretry_afterr = true\n", "load.retry_afterr: unknown key"),
    "zero.toml": ("[load]\nconcurrency = [4, 0]\n", "load.concurrency must be ≥ 1"),
    "timeout.toml": ("[load]\ntimeout_s = 0\n", "load.timeout_s must be > 0"),
    "latin1.toml": (b"[endpoint]\nmodel = '\xe9'\n", "not UTF-8"),
    "creds.toml": ("[endpoint]\nurl = 'http://bob:hunter2-secret@10.0.0.1:8000'\n", "must end in /v1"),
    "header-type.toml": ("[endpoint.headers]\nX-Key = 5\n", "endpoint.headers.X-Key: expected a string"),
    "header-env.toml": ("[endpoint.headers]\nX-Key = 'env:BEFORI_TEST_UNSET_VAR'\n",
                        "endpoint.headers.X-Key: env:BEFORI_TEST_UNSET_VAR names an environment variable that is not set"),
    "headers-not-table.toml": ("[endpoint]\nheaders = 'X-Key: 1'\n", "endpoint.headers: expected a table"),
    "verify-type.toml": ("[endpoint]\nverify = 'no'\n", "endpoint.verify: expected true or false"),
    "ca.toml": ("[endpoint]\nca_bundle = '/no/such/ca.pem'\n", "endpoint.ca_bundle: no such file '/no/such/ca.pem'"),
}


def one_line_error(capsys, argv: list[str]) -> str:
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse's usage errors (OneLineParser: one line, exit 2)
        code = exc.code
    assert code == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "Traceback" not in err and "\n" not in err, err
    assert captured.out == ""
    return err


@pytest.mark.parametrize("command", ["bench", "monitor"])
@pytest.mark.parametrize("name", sorted(PROMPT_FILES))
def test_bad_prompt_files(tmp_path, capsys, command, name):
    data, needle = PROMPT_FILES[name]
    path = tmp_path / name
    path.write_bytes(data)
    err = one_line_error(capsys, [command, "--url", URL, "--prompts", str(path)])
    assert needle in err and str(tmp_path) in err


@pytest.mark.parametrize("command", ["bench", "monitor"])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_bad_configs(tmp_path, capsys, command, name):
    text, needle = CONFIGS[name]
    path = tmp_path / name
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    err = one_line_error(capsys, [command, "--config", str(path)] + ([] if name == "creds.toml" else ["--url", URL]))
    assert needle in err and name in err
    assert "hunter2" not in err


@pytest.mark.parametrize("command", ["bench", "monitor"])
@pytest.mark.parametrize("argv, needle", [
    (["--url", URL, "--timeout", "0"], "load.timeout_s must be > 0, got 0 (--timeout)"),
    (["--url", URL, "--concurrency", "4,0"], "--concurrency"),
    (["--url", URL, "--max-seconds", "-1"], "load.max_seconds"),
    (["--url", "http://bob:hunter2@127.0.0.1:9"], "must end in /v1"),
    (["--url", "ftp://bob:hunter2@127.0.0.1:9/v1"], "not an http(s) URL"),
    (["--url", URL, "--honor-retry-after=yes"], "--honor-retry-after"),
    (["--url", URL, "--prompts", "/no/such/prompts.jsonl"], "prompts.jsonl"),
    (["--url", URL, "--header", "X-Key hunter2"], "--header: expected NAME:VALUE or NAME:env:VAR"),
    (["--url", URL, "--header", "X-Key:env:BEFORI_TEST_UNSET_VAR"], "env:BEFORI_TEST_UNSET_VAR names an environment"),
    (["--url", URL, "--header", "Bad Name:hunter2"], "'Bad Name' is not a header name"),
    (["--url", URL, "--header", "Content-Length:5"], "Content-Length is set by befori-tui itself"),
    (["--url", URL, "--ca-bundle", "/no/such/ca.pem"], "endpoint.ca_bundle: no such file '/no/such/ca.pem'"),
    (["--url", URL, "--client-cert", "/no/c.pem:/no/k.pem"], "endpoint.client_cert: no such file '/no/c.pem'"),
])
def test_bad_flags(capsys, command, argv, needle):
    err = one_line_error(capsys, [command, *argv])
    assert needle in err
    assert "hunter2" not in err


def test_themes_that_is_a_file_is_one_line(tmp_path, capsys):
    path = tmp_path / "theme.toml"
    path.write_text("name = 'x'\n")
    err = one_line_error(capsys, ["monitor", "--url", URL, "--themes", str(path)])
    assert "--themes" in err and str(path) in err
