"""What one frame of the live monitor costs at 512 slots, on fixed data (no load, no terminal).

One frame of the app on fixed data with 512 slots (`befori_tui/ui/fixed.py`): the frame timer's work
(timeline tick, status; with fixed data there are no events to apply) and a full compositor render at
160×48, the timeline's window moved 0.1 s per frame as at the default 10 Hz (it moves a whole cell at a
time, so most frames redraw no timeline row: the p90 shows the frames that do); median and p90 over many frames, with the timeline scrolled to the top and to the
middle. Also the visible timeline rows drawn alone, and the summaries (numpy, in a worker thread of the
viewer) on the same data.

The viewer is its own process (docs/architecture.md): this is the viewer's CPU, and it no longer shares an
interpreter with the load. Whether drawing changes what is measured is bench/ui_pty.py's question (the real
`befori-tui monitor` in a pseudo-terminal against `befori-tui bench`).

    .venv/bin/python bench/ui_overhead.py [--frames 60]        # a few seconds
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time


def _p90(values: list[float]) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(0.9 * len(values)))]


def frame_cost(frames: int, slots: int = 512) -> dict:
    from befori_tui.ui.app import MonitorApp
    from befori_tui.ui.fixed import FixedRun, fixed_config, fixed_model

    cfg = fixed_config()
    t0 = time.perf_counter()
    model = fixed_model(FixedRun(levels=((slots // 4, 20.0), (slots, 60.0))), cfg)
    build_s = time.perf_counter() - t0
    app = MonitorApp(cfg, model, None)
    app.options.live = False
    out: dict = {"records": model.finished_count, "slots": model.slot_count, "build_s": build_s}

    async def measure() -> None:
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.pause()
            compositor = app.screen._compositor
            view = app.timeline.view
            for label, scroll_y in (("top", 0), ("middle", slots // 2)):
                view.scroll_to(y=scroll_y, animate=False, immediate=True)
                await pilot.pause()
                times = []
                for _ in range(frames):
                    model.clock = (lambda base=model.clock(): base + 100_000_000)  # the window moves 0.1 s
                    t = time.perf_counter()
                    app._tick()
                    compositor.render_full_update()
                    times.append(time.perf_counter() - t)
                out[f"frame_ms_{label}"] = statistics.median(times) * 1e3
                out[f"frame_ms_{label}_p90"] = _p90(times) * 1e3
            rows = view.size.height
            times = []
            for _ in range(frames):
                t = time.perf_counter()
                for y in range(rows):
                    view.render_line(y)
                times.append(time.perf_counter() - t)
            out["timeline_rows_visible"] = rows
            out["timeline_ms"] = statistics.median(times) * 1e3
            times = []
            for _ in range(max(3, frames // 10)):
                t = time.perf_counter()
                app._compute_summaries()
                times.append(time.perf_counter() - t)
            out["summaries_ms"] = statistics.median(times) * 1e3

    asyncio.run(measure())
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=60)
    args = p.parse_args()
    fc = frame_cost(args.frames)
    print(f"frame at {fc['slots']} slots ({fc['records']} records), 160x48: median "
          f"{fc['frame_ms_top']:.2f} ms, p90 {fc['frame_ms_top_p90']:.2f} ms (scrolled to the top); median "
          f"{fc['frame_ms_middle']:.2f} ms, p90 {fc['frame_ms_middle_p90']:.2f} ms (middle); "
          f"timeline {fc['timeline_rows_visible']} visible rows alone {fc['timeline_ms']:.2f} ms; "
          f"summaries (worker thread) {fc['summaries_ms']:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
