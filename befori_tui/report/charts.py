"""The report's charts, drawn with matplotlib (the optional extra `befori-tui[report]`).

matplotlib because it draws everything here offline, as SVG (inlined in the HTML: no script, no network, text
that stays text) and PNG (for a slide) from one code path; it has log axes, broken bars for the timeline, and
bands for intervals and ranges; and it is maintained and on every platform's wheels. The Figure API is used
without pyplot: no global state, no GUI backend, safe in any thread.

Every chart is a `Chart`: a name (the file name with --format svg|png), a title, the figure — or, when the
sessions lack what it needs, no figure and a note that says what is missing.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

from matplotlib import rc_context
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from befori_tui.report.sessions import LoadedSession

INPUT_COLOR = "#2b6cb0"    # blue: input tokens, prefill
OUTPUT_COLOR = "#c05621"   # burnt orange: output tokens, decode
PREFILL_COLOR = "#f2b950"  # light: a request waiting for its first token (what the input pays for)
DECODE_COLOR = "#2c5282"   # dark: a request streaming its output
ERROR_COLOR = "#c53030"
CANCELLED_COLOR = "#a0aec0"
OPTIMUM_COLOR = "#2f855a"
API_COLORS = ("#6b46c1", "#b83280", "#319795", "#718096", "#975a16")
SESSION_STYLES = (("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"), ((0, (5, 1)), "v"), ((0, (1, 1)), "P"))
RASTER_BARS = 6000  # timeline bars above which they are embedded as an image in the SVG
PCT_STYLES = {"p50": ("#2b6cb0", "o"), "p90": ("#d69e2e", "s"), "p99": ("#c53030", "^")}

STYLE = {
    "font.family": ["DejaVu Sans"],
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.grid.which": "both",
    "grid.color": "#e2e8f0",
    "grid.linewidth": 0.7,
    "axes.edgecolor": "#4a5568",
    "legend.frameon": False,
    "legend.fontsize": 9,
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
    "svg.fonttype": "none",  # text stays text in the SVG: searchable, sharp, a tenth of the size
}


@dataclass
class Chart:
    name: str
    title: str
    figure: Figure | None
    note: str = ""  # what is missing, or how to read it


def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _series(s: LoadedSession, axis: str, key: str) -> tuple[list[float], list[float], list[dict]]:
    xs, ys, lvs = [], [], []
    for lv in s.levels:
        x, y = _num(lv.get(axis)), _num(lv.get(key))
        if x is not None and x > 0 and y is not None:
            xs.append(x)
            ys.append(y)
            lvs.append(lv)
    return xs, ys, lvs


def _log_x(ax, values: list[float], axis: str) -> None:
    """A log x axis with a tick at each level's value, written as the value (1, 8, 64 — not 10⁰, 10¹)."""
    ax.set_xscale("log", base=2 if axis == "concurrency" else 10)
    ticks = sorted(set(values))
    if ticks:
        ax.set_xticks(ticks)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        lo, hi = ticks[0], ticks[-1]
        ax.set_xlim(lo / 1.5, hi * 1.5)


def _plain_log(axis, prefix: str = "") -> None:
    """Log ticks written plainly (20, 50, 100 — not 2×10¹), as many per decade as the range leaves room for.
    Call it after the data are drawn: it reads the axis's range."""
    lo, hi = axis.axes.get_xlim() if axis.axis_name == "x" else axis.axes.get_ylim()  # autoscaled by now
    decades = math.log10(hi / lo) if lo > 0 and hi > lo else 1.0
    subs = (tuple(float(k) for k in range(1, 10)) if decades < 0.8 else (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)
            if decades < 1.5 else (1.0, 2.0, 5.0) if decades < 3.5 else (1.0,))
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda v, _p: f"{prefix}{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _usd_axis(ax) -> None:
    ax.set_yscale("log")
    _plain_log(ax.yaxis, "$")


