"""The wheel carries what the package reads at run time: the top-level themes/ folder as befori_tui/themes,
the simulator's profiles, the prompt data, the stylesheet, and every subpackage (setup.py finds them)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_build_puts_the_top_level_themes_into_the_package(tmp_path):
    # build_py is the step of a wheel build that lays out the package's files (a wheel zips what it wrote).
    proc = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "-d", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    pkg = tmp_path / "befori_tui"
    ours = sorted(p.name for p in (ROOT / "themes").glob("*.toml"))
    assert len(ours) >= 3
    assert sorted(p.name for p in (pkg / "themes").glob("*.toml")) == ours
    for sub in ("core", "core/telemetry", "sim", "ui", "ui/widgets", "report"):
        assert (pkg / sub / "__init__.py").is_file(), sub
    assert list((pkg / "sim" / "profiles").glob("*.toml")) and (pkg / "ui" / "app.tcss").is_file()


def test_a_checkout_reads_the_top_level_themes():
    from befori_tui.ui.themes import bundled_theme_dir, load_themes

    assert not (ROOT / "befori_tui" / "themes").exists()  # one place for them: the top level
    assert bundled_theme_dir() == ROOT / "themes"
    themes, errors = load_themes(bundled_theme_dir())
    assert not errors and {"befori-dark", "befori-light", "befori-contrast"} <= {t.name for t in themes}
