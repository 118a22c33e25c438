"""Run the live monitor headlessly for a while, as `befori-tui monitor` would run it (shared by the benches)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path


def run_monitor(cfg, out: Path, telemetry: str, seconds: float, join_s: float = 30.0):
    """Drive MonitorApp under Textual's headless driver at 160×48 for `seconds`, quit (which saves), and return
    the RunnerThread, whose session holds every record."""
    from befori_tui.ui.app import UiOptions
    from befori_tui.ui.monitor import SWITCH_INTERVAL_S, build_app

    runner, _model, app = build_app(cfg, out, None, None, telemetry, True, UiOptions(fps=10))

    async def drive() -> None:
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.pause(seconds)
            await app.action_quit()
            while app.is_running:
                await pilot.pause(0.05)

    old = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)  # as `befori-tui monitor` does
    try:
        asyncio.run(drive())
    finally:
        sys.setswitchinterval(old)
    runner.join(join_s)
    return runner
