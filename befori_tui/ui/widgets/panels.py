"""Status line (a Static), metrics, cost and GPU panels (CellPanels: only changed cells are sent), redrawn from
a Summaries at 1 Hz."""

from __future__ import annotations

import time

from rich.console import Group
from rich.style import Style
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from befori_tui.core.config import PricingConfig
from befori_tui.core.cost import blended_usd_per_million
from befori_tui.core.health import CLIENT_BOUND_LAG_MS, CLIENT_BOUND_NOTE
from befori_tui.core import format as fmt
from befori_tui.ui.model import LiveModel, Summaries
from befori_tui.ui.widgets.cellpanel import CellPanel


def fitted_table(headers: list[str], rows: list[list[str]], width: int, drop_order: list[list[int]]) -> Table:
    """A table of `width` cells at most: column groups in `drop_order` are left out, first to last, until the
    rest fits at their full widths; the first column (names) takes what is left and is the only one ever
    cut. So no figure is shown in part."""
    keep = list(range(len(headers)))

    def natural(i: int) -> int:
        return max([len(headers[i])] + [len(r[i]) for r in rows])

    def others() -> int:
        return sum(natural(i) + 1 for i in keep[1:])  # each with one cell of padding before it

    for group in drop_order:
        if natural(0) + others() <= width:
            break
        keep = [i for i in keep if i not in group]
    t = _table(*[headers[i] for i in keep])
    t.columns[0].width = max(4, min(natural(0), width - others()))
    t.columns[0].overflow = "ellipsis"
    for r in rows:
        t.add_row(*[r[i] for i in keep])
    return t


def _table(*headers: str, justify_first: str = "left") -> Table:
    t = Table(box=None, padding=(0, 1), pad_edge=False, show_edge=False, expand=False, header_style="bold")
    for i, h in enumerate(headers):
        t.add_column(h, justify=justify_first if i == 0 else "right", no_wrap=True)
    return t


def fit_pieces(pieces: list[tuple[Text, int]], width: int, sep: str = "  ", elastic_last: int = 0) -> Text:
    """Join `pieces` (text, priority: 0 always shown, higher numbers dropped first) into one line of at most
    `width` cells, dropping whole pieces — never cutting a figure in half. A piece of priority 0 that still
    does not fit is cut at the end (only names are put last: the endpoint line). `elastic_last`: the last
    piece (a name) counts as at most this many cells, as it may be cut rather than push others out."""
    kept = list(pieces)

    def total(items) -> int:
        lengths = [t.cell_len for t, _ in items]
        if elastic_last and items and items[-1] is pieces[-1]:
            lengths[-1] = min(lengths[-1], elastic_last)
        return sum(lengths) + len(sep) * max(0, len(items) - 1)

    while total(kept) > width and any(p > 0 for _, p in kept):
        worst = max(p for _, p in kept)
        drop = max(i for i, (_, p) in enumerate(kept) if p == worst)  # the last of the least needed
        del kept[drop]
    line = Text(no_wrap=True, overflow="ellipsis")
    for i, (t, _) in enumerate(kept):
        if i:
            line.append(sep)
        line.append_text(t)
    return line


