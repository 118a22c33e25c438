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