def _legend(ax, **kwargs) -> None:
    """A legend only when something is labelled (a panel with no data has none)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def _session_label(sessions: list[LoadedSession], s: LoadedSession, what: str) -> str:
    return what if len(sessions) == 1 else f"{what} · {s.label}"


# --- $/M against concurrency --------------------------------------------------------------------------------

def cost_chart(sessions: list[LoadedSession], axis: str, axis_label: str) -> Chart:
    title = "Cost per million tokens against " + ("concurrency" if axis == "concurrency" else "arrival rate")
    if not any(_series(s, axis, "usd_per_million_input")[0] for s in sessions):
        return Chart("cost", title, None, "No level has a $/M figure (no request succeeded).")
    fig = Figure(figsize=(11, 5.6), layout="constrained")
    axes = fig.subplots(1, 2, sharex=True)
    all_x: list[float] = []
    notes = []
    for ax, which, color in ((axes[0], "input", INPUT_COLOR), (axes[1], "output", OUTPUT_COLOR)):
        key = f"usd_per_million_{which}"
        for i, s in enumerate(sessions):
            ls, marker = SESSION_STYLES[i % len(SESSION_STYLES)]
            xs, ys, lvs = _series(s, axis, key)
            all_x += xs
            if not xs:
                continue
            lo = [max(y - (_num(lv.get(key + "_lo")) or y), 0.0) for y, lv in zip(ys, lvs)]
            hi = [max((_num(lv.get(key + "_hi")) or y) - y, 0.0) for y, lv in zip(ys, lvs)]
            ax.errorbar(xs, ys, yerr=[lo, hi], color=color, linestyle=ls, marker=marker, markersize=5,
                        capsize=3, linewidth=1.8, label=_session_label(sessions, s, "this server (befori, 95% interval)"))
        seen_api = set()
        for j, a in enumerate(sessions[0].api_compare + [a for s in sessions[1:] for a in s.api_compare]):
            price = _num(a.get(key))
            name = str(a.get("name", "API"))
            if price is None or price <= 0 or (name, price) in seen_api:
                continue
            seen_api.add((name, price))
            ax.axhline(price, color=API_COLORS[len(seen_api) % len(API_COLORS)], linestyle="--", linewidth=1.2,
                       label=f"{name}: ${price:g}/M")
        for i, s in enumerate(sessions):
            opt = s.optimum
            if not opt:
                continue
            ox = _num(opt.get(axis)) if axis != "concurrency" else _num(opt.get("concurrency"))
            r0, r1 = _num(opt.get("range_concurrency_min")), _num(opt.get("range_concurrency_max"))
            slo_max = _num(opt.get("max_concurrency_meeting_slo"))
            who = "" if len(sessions) == 1 else f" · {s.label}"
            if axis == "concurrency" and r0 is not None and r1 is not None and r1 >= r0 > 0:
                ax.axvspan(r0 / 1.08 if r0 == r1 else r0, r1 * 1.08 if r0 == r1 else r1, color=OPTIMUM_COLOR,
                           alpha=0.12, label=f"optimum's range c={r0:g}–{r1:g}{who}")
            if axis == "concurrency" and slo_max is not None and slo_max > 0:
                ax.axvline(slo_max, color="#4a5568", linestyle=":", linewidth=1.2,
                           label=f"highest c meeting the SLO: {slo_max:g}{who}")
            oy = _num(opt.get(key))
            if opt.get("found", True) and ox is not None and ox > 0 and oy is not None and oy > 0:
                ax.plot([ox], [oy], marker="*", markersize=16, color=OPTIMUM_COLOR, linestyle="none",
                        markeredgecolor="white", zorder=5, label=f"optimum c={ox:g}: ${oy:.3g}/M{who}")
                all_x.append(ox)
            elif opt.get("found") is False and which == "input":
                notes.append(f"{s.label}: no level met the SLO, so there is no optimum.")
        _usd_axis(ax)
        ax.set_title(f"$ per million {which} tokens")
        ax.set_xlabel(axis_label)
        # Below the plot: the API lines run across the whole width, so a legend inside would hide one.
        _legend(ax, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=2, fontsize=8.5)
    _log_x(axes[0], all_x, axis)
    fig.suptitle(title, fontsize=12, fontweight="bold")
    for s in sessions:
        # Levels with no $/M are not drawn: say which, with the session's reason when it gives one.
        gaps = [f"{'c' if axis == 'concurrency' else 'rate'}={lv.get(axis)}"
                + (f" ({lv['cost_missing']})" if isinstance(lv.get("cost_missing"), str) else "")
                for lv in s.levels if _num(lv.get("usd_per_million_input")) is None]
        if gaps:
            notes.append(f"{_session_label(sessions, s, 'No $/M')} at {', '.join(gaps)}.")
    return Chart("cost", title, fig, " ".join(notes))


# --- latency percentiles ------------------------------------------------------------------------------------

def latency_chart(sessions: list[LoadedSession], axis: str, axis_label: str) -> Chart:
    title = "Latency percentiles against " + ("concurrency" if axis == "concurrency" else "arrival rate")
    if not any(_series(s, axis, "ttft_s_p50")[0] for s in sessions):
        return Chart("latency", title, None, "No level has latencies (no request succeeded).")
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    axes = fig.subplots(1, 3, sharex=True)
    all_x: list[float] = []
    for ax, metric, name in ((axes[0], "ttft_s", "time to first token"), (axes[1], "itl_s", "inter-token latency"),
                             (axes[2], "e2e_s", "end to end")):
        for i, s in enumerate(sessions):
            ls, _m = SESSION_STYLES[i % len(SESSION_STYLES)]
            for pct, (color, marker) in PCT_STYLES.items():
                xs, ys, _ = _series(s, axis, f"{metric}_{pct}")
                all_x += xs
                if xs:
                    ax.plot(xs, [y * 1e3 for y in ys], color=color, linestyle=ls, marker=marker, markersize=4,
                            linewidth=1.6, label=_session_label(sessions, s, pct))
        ax.set_yscale("log")
        _plain_log(ax.yaxis)
        ax.set_title(name)
        ax.set_xlabel(axis_label)
        ax.set_ylabel("milliseconds")
        _legend(ax, loc="best")
    _log_x(axes[0], all_x, axis)
    fig.suptitle(title, fontsize=12, fontweight="bold")
    return Chart("latency", title, fig)


# --- throughput against latency -----------------------------------------------------------------------------

def throughput_chart(sessions: list[LoadedSession], axis: str) -> Chart:
    title = "Throughput against latency"
    pairs = (("e2e_s_p50", "output_tok_per_s_total", "end-to-end latency p50 (s)", "output tokens/s (server)",
              OUTPUT_COLOR),
             ("ttft_s_p50", "input_tok_per_s_total", "time to first token p50 (s)", "input tokens/s (server)",
              INPUT_COLOR))
    if not any(_series(s, axis, "output_tok_per_s_total")[0] for s in sessions):
        return Chart("throughput", title, None, "No level has a throughput (no request succeeded).")
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    tag = "c" if axis == "concurrency" else "rate"
    for ax, (xkey, ykey, xlabel, ylabel, color) in zip(axes, pairs):
        for i, s in enumerate(sessions):
            ls, marker = SESSION_STYLES[i % len(SESSION_STYLES)]
            pts = [(_num(lv.get(xkey)), _num(lv.get(ykey)), lv.get(axis)) for lv in s.levels]
            pts = [(x, y, c) for x, y, c in pts if x is not None and y is not None and x > 0]
            if not pts:
                continue
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color=color, linestyle=ls, marker=marker,
                    markersize=5, linewidth=1.6, label=s.label if len(sessions) > 1 else None)
            for x, y, c in pts:
                ax.annotate(f"{tag}={c:g}" if isinstance(c, (int, float)) else "", (x, y), textcoords="offset points",
                            xytext=(5, -11), fontsize=8, color="#4a5568")
        ax.set_xscale("log")
        _plain_log(ax.xaxis)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
        if len(sessions) > 1:
            _legend(ax, loc="best")
    fig.suptitle(title + " (each point a level)", fontsize=12, fontweight="bold")
    return Chart("throughput", title, fig)


# --- GPU over time ------------------------------------------------------------------------------------------

def gpu_level_figures(level: dict) -> dict[str, float]:
    """Utilisation (% mean over GPUs), power (W, all GPUs) and energy per output token (J) of one level, from
    whichever keys the session holds: a level summary's own (`util_pct_mean`, `power_w_mean`), else the
    per-GPU tables (`gpus[].util_pct_mean`, summed `gpus[].power_w_mean`), else energy ÷ duration for power."""
    g = level.get("gpu")
    if not isinstance(g, dict):
        return {}
    out: dict[str, float] = {}
    gpus = [x for x in g.get("gpus", []) if isinstance(x, dict)] if isinstance(g.get("gpus"), list) else []
    util = _num(g.get("util_pct_mean"))
    if util is None:
        us = [u for u in (_num(x.get("util_pct_mean")) for x in gpus) if u is not None]
        util = sum(us) / len(us) if us else None
    power = next((p for p in (_num(g.get(k)) for k in ("power_w_total_mean", "power_w_mean_total",
                                                        "power_w_sum_mean")) if p is not None), None)
    if power is None:
        ps = [p for p in (_num(x.get("power_w_mean")) for x in gpus) if p is not None]
        power = sum(ps) if ps else None
    if power is None and _num(g.get("power_w_mean")) is not None and _num(g.get("gpu_count")):
        power = _num(g.get("power_w_mean")) * _num(g.get("gpu_count"))
    energy, dur = _num(g.get("energy_j_total")), _num(level.get("duration_s"))
    if power is None and energy is not None and dur:
        power = energy / dur
    jpt = _num(g.get("joules_per_output_token"))
    for k, v in (("util_pct", util), ("power_w", power), ("joules_per_output_token", jpt)):
        if v is not None:
            out[k] = v
    return out


def gpu_chart(sessions: list[LoadedSession]) -> Chart:
    title = "GPU utilisation, power and energy per output token over the run"
    have = [(s, [gpu_level_figures(lv) for lv in s.levels]) for s in sessions]
    if not any(f for _s, figs in have for f in figs):
        why = []
        for s in sessions:
            tel = s.data.get("telemetry", {}) if isinstance(s.data.get("telemetry"), dict) else {}
            why.append(f"{s.label}: {tel.get('note') or 'no [levels.gpu] table'}"
                       f" (GPU source asked: {tel.get('gpu_source', 'not recorded')})")
        return Chart("gpu", title, None, "No GPU telemetry in the session. " + "; ".join(why) + ".")
    fig = Figure(figsize=(11, 6.4), layout="constrained")
    axes = fig.subplots(3, 1, sharex=True)
    panels = (("util_pct", "utilisation (% mean of GPUs)", "#2b6cb0"), ("power_w", "power (W, all GPUs)", "#c05621"),
              ("joules_per_output_token", "energy (J per output token)", "#2f855a"))
    missing = set()
    for i, (s, figs) in enumerate(have):
        ls, _m = SESSION_STYLES[i % len(SESSION_STYLES)]
        t = 0.0
        spans = []
        for lv, f in zip(s.levels, figs):
            d = _num(lv.get("duration_s")) or 0.0
            spans.append((t, t + d, lv, f))
            t += d
        for ax, (key, label, color) in zip(axes, panels):
            xs, ys = [], []
            for t0, t1, _lv, f in spans:
                if key in f:
                    xs += [t0, t1, float("nan")]
                    ys += [f[key], f[key], float("nan")]
            if xs:
                ax.plot(xs, ys, color=color, linestyle=ls, linewidth=2.2, label=s.label if len(sessions) > 1 else None)
            else:
                missing.add(label)
            ax.set_ylabel(label, fontsize=9)
        if i == 0:
            for t0, t1, lv, _f in spans:
                axes[0].axvline(t0, color="#cbd5e0", linewidth=0.8)
                c = lv.get("concurrency")
                axes[0].text((t0 + t1) / 2, 1.0, f"c={c}", transform=axes[0].get_xaxis_transform(), ha="center",
                             va="bottom", fontsize=8, color="#4a5568")
    for ax in axes:
        ax.set_ylim(bottom=0)
        if len(sessions) > 1:
            _legend(ax, loc="best")
    axes[-1].set_xlabel("seconds since the run began (each step a level; its mean over the level)")
    fig.suptitle(title, fontsize=12, fontweight="bold")
    note = ("Per-level means: the session keeps one GPU summary per level, not the 1 Hz samples."
            + (f" Not in the session: {', '.join(sorted(missing))}." if missing else ""))
    return Chart("gpu", title, fig, note)


# --- the per-slot timeline ----------------------------------------------------------------------------------

def timeline_chart(session: LoadedSession, level: dict, records: list[dict], name: str = "timeline") -> Chart:
    c = level.get("concurrency")
    title = f"Per-slot timeline at c={c} (level {level.get('level')}), split at the first token"
    rows = [r for r in records if isinstance(r.get("t_send_ns"), int) and isinstance(r.get("slot"), int)]
    if not rows:
        return Chart(name, title, None, f"The raw records hold no request of level {level.get('level')}.")
    t0 = min(r["t_send_ns"] for r in rows)
    t_last = max(max(r.get("t_end_ns") or 0, r.get("t_first_token_ns") or 0, r["t_send_ns"]) for r in rows)
    slots = max(r["slot"] for r in rows) + 1
    fig = Figure(figsize=(11, min(max(2.4, 0.9 + 0.13 * slots), 9.0)), layout="constrained")
    ax = fig.subplots()
    bars: dict[str, tuple[list, list, list]] = {k: ([], [], []) for k in ("prefill", "decode", "error", "cancelled")}
    ticks_x, ticks_y = [], []
    for r in rows:
        send = (r["t_send_ns"] - t0) / 1e9
        first = r.get("t_first_token_ns")
        end = r.get("t_end_ns")
        end_s = (end - t0) / 1e9 if isinstance(end, int) else (t_last - t0) / 1e9
        kind = r.get("error_kind")
        if kind is None and isinstance(first, int):
            first_s = (first - t0) / 1e9
            for k, a, b in (("prefill", send, first_s), ("decode", first_s, end_s)):
                bars[k][0].append(r["slot"])
                bars[k][1].append(b - a)
                bars[k][2].append(a)
            ticks_x.append(first_s)
            ticks_y.append(r["slot"])
        else:
            k = "cancelled" if kind == "cancelled" or end is None else "error"
            bars[k][0].append(r["slot"])
            bars[k][1].append(max(end_s - send, 0.0))
            bars[k][2].append(send)
    colors = {"prefill": PREFILL_COLOR, "decode": DECODE_COLOR, "error": ERROR_COLOR, "cancelled": CANCELLED_COLOR}
    # One collection per kind, not a patch per bar: thousands of requests draw in a blink. Past RASTER_BARS they
    # are drawn as one embedded image (still inside the file: a data URI) so the SVG stays small.
    raster = sum(len(b[0]) for b in bars.values()) > RASTER_BARS
    for k, (ys, widths, lefts) in bars.items():
        if ys:
            verts = [((x, y - 0.4), (x, y + 0.4), (x + w, y + 0.4), (x + w, y - 0.4))
                     for y, w, x in zip(ys, widths, lefts)]
            ax.add_collection(PolyCollection(verts, facecolors=colors[k], linewidths=0, rasterized=raster))
    # The first-token moment as a mark of its own: when prefill is a small share of a request it is narrower
    # than a line, and the split would vanish into one colour.
    row_pt = fig.get_figheight() * 72 * 0.8 / slots  # a slot's row on the page, in points (about)
    ax.scatter(ticks_x, ticks_y, marker="|", s=(0.9 * row_pt) ** 2, color=PREFILL_COLOR,
               linewidths=1.4 if row_pt > 4 else 0.8, zorder=3, rasterized=raster)
    ax.set_ylim(slots - 0.5, -0.5)
    ax.set_xlim(0, (t_last - t0) / 1e9)
    ax.set_ylabel("slot")
    ax.set_xlabel("seconds since the level's first request was sent")
    if slots <= 16:
        ax.set_yticks(range(slots))
    ax.grid(axis="y", visible=False)
    ok = [r for r in rows if r.get("error_kind") is None and isinstance(r.get("t_first_token_ns"), int)
          and isinstance(r.get("t_end_ns"), int)]
    share = ""
    if ok:
        ttft = sum(r["t_first_token_ns"] - r["t_send_ns"] for r in ok)
        e2e = sum(r["t_end_ns"] - r["t_send_ns"] for r in ok)
        share = f" · first token at {100 * ttft / e2e:.1f}% of a request on average" if e2e else ""
    handles = [Patch(color=PREFILL_COLOR, label="waiting for the first token (billed to input)"),
               Patch(color=DECODE_COLOR, label="streaming the output (billed to output)")]
    if bars["error"][0]:
        handles.append(Patch(color=ERROR_COLOR, label=f"failed ({len(bars['error'][0])})"))
    if bars["cancelled"][0]:
        handles.append(Patch(color=CANCELLED_COLOR, label=f"cancelled or unfinished ({len(bars['cancelled'][0])})"))
    fig.legend(handles=handles, loc="outside lower left", ncols=4, fontsize=8.5)
    ax.set_title(title + share, loc="left")
    return Chart(name, title, fig)


# --- output -------------------------------------------------------------------------------------------------

def render(chart: Chart, fmt: str) -> bytes:
    """The chart as SVG or PNG. The SVG's ids are salted with the chart's name, so several SVGs inlined in one
    page never share an id, and the output is the same for the same session (no date in it)."""
    assert chart.figure is not None
    buf = io.BytesIO()
    with rc_context({**STYLE, "svg.hashsalt": f"befori-{chart.name}"}):
        if fmt == "svg":
            chart.figure.savefig(buf, format="svg", metadata={"Date": None})
        else:
            chart.figure.savefig(buf, format="png", dpi=160, metadata={"Software": None})
    return buf.getvalue()


def build_charts(sessions: list[LoadedSession], axis: str, axis_label: str,
                 timelines: list[tuple[LoadedSession, dict, list[dict] | None, str]]) -> list[Chart]:
    """Every chart of the report, in its order. `timelines`: (session, level, its raw records or None, why
    there are none) per session."""
    with rc_context(STYLE):
        charts = [cost_chart(sessions, axis, axis_label)]
        for s, level, records, why in timelines:
            name = "timeline" if len(sessions) == 1 else f"timeline-{len(charts)}"
            if records is None:
                charts.append(Chart(name, f"Per-slot timeline · {s.label}", None, why))
            else:
                ch = timeline_chart(s, level, records, name)
                if len(sessions) > 1:
                    ch.title += f" · {s.label}"
                charts.append(ch)
        charts.append(latency_chart(sessions, axis, axis_label))
        charts.append(throughput_chart(sessions, axis))
        charts.append(gpu_chart(sessions))
    return charts