class StatusBar(CellPanel):
    """Two lines, at every size. The first: state, clock, concurrency and the headline — the current level's
    $/M input and output by the befori method, with their ± and settled mark — then the level. The second:
    the blended price beside an API price, what the price rests on, warnings, and the endpoint. Pieces are
    dropped whole, least needed first, so no figure is ever cut."""

    COMPONENT_CLASSES = {"status--state", "status--simulated", "status--dim", "status--warning"}

    def __init__(self, model: LiveModel, **kwargs) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.summaries: Summaries | None = None
        self._shown: tuple | None = None

    def refresh_status(self, quitting: bool = False) -> None:
        m = self.model
        info = m.info
        paused = m.paused
        state = "saving…" if quitting else "stopped" if m.finished else "paused" if paused else \
            "running" if m.levels else "connecting…"
        lv = m.level
        simulated = info.get("simulated") or any(s.simulated for s in list(m.samples)[-1:])
        state_style = self.get_component_rich_style("status--state")
        dim = self.get_component_rich_style("status--dim")
        warning = self.get_component_rich_style("status--warning")
        width = self.content_region.width or self.size.width or 80
        current = self.summaries.current if self.summaries is not None else {}
        if lv is not None and current.get("level") != lv.index:
            current = {}  # the summary is of the level before: nothing to show for this one yet

        first: list[tuple[Text, int]] = [
            (Text(f" {'❚❚' if paused else '●'} {state} ", state_style), 0),
            (Text(fmt.clock(m.elapsed_s()), "bold"), 0),
            (Text.assemble("rate ", (f"{lv.rate_per_s:g}/s", "bold"), (f" (≤{m.concurrency} in flight)", dim))
             if lv is not None and lv.rate_per_s else Text.assemble("c=", (f"{m.concurrency}", "bold")), 0),
            (headline(current, dim), 0),
        ]
        if lv is not None:
            first.append((Text.assemble(("level ", dim), (f"{lv.index}", "bold"), (f" ({lv.reason})", dim)), 3))
        if lv is not None and lv.draining and not m.finished:
            # After a decrease the old load is still on the server: this level's figures have not begun.
            first.append((Text(f"draining {lv.draining}", state_style), 0))
        if simulated:
            first.append((Text(" SIMULATED ", self.get_component_rich_style("status--simulated")), 2))
        if m.sweep_text:
            first.append((Text(m.sweep_text, dim), 4))

        # The most urgent first: a wait, a certificate not checked, a price nobody set; then the blend; the
        # endpoint last, the only piece ever cut (at its end).
        second: list[tuple[Text, int]] = []
        if m.connecting and not m.finished:
            waited_s = (time.perf_counter_ns() - m.connecting_since_ns) / 1e9
            second.append((Text(f"waiting for {m.connecting} · {waited_s:.0f} s", warning), 0))
        wire = str(info.get("wire") or "")  # through a proxy, TLS not verified, gateway headers: the user must see it
        unverified = "NOT verified" in wire
        if m.pricing.source == "default":
            second.append((Text(f"⚠ default price ${m.pricing.usd_per_hour:g}/h", warning), 0))
            second.append((Text("set --usd-per-hour", warning), 2))
        if current:
            second.append((blend_text(current, m.pricing, dim), 1))
        lag_ms = m.loop_lag_ms_p99
        if lag_ms is not None and lag_ms > CLIENT_BOUND_LAG_MS:
            second.append((Text(f"⚠ client-bound (loop lag p99 {lag_ms:.0f} ms)", warning), 1))
        if wire:
            second.append((Text(wire, warning if unverified else dim), 0 if unverified else 3))
        where = Text.assemble(info.get("url", "—"), (" · ", dim), (str(info.get("model", "—")), "bold"),
                              (" · ", dim), str(info.get("api", "—")))
        second.append((where, 0))  # last, so only the endpoint's end is ever cut

        line1, line2 = fit_pieces(first, width - 1), fit_pieces(second, width - 1, elastic_last=24)
        # Unchanged: not drawn again (every frame calls this; what is sent is what crosses an SSH link).
        key = (line1.plain, line2.plain, width, self.app.theme)
        if key == self._shown:
            return
        self._shown = key
        lines = [Text.assemble(" ", line) for line in (line1, line2)]
        for line in lines:
            line.truncate(width, overflow="ellipsis")
            line.no_wrap = True
        self.update(Group(*lines))


