"""Simulator profiles: the numbers that make a simulated server behave like one model on some GPUs.

Profiles are TOML data files in `profiles/` (each number carries its source in a comment). A profile name
is the file's stem; `load_profile` also takes a path to a .toml file, so benchmarks can vary a profile.
"""

from __future__ import annotations

import tomllib
from dataclasses import MISSING, dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class ModelSpec:
    served_name: str  # what /v1/models reports; says "simulated"
    max_model_len: int
    eos_mean_tokens: float  # mean output length when ignore_eos is false (geometric stop)


@dataclass(frozen=True, slots=True)
class EngineSpec:
    max_num_seqs: int  # cap on running sequences
    max_num_batched_tokens: int  # chunked-prefill token budget per step
    kv_cache_tokens: int  # KV-cache budget in tokens
    step_base_ms: float  # step_ms = base + k * decode_seqs + prefill_tokens / P
    step_k_ms_per_seq: float
    prefill_tok_per_s: float
    frontend_ms: float  # API server + tokenisation before a request reaches the engine
    # Past `knee_seqs` running decode sequences, each sequence beyond it costs knee_ms_per_seq more per step: an
    # over-subscribed engine thrashes (KV-cache preemption and recompute, attention over ever more context).
    # When knee_ms_per_seq · knee_seqs > step_base_ms, throughput peaks at the knee and then falls, as the
    # seed's DBRX run did above 64. 0: no knee.
    knee_seqs: int = 0
    knee_ms_per_seq: float = 0.0
    # Automatic prefix caching (vLLM's, on by default since V1): prompt blocks of PREFIX_BLOCK_TOKENS kept after
    # their prefill, least recently used dropped past this many tokens; 0 turns it off. Optional in a profile.
    prefix_cache_tokens: int = 0


@dataclass(frozen=True, slots=True)
class GpuSpec:
    count: int
    name: str
    fb_total_mib: float
    weights_mib: float  # per GPU
    overhead_mib: float  # per GPU: CUDA context, activations, graphs
    kv_bytes_per_token: float  # per GPU
    idle_w: float
    batch1_w: float
    max_busy_w: float
    power_limit_w: float
    power_half_batch: float  # effective batch at which busy power is halfway from batch1_w to max_busy_w
    prefill_tokens_per_seq: float  # prefill tokens that count as one sequence for the power model
    ambient_c: float
    c_per_w: float  # steady-state temperature rise per watt
    thermal_tau_s: float
    sm_clock_idle_mhz: float
    sm_clock_max_mhz: float
    throttle_start_w: float
    throttle_mhz_per_w: float


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    description: str
    model: ModelSpec
    engine: EngineSpec
    gpu: GpuSpec

    def step_ms(self, decode_seqs: int, prefill_tokens: int) -> float:
        """Duration of one engine step at time scale 1."""
        e = self.engine
        over = decode_seqs - e.knee_seqs if e.knee_seqs > 0 else 0
        return (e.step_base_ms + e.step_k_ms_per_seq * decode_seqs + 1000.0 * prefill_tokens / e.prefill_tok_per_s
                + (e.knee_ms_per_seq * over if over > 0 else 0.0))

    def cheapest_output_concurrency(self) -> float:
        """Where the befori output $/M is least, from this model, for a closed loop whose R slots all decode:
        $/M_out ∝ step_ms(R)/R (prefill per step grows linearly with R: a constant in that ratio). Below the
        knee that is base/R + k, falling; above it (base − q·knee)/R + k + q, rising when q·knee > base. So the
        least is at the knee, or — without one, or a knee too weak to turn the curve — at the cap."""
        e = self.engine
        if e.knee_seqs <= 0 or e.knee_ms_per_seq * e.knee_seqs <= e.step_base_ms:
            return float(e.max_num_seqs)
        return float(min(e.knee_seqs, e.max_num_seqs))


def _profiles_dir() -> Path:
    return Path(str(resources.files("befori_tui.sim") / "profiles"))


def list_profiles() -> list[str]:
    return sorted(p.stem for p in _profiles_dir().glob("*.toml"))


def _section(cls: type, data: dict[str, Any], where: str) -> Any:
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    missing = {f.name for f in fields(cls) if f.default is MISSING} - set(data)  # a key with a default may be left out
    if unknown or missing:
        raise ValueError(f"profile [{where}]: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
    return cls(**data)


def parse_profile(data: dict[str, Any], name: str) -> Profile:
    try:
        prof = Profile(
            name=str(data.get("name", name)),
            description=str(data.get("description", "")),
            model=_section(ModelSpec, data["model"], "model"),
            engine=_section(EngineSpec, data["engine"], "engine"),
            gpu=_section(GpuSpec, data["gpu"], "gpu"),
        )
    except KeyError as exc:
        raise ValueError(f"profile {name!r}: missing table [{exc.args[0]}]") from None
    if prof.engine.max_num_seqs < 1 or prof.engine.kv_cache_tokens < prof.model.max_model_len:
        raise ValueError(f"profile {name!r}: need max_num_seqs >= 1 and kv_cache_tokens >= max_model_len")
    if prof.engine.knee_seqs < 0 or prof.engine.knee_ms_per_seq < 0:
        raise ValueError(f"profile {name!r}: knee_seqs and knee_ms_per_seq must be >= 0")
    if prof.gpu.count < 1:
        raise ValueError(f"profile {name!r}: gpu.count must be >= 1")
    return prof


def load_profile(name: str) -> Profile:
    """A built-in profile by name, or a profile file by path (ends in .toml)."""
    if name.endswith(".toml"):
        path = Path(name)
        if not path.is_file():
            raise ValueError(f"profile file not found: {name}")
    else:
        path = _profiles_dir() / f"{name}.toml"
        if not path.is_file():
            raise ValueError(f"unknown profile {name!r}; known: {', '.join(list_profiles())}")
    with path.open("rb") as f:
        return parse_profile(tomllib.load(f), path.stem)
