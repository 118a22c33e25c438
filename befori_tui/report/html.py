"""The report as one HTML file: the charts inlined as SVG, the levels as tables, and — with several sessions —
the comparison. No script, no font, no link to anything: it opens from disk, offline, and prints."""

from __future__ import annotations

import html
import re

from befori_tui.core.format import usd
from befori_tui.report.charts import Chart, render
from befori_tui.report.compare import METRICS, Row, _fmt, _yes_no
from befori_tui.report.sessions import LoadedSession

CSS = """
body { font-family: "DejaVu Sans", "Segoe UI", Helvetica, Arial, sans-serif; color: #1a202c; margin: 0 auto;
       max-width: 1180px; padding: 24px; line-height: 1.4; }
h1 { font-size: 1.6em; margin: 0 0 4px; } h2 { font-size: 1.2em; margin: 28px 0 8px; border-bottom: 1px solid #e2e8f0; }
.meta { color: #4a5568; font-size: 0.92em; } .meta td { padding: 1px 12px 1px 0; vertical-align: top; }
figure.chart { margin: 16px 0 28px; } figure.chart svg { width: 100%; height: auto; display: block; }
figcaption { color: #4a5568; font-size: 0.9em; margin-top: 4px; }
.missing { background: #fffaf0; border-left: 4px solid #dd6b20; padding: 8px 12px; }
table.data { border-collapse: collapse; font-size: 0.86em; margin: 8px 0 16px; }
table.data th, table.data td { padding: 3px 8px; text-align: right; border-bottom: 1px solid #edf2f7; white-space: nowrap; }
table.data th { background: #f7fafc; } table.data td.l, table.data th.l { text-align: left; }
td.yes { color: #c53030; font-weight: bold; } footer { color: #718096; font-size: 0.8em; margin-top: 32px; }
@media print { body { max-width: none; } figure.chart { break-inside: avoid; } }
"""


def e(x) -> str:
    return html.escape(str(x), quote=True)


def inline_svg(svg: bytes) -> str:
    """The <svg> element alone: no XML prolog or DOCTYPE (which name a DTD by URL) inside an HTML page."""
    text = svg.decode("utf-8")
    return text[text.index("<svg"):]


def _meta(s: LoadedSession) -> str:
    d = s.data
    ep = d.get("endpoint", {}) if isinstance(d.get("endpoint"), dict) else {}
    pr = d.get("pricing", {}) if isinstance(d.get("pricing"), dict) else {}
    wl = d.get("workload", {}) if isinstance(d.get("workload"), dict) else {}
    rows = [
        ("session", s.path),
        ("model", f"{ep.get('model', '—')} · {ep.get('api', '—')} API at {ep.get('url', '—')}"),
        ("ran", f"{d.get('started_at', '—')} → {d.get('saved_at', '—')} · ended by {d.get('ended_by', '—')}"),
        ("price", f"${pr.get('usd_per_hour', '—')}/h for {pr.get('gpu_count', '—')} GPUs (source: {pr.get('source', '—')})"
                  + ("; the default price, someone else's number" if pr.get("source") == "default" else "")),
        ("workload", f"input {wl.get('input_tokens_mean', '—')}±{wl.get('input_tokens_sd', '—')} tokens, output "
                     f"{wl.get('output_tokens_mean', '—')}±{wl.get('output_tokens_sd', '—')} tokens"),
    ]
    return "<table class='meta'>" + "".join(f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in rows) + "</table>"


def _ms(v) -> str:
    return "—" if not isinstance(v, (int, float)) else (f"{v * 1e3:.1f}" if v < 10 else f"{v * 1e3:,.0f}")


def _interval(lv: dict, key: str) -> str:
    lo, hi = lv.get(key + "_lo"), lv.get(key + "_hi")
    return f"{usd(lo)}–{usd(hi)}" if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) else "—"


