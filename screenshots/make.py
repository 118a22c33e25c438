"""Render the monitor into SVGs for the README: every bundled theme at 80×24 and 160×48.

The data is a deterministic run (befori_tui/ui/fixed.py: fixed seed, frozen clock), so the pictures only
change when the app's drawing does.

    .venv/bin/python screenshots/make.py [--out screenshots]
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from befori_tui.ui.app import MonitorApp, UiOptions
from befori_tui.ui.fixed import fixed_config, fixed_model
from befori_tui.ui.themes import bundled_theme_dir, load_themes

SIZES = ((80, 24), (160, 48))


async def render(theme: str, size: tuple[int, int], path: Path) -> None:
    cfg = fixed_config()
    app = MonitorApp(cfg, fixed_model(cfg=cfg), None, UiOptions(live=False, theme=theme))
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        path.write_text(app.export_screenshot(title=f"befori-tui · {theme} · {size[0]}×{size[1]}"), encoding="utf-8")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(Path(__file__).parent))
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    themes, errors = load_themes(bundled_theme_dir())
    if errors:
        raise SystemExit("; ".join(map(str, errors)))
    for theme in sorted(t.name for t in themes):
        for size in SIZES:
            path = out / f"monitor-{theme}-{size[0]}x{size[1]}.svg"
            asyncio.run(render(theme, size, path))
            print(path)


if __name__ == "__main__":
    main()
