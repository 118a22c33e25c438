"""Local GPUs through NVML (`nvidia-ml-py`, imported as `pynvml`).

Every call is wrapped the way nvitop does it: a field that fails becomes None and the rest go on; a lost GPU
gets all its fields None (and is not asked again); init once, shutdown once at close or at exit.
"""

from __future__ import annotations

import atexit
import threading
from typing import Any, Callable

from befori_tui.core.telemetry.readings import GpuReading

_MIB = 1024 * 1024


class _GpuLost(Exception):
    pass


class NvmlSource:
    name = "nvml"

    def __init__(self) -> None:
        import pynvml  # ImportError (nvidia-ml-py missing) is the caller's "why"

        self._nv: Any = pynvml
        self._lock = threading.Lock()
        self._closed = False
        pynvml.nvmlInit()  # raises NVMLError (library not found, driver not loaded, ...)
        try:
            count = pynvml.nvmlDeviceGetCount()
            if count == 0:
                raise RuntimeError("NVML found no GPUs")
        except BaseException:
            pynvml.nvmlShutdown()
            raise
        e = pynvml
        # Errors that will not go away: stop asking for that field on that GPU.
        self._permanent = {e.NVML_ERROR_NOT_SUPPORTED, e.NVML_ERROR_FUNCTION_NOT_FOUND, e.NVML_ERROR_NO_PERMISSION}
        self._lost_codes = {e.NVML_ERROR_GPU_IS_LOST, e.NVML_ERROR_RESET_REQUIRED}
        self._skip: set[tuple[int, str]] = set()
        self._lost: set[int] = set()
        self._handles: list[Any] = []
        self._names: list[str | None] = []
        for i in range(count):
            try:
                handle = self._call(i, "handle", pynvml.nvmlDeviceGetHandleByIndex, i)
            except _GpuLost:
                handle = None
                self._lost.add(i)
            self._handles.append(handle)
            name = None
            if handle is not None:
                try:
                    name = self._call(i, "name", pynvml.nvmlDeviceGetName, handle)
                except _GpuLost:
                    self._lost.add(i)
            self._names.append(name if isinstance(name, str) or name is None else str(name))
        atexit.register(self.close)

    def _call(self, i: int, key: str, fn: Callable[..., Any], *args: Any) -> Any:
        if (i, key) in self._skip:
            return None
        try:
            return fn(*args)
        except self._nv.NVMLError as err:
            if err.value in self._lost_codes:
                raise _GpuLost(str(err)) from None
            if err.value in self._permanent:
                self._skip.add((i, key))
            return None

    def _read_one(self, i: int, h: Any) -> GpuReading:
        nv = self._nv
        r = GpuReading(index=i, name=self._names[i])
        util = self._call(i, "util", nv.nvmlDeviceGetUtilizationRates, h)
        if util is not None:
            r.util_pct, r.mem_util_pct = float(util.gpu), float(util.memory)
        mem = self._call(i, "mem", nv.nvmlDeviceGetMemoryInfo, h)
        if mem is not None:
            r.mem_used_mib, r.mem_total_mib = mem.used / _MIB, mem.total / _MIB
        r.power_w = _scaled(self._call(i, "power", nv.nvmlDeviceGetPowerUsage, h), 1e-3)  # mW
        r.power_limit_w = _scaled(self._call(i, "limit", nv.nvmlDeviceGetEnforcedPowerLimit, h), 1e-3)  # mW
        r.temp_c = _scaled(self._call(i, "temp", nv.nvmlDeviceGetTemperature, h, nv.NVML_TEMPERATURE_GPU), 1.0)
        r.sm_clock_mhz = _scaled(self._call(i, "clock", nv.nvmlDeviceGetClockInfo, h, nv.NVML_CLOCK_SM), 1.0)
        r.energy_j = _scaled(self._call(i, "energy", nv.nvmlDeviceGetTotalEnergyConsumption, h), 1e-3)  # mJ
        return r

    def read(self) -> list[GpuReading]:
        out: list[GpuReading] = []
        with self._lock:
            for i, h in enumerate(self._handles):
                if self._closed:
                    out.append(GpuReading(index=i, name=self._names[i], error="NVML shut down"))
                elif h is None or i in self._lost:
                    why = "GPU is lost" if i in self._lost else "NVML gave no handle"
                    out.append(GpuReading(index=i, name=self._names[i], error=why))
                else:
                    try:
                        out.append(self._read_one(i, h))
                    except _GpuLost as err:
                        self._lost.add(i)
                        out.append(GpuReading(index=i, name=self._names[i], error=str(err) or "GPU is lost"))
        return out

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        atexit.unregister(self.close)
        try:
            self._nv.nvmlShutdown()
        except Exception:  # shutting down is best effort
            pass


def _scaled(value: Any, factor: float) -> float | None:
    return None if value is None else float(value) * factor
