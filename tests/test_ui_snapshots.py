"""Snapshot tests (pinned Textual): the monitor on fixed records and samples, at 80×24 and 160×48.

Regenerate after an intended change with `pytest tests/test_ui_snapshots.py --snapshot-update` and look at
the SVGs in tests/__snapshots__/ before committing them.
"""

from __future__ import annotations

import pytest

from befori_tui.ui.app import MonitorApp, UiOptions
from befori_tui.ui.fixed import fixed_config, fixed_model


def fixed_app(theme: str) -> MonitorApp:
    cfg = fixed_config()
    return MonitorApp(cfg, fixed_model(cfg=cfg), None, UiOptions(live=False, theme=theme))


@pytest.mark.parametrize("size", [(80, 24), (100, 30), (120, 40), (160, 48)], ids=["80x24", "100x30", "120x40", "160x48"])
def test_monitor_dark(snap_compare, size):
    assert snap_compare(fixed_app("befori-dark"), terminal_size=size)


@pytest.mark.parametrize("theme", ["befori-light", "befori-contrast"])
def test_monitor_other_themes_80x24(snap_compare, theme):
    assert snap_compare(fixed_app(theme), terminal_size=(80, 24))


def test_monitor_small_terminal_cost_panel(snap_compare):
    assert snap_compare(fixed_app("befori-dark"), press=["v"], terminal_size=(80, 24))
