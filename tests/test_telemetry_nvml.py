"""NVML source against a fake libnvidia-ml: pynvml's real Python wrappers run, only the C library is fake.

pynvml resolves every C function with getattr(pynvml.nvmlLib, name) (cached in _nvmlGetFunctionPointer_cache),
so the fake is an object whose attributes are "C functions" taking the same ctypes arguments and returning
NVML return codes.
"""

from __future__ import annotations

import ctypes
import sys
from collections import Counter

import pynvml
import pytest

from befori_tui.core.telemetry import NoGpuSource, TelemetrySampler, open_gpu_source, summarize_gpus
from befori_tui.core.telemetry.nvml import NvmlSource

H100 = b"NVIDIA H100 80GB HBM3"
H100_TOTAL_B = 85_520_809_984  # 81559 MiB, what NVML reports for an H100 SXM 80GB
GIB = 1 << 30
_HANDLE_BASE = 0x1000


class FakeNvmlLib:
    """Eight H100s. `no_power`: GPUs answering NOT_SUPPORTED to power readings; `lost`: GPUs answering
    GPU_IS_LOST to everything; `no_energy`: GPUs without an energy counter."""

    def __init__(self, count: int = 8) -> None:
        self.count = count
        self.calls: Counter[tuple[str, int]] = Counter()
        self.init_rc = pynvml.NVML_SUCCESS
        self.no_power: set[int] = set()
        self.no_energy: set[int] = set()
        self.lost: set[int] = set()
        self.energy_mj = [1_000_000_000 * (i + 1) for i in range(count)]

    # library
    def nvmlInitWithFlags(self, flags: int) -> int:
        self.calls["init", -1] += 1
        return self.init_rc

    def nvmlShutdown(self) -> int:
        self.calls["shutdown", -1] += 1
        return pynvml.NVML_SUCCESS

    def nvmlDeviceGetCount_v2(self, ref) -> int:
        ref._obj.value = self.count
        return pynvml.NVML_SUCCESS

    def nvmlDeviceGetHandleByIndex_v2(self, c_index, ref) -> int:
        # write a recognisable address into the c_nvmlDevice_t pointer pynvml passed by reference
        ctypes.c_void_p.from_address(ctypes.addressof(ref._obj)).value = _HANDLE_BASE + c_index.value
        return pynvml.NVML_SUCCESS

    # per device
    def _dev(self, fn: str, handle) -> int | None:
        i = ctypes.cast(handle, ctypes.c_void_p).value - _HANDLE_BASE
        self.calls[fn, i] += 1
        return None if i in self.lost else i

    def nvmlDeviceGetName(self, handle, buf, size) -> int:
        if self._dev("name", handle) is None:
            return pynvml.NVML_ERROR_GPU_IS_LOST
        buf.value = H100
        return pynvml.NVML_SUCCESS

    def nvmlDeviceGetUtilizationRates(self, handle, ref) -> int:
        i = self._dev("util", handle)
        if i is None:
            return pynvml.NVML_ERROR_GPU_IS_LOST
        ref._obj.gpu, ref._obj.memory = 50 + i, 20 + i
        return pynvml.NVML_SUCCESS

    def nvmlDeviceGetMemoryInfo(self, handle, ref) -> int:
        i = self._dev("mem", handle)
        if i is None:
            return pynvml.NVML_ERROR_GPU_IS_LOST
        used = (10 + i) * GIB
        ref._obj.total, ref._obj.used, ref._obj.free = H100_TOTAL_B, used, H100_TOTAL_B - used
        return pynvml.NVML_SUCCESS

    def nvmlDeviceGetPowerUsage(self, handle, ref) -> int:
        i = self._dev("power", handle)
        if i is None:
            return pynvml.NVML_ERROR_GPU_IS_LOST
        if i in self.no_power:
            return pynvml.NVML_ERROR_NOT_SUPPORTED
        ref._obj.value = 400_000 + 1_000 * i  # mW
        return pynvml.NVML_SUCCESS

    def nvmlDeviceGetEnforcedPowerLimit(self, handle, ref) -> int:
        if self._dev("limit", handle) is None:
            return pynvml.NVML_ERROR_GPU_IS_LOST
        ref._obj.value = 700_000  # mW
        return pynvml.NVML_SUCCESS

    def nvmlDeviceGetTemperature(self, handle, sensor, ref) -> int:
        i = self._dev("temp", handle)
        if i is None:
            return pynvml.NVML_ERROR_GPU_IS_LOST
        ref._obj.value = 40 + i if sensor.value == pynvml.NVML_TEMPERATURE_GPU else 999
        return pynvml.NVML_SUCCESS

    def nvmlDeviceGetClockInfo(self, handle, clock_type, ref) -> int:
        if self._dev("clock", handle) is None:
            return pynvml.NVML_ERROR_GPU_IS_LOST
        ref._obj.value = 1980 if clock_type.value == pynvml.NVML_CLOCK_SM else 1
        return pynvml.NVML_SUCCESS

    def nvmlDeviceGetTotalEnergyConsumption(self, handle, ref) -> int:
        i = self._dev("energy", handle)
        if i is None:
            return pynvml.NVML_ERROR_GPU_IS_LOST
        if i in self.no_energy:
            return pynvml.NVML_ERROR_NOT_SUPPORTED
        self.energy_mj[i] += 500_000  # each read: another 500 J
        ref._obj.value = self.energy_mj[i]
        return pynvml.NVML_SUCCESS


