"""`befori-tui report`, `compare` and `export` on deterministic saved sessions (tests/sessions.py), run as a
user runs them (the CLI in a child process where exit codes and stderr matter)."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from befori_tui.cli import main
from befori_tui.report.export import flatten
from tests.sessions import make_session

# A chart that warns (an empty legend, a log axis with nothing positive on it) is a chart drawn wrong.
pytestmark = pytest.mark.filterwarnings("error::UserWarning")

OPTIMUM = {"concurrency": 16, "usd_per_million_input": 0.03, "usd_per_million_output": 2.5,
           "range_concurrency_min": 16, "range_concurrency_max": 32, "max_concurrency_meeting_slo": 32, "found": True}
LEVELS = (1, 4, 16, 32)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("runs")
    return {
        # The base; a copy of it (same seed: the same requests); one whose decode is twice as fast (the known
        # difference: half the $/M output and ITL, the same TTFT model); one with a level the others lack.
        "base": make_session(d / "base.toml", LEVELS, seconds_per_level=3.0, output_tokens=24, optimum=OPTIMUM),
        "same": make_session(d / "same.toml", LEVELS, seconds_per_level=3.0, output_tokens=24),
        "fast": make_session(d / "fast.toml", LEVELS, seconds_per_level=3.0, output_tokens=24, decode_speed=2.0, fail_every=40),
        "other": make_session(d / "other.toml", (1, 8), seconds_per_level=3.0, output_tokens=24, gpus=0),
    }


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "befori_tui", *args], capture_output=True, text=True,
                          timeout=timeout)


def levels_of(path: Path) -> list[dict]:
    return tomllib.loads(path.read_text())["levels"]


# --- export ---------------------------------------------------------------------------------------------------

def _parse_cell(text: str):
    if text == "":
        return None
    if text in ("true", "false"):
        return text == "true"
    for tp in (int, float):
        try:
            return tp(text)
        except ValueError:
            pass
    return text


def test_export_csv_round_trips(runs, capsys):
    assert main(["export", str(runs["fast"]), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    levels = levels_of(runs["fast"])
    assert len(rows) == len(levels) == len(LEVELS)
    for row, lv in zip(rows, levels):
        flat = flatten(lv)
        back = {k: _parse_cell(v) for k, v in row.items() if v != ""}
        assert back == flat  # every value exactly as the TOML holds it, nothing more, nothing less
        assert type(back["usd_per_million_output_settled"]) is bool
        assert back["gpu.gpus.7.power_w_mean"] == lv["gpu"]["gpus"][7]["power_w_mean"]
    assert rows[0]["concurrency"] == "1" and rows[-1]["concurrency"] == "32"


def test_export_json_round_trips_to_a_file(runs, tmp_path):
    out = tmp_path / "levels.json"
    assert main(["export", str(runs["base"]), "--format", "json", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert rows == [flatten(lv) for lv in levels_of(runs["base"])]
    assert rows[2]["occupancy.usd_bill"] == levels_of(runs["base"])[2]["occupancy"]["usd_bill"]


def test_export_of_a_file_that_is_not_a_session_is_one_line(tmp_path):
    bad = tmp_path / "x.toml"
    bad.write_text("a = 1\n")
    proc = cli("export", str(bad))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and str(bad) in proc.stderr
    assert "Traceback" not in proc.stderr


# --- compare --------------------------------------------------------------------------------------------------

def _rows(text: str) -> dict[tuple[float, str], dict]:
    return {(r["concurrency"], r["metric"]): r for r in json.loads(text)["rows"]}


def test_compare_known_differences_json(runs, capsys):
    assert main(["compare", str(runs["base"]), str(runs["same"]), str(runs["fast"]), "--format", "json"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert {c for c, _m in rows} == set(LEVELS)
    for c in LEVELS:
        # The same run: ratio exactly 1, never "beyond".
        for metric in ("usd_per_million_input", "usd_per_million_output", "ttft_s_p50", "itl_s_p99",
                       "output_tok_per_s_total"):
            r = rows[(c, metric)]
            assert r["same / base"] == pytest.approx(1.0) and r["same beyond"] is False, (c, metric)
        # Decode twice as fast: $/M output and ITL halve, beyond the intervals; throughput about doubles.
        out = rows[(c, "usd_per_million_output")]
        assert 0.45 < out["fast / base"] < 0.56 and out["fast beyond"] is True, c
        assert out["base lo"] < out["base"] < out["base hi"]
        itl = rows[(c, "itl_s_p50")]
        assert 0.45 < itl["fast / base"] < 0.55 and itl["fast beyond"] is True
        assert rows[(c, "output_tok_per_s_total")]["fast / base"] > 1.5
        assert rows[(c, "output_tok_per_s_total")]["fast beyond"] is True
        # Prefill unchanged: $/M input about the same, its difference within the intervals.
        inp = rows[(c, "usd_per_million_input")]
        assert 0.8 < inp["fast / base"] < 1.25 and inp["fast beyond"] is False, c
        assert rows[(c, "ttft_s_p50")]["fast beyond"] is False, c
        assert rows[(c, "ttft_s_p50")]["base lo"] <= rows[(c, "ttft_s_p50")]["base"] <= rows[(c, "ttft_s_p50")]["base hi"]


def test_compare_table_and_csv(runs, capsys):
    assert main(["compare", str(runs["base"]), str(runs["fast"])]) == 0
    table = capsys.readouterr().out
    assert "A = " in table and "B = " in table and "c=16" in table and "B/A" in table
    line = next(x for x in table.splitlines() if x.strip().startswith("$/M output"))
    assert re.search(r"0\.5\d×\s+yes$", line), line
    assert main(["compare", str(runs["base"]), str(runs["fast"]), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == len(LEVELS) * 8
    assert {"concurrency", "metric", "base", "base lo", "base hi", "fast", "fast / base", "fast beyond"} <= set(rows[0])


def test_compare_unmatched_levels_and_no_raw(runs, capsys):
    assert main(["compare", str(runs["base"]), str(runs["other"]), "--format", "json", "--no-raw"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert rows[(8, "usd_per_million_input")]["base"] is None  # c=8 only in the other run
    assert rows[(8, "usd_per_million_input")]["other / base"] is None
    assert rows[(4, "usd_per_million_input")]["other"] is None
    # Without the raw records, latencies have no interval: "beyond" is unknown, not guessed.
    assert rows[(1, "ttft_s_p50")]["other beyond"] is None
    assert rows[(1, "usd_per_million_input")]["other beyond"] in (True, False)


def test_compare_matches_by_rate_and_by_occurrence(tmp_path, capsys):
    """Open-loop sessions (a `rate` on every level) are matched by rate; a concurrency held twice is matched
    with the other run's second one."""
    def session(path: Path, levels: list[dict]) -> Path:
        import tomli_w
        path.write_text(tomli_w.dumps({"schema_version": 1, "levels": levels}))
        return path

    a = session(tmp_path / "a.toml", [{"level": 0, "concurrency": 64, "rate": 2.0, "usd_per_million_input": 1.0},
                                      {"level": 1, "concurrency": 64, "rate": 4.0, "usd_per_million_input": 0.5}])
    b = session(tmp_path / "b.toml", [{"level": 0, "concurrency": 32, "rate": 4.0, "usd_per_million_input": 0.25}])
    assert main(["compare", str(a), str(b), "--format", "json"]) == 0
    rows = {(r["rate"], r["metric"]): r for r in json.loads(capsys.readouterr().out)["rows"]}
    assert rows[(4.0, "usd_per_million_input")]["b / a"] == 0.5
    assert rows[(2.0, "usd_per_million_input")]["b"] is None
    c = session(tmp_path / "c.toml", [{"level": 0, "concurrency": 8, "usd_per_million_input": 1.0},
                                      {"level": 1, "concurrency": 8, "usd_per_million_input": 3.0}])
    d = session(tmp_path / "d.toml", [{"level": 0, "concurrency": 8, "usd_per_million_input": 2.0},
                                      {"level": 1, "concurrency": 8, "usd_per_million_input": 6.0}])
    assert main(["compare", str(c), str(d), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    got = [(r["occurrence"], r["d / c"]) for r in rows if r["metric"] == "usd_per_million_input"]
    assert got == [(0, 2.0), (1, 2.0)]


def test_compare_needs_two_sessions():
    proc = cli("compare", "one.toml")
    assert proc.returncode == 2 and "two or more" in proc.stderr and proc.stderr.count("\n") == 1


# --- report ---------------------------------------------------------------------------------------------------

CHARTS = ("cost", "timeline", "latency", "throughput", "gpu")


def charts_in(html: str) -> set[str]:
    return set(re.findall(r"<figure class='chart' id='chart-([a-z0-9-]+)'[^>]*><svg", html))


def test_report_html_has_every_chart_offline(runs, tmp_path):
    out = tmp_path / "r.html"
    proc = cli("report", str(runs["base"]), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    html = out.read_text()
    assert charts_in(html) == set(CHARTS)
    # Self-contained: nothing fetched (the only URLs are XML namespace names, which are never loaded).
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", html)
    assert "@import" not in html and "url(http" not in html and "<script" not in html
    assert "<?xml" not in html and "<!DOCTYPE svg" not in html
    # The optimum and its range are drawn (the SVG keeps its text), the API price is a line.
    assert "optimum c=16: $0.03/M" in html and "optimum c=16: $2.5/M" in html
    assert re.search("optimum(?:&#x27;|&#39;|')s range c=16–32", html)
    assert "highest c meeting the SLO: 32" in html
    assert "example-api: $1.2/M" in html and "example-api: $3.6/M" in html
    # The default timeline level is the optimum's.
    assert "Per-slot timeline at c=16 (level 2)" in html


def test_report_without_optimum_gpu_or_raw_says_what_is_missing(runs, tmp_path):
    d = tmp_path / "copy"
    d.mkdir()
    toml = d / "other.toml"
    toml.write_text(runs["other"].read_text())  # its .jsonl is left behind
    out = tmp_path / "r.html"
    proc = cli("report", str(toml), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    html = out.read_text()
    assert charts_in(html) == {"cost", "latency", "throughput"}
    assert "optimum c=" not in html and "s range c=" not in html and "meeting the SLO" not in html
    assert "No GPU telemetry in the session" in html and "--telemetry none" in html
    assert "are not there; the timeline is drawn from them" in html
    assert "no timeline chart" in proc.stderr and "no gpu chart" in proc.stderr


def test_report_several_sessions_and_chosen_level(runs, tmp_path):
    out = tmp_path / "two.html"
    proc = cli("report", str(runs["base"]), str(runs["fast"]), "--level", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    html = out.read_text()
    assert {"cost", "latency", "throughput", "gpu"} <= charts_in(html)
    assert html.count("Per-slot timeline at c=4 (level 1)") == 2
    assert "Side by side" in html and "beyond 95%" in html
    assert "<td class='yes'>yes</td>" in html  # the faster decode's $/M output is beyond the intervals


def test_report_svg_and_png_files(runs, tmp_path):
    folder = tmp_path / "charts"
    assert main(["report", str(runs["base"]), "--format", "svg", "--out", str(folder)]) == 0
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{c}.svg" for c in CHARTS)
    assert (folder / "cost.svg").read_text().lstrip().startswith("<?xml")
    folder2 = tmp_path / "png"
    assert main(["report", str(runs["base"]), "--format", "png", "--out", str(folder2)]) == 0
    png = (folder2 / "cost.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_report_same_session_same_svg(runs, tmp_path):
    """No date or random id in the output: the same session gives the same bytes (a diffable report)."""
    a, b = tmp_path / "a.html", tmp_path / "b.html"
    assert main(["report", str(runs["base"]), "--out", str(a)]) == 0
    assert main(["report", str(runs["base"]), "--out", str(b)]) == 0
    assert a.read_bytes() == b.read_bytes()


def test_report_bad_level_is_one_line(runs):
    proc = cli("report", str(runs["base"]), "--level", "9", "--out", "/dev/null/x.html")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "--level 9" in proc.stderr and "0, 1, 2, 3" in proc.stderr


def test_report_without_matplotlib_says_what_to_install(runs, tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None\n"  # as if it were not installed
            "from befori_tui.cli import main\n"
            f"sys.exit(main(['report', {str(runs['base'])!r}, '--out', {str(tmp_path / 'r.html')!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("befori-tui report: needs matplotlib; install it with: "
                                   "pip install 'befori-tui[report]'")
    assert not (tmp_path / "r.html").exists()


def test_report_names_levels_without_a_cost(tmp_path):
    import tomli_w

    path = tmp_path / "partial.toml"
    path.write_text(tomli_w.dumps({"schema_version": 1, "levels": [
        {"level": 0, "concurrency": 1, "usd_per_million_input": 0.5, "usd_per_million_output": 5.0,
         "ttft_s_p50": 0.02, "output_tok_per_s_total": 80.0, "e2e_s_p50": 0.9},
        {"level": 1, "concurrency": 8, "cost_missing": "no request succeeded", "requests_failed": 12}]}))
    out = tmp_path / "r.html"
    assert main(["report", str(path), "--out", str(out)]) == 0
    html = out.read_text()
    assert "No $/M at c=8 (no request succeeded)." in html
    assert "cost" in charts_in(html) and "gpu" not in charts_in(html)


def test_report_with_an_optimum_not_found(runs, tmp_path):
    """An [optimum] with found = false: no star, no range, a line saying no level met the SLO."""
    import tomli_w

    data = tomllib.loads(runs["same"].read_text())
    data["optimum"] = {"found": False, "max_concurrency_meeting_slo": 0}
    data["raw_records"] = str(runs["same"].with_suffix(".jsonl"))  # an absolute path is followed as it is
    path = tmp_path / "none.toml"
    path.write_text(tomli_w.dumps(data))
    out = tmp_path / "r.html"
    assert main(["report", str(path), "--out", str(out)]) == 0
    html = out.read_text()
    assert "optimum c=" not in html and "s range c=" not in html
    assert "no level met the SLO" in html
    assert "timeline" in charts_in(html)


def test_report_raw_records_torn_or_broken(runs, tmp_path):
    """A last line cut by a killed run is left out; a broken line in the middle is one error naming it."""
    for name, mangle, code in (("torn", lambda lines: lines[:-1] + [lines[-1][:40]], 0),
                               ("broken", lambda lines: lines[:3] + ["{not json\n"] + lines[3:], 2)):
        toml = tmp_path / f"{name}.toml"
        data = runs["base"].read_text().replace('raw_records = "base.jsonl"', f'raw_records = "{name}.jsonl"')
        toml.write_text(data)
        lines = runs["base"].with_suffix(".jsonl").read_text().splitlines(keepends=True)
        (tmp_path / f"{name}.jsonl").write_text("".join(mangle(lines)))
        proc = cli("report", str(toml), "--out", str(tmp_path / f"{name}.html"))
        assert proc.returncode == code, proc.stderr
        if code == 2:
            assert proc.stderr.strip() == f"befori-tui report: {tmp_path / 'broken.jsonl'}:4: not a JSON line"