def headline(summary: dict, dim: Style) -> Text:
    """`$/M in 0.0192 ±2% · out 2.43 ±0% ✓`: the current level's befori $/M, its interval and settled mark."""
    text = Text.assemble(("$/M ", "bold"), ("in ", dim))
    for name, label in (("input", None), ("output", "out ")):
        if label:
            text.append(" · ", dim)
            text.append(label, dim)
        text.append(fmt.usd(summary.get(f"usd_per_million_{name}")), "bold")
        pct = fmt.interval_pct(summary, name)
        if pct is not None:
            text.append(f" ±{pct:.0f}%", dim)
    mark = fmt.settled_mark(summary)
    if mark != fmt.DASH:
        text.append(f" {mark}", "bold")
    return text


def blend_text(summary: dict, pricing: PricingConfig, dim: Style) -> Text | None:
    """`blend 3:1 0.623 · example-api 1.80`: one price for the workload mix, beside the first API price."""
    ratio = pricing.blend_input_per_output
    text = Text.assemble((f"blend {ratio:g}:1 ", dim), (fmt.usd(summary.get("usd_per_million_blended")), "bold"))
    if pricing.compare:
        api = pricing.compare[0]
        text.append(f" · {api.name} ", dim)
        text.append(fmt.usd(blended_usd_per_million(api.usd_per_million_input, api.usd_per_million_output, ratio)))
    return text


class MetricsPanel(CellPanel):
    """TTFT, ITL, TPOT, E2E p50/p90/p99, tokens/s, requests/s and errors: last window and level total."""

    _shown: Summaries | None = None

    def on_resize(self) -> None:
        # What fits (the error kinds, a second line) is known once laid out.
        if self._shown is not None:
            self.show(self._shown)
        else:
            super().on_resize()

    def show(self, s: Summaries) -> None:
        self._shown = s
        w, lv = s.window, s.current
        span_s = w.get("span_s")
        # The window is the current level's: after a change of level it restarts, and says so.
        if span_s is not None and span_s < s.window_s - 0.5:
            # Cut by the level's start, or by what a long level kept (a viewer that attached late).
            recent = f"this level's {span_s:.0f} s" if w.get("span_cut_by", "level") == "level" else f"last {span_s:.0f} s"
        else:
            recent = f"last {s.window_s:g} s"
        c = lv.get("concurrency")
        level_title = f"level {lv.get('level', '—')}" + (f", c={c}" if c else "")
        # Two tables side by side, each titled over its own columns: a long title never widens a column.
        left = _table("", "p50", "p90", "p99")
        right = _table("p50", "p90", "p99", justify_first="right")
        left.title, right.title = recent, level_title
        for t in (left, right):
            t.title_style = "bold"
        for key, name in (("ttft_s", "TTFT"), ("itl_s", "ITL"), ("tpot_s", "TPOT"), ("e2e_s", "E2E")):
            left.add_row(name, *[fmt.dur(w.get(f"{key}_p{p}")) for p in (50, 90, 99)])
            right.add_row(*[fmt.dur(lv.get(f"{key}_p{p}")) for p in (50, 90, 99)])
        # One figure a cell, as the latencies: "in 106.2k" in a p50 column made the tables wider than the
        # panel at 512 streams, and Rich then cut the p99s ("25.6…").
        for key, name in (("input_tok_per_s_total", "in tok/s"), ("output_tok_per_s_total", "out tok/s")):
            left.add_row(name, fmt.rate(w.get(key)), "", "")
            right.add_row(fmt.rate(lv.get(key)), "", "")
        t = Table.grid(padding=(0, 3))
        t.add_row(left, right)
        width = self.content_region.width or 80
        room = max(1, (self.content_region.height or 10) - 8)  # below the table's rows
        level_kinds = failure_kinds_lines(lv, width, max_lines=max(1, room - 3))
        lines = [requests_line("requests this level", lv, width), *level_kinds,
                 requests_line(recent, w, width), *failure_kinds_lines(w, width, max_lines=1)][:room]
        self.update(Group(t, *lines), layout=False)


