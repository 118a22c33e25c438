"""Status line, metrics, cost and GPU panels: Statics redrawn from a Summaries at ~2 Hz (GPUs at 1 Hz)."""

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


def _table(*headers: str, justify_first: str = "left") -> Table:
    t = Table(box=None, padding=(0, 1), pad_edge=False, show_edge=False, expand=False, header_style="bold")
    for i, h in enumerate(headers):
        t.add_column(h, justify=justify_first if i == 0 else "right", no_wrap=True)
    return t


class StatusBar(Static):
    """Endpoint, model, api, running/paused, elapsed, concurrency, level."""

    COMPONENT_CLASSES = {"status--state", "status--simulated", "status--dim"}

    def __init__(self, model: LiveModel, **kwargs) -> None:
        super().__init__(**kwargs)
        self.model = model
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
        text = Text.assemble(
            (f" {'❚❚' if paused else '●'} {state} ", state_style),
            " ", (fmt.clock(m.elapsed_s()), "bold"),
            "  c=", (f"{m.concurrency}", "bold"),
            "  level ", (f"{lv.index}" if lv else "—", "bold"), (f" ({lv.reason})" if lv else "", dim),
            no_wrap=True, overflow="ellipsis",  # a long line is cut, never pushed onto the endpoint line
        )
        if simulated:
            text.append("  ")
            text.append(" SIMULATED ", self.get_component_rich_style("status--simulated"))
        if m.sweep_text:
            text.append(f"  {m.sweep_text}", dim)
        if m.connecting and not m.levels and not m.finished:
            waited_s = (time.perf_counter_ns() - m.connecting_since_ns) / 1e9
            text.append(f"  waiting for {m.connecting} · {waited_s:.0f} s", dim)
        lag_ms = m.loop_lag_ms_p99
        narrow = self.size.width < 120
        if lag_ms is not None and lag_ms > CLIENT_BOUND_LAG_MS:
            note = "client-bound" if narrow else CLIENT_BOUND_NOTE
            text.append(f"  ⚠ {note} (loop lag p99 {lag_ms:.0f} ms)", state_style)
        where = Text(no_wrap=True, overflow="ellipsis")
        where.append(" " if narrow else "   ")
        where.append(info.get("url", "—"))
        where.append(" · ", dim)
        where.append(str(info.get("model", "—")), "bold")
        where.append(" · ", dim)
        where.append(str(info.get("api", "—")))
        if info.get("wire"):  # through a proxy, TLS not verified, gateway headers: the user must see it
            where.append(" · ", dim)
            where.append(str(info["wire"]), state_style if "NOT verified" in info["wire"] else dim)
        # Narrow: two lines, each cut at the edge. Wide: one line. Unchanged: not drawn again (every frame
        # calls this; what is sent to the terminal is what crosses a slow SSH link).
        key = (text.plain, where.plain, narrow, self.size, self.app.theme)
        if key == self._shown:
            return
        relayout = self._shown is None or self._shown[2] != narrow  # one line or two: the height changes
        self._shown = key
        self.update(Group(text, where) if narrow else Text.assemble(text, where, no_wrap=True, overflow="ellipsis"),
                    layout=relayout)


class MetricsPanel(Static):
    """TTFT, ITL, TPOT, E2E p50/p90/p99, tokens/s, requests/s and errors: last window and level total."""

    def show(self, s: Summaries) -> None:
        w, lv = s.window, s.current
        t = _table("", "", f"last {s.window_s:g} s", "", "", f"level {lv.get('level', '—')}", "")
        t.add_row("", *[Text(p, "bold") for p in ("p50", "p90", "p99") * 2])
        for key, name in (("ttft_s", "TTFT"), ("itl_s", "ITL"), ("tpot_s", "TPOT"), ("e2e_s", "E2E")):
            t.add_row(name, *[fmt.dur(w.get(f"{key}_p{p}")) for p in (50, 90, 99)],
                      *[fmt.dur(lv.get(f"{key}_p{p}")) for p in (50, 90, 99)])
        t.add_row("tok/s", f"in {fmt.rate(w.get('input_tok_per_s_total'))}",
                  f"out {fmt.rate(w.get('output_tok_per_s_total'))}", "",
                  f"in {fmt.rate(lv.get('input_tok_per_s_total'))}", f"out {fmt.rate(lv.get('output_tok_per_s_total'))}", "")
        t.add_row("req/s", fmt.rate(w.get("requests_per_s")), "", "", fmt.rate(lv.get("requests_per_s")), "", "")
        errors = Text(no_wrap=True, overflow="ellipsis")
        errors.append(f"level {lv.get('requests_ok', 0)} ok, {lv.get('requests_failed', 0)} failed")
        if lv.get("errors"):
            errors.append(f" ({fmt.errors_text(lv['errors'])})")
        errors.append(f" · last {s.window_s:g} s: {fmt.errors_text(w.get('errors', {}))}")
        self.update(Group(t, errors), layout=False)  # a fixed grid cell: no layout pass, no full repaint


