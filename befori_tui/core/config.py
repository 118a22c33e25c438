"""Run configuration: TOML files (tomllib) into typed dataclasses; CLI flags override keys.

Every problem is a ConfigError whose message names the file (or flag) and the key, in one line.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


class ConfigError(Exception):
    """Bad input from the user: shown as one line, exit code 2."""


@dataclass
class EndpointConfig:
    # The OpenAI base URL, ending in /v1. Empty means: the built-in simulator (demo).
    url: str = ""
    api: str = "completions"  # completions | chat
    model: str = ""  # empty: discovered from /v1/models
    api_key_env: str = ""  # name of the environment variable that holds the API key
    server_metrics: str = ""  # URL of the server's Prometheus /metrics, "off", or empty for <root>/metrics


@dataclass
class WorkloadConfig:
    input_tokens_mean: int = 550
    input_tokens_sd: float = 150.0
    output_tokens_mean: int = 150
    output_tokens_sd: float = 0.0
    ignore_eos: bool = True
    prompt_source: str = "sonnets"  # "sonnets" (bundled) or a path to a JSONL file of {"prompt": ...}
    seed: int = 0


@dataclass
class LoadConfig:
    concurrency: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    requests_per_level: int = 32  # steady requests per level (0: use seconds_per_level only)
    seconds_per_level: float = 0.0  # 0: use requests_per_level only
    warmup_requests: int = -1  # per level; -1: one per slot (each slot's first request of the level)
    timeout_s: float = 600.0  # per request, whole stream
    connect_timeout_s: float = 10.0
    setup_timeout_s: float = 15.0  # each setup call (/v1/models, /tokenize), apart from the per-request timeout
    max_seconds: float = 3600.0  # a hard bound on the whole run
    workers: int = 0  # load processes; 0: chosen from the streams and the cores (core/pool.py)
    retry_after: bool = False  # wait a 429's Retry-After (at most 30 s) before that slot's next request


@dataclass
class ClusterConfig:
    """Load processes as Ray actors on a cluster's nodes (core/raypool.py, docs/cluster.md)."""

    ray: str = ""  # "" (local processes), "auto" (the cluster this machine joined, else a one-box one), or an address
    # Where the run listens for its actors, HOST or HOST:PORT; "" chooses (127.0.0.1 for a one-box cluster,
    # else the address Ray knows this machine by, on a free port).
    listen: str = ""


@dataclass
class ApiPrice:
    name: str
    usd_per_million_input: float
    usd_per_million_output: float


DEFAULT_USD_PER_HOUR = 27.78  # Ori 8×H100, as in the BeFOri DBRX post
DEFAULT_GPU_COUNT = 8


@dataclass
class PricingConfig:
    usd_per_hour: float = DEFAULT_USD_PER_HOUR
    gpu_count: int = DEFAULT_GPU_COUNT
    usd_per_kwh: float = 0.0  # 0: no energy cost
    blend_input_per_output: float = 3.0  # the input:output token ratio for a blended price
    compare: list[ApiPrice] = field(default_factory=list)
    # Where usd_per_hour came from (flag | config | default | simulator), set by the loaders, never read from a file: every $/M
    # rests on this price, so one nobody set is said to be a default (format.price_note).
    source: str = "default"


@dataclass
class Config:
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    load: LoadConfig = field(default_factory=LoadConfig)
    pricing: PricingConfig = field(default_factory=PricingConfig)
    telemetry: str = ""  # nvml | dcgm:URL | none | "" (auto)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    def validate(self, where: str = "config") -> None:
        validate(self, where)


SECTIONS = {
    "endpoint": EndpointConfig,
    "workload": WorkloadConfig,
    "load": LoadConfig,
    "pricing": PricingConfig,
    "cluster": ClusterConfig,
}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check a TOML value against a dataclass field type; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected {tp}, got {type(value).__name__}")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {type(value).__name__}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {type(value).__name__}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {type(value).__name__}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {type(value).__name__}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {type(value).__name__}")
        return _build(tp, value, where)
    raise ConfigError(f"{where}: unsupported type {_type_name(tp)}")


