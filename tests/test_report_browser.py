"""The report in a real browser: Debian's headless Chromium loads it from disk with no network, every chart
renders (measured in the page), nothing is fetched, and the console stays quiet.

Each check is first shown to catch what it is for, on a control page that logs an error and asks for an image
from the network — so a check that could not fail would fail here.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from befori_tui.cli import main
from tests.sessions import make_session

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on this machine (Debian: apt-get install -y chromium); the report's "
                             "browser test needs a real browser")

# Headless, offline (every host name resolves to nothing), and with Chromium's own background requests off, so
# what the network log holds is what the page asked for.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions",
         "--disable-default-apps", "--host-resolver-rules=MAP * ~NOTFOUND", "--enable-logging=stderr", "--v=0"]

# Added to a copy of the report only: after load, each chart's drawn size and how many of its shapes have an
# area, written into the page for --dump-dom to read back.
PROBE = """<script>
addEventListener('load', () => {
  const out = [...document.querySelectorAll('figure.chart')].map(f => {
    const svg = f.querySelector('svg'); const r = svg.getBoundingClientRect();
    const shapes = [...svg.querySelectorAll('path, use, rect, text')];
    const drawn = shapes.filter(s => { const b = s.getBoundingClientRect(); return b.width > 0 || b.height > 0; });
    return {id: f.id, width: r.width, height: r.height, shapes: shapes.length, drawn: drawn.length,
            texts: [...svg.querySelectorAll('text')].map(t => t.textContent).join(' | ')};
  });
  const pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def chromium(page: Path, work: Path, *extra: str) -> tuple[str, str, list[str]]:
    """(DOM after load, console lines, URLs the page itself asked for)."""
    netlog = work / f"{page.stem}-net.json"
    proc = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={work / 'profile'}", f"--log-net-log={netlog}",
                           "--virtual-time-budget=5000", *extra, page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    events = json.loads(netlog.read_text()).get("events", []) if netlog.exists() else []
    asked = sorted({e["params"]["url"] for e in events
                    if "file://" in str(e.get("params", {}).get("network_isolation_key", ""))
                    and not str(e["params"].get("url", "file:")).startswith("file:")})
    return proc.stdout, "\n".join(console), asked


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("browser")
    session = make_session(d / "run.toml", (1, 4, 16, 32), seconds_per_level=3.0, output_tokens=24,
                           optimum={"concurrency": 16, "usd_per_million_input": 0.03, "usd_per_million_output": 2.5,
                                    "range_concurrency_min": 16, "range_concurrency_max": 32,
                                    "max_concurrency_meeting_slo": 32, "found": True})
    out = d / "report.html"
    assert main(["report", str(session), "--out", str(out)]) == 0
    return out


def test_the_checks_catch_errors_and_network_requests(tmp_path):
    page = tmp_path / "control.html"
    page.write_text("<!DOCTYPE html><html><body><p>control</p><img src='https://example.com/x.png'>"
                    "<script>console.error('befori-control-error');</script></body></html>")
    dom, console, asked = chromium(page, tmp_path, "--dump-dom")
    assert "control" in dom
    assert "befori-control-error" in console
    assert asked == ["https://example.com/x.png"]


def test_report_loads_offline_and_every_chart_renders(report, tmp_path):
    dom, console, asked = chromium(report, tmp_path, "--dump-dom")
    assert console == "" and asked == []
    assert len(re.findall(r'<figure class="chart" id="chart-', dom)) == 5
    probed = tmp_path / "probed.html"
    probed.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
    dom, console, _ = chromium(probed, tmp_path, "--dump-dom", "--window-size=1280,900")
    assert console == ""
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, "the probe did not run"
    charts = {c["id"]: c for c in json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))}
    assert set(charts) == {"chart-cost", "chart-timeline", "chart-latency", "chart-throughput", "chart-gpu"}
    for c in charts.values():
        assert c["width"] > 600 and c["height"] > 150, c
        assert c["drawn"] > 20, c  # shapes on screen, not an empty frame
    assert "$ per million input tokens" in charts["chart-cost"]["texts"]
    assert "optimum c=16" in charts["chart-cost"]["texts"]
    assert "Per-slot timeline at c=16" in charts["chart-timeline"]["texts"]


def test_report_screenshot_is_not_blank(report, tmp_path):
    shot = tmp_path / "shot.png"
    _dom, console, asked = chromium(report, tmp_path, f"--screenshot={shot}", "--window-size=1280,2400")
    assert console == "" and asked == []
    from PIL import Image  # matplotlib's own dependency

    img = Image.open(shot).convert("RGB")
    assert img.size == (1280, 2400)
    colours = img.resize((320, 600)).getcolors(maxcolors=1 << 16) or []
    assert len(colours) > 50  # charts, not a white page