@pytest.fixture
def fake_nvml(monkeypatch: pytest.MonkeyPatch) -> FakeNvmlLib:
    fake = FakeNvmlLib()
    monkeypatch.setattr(pynvml, "nvmlLib", fake)
    monkeypatch.setattr(pynvml, "_nvmlGetFunctionPointer_cache", {})
    return fake


def test_reads_eight_h100s_through_real_pynvml_wrappers(fake_nvml: FakeNvmlLib) -> None:
    fake_nvml.no_power = {3}
    source, note = open_gpu_source("nvml")
    assert isinstance(source, NvmlSource) and note is None
    try:
        gpus = source.read()
        assert [g.index for g in gpus] == list(range(8))
        g0 = gpus[0]
        assert g0.name == H100.decode()
        assert (g0.util_pct, g0.mem_util_pct) == (50.0, 20.0)
        assert g0.mem_used_mib == 10 * 1024 and g0.mem_total_mib == 81559
        assert g0.power_w == pytest.approx(400.0) and g0.power_limit_w == pytest.approx(700.0)
        assert (g0.temp_c, g0.sm_clock_mhz) == (40.0, 1980.0)
        assert g0.energy_j == pytest.approx(1_000_500.0)  # mJ -> J
        assert gpus[7].power_w == pytest.approx(407.0) and gpus[7].temp_c == 47.0

        # GPU 3 refuses power: that field alone is n/a
        g3 = gpus[3]
        assert g3.power_w is None and g3.error is None
        assert g3.power_limit_w == pytest.approx(700.0) and g3.util_pct == 53.0 and g3.energy_j is not None
        source.read()
        assert fake_nvml.calls["power", 3] == 1  # NOT_SUPPORTED is remembered, not asked every second
    finally:
        source.close()
    assert fake_nvml.calls["init", -1] == 1


def test_gpu_lost_mid_run_goes_na_and_the_rest_go_on(fake_nvml: FakeNvmlLib) -> None:
    source = NvmlSource()
    before = source.read()
    assert before[5].power_w is not None
    fake_nvml.lost = {5}
    after = source.read()
    g5 = after[5]
    assert g5.error == "GPU is lost" and g5.name == H100.decode()
    for field in ("util_pct", "mem_util_pct", "mem_used_mib", "mem_total_mib", "power_w", "power_limit_w",
                  "temp_c", "sm_clock_mhz", "energy_j"):
        assert getattr(g5, field) is None, field
    assert all(g.power_w is not None and g.error is None for g in after if g.index != 5)
    asked = sum(n for (fn, i), n in fake_nvml.calls.items() if i == 5)
    source.read()
    assert sum(n for (fn, i), n in fake_nvml.calls.items() if i == 5) == asked  # a lost GPU is left alone
    source.close()
    source.close()
    assert fake_nvml.calls["shutdown", -1] == 1
    assert source.read()[0].error == "NVML shut down"


