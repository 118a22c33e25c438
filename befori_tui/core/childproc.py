"""How this package starts its own child processes (the run, load processes, the simulator)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# The folder that holds this befori_tui package.
PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])


def module_command(module: str) -> list[str]:
    """`python -P -m module`. -P: the current folder is not put on the path, so a befori_tui folder there
    (another checkout) is never imported instead of this one, which child_env()'s PYTHONPATH names."""
    return [sys.executable, "-P", "-m", module]


def child_env() -> dict[str, str]:
    """This environment, with this package first on PYTHONPATH: the child imports this same checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = PACKAGE_PARENT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env
