"""What the live monitor costs: (1) does drawing skew what is measured? (2) what does a frame cost at 512 slots?

(1) TTFT and ITL against the same simulator, alternately headless (the Session on a plain asyncio loop, as
    `befori-tui bench` runs it) and with the TUI running (RunnerThread + MonitorApp, headless Textual driver
    at 160×48 — it composes and renders every frame, it just does not write them to a terminal).
    The medians over repeated runs of each run's TTFT p50/p90 and ITL p50 are compared.
(2) One frame of the app on fixed data with 512 slots: drain, timeline tick, full compositor render at
    160×48 (so the visible timeline rows are drawn again), median over many frames. Also the summary worker
    (numpy, off the UI thread) on the same data.

    .venv/bin/python bench/ui_overhead.py [--runs 5] [--seconds 10] [--concurrency 8] [--frames 60]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from befori_tui.core.config import Config
from befori_tui.core.metrics import latency_stats
from befori_tui.core.session import Session
from befori_tui.sim.launch import start_sim
from tui_driver import run_monitor


OUTPUT_TOKENS = 32  # short requests: many per run, so each run's percentiles are steady


def _cfg(url: str, c: int) -> Config:
    cfg = Config()
    cfg.endpoint.url = url
    cfg.load.concurrency = [c]
    cfg.workload.input_tokens_mean, cfg.workload.output_tokens_mean = 550, OUTPUT_TOKENS
    return cfg


def _stats(records) -> dict:
    steady = [r for r in records if r.steady]
    s = latency_stats(steady)
    return {"n": len(steady), "ttft_p50_ms": s["ttft_s_p50"] * 1e3, "ttft_p90_ms": s["ttft_s_p90"] * 1e3,
            "itl_p50_ms": s["itl_s_p50"] * 1e3}


async def _headless(url: str, c: int, seconds: float, out: Path) -> dict:
    session = Session(_cfg(url, c), out)
    runner = await session.open()
    runner.start(c)
    await asyncio.sleep(seconds)
    await session.close()
    return _stats(session.all_records())


def run_headless(url: str, c: int, seconds: float, out: Path) -> dict:
    return asyncio.run(_headless(url, c, seconds, out))


def run_tui(url: str, c: int, seconds: float, out: Path, sim_root: str) -> dict:
    runner = run_monitor(_cfg(url, c), out, f"dcgm:{sim_root}/metrics", seconds, join_s=10)
    return _stats([r for lv in runner.session.runner.levels for r in lv.records])


def _thread_cpu_s() -> dict[int, float]:
    """CPU seconds of each of this process's threads, by native thread id (Linux /proc)."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def cpu_share(url: str, c: int, seconds: float, out: Path) -> dict:
    """With the TUI running at `c` slots: the share of one core used by the load loop's thread, the UI (main)
    thread and the rest (summary workers, telemetry, file writers), over the run's second half."""
    import threading

    from befori_tui.ui.app import UiOptions
    from befori_tui.ui.monitor import SWITCH_INTERVAL_S, build_app

    runner, model, app = build_app(_cfg(url, c), out, None, None, "none", True, UiOptions(fps=10))
    shares: dict = {}

    async def drive() -> None:
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.pause(seconds / 2)
            c0, t0 = _thread_cpu_s(), time.perf_counter()
            await pilot.pause(seconds / 2)
            c1, wall = _thread_cpu_s(), time.perf_counter() - t0
            names = {t.native_id: t.name for t in threading.enumerate()}
            main_id = threading.main_thread().native_id
            for tid, cpu in c1.items():
                used = cpu - c0.get(tid, 0.0)
                group = ("UI (main thread)" if tid == main_id else
                         "load loop" if names.get(tid) == "befori-load" else "other threads")
                shares[group] = shares.get(group, 0.0) + 100 * used / wall
            shares["records"] = len(model.records)
            await app.action_quit()
            while app.is_running:
                await pilot.pause(0.05)

    old = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        asyncio.run(drive())
    finally:
        sys.setswitchinterval(old)
    runner.join(30)
    return shares