def _build(cls: Any, table: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in table.items():
        if key not in names:
            raise ConfigError(f"{where}.{key}: unknown key (known: {', '.join(names)})")
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}")
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required key is missing
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in kwargs
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        raise ConfigError(f"{where}: missing key {', '.join(missing) or exc}") from None


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Read a TOML config; None gives the defaults. Raises ConfigError naming file and key."""
    if path is None:
        return Config()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML ({exc})") from None
    cfg = Config()
    for key, value in data.items():
        if key == "telemetry":
            cfg.telemetry = _coerce(value, str, f"{p}: telemetry")
        elif key in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{p}: [{key}] must be a table")
            if key == "pricing" and "source" in value:
                raise ConfigError(f"{p}: pricing.source is not a config key (befori-tui records there where the "
                                  "price came from)")
            setattr(cfg, key, _build(SECTIONS[key], value, f"{p}: {key}"))
            if key == "pricing" and "usd_per_hour" in value:
                cfg.pricing.source = "config"
        else:
            raise ConfigError(f"{p}: unknown key {key!r} (known: {', '.join([*SECTIONS, 'telemetry'])})")
    validate(cfg, str(p))
    return cfg


def validate(cfg: Config, where: str = "config") -> None:
    """Impossible values, named by key."""
    e, w, ld, pr = cfg.endpoint, cfg.workload, cfg.load, cfg.pricing
    if e.url:
        check_url(e.url, f"{where}: endpoint.url")
    if e.api not in ("completions", "chat"):
        raise ConfigError(f"{where}: endpoint.api must be 'completions' or 'chat', got {e.api!r}")
    if e.server_metrics not in ("", "off"):
        check_url(e.server_metrics, f"{where}: endpoint.server_metrics", need_v1=False)
    kind, _, rest = cfg.telemetry.partition(":")
    if cfg.telemetry and not (cfg.telemetry in ("nvml", "none") or (kind == "dcgm" and rest)):
        raise ConfigError(f"{where}: telemetry must be nvml, dcgm:URL or none, got {cfg.telemetry!r}")
    if e.api_key_env and not os.environ.get(e.api_key_env):
        raise ConfigError(f"{where}: endpoint.api_key_env names {e.api_key_env!r}, which is not set in the environment")
    if w.input_tokens_mean < 1:
        raise ConfigError(f"{where}: workload.input_tokens_mean must be ≥ 1, got {w.input_tokens_mean}")
    if w.output_tokens_mean < 1:
        raise ConfigError(f"{where}: workload.output_tokens_mean must be ≥ 1, got {w.output_tokens_mean}")
    if w.input_tokens_sd < 0 or w.output_tokens_sd < 0:
        raise ConfigError(f"{where}: workload token standard deviations must be ≥ 0")
    if not ld.concurrency:
        raise ConfigError(f"{where}: load.concurrency must list at least one level")
    for c in ld.concurrency:
        if c < 1:
            raise ConfigError(f"{where}: load.concurrency must be ≥ 1, got {c}")
        if c > 4096:
            raise ConfigError(f"{where}: load.concurrency {c} is above the limit of 4096")
    if ld.requests_per_level < 0:
        raise ConfigError(f"{where}: load.requests_per_level must be ≥ 0, got {ld.requests_per_level}")
    if ld.seconds_per_level < 0:
        raise ConfigError(f"{where}: load.seconds_per_level must be ≥ 0, got {ld.seconds_per_level}")
    if ld.requests_per_level == 0 and ld.seconds_per_level == 0:
        raise ConfigError(f"{where}: set load.requests_per_level or load.seconds_per_level (both are 0)")
    if ld.warmup_requests < -1:
        raise ConfigError(f"{where}: load.warmup_requests must be ≥ 0 (or -1: one per slot)")
    if not 0 <= ld.workers <= 64:
        raise ConfigError(f"{where}: load.workers must be 0 (automatic) to 64, got {ld.workers}")
    validate_cluster(cfg.cluster, where)
    for key in ("timeout_s", "connect_timeout_s", "setup_timeout_s", "max_seconds"):
        if getattr(ld, key) <= 0:
            raise ConfigError(f"{where}: load.{key} must be > 0, got {getattr(ld, key):g}")
    if pr.usd_per_hour < 0:
        raise ConfigError(f"{where}: pricing.usd_per_hour must be ≥ 0, got {pr.usd_per_hour}")
    if pr.gpu_count < 1:
        raise ConfigError(f"{where}: pricing.gpu_count must be ≥ 1, got {pr.gpu_count}")
    if pr.usd_per_kwh < 0:
        raise ConfigError(f"{where}: pricing.usd_per_kwh must be ≥ 0")
    if pr.blend_input_per_output < 0:
        raise ConfigError(f"{where}: pricing.blend_input_per_output must be ≥ 0")
    for i, api in enumerate(pr.compare):
        if api.usd_per_million_input < 0 or api.usd_per_million_output < 0:
            raise ConfigError(f"{where}: pricing.compare[{i}] prices must be ≥ 0")


def ray_installed() -> bool:
    """Whether Ray can be imported, without importing it (a second or more, and it must be imported later, once
    the run knows whether it starts a cluster: core/raypool.py)."""
    import importlib.util

    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):  # ValueError: blocked (sys.modules["ray"] is None)
        return False


def validate_cluster(cl: ClusterConfig, where: str) -> None:
    if cl.ray and not ray_installed():
        raise ConfigError(f"{where}: cluster.ray needs Ray, which is not installed here: "
                          "pip install 'befori-tui[ray]'")
    if cl.ray.startswith("ray://"):
        raise ConfigError(f"{where}: cluster.ray: a Ray Client address (ray://) is not supported; run befori-tui "
                          "on a node of the cluster with --ray auto or --ray HEAD:6379 (docs/cluster.md)")
    if cl.listen:
        host, sep, port = cl.listen.rpartition(":")
        if not sep:
            host, port = cl.listen, "0"
        if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ConfigError(f"{where}: cluster.listen must be HOST or HOST:PORT, got {cl.listen!r}")


def check_url(url: str, where: str, need_v1: bool = True) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}: not an http(s) URL: {redact_url(url)!r}")
    if need_v1 and not parts.path.rstrip("/").endswith("/v1"):
        raise ConfigError(f"{where}: the OpenAI base URL must end in /v1, got {redact_url(url)!r}")


def redact_url(url: str) -> str:
    """The URL without user:password@ — credentials never reach results, logs or the screen."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return parts._replace(netloc=host).geturl()


def parse_mean_sd(text: str, flag: str) -> tuple[int, float]:
    """'550' or '550:150' → (550, 150.0)."""
    mean_s, _, sd_s = text.partition(":")
    try:
        mean = int(mean_s)
        sd = float(sd_s) if sd_s else 0.0
    except ValueError:
        raise ConfigError(f"{flag}: expected MEAN or MEAN:SD (integers), got {text!r}") from None
    if mean < 1 or sd < 0:
        raise ConfigError(f"{flag}: mean must be ≥ 1 and SD ≥ 0, got {text!r}")
    return mean, sd


def parse_int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{flag}: expected a comma-separated list of integers, got {text!r}") from None
    if not values:
        raise ConfigError(f"{flag}: expected a comma-separated list of integers ≥ 1, got {text!r}")
    if any(v < 1 for v in values):
        raise ConfigError(f"{flag}: every value must be ≥ 1, got {text!r}")
    return values
