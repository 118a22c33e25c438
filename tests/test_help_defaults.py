"""Every option of every command says its default in --help (or that it has none, and why)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from befori_tui.cli import bench_parser, cost_parser
from befori_tui.cliargs import OneLineParser, undocumented_defaults
from befori_tui.sim.cli import _parser as sim_parser
from befori_tui.ui.monitor import add_view_flags, build_parser


def attach_like_parser() -> OneLineParser:
    p = OneLineParser(prog="attach")
    add_view_flags(p.add_argument_group("view"))
    return p


@pytest.mark.parametrize("make", [lambda: bench_parser("bench"), lambda: bench_parser("demo"),
                                  lambda: build_parser("monitor"), cost_parser, sim_parser, attach_like_parser],
                         ids=["bench", "demo", "monitor", "cost", "sim", "attach"])
def test_every_option_says_its_default(make):
    assert undocumented_defaults(make()) == []


@pytest.mark.parametrize("command", ["bench", "monitor", "attach", "cost", "sim"])
def test_help_runs_and_names_defaults(command):
    proc = subprocess.run([sys.executable, "-m", "befori_tui", command, "--help"], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0 and "default" in proc.stdout and "Traceback" not in proc.stderr