def test_sampler_summarizes_nvml_and_shuts_down_once(fake_nvml: FakeNvmlLib) -> None:
    fake_nvml.no_power = {3}
    fake_nvml.no_energy = {2}
    sampler = TelemetrySampler(NvmlSource(), None, interval_s=0.01)
    samples = [sampler.sample_once() for _ in range(4)]
    sampler.stop()
    sampler.stop()
    assert fake_nvml.calls["init", -1] == 1 and fake_nvml.calls["shutdown", -1] == 1
    assert all(s.gpu_source == "nvml" and s.gpu_error is None and not s.simulated for s in samples)

    summary = summarize_gpus(samples, samples[0].t_ns, samples[-1].t_ns, output_tokens=1000, usd_per_kwh=0.2)
    gpus = {g["index"]: g for g in summary["gpus"]}
    assert summary["source"] == "nvml" and summary["samples"] == 4 and len(gpus) == 8
    assert gpus[0]["energy_source"] == "counter" and gpus[0]["energy_j"] == pytest.approx(1500.0)  # 3 × 500 J
    assert gpus[3]["energy_source"] == "counter" and "power_w_mean" not in gpus[3]
    dt_s = (samples[-1].t_ns - samples[0].t_ns) / 1e9
    assert gpus[2]["energy_source"] == "power_integral" and gpus[2]["energy_j"] == pytest.approx(402.0 * dt_s)
    assert summary["energy_source"] == "mixed" and summary["energy_all_gpus"] is True
    total = 7 * 1500.0 + 402.0 * dt_s
    assert summary["energy_j_total"] == pytest.approx(total)
    assert summary["joules_per_output_token"] == pytest.approx(total / 1000)


def test_auto_without_nvml_library_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_library(*args, **kwargs):
        raise OSError("libnvidia-ml.so.1: cannot open shared object file")

    monkeypatch.setattr(pynvml, "nvmlLib", None)
    monkeypatch.setattr(pynvml, "_nvmlGetFunctionPointer_cache", {})
    monkeypatch.setattr(pynvml, "CDLL", no_library)  # the real _LoadNvmlLibrary runs and fails
    source, note = open_gpu_source(None)
    assert isinstance(source, NoGpuSource) and source.name == "none"
    assert note is not None and "NVML" in note and "Not Found" in note and source.reason == note
    assert source.read() == []
    source2, note2 = open_gpu_source("nvml")  # asked for explicitly: same, the app works on
    assert isinstance(source2, NoGpuSource) and note2 == note


def test_driver_not_loaded_and_no_gpus(fake_nvml: FakeNvmlLib) -> None:
    fake_nvml.init_rc = pynvml.NVML_ERROR_DRIVER_NOT_LOADED
    source, note = open_gpu_source(None)
    assert isinstance(source, NoGpuSource) and "Driver Not Loaded" in (note or "")
    fake_nvml.init_rc = pynvml.NVML_SUCCESS
    fake_nvml.count = 0
    source, note = open_gpu_source(None)
    assert isinstance(source, NoGpuSource) and "no GPUs" in (note or "")
    assert fake_nvml.calls["shutdown", -1] == 1  # init succeeded, so it was shut down again


def test_pynvml_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    source, note = open_gpu_source(None)
    assert isinstance(source, NoGpuSource) and "nvidia-ml-py" in (note or "")


@pytest.mark.parametrize("spec", ["nvidia", "dcgm:", "nvml:0", "dcgm:ftp://host/metrics", "none:x"])
def test_bad_spec_is_a_one_line_value_error(spec: str) -> None:
    with pytest.raises(ValueError) as info:
        open_gpu_source(spec)
    assert "\n" not in str(info.value)


def test_none_and_dcgm_specs() -> None:
    source, note = open_gpu_source("none")
    assert isinstance(source, NoGpuSource) and note is None
    source, note = open_gpu_source("dcgm:gpu-box:9400")
    try:
        assert source.name == "dcgm" and source.url == "http://gpu-box:9400/metrics" and note is None
    finally:
        source.close()
