"""`befori-tui report`, `compare` and `export`: argument parsing and files. ConfigError for bad input (the
entry point turns it into one line and exit code 2)."""

from __future__ import annotations

import sys
from pathlib import Path

from befori_tui.cliargs import OneLineParser
from befori_tui.core.config import ConfigError

REPORT_EXTRA = "befori-tui[report]"


def _write(path: Path, data: bytes | str, flag: str = "--out") -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            path.write_text(data, encoding="utf-8")
        else:
            path.write_bytes(data)
    except OSError as exc:
        raise ConfigError(f"{flag}: cannot write {str(path)!r} ({exc.strerror or exc})") from None


def report_main(argv: list[str]) -> int:
    p = OneLineParser(prog="befori-tui report",
                      description="Charts of saved sessions: one self-contained HTML file (offline, no script), or "
                                  "the charts alone as SVG or PNG files.")
    p.add_argument("sessions", nargs="+", metavar="RUN.toml", help="saved sessions (the raw .jsonl beside each)")
    p.add_argument("--out", metavar="PATH",
                   help="the HTML file (default report.html), or with --format svg|png a folder (default report-charts)")
    p.add_argument("--format", choices=["html", "svg", "png"], default="html", help="html (default), svg or png")
    p.add_argument("--level", type=int, metavar="N",
                   help="the level the per-slot timeline shows (its `level` index; default: the optimum's, else the "
                        "cheapest blended $/M, else the last)")
    args = p.parse_args(argv)
    try:
        import matplotlib  # noqa: F401 — only to say what to install, before anything is read
    except ImportError:
        print(f"befori-tui report: needs matplotlib; install it with: pip install '{REPORT_EXTRA}'", file=sys.stderr)
        return 2

    import befori_tui
    from befori_tui.report.sessions import cheapest_level, level_axis, load_sessions, read_level_records

    # Bad input first, before the charts' imports (matplotlib's first import on a machine builds its font cache).
    sessions = load_sessions(args.sessions)
    for s in sessions:
        if not s.levels:
            raise ConfigError(f"{s.path}: the session has no levels (nothing was measured)")
    timelines = []
    for s in sessions:
        if args.level is not None:
            level = s.level(args.level)
            if level is None:
                have = ", ".join(str(lv.get("level")) for lv in s.levels)
                raise ConfigError(f"--level {args.level}: {s.path} has no such level (it has {have})")
        else:
            level = cheapest_level(s)
        try:
            records, why = read_level_records(s, int(level.get("level", -1))), ""
        except FileNotFoundError:
            records, why = None, (f"The raw records {s.raw_path} are not there; the timeline is drawn from them "
                                  f"(bench --raw, or keep the .jsonl beside the .toml).")
        timelines.append((s, level, records, why))
    from befori_tui.report.charts import build_charts, render
    from befori_tui.report.compare import compare_rows
    from befori_tui.report.html import build_html

    axis, axis_label = level_axis(sessions)
    charts = build_charts(sessions, axis, axis_label, timelines)
    if args.format == "html":
        out = Path(args.out or "report.html")
        if out.is_dir():
            raise ConfigError(f"--out: {str(out)!r} is a directory; give a file name")
        compare = compare_rows(sessions)[1] if len(sessions) > 1 else None
        _write(out, build_html(sessions, charts, axis, compare, befori_tui.__version__))
        print(f"saved {out}", file=sys.stderr)
    else:
        folder = Path(args.out or "report-charts")
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"--out: {str(folder)!r} is a file; with --format {args.format} give a folder")
        for ch in charts:
            if ch.figure is not None:
                path = folder / f"{ch.name}.{args.format}"
                _write(path, render(ch, args.format))
                print(f"saved {path}", file=sys.stderr)
    for ch in charts:
        if ch.figure is None:
            print(f"befori-tui report: no {ch.name} chart: {ch.note}", file=sys.stderr)
    return 0


def compare_main(argv: list[str]) -> int:
    p = OneLineParser(prog="befori-tui compare",
                      description="Saved sessions side by side, level by level (matched by concurrency, or by arrival "
                                  "rate): each figure, its ratio to the first session's, and whether the difference is "
                                  "beyond the 95% intervals.")
    p.add_argument("sessions", nargs="+", metavar="RUN.toml", help="two or more saved sessions; the first is the base")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table", help="table (default), csv or json")
    p.add_argument("--out", metavar="PATH", help="write here instead of standard output")
    p.add_argument("--no-raw", action="store_true",
                   help="do not read the raw records (latency and throughput then have no interval)")
    args = p.parse_args(argv)
    if len(args.sessions) < 2:
        p.error("give two or more sessions to compare")
    from befori_tui.report.compare import compare_rows, flat_rows, format_csv, format_json, format_table
    from befori_tui.report.sessions import load_sessions

    sessions = load_sessions(args.sessions)
    axis, rows = compare_rows(sessions, intervals_from_raw=not args.no_raw)
    if args.format == "table":
        text = format_table(sessions, axis, rows) + "\n"
    elif args.format == "csv":
        text = format_csv(flat_rows(sessions, axis, rows))
    else:
        text = format_json(sessions, flat_rows(sessions, axis, rows))
    _emit(text, args.out)
    return 0


def export_main(argv: list[str]) -> int:
    p = OneLineParser(prog="befori-tui export",
                      description="A saved session's levels, one row per level: sub-tables as dotted columns "
                                  "(occupancy.usd_idle), exact values. The raw .jsonl already holds every request.")
    p.add_argument("session", metavar="RUN.toml")
    p.add_argument("--format", choices=["csv", "json"], default="csv", help="csv (default) or json")
    p.add_argument("--out", metavar="PATH", help="write here instead of standard output")
    args = p.parse_args(argv)
    from befori_tui.report.export import level_rows, to_csv, to_json
    from befori_tui.report.sessions import load_sessions

    (session,) = load_sessions([args.session])
    rows = level_rows(session.levels)
    _emit(to_csv(rows) if args.format == "csv" else to_json(rows), args.out)
    return 0


def _emit(text: str, out: str | None) -> None:
    if out:
        _write(Path(out), text)
        print(f"saved {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