def levels_table(s: LoadedSession, axis: str) -> str:
    head = [axis if axis == "concurrency" else "rate", "$/M in", "95%", "$/M out", "95%", "$/M blended",
            "TTFT p50 ms", "TTFT p99 ms", "ITL p50 ms", "ITL p99 ms", "out tok/s", "ok", "failed"]
    out = ["<table class='data'><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>"]
    for lv in s.levels:
        cells = [lv.get(axis, "—"), usd(lv.get("usd_per_million_input")), _interval(lv, "usd_per_million_input"),
                 usd(lv.get("usd_per_million_output")), _interval(lv, "usd_per_million_output"),
                 usd(lv.get("usd_per_million_blended")), _ms(lv.get("ttft_s_p50")), _ms(lv.get("ttft_s_p99")),
                 _ms(lv.get("itl_s_p50")), _ms(lv.get("itl_s_p99")),
                 _fmt(lv.get("output_tok_per_s_total"), "rate"), lv.get("requests_ok", "—"),
                 lv.get("requests_failed", "—")]
        out.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    api = s.api_compare
    if api:
        out.append("<table class='data'><tr><th class='l'>API price to compare</th><th>$/M in</th><th>$/M out</th>"
                   "<th>$/M blended</th></tr>")
        for a in api:
            out.append(f"<tr><td class='l'>{e(a.get('name', '—'))}</td><td>{e(usd(a.get('usd_per_million_input')))}"
                       f"</td><td>{e(usd(a.get('usd_per_million_output')))}</td>"
                       f"<td>{e(usd(a.get('usd_per_million_blended')))}</td></tr>")
        out.append("</table>")
    opt = s.optimum
    if opt:
        if opt.get("found", True) and "concurrency" in opt:
            out.append(f"<p>Optimum: c={e(opt['concurrency'])} at ${e(usd(opt.get('usd_per_million_input')))}/M input "
                       f"and ${e(usd(opt.get('usd_per_million_output')))}/M output; range c="
                       f"{e(opt.get('range_concurrency_min', '—'))}–{e(opt.get('range_concurrency_max', '—'))}; highest "
                       f"c meeting the SLO: {e(opt.get('max_concurrency_meeting_slo', '—'))}.</p>")
        else:
            out.append("<p class='missing'>No level met the SLO: the session has no optimum.</p>")
    return "\n".join(out)


def compare_table(sessions: list[LoadedSession], axis: str, rows: list[Row]) -> str:
    letters = [chr(ord("A") + i) for i in range(len(sessions))]
    kinds = {m: k for m, _l, k in METRICS}
    out = ["<p>" + " · ".join(f"<b>{L}</b> = {e(s.path)}" for L, s in zip(letters, sessions)) + "</p>",
           "<table class='data'><tr><th class='l'>level</th><th class='l'>figure</th>"
           + "".join(f"<th>{L}</th>" for L in letters)
           + "".join(f"<th>{L}/A</th><th>beyond 95%</th>" for L in letters[1:]) + "</tr>"]
    for row in rows:
        name = ("c" if axis == "concurrency" else "rate") + f"={row.axis_value:g}" + (
            f" (#{row.occurrence + 1})" if row.occurrence else "")
        tds = "".join(f"<td>{e(_fmt(c.value, kinds[row.metric]))}</td>" for c in row.cells)
        for i in range(1, len(sessions)):
            r, b = row.ratio(i), row.beyond(i)
            tds += f"<td>{'—' if r is None else f'{r:.2f}×'}</td><td class='{_yes_no(b)}'>{_yes_no(b)}</td>"
        out.append(f"<tr><td class='l'>{e(name)}</td><td class='l'>{e(row.label)}</td>{tds}</tr>")
    out.append("</table><p class='meta'>beyond 95%: the two runs' 95% intervals do not overlap (— when one is not "
               "known). $/M intervals are the sessions' own; latency and throughput intervals a bootstrap of the raw "
               "records beside each session.</p>")
    return "\n".join(out)


def figure(chart: Chart) -> str:
    cid = re.sub(r"[^a-z0-9-]", "-", chart.name.lower())
    if chart.figure is None:
        return (f"<section class='chart-missing' id='chart-{cid}'><h2>{e(chart.title)}</h2>"
                f"<p class='missing'>{e(chart.note)}</p></section>")
    cap = f"<figcaption>{e(chart.note)}</figcaption>" if chart.note else ""
    return (f"<figure class='chart' id='chart-{cid}' data-chart='{cid}'>{inline_svg(render(chart, 'svg'))}"
            f"{cap}</figure>")


def build_html(sessions: list[LoadedSession], charts: list[Chart], axis: str,
               compare: list[Row] | None, version: str) -> str:
    title = "befori-tui report · " + ", ".join(s.label for s in sessions)
    parts = [
        "<!DOCTYPE html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{e(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        "<p class='meta'>What this server costs per input and per output token, measured (the befori method: the "
        "server's hourly price divided by the input tokens it takes in during time to first token, and by the output "
        "tokens it streams after it).</p>",
    ]
    for s in sessions:
        parts.append(_meta(s))
    for ch in charts:
        parts.append(figure(ch))
    if compare is not None:
        parts += ["<h2>Side by side</h2>", compare_table(sessions, axis, compare)]
    for s in sessions:
        parts += [f"<h2>Levels · {e(s.label)}</h2>", levels_table(s, axis)]
    parts += [f"<footer>Made by befori-tui {e(version)} from the saved session"
              f"{'s' if len(sessions) > 1 else ''}; charts drawn with matplotlib.</footer>", "</body></html>"]
    return "\n".join(parts) + "\n"
