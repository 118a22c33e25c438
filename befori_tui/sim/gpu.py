"""Simulated GPUs, derived from the engine's load (what a DCGM exporter would report for them).

Everything runs on simulated time (real seconds x time_scale), so watts and joules per token do not
depend on --time-scale. Power over a window is the engine's busy-step energy plus idle power for the idle
part; temperature follows power through a first-order lag; SM clock boosts when busy and drops near the
power limit; memory is weights + runtime overhead + the KV cache the running sequences hold.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from befori_tui.sim.engine import Engine


@dataclass(slots=True)
class GpuState:
    index: int
    util_pct: float
    power_w: float
    energy_mj: float  # DCGM reports total energy in millijoules
    temp_c: float
    sm_clock_mhz: float
    fb_used_mib: float
    fb_free_mib: float


class GpuModel:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.spec = engine.profile.gpu
        g = self.spec
        # Small fixed differences between the cards, so a panel of eight does not look cloned.
        self._spread = [1.0 + 0.012 * (((i * 3 + 3) % 7) - 3) for i in range(g.count)]
        self._t_last = time.perf_counter()
        self._busy_last = engine.stats.busy_sim_s
        self._energy_last = engine.stats.busy_energy_j
        self._power_w = g.idle_w
        self._util = 0.0
        self._temp_c = [g.ambient_c + g.c_per_w * g.idle_w * s for s in self._spread]
        self._energy_mj = [g.idle_w * 86400.0 * 1000.0 * s for s in self._spread]  # as if up a day, idle

    def update(self) -> None:
        """Advance to now; call a few times a second (the app's ticker does)."""
        now = time.perf_counter()
        dt_sim = (now - self._t_last) * self.engine.time_scale
        if dt_sim <= 0:
            return
        g = self.spec
        st = self.engine.stats
        d_busy = min(dt_sim, st.busy_sim_s - self._busy_last)
        d_energy = st.busy_energy_j - self._energy_last
        self._util = d_busy / dt_sim
        self._power_w = (d_energy + g.idle_w * (dt_sim - d_busy)) / dt_sim
        decay = math.exp(-dt_sim / g.thermal_tau_s)
        for i, s in enumerate(self._spread):
            p = self._power_w * s
            self._energy_mj[i] += p * dt_sim * 1000.0
            target = g.ambient_c + g.c_per_w * p
            self._temp_c[i] = target + (self._temp_c[i] - target) * decay
        self._t_last, self._busy_last, self._energy_last = now, st.busy_sim_s, st.busy_energy_j

    def states(self) -> list[GpuState]:
        g = self.spec
        fb_used = g.weights_mib + g.overhead_mib + self.engine.kv_used_tokens * g.kv_bytes_per_token / 2**20
        fb_used = min(fb_used, g.fb_total_mib)
        out = []
        for i, s in enumerate(self._spread):
            p = min(self._power_w * s, g.power_limit_w)
            clock = g.sm_clock_idle_mhz
            if self._util > 0.01:
                clock = g.sm_clock_max_mhz - max(0.0, p - g.throttle_start_w) * g.throttle_mhz_per_w
            out.append(GpuState(index=i, util_pct=round(100.0 * self._util), power_w=round(p, 3),
                                energy_mj=round(self._energy_mj[i]), temp_c=round(self._temp_c[i]),
                                sm_clock_mhz=round(clock),
                                fb_used_mib=round(fb_used), fb_free_mib=round(g.fb_total_mib - fb_used)))
        return out
