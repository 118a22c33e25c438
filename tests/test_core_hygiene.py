from __future__ import annotations

import pkgutil
import subprocess
import sys

import befori_tui.core


def test_core_never_imports_textual():
    modules = [m.name for m in pkgutil.walk_packages(befori_tui.core.__path__, "befori_tui.core.")
               if ".sim.__main__" not in m.name]
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules) + (
        "bad = sorted(m for m in sys.modules if m == 'textual' or m.startswith('textual.'))\n"
        "print(','.join(bad))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert len(modules) > 10
    assert proc.stdout.strip() == ""


def test_bench_starts_without_ui_or_numpy_at_import():
    """`befori-tui cost` and argument errors stay light: the CLI module imports neither Textual nor numpy."""
    code = "import sys, befori_tui.cli; print(any(m.startswith(('textual', 'numpy')) for m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "False", proc.stderr


def _imported_by(module: str) -> set[str]:
    code = f"import sys, {module}\nprint(','.join(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return set(proc.stdout.strip().split(","))


def test_no_front_end_imports_another_and_the_simulator_stands_alone():
    """bench (headless), the monitor (ui), the run process and the simulator: each imports only the core and
    itself — no front end imports another, and the load's process never loads Textual."""
    def ours(mods: set[str], prefix: str) -> set[str]:
        return {m for m in mods if m == prefix or m.startswith(prefix + ".")}

    headless = _imported_by("befori_tui.headless")
    assert not ours(headless, "befori_tui.ui") and not ours(headless, "textual")
    runproc = _imported_by("befori_tui.core.runproc")
    assert not ours(runproc, "befori_tui.ui") and not ours(runproc, "textual")
    assert not ours(runproc, "befori_tui.headless")
    ui = _imported_by("befori_tui.ui.monitor") | _imported_by("befori_tui.ui.app")
    assert not ours(ui, "befori_tui.headless")
    sim = {m for m in pkgutil.walk_packages(__import__("befori_tui.sim").sim.__path__, "befori_tui.sim.")
           if not m.name.endswith("__main__")}
    for m in sim:
        mods = _imported_by(m.name)
        assert not ours(mods, "befori_tui.ui") and not ours(mods, "befori_tui.headless"), m.name
        assert not ours(mods, "textual"), m.name


def test_the_report_front_end_imports_neither_live_front_end():
    """report, compare and export read saved sessions through the core: never the monitor (Textual) or bench."""
    mods = _imported_by(", ".join(f"befori_tui.report.{m}" for m in ("cli", "charts", "html", "sessions")))
    assert "befori_tui.report.charts" in mods  # the modules did import
    for bad in ("befori_tui.ui", "befori_tui.headless", "textual"):
        assert not {m for m in mods if m == bad or m.startswith(bad + ".")}, bad
    # compare and export need no plotting library: they work without the `report` extra.
    light = _imported_by("befori_tui.report.compare, befori_tui.report.export")
    assert not {m for m in light if m == "matplotlib" or m.startswith("matplotlib.")}