def frame_cost(frames: int, slots: int = 512) -> dict:
    from befori_tui.ui.app import MonitorApp
    from befori_tui.ui.fixed import FixedRun, fixed_config, fixed_model

    cfg = fixed_config()
    t0 = time.perf_counter()
    model = fixed_model(FixedRun(levels=((slots // 4, 20.0), (slots, 60.0))), cfg)
    build_s = time.perf_counter() - t0
    app = MonitorApp(cfg, model, None)
    app.options.live = False
    out: dict = {"records": len(model.records), "slots": model.slot_count, "build_s": build_s}

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
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--profile", default="dbrx-8xh100")
    p.add_argument("--skip-ttft", action="store_true")
    p.add_argument("--cpu-share", type=int, metavar="SLOTS", help="only: CPU share of the UI and the load loop "
                   "with the TUI running at this many slots (the flat 20 ms simulator of bench/fidelity.py)")
    args = p.parse_args()
    if args.cpu_share:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import fidelity

        with tempfile.TemporaryDirectory() as tmp:
            profile = fidelity.flat_profile(tmp, max(1024, 2 * args.cpu_share))
            with start_sim(profile=profile) as sim:
                s = cpu_share(sim.base_url, args.cpu_share, args.seconds, Path(tmp) / "cpu.toml")
        print(f"TUI at {args.cpu_share} slots, {args.seconds:g} s: " + ", ".join(
            f"{k} {v:.0f}% of a core" for k, v in s.items() if k != "records"))
        return 0

    fc = frame_cost(args.frames)
    print(f"frame at {fc['slots']} slots ({fc['records']} records), 160x48: median "
          f"{fc['frame_ms_top']:.2f} ms (scrolled to top), {fc['frame_ms_middle']:.2f} ms (middle); "
          f"timeline {fc['timeline_rows_visible']} visible rows {fc['timeline_ms']:.2f} ms; "
          f"summaries (worker thread) {fc['summaries_ms']:.0f} ms", flush=True)
    if args.skip_ttft:
        return 0
    results: dict[str, list[dict]] = {"headless": [], "tui": []}
    with tempfile.TemporaryDirectory() as tmp, start_sim(profile=args.profile, time_scale=1.0) as sim:
        for i in range(args.runs):
            for mode in ("headless", "tui"):
                out = Path(tmp) / f"{mode}-{i}.toml"
                if mode == "headless":
                    r = run_headless(sim.base_url, args.concurrency, args.seconds, out)
                else:
                    r = run_tui(sim.base_url, args.concurrency, args.seconds, out, sim.root_url)
                results[mode].append(r)
                print(f"run {i} {mode:8s} n={r['n']:4d} TTFT p50 {r['ttft_p50_ms']:.2f} ms p90 "
                      f"{r['ttft_p90_ms']:.2f} ms ITL p50 {r['itl_p50_ms']:.3f} ms", flush=True)
    med = {m: {k: statistics.median(r[k] for r in rs) for k in ("ttft_p50_ms", "ttft_p90_ms", "itl_p50_ms")}
           for m, rs in results.items()}
    for m in ("headless", "tui"):
        print(f"median of {args.runs} runs, {m:8s}: TTFT p50 {med[m]['ttft_p50_ms']:.2f} ms, "
              f"p90 {med[m]['ttft_p90_ms']:.2f} ms, ITL p50 {med[m]['itl_p50_ms']:.3f} ms")
    d = med["tui"]["ttft_p50_ms"] - med["headless"]["ttft_p50_ms"]
    print(f"TUI − headless: TTFT p50 {d:+.2f} ms ({d / med['headless']['ttft_p50_ms'] * 100:+.1f}%), "
          f"ITL p50 {med['tui']['itl_p50_ms'] - med['headless']['itl_p50_ms']:+.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
