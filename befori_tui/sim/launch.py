"""Start the simulator as a subprocess (for the demo and tests): `with start_sim(...) as sim: sim.base_url`."""

from __future__ import annotations

import atexit
import re
import signal
import subprocess
import threading
import time
import urllib.request

from befori_tui.core.childproc import child_env, module_command

_LISTENING = re.compile(r"listening on (http://\S+)")
_live: set[SimProcess] = set()


class SimProcess:
    def __init__(self, proc: subprocess.Popen[str], root_url: str) -> None:
        self.proc = proc
        self.root_url = root_url
        self.base_url = root_url + "/v1"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM, wait, then SIGKILL."""
        _live.discard(self)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> SimProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"SimProcess(pid={self.pid}, root_url={self.root_url!r})"


def sim_command(profile: str = "dbrx-8xh100", time_scale: float = 1.0, faults: dict[str, float] | None = None,
                seed: int = 0, host: str = "127.0.0.1", port: int | None = None,
                prefix_cache_tokens: int | None = None) -> list[str]:
    cmd = [*module_command("befori_tui.sim"), "--host", host, "--port", str(port or 0),
           "--profile", profile, "--time-scale", repr(float(time_scale)), "--seed", str(seed)]
    if prefix_cache_tokens is not None:
        cmd += ["--prefix-cache-tokens", str(prefix_cache_tokens)]
    for kind, rate in (faults or {}).items():
        cmd += ["--fault", kind, "--fault-rate", repr(float(rate))]
    return cmd


def start_sim(profile: str = "dbrx-8xh100", time_scale: float = 1.0, faults: dict[str, float] | None = None,
              seed: int = 0, host: str = "127.0.0.1", port: int | None = None,
              ready_timeout_s: float = 20.0, prefix_cache_tokens: int | None = None) -> SimProcess:
    """Start `python -m befori_tui.sim`, wait until /health answers; RuntimeError if it does not."""
    env = child_env()
    proc = subprocess.Popen(sim_command(profile, time_scale, faults, seed, host, port, prefix_cache_tokens),
                            stdout=subprocess.PIPE,
                            text=True, env=env)
    deadline = time.monotonic() + ready_timeout_s
    found: list[str] = []

    def read_stdout() -> None:  # keeps draining afterwards, so the child never blocks on a full pipe
        assert proc.stdout is not None
        for line in proc.stdout:
            m = _LISTENING.search(line)
            if m and not found:
                found.append(m.group(1))

    threading.Thread(target=read_stdout, daemon=True, name=f"sim-stdout-{proc.pid}").start()
    while not found:
        if proc.poll() is not None:
            raise RuntimeError(f"sim exited with code {proc.returncode} before it was ready")
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"sim not ready within {ready_timeout_s} s")
        time.sleep(0.02)
    sim = SimProcess(proc, found[0])
    _live.add(sim)
    while True:
        try:
            with urllib.request.urlopen(sim.root_url + "/health", timeout=2) as resp:
                if resp.status == 200:
                    return sim
        except OSError:
            pass
        if time.monotonic() > deadline:
            sim.stop()
            raise RuntimeError(f"sim /health did not answer within {ready_timeout_s} s")
        time.sleep(0.05)


@atexit.register
def _stop_all() -> None:
    for sim in list(_live):
        sim.stop(timeout_s=2.0)
