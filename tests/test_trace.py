"""Trace replay (docs/workloads.md): a Mooncake JSONL or Azure CSV trace sent on its own clock, against a real
`befori-tui sim` on 127.0.0.1 — arrival times, input lengths, shared prefix blocks, bad files."""

from __future__ import annotations

import json
import statistics
import tomllib
from pathlib import Path

import pytest

from befori_tui.core.config import ConfigError
from befori_tui.core.trace import load_trace
from tests.test_workloads import prefix_hits, run_bench


def read_records(path: Path) -> list[dict]:
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if "request_id" in r]


def write_trace(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def test_mooncake_and_azure_traces_read_alike(tmp_path):
    moon = write_trace(tmp_path / "m.jsonl", [
        {"timestamp": 1000, "input_length": 700, "output_length": 20, "hash_ids": [0, 1]},
        {"timestamp": 1250, "input_length": 30, "output_length": 5}])
    azure = tmp_path / "a.csv"
    azure.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                     "2023-11-16 18:15:46.6805900,700,20\n2023-11-16 18:15:46.9305900,30,5\n")
    for path in (moon, azure):
        t = load_trace(str(path))
        assert [(e.t_ms, e.input_length, e.output_length) for e in t.entries] == \
            [(0.0, 700, 20), (pytest.approx(250.0, abs=1e-3), 30, 5)]
        assert t.entries[1].line == 2 if path == moon else 3  # the file's own line numbers
    assert load_trace(str(moon)).entries[0].hash_ids == (0, 1)
    assert load_trace(str(moon)).mean_rate_per_s(2.0) == pytest.approx(8.0)  # 1 gap of 125 ms at speed 2