class CostPanel(Static):
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
        t = _table("$ per M tokens", "input", "±", "output", "±", f"blend {ratio:g}:1")
        pin, pout = fmt.interval_pct(lv, "input"), fmt.interval_pct(lv, "output")
        t.add_row(
            "befori " + fmt.settled_mark(lv),
            fmt.usd(lv.get("usd_per_million_input")), "—" if pin is None else f"{pin:.1f}%",
            fmt.usd(lv.get("usd_per_million_output")), "—" if pout is None else f"{pout:.1f}%",
            fmt.usd(lv.get("usd_per_million_blended")),
        )
        t.add_row("occupancy", fmt.usd(occ.get("usd_per_million_input")), "",
                  fmt.usd(occ.get("usd_per_million_output")), "", fmt.usd(occ.get("usd_per_million_blended")))
        for api in p.compare:
            t.add_row(f"API {api.name}", fmt.usd(api.usd_per_million_input), "", fmt.usd(api.usd_per_million_output),
                      "", fmt.usd(blended_usd_per_million(api.usd_per_million_input, api.usd_per_million_output, ratio)))
        bill = occ.get("usd_bill")
        idle = occ.get("usd_idle")
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append(f"${p.usd_per_hour:g}/h · level bill ${bill:.4f}" if bill is not None else f"${p.usd_per_hour:g}/h")
        if idle is not None and bill:
            line.append(f" · idle ${idle:.4f} ({idle / bill * 100:.0f}%)")
        settled = fmt.settled_mark(lv)
        hint = {"✓": " · settled ±3%: move on", "…": " · settling (±3%)"}.get(settled, "")
        line.append(hint, "bold" if settled == "✓" else "")
        self.update(Group(*self._price_note(), t, line), layout=False)

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


class GpuPanel(Static):
    """Totals, then one line per GPU under column headings (name, utilisation bar, memory bar, power/limit,
    temperature, SM clock). When the panel is shorter than that, the busiest and the idlest GPU and a count
    of the others."""

    COMPONENT_CLASSES = {"gpu--util", "gpu--mem", "gpu--empty", "gpu--dim"}

    _shown: tuple[LiveModel, Summaries | None] | None = None

    def on_resize(self) -> None:
        # Which lines fit depends on the panel's height, known only once laid out (and changed by a resize).
        if self._shown is not None:
            self.show(*self._shown)

    def show(self, model: LiveModel, summaries: Summaries | None) -> None:
        self._shown = (model, summaries)
        sample = model.samples[-1] if model.samples else None
        dim = self.get_component_rich_style("gpu--dim")
        if sample is None:
            self.update(Text("waiting for telemetry…", dim), layout=False)
            return
        self.border_title = "GPUs · simulated (befori-tui sim)" if sample.simulated else f"GPUs · {sample.gpu_source}"
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
        if rows and len(head) + len(gpus) > rows and len(gpus) > 2:
            ranked = sorted((g for g in gpus if g.util_pct is not None), key=lambda g: g.util_pct)
            gpus = [ranked[-1], ranked[0]] if len(ranked) >= 2 else gpus[:2]
            more = Text(f"   +{len(sample.gpus) - 2} more (shown: the busiest and the idlest)", dim, no_wrap=True,
                        overflow="ellipsis")
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