def requests_line(label: str, summary: dict, width: int) -> Text:
    """`requests this level: 868 ok · 10 failed · 20.5/s` (the rate: ok requests a second)."""
    ok, failed = summary.get("requests_ok", 0), summary.get("requests_failed", 0)
    rate = summary.get("requests_per_s")
    text = f"{label}: {ok:,} ok · {failed:,} failed"
    if rate is not None and len(text) + len(f" · {fmt.rate(rate)}/s") <= width:
        text += f" · {fmt.rate(rate)}/s"  # left out whole when it does not fit, never cut
    line = Text(text, no_wrap=True)
    line.truncate(width, overflow="ellipsis")
    return line


def failure_kinds_lines(summary: dict, width: int, max_lines: int = 1) -> list[Text]:
    """`  failed: HTTP 500 ×5, timeout ×5`, the most frequent first, over at most `max_lines` lines; kinds that
    do not fit are left out whole and counted (`+2 kinds`), never cut. [] when nothing failed."""
    errors = summary.get("error_groups") or summary.get("errors") or {}
    if not errors or max_lines < 1:
        return []
    items = [fmt.errors_text({k: v}) for k, v in sorted(errors.items(), key=lambda kv: -kv[1])]
    lines: list[str] = []
    current = "  failed:"
    for i, item in enumerate(items):
        rest = len(items) - i - 1
        tail = f", +{rest} kind{'s' if rest > 1 else ''}" if rest and len(lines) == max_lines - 1 else ""
        piece = (" " if current.endswith(":") else ", ") + item
        if len(current + piece + tail) <= width:
            current += piece
            continue
        if len(lines) < max_lines - 1 and not current.endswith(":"):
            lines.append(current + ",")
            current = "   " + item
            continue
        left = len(items) - i
        current += f"{'' if current.endswith(':') else ','} +{left} kind{'s' if left > 1 else ''}"
        break
    lines.append(current)
    return [Text(line[:width], no_wrap=True) for line in lines]


