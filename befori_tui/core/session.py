"""A measuring session: everything one run needs, shared by the headless `bench` and the TUI.

Sets up the HTTP client, the model, the prompts, the raw-record writer and the load runner; turns the
runner's levels into the results dict (docs/results.md) and saves it atomically.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import befori_tui
from befori_tui.core.client import (
    ClientSetupError,
    Endpoint,
    StreamClient,
    check_model,
    discover_model,
    make_http_client,
    wire_facts,
)
from befori_tui.core.config import Config, redact_url
from befori_tui.core.ledger import settle_run
from befori_tui.core.loadgen import LoadRunner
from befori_tui.core.pool import auto_processes
from befori_tui.core.metrics import api_comparison, summarize_level, turn_stats
from befori_tui.core.optimum import optimum_for
from befori_tui.core.observer import FanOut, RunObserver
from befori_tui.core.prompts import PromptSource
from befori_tui.core.results import SCHEMA_VERSION, JsonlWriter, session_summary, write_toml_atomic


def default_out_path(now: datetime | None = None) -> Path:
    now = now or datetime.now()
    return Path("befori-results") / f"session-{now:%Y%m%d-%H%M%S}.toml"


def raw_path_for(out: Path) -> Path:
    return out.with_suffix(".jsonl")


class Session:
    def __init__(self, cfg: Config, out_path: Path, raw_path: Path | None = None, max_slots: int | None = None):
        self.cfg = cfg
        self.out_path = Path(out_path)
        self.raw_path = Path(raw_path) if raw_path else raw_path_for(self.out_path)
        self.max_slots = max_slots or max(cfg.load.concurrency)
        self.started_at = datetime.now(timezone.utc)
        self.endpoint: Endpoint | None = None
        self.runner: LoadRunner | None = None
        self.writer = JsonlWriter(self.raw_path)
        self.extra: dict[str, Any] = {}  # e.g. telemetry summaries, filled in by whoever owns them
        self._http = None
        self.interrupted = False
        self.ended_by = ""  # completed | max_seconds | signal | quit, set by the front end when it stops
        self.sampler = None  # TelemetrySampler, when start_telemetry() was called
        self.telemetry_note: str | None = None
        self.load_processes = 1
        self.search_info: dict[str, Any] = {}  # the optimum search's progress, when one runs (controller)

    async def open(self, observer: RunObserver | None = None, on_phase=None, on_note=None,
                   on_empty=None) -> LoadRunner:
        """Connect, find the model, size prompts; raises ClientSetupError with a one-line reason.

        Each setup call is bounded by `load.setup_timeout_s`, apart from the per-request timeout: a server that
        accepts connections and never answers is named within seconds, not after ten minutes. `on_phase(what)`
        hears what is being waited for."""
        e, ld = self.cfg.endpoint, self.cfg.load
        # Credentials in the URL are dropped (Endpoint.from_config): httpx would send them as Basic auth, and the
        # URL is shown.
        self.endpoint = Endpoint.from_config(self.cfg, e.model)
        self._http = make_http_client(self.endpoint, self.max_slots, ld.timeout_s, ld.connect_timeout_s)

        async def phase(what: str, url: str, call):
            if on_phase is not None:
                on_phase(what)
            try:
                async with asyncio.timeout(ld.setup_timeout_s):
                    return await call
            except TimeoutError:
                raise ClientSetupError(f"{redact_url(url)}: no answer within {ld.setup_timeout_s:g} s "
                                       f"(load.setup_timeout_s) while waiting for {what}") from None

        models_url = self.endpoint.base_url + "/models"
        if not self.endpoint.model:
            self.endpoint.model = await phase("the server's model list", models_url,
                                              discover_model(self._http, self.endpoint.base_url))
        else:
            await phase("the server's model list", models_url,
                        check_model(self._http, self.endpoint.base_url, self.endpoint.model))
        prompts = PromptSource(self.cfg.workload)
        await phase("prompt sizes from /tokenize", self.endpoint.root_url + "/tokenize",
                    prompts.calibrate(self._http, self.endpoint.root_url, self.endpoint.model))
        prompts.attach(self._http, self.endpoint.root_url, self.endpoint.model)  # long prompts, counted exactly
        self.prompt_count_source = prompts.count_source
        await self.writer.open()
        # The open loop runs in this process (config refuses load.rate with several load processes).
        self.load_processes = 1 if ld.rate or self.cfg.workload.trace.path else \
            ld.workers or auto_processes(max(ld.concurrency))

        def specs_for(n: int) -> list:
            from befori_tui.core.worker import WorkerSpec

            return [WorkerSpec(self.cfg, self.endpoint.model, i, n, self.max_slots,
                               prompts.line_tokens if prompts.lines_counted else None,
                               prompts.count_source, prompts.run_tag, prompts.head_tokens) for i in range(n)]

        if self.cfg.cluster.ray:  # load processes as Ray actors on the cluster's nodes (core/raypool.py)
            from befori_tui.core.raypool import RayCluster, RayLoadPool

            if on_phase is not None:
                on_phase(f"the Ray cluster ({self.cfg.cluster.ray})")
            cluster = await asyncio.to_thread(RayCluster.connect, self.cfg.cluster)
            self.load_processes = ld.workers or len(cluster.nodes)
            pool = RayLoadPool(cluster, specs_for(self.load_processes), FanOut(self.writer, observer),
                               ld.warmup_requests, one_per_node=not ld.workers, on_note=on_note, on_empty=on_empty,
                               on_decrease=ld.on_decrease)
            if on_phase is not None:
                on_phase(f"{self.load_processes} Ray load actor{'s' if self.load_processes != 1 else ''}")
            await pool.open()
            self.runner = pool
            return pool
        if self.load_processes > 1:
            from befori_tui.core.pool import LoadPool
            from befori_tui.core.runserver import runtime_dir

            pool = LoadPool(specs_for(self.load_processes), FanOut(self.writer, observer), ld.warmup_requests,
                            on_note=on_note, log_dir=runtime_dir(), on_empty=on_empty, on_decrease=ld.on_decrease)
            if on_phase is not None:
                on_phase(f"{self.load_processes} load processes")
            await pool.open()
            self.runner = pool
            return pool
        client = StreamClient(self._http, self.endpoint, self.cfg.workload.ignore_eos, ld.timeout_s)
        self.runner = LoadRunner(client, prompts, FanOut(self.writer, observer), ld.warmup_requests,
                                 honor_retry_after=ld.retry_after, on_decrease=ld.on_decrease)
        self.runner.burstiness, self.runner.max_in_flight = ld.burstiness, ld.max_in_flight
        self.runner.arrival_seed = self.cfg.workload.seed
        if self.cfg.workload.trace.path:  # read (and checked) again here: the controller starts its replay
            from befori_tui.core.trace import load_trace

            self.runner.trace = load_trace(self.cfg.workload.trace.path)
            self.runner.trace_speed = self.cfg.workload.trace.speed
        return self.runner

    def start_telemetry(self, on_sample=None, interval_s: float = 1.0) -> str | None:
        """GPU and server telemetry in its own thread (never on the load loop). Returns a one-line note when
        there is no GPU telemetry, saying why. Call after open()."""
        from befori_tui.core.telemetry import TelemetrySampler, open_gpu_source, open_server_source

        gpu, note = open_gpu_source(self.cfg.telemetry or None)
        server = open_server_source(self.cfg.endpoint.server_metrics or None, self.endpoint.base_url)
        self.sampler = TelemetrySampler(gpu, server, interval_s, on_sample)
        self.sampler.start()
        self.telemetry_note = note
        return note

    def telemetry_summaries(self, level, t_end_ns: int) -> dict[str, Any]:
        """Per-level GPU and server summaries; energy per output token uses the level's finished requests."""
        if self.sampler is None:
            return {}
        from befori_tui.core.telemetry import summarize_gpus, summarize_server

        pad_ns = 2 * 10**9  # samples just outside the level let the counters be read at its edges
        around = self.sampler.samples_between(level.t_start_ns - pad_ns, t_end_ns + pad_ns)
        output_tokens = level.records.ok_output_tokens()
        kwh = self.cfg.pricing.usd_per_kwh or None
        out = {}
        gpu = summarize_gpus(around, level.t_start_ns, t_end_ns, output_tokens=output_tokens, usd_per_kwh=kwh)
        if gpu:
            out["gpu"] = gpu
        server = summarize_server(around, level.t_start_ns, t_end_ns)
        if server:
            out["server"] = server
        return out

    def finished_count(self) -> int:
        """Requests finished so far, every level."""
        return sum(len(lv.records) for lv in list(self.runner.levels)) if self.runner else 0

    def raw_records(self) -> list:
        """Every request of the run as a record, read back from the raw JSONL (the run keeps figures, not
        records: docs/results.md, "Bounded memory"). Complete once the session is closed."""
        from befori_tui.core.results import read_records

        return read_records(self.raw_path) if self.raw_path.exists() else []

    def settle_records(self, now_ns: int | None = None) -> None:
        """Turn the records handed over by the load loop into figures and let go of what is no longer needed
        (core/levelstats.py, core/ledger.py): off the load loop, every second or so, and before a summary."""
        runner = self.runner
        if runner is None:
            return
        sends = [r.t_send_ns for r in list(runner.in_flight.values())]
        settle_run(list(runner.levels), runner.occupancy, sends, now_ns or time.perf_counter_ns(), self.cfg.slo)

    def level_summaries(self, now_ns: int | None = None) -> list[dict]:
        if self.runner is None:
            return []
        now_ns = now_ns or time.perf_counter_ns()
        self.settle_records(now_ns)
        out = []
        for lv in list(self.runner.levels):
            summary = summarize_level(lv, self.cfg.pricing, self.runner.occupancy, now_ns, slo=self.cfg.slo)
            summary.update(self.telemetry_summaries(lv, lv.t_end_ns or now_ns))
            if not summary.get("gpu", {}).get("samples"):
                summary["gpu_missing"] = self.telemetry_note or (
                    "no GPU telemetry was read (see [telemetry])" if self.sampler is None
                    else "no GPU sample fell within the level")
            summary.update(self.runner.health.summary(lv.t_start_ns, lv.t_end_ns))
            turns = turn_stats(lv.records)
            if turns:
                summary["turns"] = turns
            if hasattr(self.runner, "worker_summary"):  # several load processes: each one's lag and CPU
                workers = self.runner.worker_summary(lv.t_start_ns, lv.t_end_ns)
                if workers:
                    summary["workers"] = workers
            out.append(summary)
        return out

    def results(self) -> dict:
        cfg = self.cfg
        workload = dataclasses.asdict(cfg.workload)
        workload["input_tokens_counted_by"] = getattr(self, "prompt_count_source", "estimate")
        data = {
            "schema_version": SCHEMA_VERSION,
            "tool": "befori-tui",
            "version": befori_tui.__version__,
            "started_at": self.started_at.isoformat(timespec="seconds"),
            "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "interrupted": self.interrupted,
            "ended_by": self.ended_by or ("signal" if self.interrupted else "running"),
            "raw_records": self.raw_path.name if self.raw_path.parent == self.out_path.parent else str(self.raw_path),
            "endpoint": {
                "url": redact_url(cfg.endpoint.url),
                "api": cfg.endpoint.api,
                "model": self.endpoint.model if self.endpoint else cfg.endpoint.model,
                # What carried the load: the proxy (no credentials), TLS options, header names (never values).
                **wire_facts(self.endpoint or Endpoint.from_config(cfg, cfg.endpoint.model)),
            },
            "workload": workload,
            "load": {**dataclasses.asdict(cfg.load), "load_processes": self.load_processes,
                     "load_processes_lost": getattr(self.runner, "processes_lost", 0),
                     # `concurrency` is the plan; these are the levels that ran (a user or a sweep may differ).
                     "levels_run": [lv.concurrency for lv in self.runner.levels] if self.runner else []},
            "pricing": {
                "usd_per_hour": cfg.pricing.usd_per_hour,
                "source": cfg.pricing.source,
                "gpu_count": cfg.pricing.gpu_count,
                "usd_per_gpu_hour": cfg.pricing.usd_per_hour / cfg.pricing.gpu_count,
                "usd_per_kwh": cfg.pricing.usd_per_kwh,
                "blend_input_per_output": cfg.pricing.blend_input_per_output,
            },
            "api_compare": api_comparison(cfg.pricing),
            "telemetry": {"gpu_source": self.cfg.telemetry or "auto", "note": self.telemetry_note or ""},
            "levels": self.level_summaries(),
        }
        if cfg.slo:
            data["slo"] = {t.key: t.limit_s for t in cfg.slo}  # seconds
        data["search"] = {**dataclasses.asdict(cfg.search), **self.search_info}
        data["optimum"] = optimum_for(data, cfg.slo, cfg.search)
        trace = getattr(self.runner, "trace", None)
        if trace is not None:
            from befori_tui.core.trace import BLOCK_TOKENS, LATE_MS

            data["trace"] = {"path": trace.path, "speed": self.runner.trace_speed, "lines": len(trace.entries),
                             "span_s": trace.span_s, "sent": self.runner.trace_sent, "late": self.runner.trace_late,
                             "late_after_ms": LATE_MS, "block_tokens": BLOCK_TOKENS,
                             "completed": self.runner.trace_done.is_set()}
        if hasattr(self.runner, "cluster_summary"):  # several load processes: how many ran where
            data["cluster"] = self.runner.cluster_summary()
        data.update(self.extra)
        return data

    def file_form(self, results: dict) -> dict:
        """What the session file holds: a [summary] first, and per-GPU tables only when asked (gpu_detail)."""
        levels = results["levels"]
        if not self.cfg.gpu_detail:
            levels = [{**lv, "gpu": {k: v for k, v in lv["gpu"].items() if k != "gpus"}} if "gpu" in lv else lv
                      for lv in levels]
        head = {k: v for k, v in results.items() if not isinstance(v, (dict, list))}
        return {**head, "summary": session_summary(levels), **results, "levels": levels}

    def save(self, results: dict | None = None) -> Path:
        """Write the session TOML; pass `results()` when you already have it, to summarise only once."""
        return write_toml_atomic(self.out_path, self.file_form(results if results is not None else self.results()))

    async def stop(self, drain_s: float = 0.0) -> None:
        if self.runner is not None:
            await self.runner.stop(drain_s)

    async def close(self) -> None:
        """Stop the load, flush raw records, close the client. Safe to call twice."""
        await self.stop()
        if hasattr(self.runner, "close"):  # load processes: wait for them to exit
            await self.runner.close()
        if self.sampler is not None:
            await asyncio.to_thread(self.sampler.stop)
        await self.writer.close()
        if self._http is not None:
            await self._http.aclose()
            self._http = None
