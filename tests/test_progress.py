"""bench (and demo --headless) is never silent for long: each level's progress every few seconds on stderr."""

from __future__ import annotations

import re
import subprocess
import sys

from befori_tui.headless import PROGRESS_EVERY_S


def test_a_level_says_how_far_it_is_while_it_runs(sim, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "befori_tui", "bench", "--url", sim.base_url, "--concurrency", "2",
                           "--seconds-per-level", str(2 * PROGRESS_EVERY_S + 1), "--output-tokens", "32",
                           "--telemetry", "none", "--server-metrics", "off", "--out", str(tmp_path / "p.toml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    ticks = [line for line in proc.stderr.splitlines()
             if re.fullmatch(r"level 0 · c=2 · \d+ measured · \d+ of 7 s · \d+ ok, 0 failed", line)]
    assert len(ticks) >= 2, proc.stderr
    counts = [int(t.split(" · ")[2].split()[0]) for t in ticks]
    assert counts == sorted(counts) and counts[-1] > 0

