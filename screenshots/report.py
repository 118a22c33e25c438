"""The report's screenshot for the README: a deterministic session (tests/sessions.py: fixed seed, no clock),
`befori-tui report`, and Debian's headless chromium (apt-get install -y chromium) for the picture.

    .venv/bin/python screenshots/report.py [--out screenshots]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.sessions, from a checkout

from befori_tui.cli import main as befori  # noqa: E402
from tests.sessions import make_session  # noqa: E402

OPTIMUM = {"concurrency": 32, "range_concurrency_min": 32, "range_concurrency_max": 64, "max_concurrency_meeting_slo": 64, "found": True}
SIZE = (1280, 1900)  # the header, the cost chart and the timeline


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(Path(__file__).parent))
    args = p.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("screenshots/report.py: needs chromium (Debian: apt-get install -y chromium)")
    out = Path(args.out).resolve()
    here = Path.cwd()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        os.chdir(d)  # the report names the session as given: "run.toml", not a temporary folder
        session = make_session(Path("run.toml"), (1, 8, 32, 64), seconds_per_level=4.0, optimum=OPTIMUM,
                               api_compare=(("example-api", 1.20, 3.60),))
        html = (d / "report.html").resolve()
        if befori(["report", str(session), "--out", str(html)]) != 0:
            raise SystemExit("screenshots/report.py: the report failed")
        shot = out / "report.png"
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--disable-background-networking", "--host-resolver-rules=MAP * ~NOTFOUND",
                        f"--user-data-dir={d / 'profile'}", f"--window-size={SIZE[0]},{SIZE[1]}",
                        f"--screenshot={shot}", html.as_uri()], check=True, capture_output=True, timeout=120)
        os.chdir(here)
        print(shot)


if __name__ == "__main__":
    main()