BAD = [
    ('{"timestamp": 0, "input_length": 5, "output_length": 5}\nnot json\n', 2, "not JSON"),
    ('{"timestamp": 0, "input_length": 5, "output_length": 5}\n{"timestamp": 10, "output_length": 5}\n', 2,
     "'input_length'"),
    ('{"timestamp": 10, "input_length": 5, "output_length": 5}\n{"timestamp": 5, "input_length": 5, '
     '"output_length": 5}\n', 2, "goes back"),
    ('{"timestamp": 0, "input_length": 5, "output_length": 5, "hash_ids": ["a"]}\n', 1, "hash_ids"),
    ("", None, "empty"),
    ("TIMESTAMP,ContextTokens\n2023-11-16 18:15:46,5\n", 1, "GeneratedTokens"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,5,5\n2023-11-16 18:15:45,5,5\n", 3, "goes back"),
]


@pytest.mark.parametrize("content,line,says", BAD)
def test_bad_trace_is_one_line_naming_file_and_line(tmp_path, content, line, says):
    path = tmp_path / ("bad.csv" if content.startswith("TIMESTAMP") else "bad.jsonl")
    path.write_text(content)
    with pytest.raises(ConfigError):
        load_trace(str(path))
    if content != BAD[0][0]:
        return  # the whole command for one of them: the loading is the same
    proc = run_bench("--trace", str(path), "--out", str(tmp_path / "x.toml"), timeout=30)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert f"{path}:{line}:" in err if line else str(path) in err, err
    assert says in err, err
    assert not (tmp_path / "x.toml").exists()  # nothing started


def test_bad_trace_from_the_command_line_and_conflicts(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"timestamp": 0, "input_length": 5}\n')
    good = write_trace(tmp_path / "t.jsonl", [{"timestamp": 0, "input_length": 5, "output_length": 5}])
    for args, says in ((["--trace", str(bad)], f"{bad}:1: no 'output_length'"),
                       (["--trace", str(tmp_path / "none.jsonl")], "none.jsonl"),
                       (["--trace", str(good), "--rate", "5"], "--rate"),
                       (["--trace", str(good), "--input-tokens", "100"], "length distributions"),
                       (["--trace", str(good), "--find-optimum"], "--find-optimum"),
                       (["--trace", str(good), "--trace-speed", "0"], "workload.trace.speed")):
        proc = run_bench(*args, "--out", str(tmp_path / "x.toml"), timeout=30)
        err = proc.stderr.strip()
        assert proc.returncode == 2 and "\n" not in err and "Traceback" not in err, err
        assert says in err, err


def test_trace_arrivals_on_time_and_lengths_as_the_trace_says(sim, tmp_path):
    # 20 requests/s on average, in uneven gaps (20 and 80 ms), so keeping a rate would not pass for keeping time.
    lines, t = [], 0
    for i in range(40):
        lines.append({"timestamp": t, "input_length": [60, 300, 900, 1700][i % 4], "output_length": 3 + i % 5})
        t += 20 if i % 2 else 80
    path = write_trace(tmp_path / "t.jsonl", lines)
    out, raw = tmp_path / "o.toml", tmp_path / "o.jsonl"
    proc = run_bench("--url", sim.base_url, "--trace", str(path), "--out", str(out), "--raw", str(raw))
    assert proc.returncode == 0, proc.stderr
    records = sorted(read_records(raw), key=lambda r: r["trace_line"])
    assert [r["trace_line"] for r in records] == list(range(1, 41))
    t0 = records[0]["t_send_ns"]
    off_ms = [(r["t_send_ns"] - t0) / 1e6 - line["timestamp"] for r, line in zip(records, lines)]
    # The first send carries the run's first-request costs (on a busy box, a few ms once), so it is a noisy zero:
    # every send is held to the trace's clock as the sends together place it (their median offset), and that
    # clock to the first send's.
    mid = statistics.median(off_ms)
    assert abs(mid) < 5.0 and max(abs(x - mid) for x in off_ms) < 5.0, off_ms
    for r, line in zip(records, lines):
        assert r["error_kind"] is None, r
        assert r["output_tokens"] == line["output_length"]
        got = r["server_timing"]["prompt_tokens"]  # the sim's ground truth
        assert abs(got - line["input_length"]) <= max(2, 0.03 * line["input_length"]), (got, line)
    results = tomllib.loads(out.read_text())
    assert results["trace"]["path"] == str(path) and results["trace"]["speed"] == 1.0
    assert results["trace"]["lines"] == results["trace"]["sent"] == 40 and results["trace"]["late"] == 0
    assert results["trace"]["completed"] is True
    assert len(results["levels"]) == 1 and results["levels"][0]["rate_per_s"] == pytest.approx(20.0, rel=0.02)
    # Warm-up: the first second of arrivals (20), at most a tenth of the trace (4); the rest is measured.
    assert sum(not r["warmup"] for r in records) == 36
    assert results["levels"][0]["usd_per_million_output"] > 0


def test_trace_speed_divides_the_times(sim, tmp_path):
    path = write_trace(tmp_path / "t.jsonl", [{"timestamp": 200 * i, "input_length": 50, "output_length": 2}
                                              for i in range(6)])
    out, raw = tmp_path / "o.toml", tmp_path / "o.jsonl"
    proc = run_bench("--url", sim.base_url, "--trace", str(path), "--trace-speed", "4", "--out", str(out),
                     "--raw", str(raw))
    assert proc.returncode == 0, proc.stderr
    sends = sorted(r["t_send_ns"] for r in read_records(raw))
    assert (sends[-1] - sends[0]) / 1e6 == pytest.approx(250.0, abs=5.0)  # 1,000 ms of trace at 4×
    assert tomllib.loads(out.read_text())["trace"]["speed"] == 4.0


async def test_hash_ids_share_prefix_blocks_in_the_servers_cache(sim_factory, tmp_path):
    sim = sim_factory(time_scale=10.0)
    hits = {}
    for name in ("unique", "shared"):
        lines = []
        for i in range(10):
            line = {"timestamp": 60 * i, "input_length": 1100, "output_length": 4}
            if name == "shared":  # two blocks every request has, then one of its own: 1024 of 1100 tokens shared
                line["hash_ids"] = [1, 2, 100 + i]
            lines.append(line)
        path = write_trace(tmp_path / f"{name}.jsonl", lines)
        raw = tmp_path / f"{name}.raw.jsonl"
        before = await prefix_hits(sim)
        proc = run_bench("--url", sim.base_url, "--trace", str(path), "--out", str(tmp_path / f"{name}.toml"),
                         "--raw", str(raw))
        assert proc.returncode == 0, proc.stderr
        hits[name] = await prefix_hits(sim) - before
        for r in read_records(raw):
            assert abs(r["server_timing"]["prompt_tokens"] - 1100) <= 0.03 * 1100, r["server_timing"]
    assert hits["unique"] == 0, hits
    assert hits["shared"] >= 9 * 950, hits  # every request after the first found the two shared blocks