class CostPanel(CellPanel):
    """$/M input and output by both methods (the current level, running), idle cost, API prices, blends; above
    them, a warning when the hourly price is not the user's."""

    COMPONENT_CLASSES = {"cost--warning", "cost--dim"}

    _shown: Summaries | None = None

    def __init__(self, pricing: PricingConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.pricing = pricing

    def on_resize(self) -> None:
        # The long or the short price note: which one fits is known once the panel is laid out.
        if self._shown is not None:
            self.show(self._shown)

    def show(self, s: Summaries) -> None:
        self._shown = s
        p = self.pricing
        lv = s.current
        occ = lv.get("occupancy", {})
        ratio = p.blend_input_per_output
        pin, pout = fmt.interval_pct(lv, "input"), fmt.interval_pct(lv, "output")
        failed, ok = lv.get("requests_failed", 0), lv.get("requests_ok", 0)
        all_failed = failed > 0 and ok == 0  # no figure can exist: say why rather than show dashes
        rows = [
            ["befori " + fmt.settled_mark(lv),
             "all failed" if all_failed else fmt.usd(lv.get("usd_per_million_input")),
             "—" if pin is None else f"{pin:.1f}%",
             f"{failed} of {failed}" if all_failed else fmt.usd(lv.get("usd_per_million_output")),
             "—" if pout is None else f"{pout:.1f}%",
             fmt.usd(lv.get("usd_per_million_blended"))],
        ]
        if "slo" in lv:  # the same bill over the tokens of the requests that met the latency targets
            rows.append(["SLO-met " + ("—" if lv.get("slo_met") is None else "✓" if lv["slo_met"] else "✗"),
                         fmt.usd(lv.get("usd_per_million_input_slo")), "",
                         fmt.usd(lv.get("usd_per_million_output_slo")), "", ""])
        rows += [
            ["occupancy", fmt.usd(occ.get("usd_per_million_input")), "", fmt.usd(occ.get("usd_per_million_output")), "",
             fmt.usd(occ.get("usd_per_million_blended"))],
        ]
        for api in p.compare:
            rows.append([f"API {api.name}", fmt.usd(api.usd_per_million_input), "", fmt.usd(api.usd_per_million_output),
                         "", fmt.usd(blended_usd_per_million(api.usd_per_million_input, api.usd_per_million_output,
                                                             ratio))])
        width = self.content_region.width or 80
        # Narrow: the blend goes first (the header shows it), then the ± columns; names are cut, figures never.
        t = fitted_table(["$/M tokens", "input", "±", "output", "±", f"blend {ratio:g}:1"], rows, width,
                         drop_order=[[5], [2, 4]])
        bill = occ.get("usd_bill")
        idle = occ.get("usd_idle")
        pieces = [(Text(f"${p.usd_per_hour:g}/h"), 0)]
        if bill is not None:
            pieces.append((Text(f"bill ${bill:.4f}"), 1))
        if idle is not None and bill:
            pieces.append((Text(f"idle ${idle:.4f} ({idle / bill * 100:.0f}%)"), 2))
        lines = [fit_pieces(pieces, width, sep=" · ")]
        settled = fmt.settled_mark(lv)
        hint = {"✓": "✓ settled: both $/M within ±3% — move on", "~": "~ settling: a $/M interval is wider than ±3%"}
        if settled in hint:
            lines.append(Text(hint[settled], "bold" if settled == "✓" else "", no_wrap=True, overflow="ellipsis"))
        if failed:
            lines.insert(1, failed_line(lv, occ, width))
        self.update(Group(*self._price_note(), t, *lines[:1], *self._slo_line(lv, width), *lines[1:]), layout=False)

    def _slo_line(self, lv: dict, width: int) -> list[Text]:
        if "slo" not in lv:
            return []
        share = lv.get("slo_share_met")
        pieces = [(Text(f"SLO {lv['slo']}: " + ("—" if share is None else f"{share * 100:.0f}% met")), 0)]
        if lv.get("goodput_requests_per_s") is not None:
            pieces.append((Text(f"goodput {fmt.rate(lv['goodput_requests_per_s'])} req/s,"
                                f" {fmt.rate(lv.get('goodput_output_tok_per_s'))} out tok/s"), 1))
        return [fit_pieces(pieces, width, sep=" · ")]

    def _price_note(self) -> list[Text]:
        """First, so that no number is read before it: every figure below rests on the hourly price."""
        note = fmt.price_note(self.pricing)
        if note is None:
            return []
        if len(note) + 2 > (self.content_region.width or 80):
            note = fmt.price_note(self.pricing, short=True)
        style = "cost--warning" if self.pricing.source == "default" else "cost--dim"
        return [Text(f"{'⚠ ' if style == 'cost--warning' else ''}{note}", self.get_component_rich_style(style),
                     no_wrap=True, overflow="ellipsis")]


def failed_line(lv: dict, occ: dict, width: int = 200) -> Text:
    """Failures are part of the cost: the share of the level's requests that failed, and what the server's time
    on them cost (the occupancy method's failed bucket) — time that bought no tokens. Pieces that do not fit
    are left out whole."""
    failed, ok = lv.get("requests_failed", 0), lv.get("requests_ok", 0)
    pieces = [(Text(f"failed {failed} of {failed + ok} ({failed / max(1, failed + ok) * 100:.0f}%)", "bold"), 0)]
    usd_failed, bill = occ.get("usd_failed"), occ.get("usd_bill")
    if usd_failed is not None:
        pieces.append((Text(f"cost ${usd_failed:.4f}"), 1))
        if bill:
            pieces.append((Text(f"{usd_failed / bill * 100:.0f}% of the bill"), 3))
    if lv.get("error_groups"):
        pieces.append((Text(fmt.errors_text(lv["error_groups"])), 2))
    return fit_pieces(pieces, width, sep=" · ")


class GpuPanel(CellPanel):
    """Totals, then one line per GPU under column headings (name, utilisation bar, memory bar, power/limit,
    temperature, SM clock). When the panel is shorter than that, the busiest and the idlest GPU and a count
    of the others."""

    COMPONENT_CLASSES = {"gpu--util", "gpu--mem", "gpu--empty", "gpu--dim"}

    _shown: tuple[LiveModel, Summaries | None] | None = None
    page = 0  # 0: the busiest and the idlest; k ≥ 1: the k-th page of GPUs in index order (g pages)
    pages = 0  # pages of GPUs, when they do not all fit (0: they do)

    def on_resize(self) -> None:
        # Which lines fit depends on the panel's height, known only once laid out (and changed by a resize).
        if self._shown is not None:
            self.show(*self._shown)

    def next_page(self) -> None:
        self.page = (self.page + 1) % (self.pages + 1) if self.pages else 0
        if self._shown is not None:
            self.show(*self._shown)

    def show(self, model: LiveModel, summaries: Summaries | None) -> None:
        self._shown = (model, summaries)
        sample = model.samples[-1] if model.samples else None
        dim = self.get_component_rich_style("gpu--dim")
        if sample is None:
            self.update(Text("waiting for telemetry…", dim), layout=False)
            return
        title = "GPUs · simulated (befori-tui sim)" if sample.simulated else f"GPUs · {sample.gpu_source}"
        if title != self.border_title:  # setting it, even to the same text, repaints the whole panel
            self.border_title = title
        server = _server_line(sample, dim)
        if not sample.gpus:
            self.update(Group(Text(sample.gpu_error or "no GPU telemetry", dim), *([server] if server else [])),
                        layout=False)
            return
        width = max(50, self.content_region.width or 64)
        name_w = 9 if width < 90 else 16
        # index+name, util bar + "100%", mem bar + "80/80G", power, temperature, clock
        fixed = 3 + name_w + 1 + 5 + 1 + 7 + 9 + 5 + 8
        bar_w = max(3, min(24, (width - fixed) // 2))
        styles = (self.get_component_rich_style("gpu--util"), self.get_component_rich_style("gpu--mem"),
                  self.get_component_rich_style("gpu--empty"), dim)
        tot_power = tot_limit = tot_used = tot_total = 0.0
        utils = []
        for g in sample.gpus:
            if g.error:
                continue
            tot_power += g.power_w or 0
            tot_limit += g.power_limit_w or 0
            tot_used += g.mem_used_mib or 0
            tot_total += g.mem_total_mib or 0
            if g.util_pct is not None:
                utils.append(g.util_pct)
        total = Text(no_wrap=True, overflow="ellipsis")
        total.append(f" Σ {len(sample.gpus)} GPUs", "bold")
        if utils:
            total.append(f" · util {sum(utils) / len(utils):.0f}% mean")
        if tot_total:
            total.append(f" · mem {tot_used / 1024:.0f}/{tot_total / 1024:.0f} GiB")
        if tot_power:
            limit = f"{tot_limit:,.0f}" if tot_limit else fmt.DASH  # DCGM's default series carry no limit
            total.append(f" · {tot_power:,.0f}/{limit} W")
        extra = Text(no_wrap=True, overflow="ellipsis")
        gpu = summaries.gpu if summaries else None
        if gpu and gpu.get("joules_per_output_token") is not None:
            extra.append(f"   {gpu['joules_per_output_token']:.2f} J per output token", "bold")
            if gpu.get("usd_energy_per_million_output") is not None:
                extra.append(f" (energy ${gpu['usd_energy_per_million_output']:.3f}/M)")
        headings = Text(f"{'#':>2} {'name':<{name_w}} {'util':<{bar_w + 6}}{'mem':<{bar_w + 7}}"
                        f"{'power':>9}{'temp':>5}{'clock':>8}", "bold", no_wrap=True, overflow="ellipsis")
        # Totals, energy and the server's queue first, so that they are never what a short panel loses.
        head = [total] + ([extra] if extra.plain else []) + ([server] if server else []) + [headings]
        gpus, more = sample.gpus, None
        rows = self.content_region.height  # 0 before the first layout: everything, redrawn on the resize
        paged_before, self.pages = self.pages > 0, 0
        if rows and len(head) + len(gpus) > rows and len(gpus) > 2:
            per_page = max(1, rows - len(head) - 1)
            self.pages = -(-len(gpus) // per_page)
            self.page = min(self.page, self.pages)
            if self.page == 0:
                ranked = sorted((g for g in gpus if g.util_pct is not None), key=lambda g: g.util_pct)
                gpus = [ranked[-1], ranked[0]] if len(ranked) >= 2 else gpus[:2]
                note = f"   +{len(sample.gpus) - 2} more (shown: the busiest and the idlest) · g: all, a page at a time"
            else:
                first = (self.page - 1) * per_page
                gpus = sample.gpus[first:first + per_page]
                note = (f"   GPUs {first}–{first + len(gpus) - 1} of {len(sample.gpus)} · page {self.page} of "
                        f"{self.pages} · g: next")
            more = Text(note, dim, no_wrap=True, overflow="ellipsis")
        if paged_before != (self.pages > 0):
            self.app.refresh_bindings()  # g is offered only while there are pages
        lines = [_gpu_line(g, name_w, bar_w, styles) for g in gpus]
        self.update(Group(*head, *lines, *([more] if more else [])), layout=False)


def _gpu_line(g, name_w: int, bar_w: int, styles: tuple[Style, Style, Style, Style]) -> Text:
    """One GPU's line, in the columns of GpuPanel's headings."""
    util_st, mem_st, empty_st, dim = styles
    line = Text(no_wrap=True, overflow="ellipsis")
    name = (g.name or "?").replace("NVIDIA ", "").replace("(simulated)", "").strip()
    line.append(f"{g.index:>2} {name[:name_w]:<{name_w}} ")
    if g.error:
        line.append(g.error, dim)
        return line
    util = None if g.util_pct is None else g.util_pct / 100
    filled, empty = fmt.bar(util, bar_w)
    line.append(filled, util_st + Style(bgcolor=empty_st.bgcolor))
    line.append(empty, empty_st)
    line.append(f"{fmt.DASH if g.util_pct is None else f'{g.util_pct:.0f}%':>5} ")
    mem = (g.mem_used_mib / g.mem_total_mib) if g.mem_used_mib is not None and g.mem_total_mib else None
    filled, empty = fmt.bar(mem, bar_w)
    line.append(filled, mem_st + Style(bgcolor=empty_st.bgcolor))
    line.append(empty, empty_st)
    used = fmt.DASH if g.mem_used_mib is None else f"{g.mem_used_mib / 1024:.0f}"
    total = fmt.DASH if g.mem_total_mib is None else f"{g.mem_total_mib / 1024:.0f}G"
    line.append(f"{used:>3}/{total:<3}")
    power = fmt.DASH if g.power_w is None else f"{g.power_w:.0f}"
    limit = fmt.DASH if g.power_limit_w is None else f"{g.power_limit_w:.0f}W"
    line.append(f" {power:>3}/{limit:<4}")
    line.append(f"{fmt.DASH if g.temp_c is None else f'{g.temp_c:.0f}°C':>5}")
    line.append(f"{fmt.DASH if g.sm_clock_mhz is None else f'{g.sm_clock_mhz:.0f}MHz':>8}")
    return line


def _server_line(sample, dim) -> Text | None:
    """The inference server's own view (its /metrics), beside the GPUs; None when it has none."""
    srv = sample.server
    if srv is None or srv.engine == "unknown":
        return None
    line = Text(no_wrap=True, overflow="ellipsis")
    line.append(f"   {srv.engine}: {_n(srv.running)} running, {_n(srv.waiting)} waiting", dim)
    if srv.kv_cache_usage_frac is not None:
        line.append(f", KV cache {srv.kv_cache_usage_frac * 100:.0f}%", dim)
    return line


def _n(x: float | None) -> str:
    return fmt.DASH if x is None else f"{x:.0f}"
