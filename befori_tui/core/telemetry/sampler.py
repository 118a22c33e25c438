"""Samples GPU and server telemetry at about 1 Hz in a daemon thread, off the load loop."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable, Protocol

from befori_tui.core.telemetry.readings import GpuReading, GpuSource, ServerReading, TelemetrySample


class _ServerSource(Protocol):
    def read(self) -> ServerReading: ...
    def close(self) -> None: ...


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


class TelemetrySampler:
    """Holds the last `max_samples` samples (6 h at 1 Hz by default); `on_sample` is called from the sampler
    thread, so it must return quickly (e.g. put the sample on a queue)."""

    def __init__(
        self,
        gpu_source: GpuSource,
        server_source: _ServerSource | None = None,
        interval_s: float = 1.0,
        on_sample: Callable[[TelemetrySample], None] | None = None,
        max_samples: int = 21_600,
    ) -> None:
        self.gpu_source = gpu_source
        self.server_source = server_source
        self.interval_s = interval_s
        self.on_sample = on_sample
        self._samples: deque[TelemetrySample] = deque(maxlen=max_samples)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    def sample_once(self) -> TelemetrySample:
        """Take one sample now (the thread's body; also handy in tests)."""
        t_ns = time.perf_counter_ns()
        gpus: list[GpuReading] = []
        gpu_error: str | None = None
        try:
            gpus = self.gpu_source.read()
        except Exception as err:  # a source's failure is stored in the sample, never raised
            gpu_error = _one_line(err)
        if gpu_error is None and not gpus:
            gpu_error = getattr(self.gpu_source, "reason", None)
        server, server_error = None, None
        if self.server_source is not None:
            try:
                server = self.server_source.read()
                if server.engine == "unknown":
                    server_error = "no vLLM or llama.cpp series in the server's /metrics"
            except Exception as err:
                server_error = _one_line(err)
        sample = TelemetrySample(
            t_ns=t_ns,
            gpu_source=self.gpu_source.name,
            gpus=gpus,
            server=server,
            gpu_error=gpu_error,
            server_error=server_error,
            simulated=any("simulated" in (g.name or "").lower() for g in gpus),
        )
        with self._lock:
            self._samples.append(sample)
        if self.on_sample is not None:
            try:
                self.on_sample(sample)
            except Exception:  # a display bug must not stop sampling
                pass
        return sample

    def _run(self) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            self.sample_once()
            # Fixed cadence: a slow scrape shortens the wait instead of drifting; a very slow one skips ticks.
            next_t += self.interval_s
            now = time.monotonic()
            if next_t < now:
                next_t = now
            self._stop.wait(next_t - now)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="befori-telemetry", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the thread, then close the sources (NVML is shut down once). Safe to call twice."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self._closed:
            return
        self._closed = True
        for source in (self.gpu_source, self.server_source):
            if source is not None:
                try:
                    source.close()
                except Exception:
                    pass

    def latest(self) -> TelemetrySample | None:
        with self._lock:
            return self._samples[-1] if self._samples else None

    def samples_between(self, t0_ns: int, t1_ns: int) -> list[TelemetrySample]:
        """Samples with t0_ns <= t_ns <= t1_ns, oldest first."""
        with self._lock:
            return [s for s in self._samples if t0_ns <= s.t_ns <= t1_ns]

    def samples(self) -> list[TelemetrySample]:
        with self._lock:
            return list(self._samples)
