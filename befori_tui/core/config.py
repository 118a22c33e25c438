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
    # TLS for https endpoints: a CA bundle (PEM) to trust instead of the default roots; a client certificate
    # "CERT.pem" or "CERT.pem:KEY.pem"; verify = false accepts any certificate (said on screen and in results).
    ca_bundle: str = ""
    client_cert: str = ""
    verify: bool = True
    # HTTP_PROXY / HTTPS_PROXY / NO_PROXY carry the load as they carry the telemetry; false: ignore them.
    proxy_from_env: bool = True
    # Extra request headers for gateways: NAME = "value", or NAME = "env:VAR" to read the value from the
    # environment (secrets: never written to results, logs or the screen).
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class DatasetConfig:
    path: str = ""  # a dataset file (core/datasets.py); empty: the bundled sonnets
    format: str = "auto"  # auto | sharegpt | openai-chat | prompts


@dataclass
class TraceConfig:
    path: str = ""  # a request trace to replay on its own clock (core/trace.py); empty: none
    speed: float = 1.0  # the trace's times are divided by this: 2 replays it twice as fast


@dataclass
class WorkloadConfig:
    input_tokens_mean: int = 550
    input_tokens_sd: float = 150.0
    output_tokens_mean: int = 150
    output_tokens_sd: float = 0.0
    ignore_eos: bool = True
    prompt_source: str = "sonnets"  # "sonnets" (bundled) or a path to a JSONL file of {"prompt": ...}
    seed: int = 0
    # Length distributions (core/lengths.py syntax); set, they replace the mean/sd keys above. With a dataset
    # and these empty, lengths come from the dataset.
    input_tokens_dist: str = ""
    output_tokens_dist: str = ""
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    trace: TraceConfig = field(default_factory=TraceConfig)
    turns: str = ""  # turns per conversation (a length spec); empty: 1, or the dataset's conversations
    think_time_s_mean: float = 0.0  # between a reply's end and the conversation's next turn
    think_time_s_sd: float = 0.0
    shared_prefix_tokens: int = 0  # a system prompt common to every request of its group (0: none)
    prefix_groups: int = 1  # how many different shared prefixes; each request belongs to one


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
    on_decrease: str = "finish"  # finish | cancel: the requests of slots a lower concurrency removes
    max_concurrency: int = 1024  # the optimum search never goes above this (docs/optimum.md)
    # Open loop (instead of `concurrency` slots): requests arrive at these rates, one level each; at most
    # max_in_flight at once. Empty: the closed loop.
    rate: list[float] = field(default_factory=list)
    burstiness: float = 1.0  # gamma shape of the gaps between arrivals: 1 is Poisson, lower is burstier
    max_in_flight: int = 256


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


ON_DECREASE = ("finish", "cancel")
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


OPTIMUM_BY = ("blended", "input", "output")


@dataclass
class SearchConfig:
    """The optimum search and the [optimum] result (docs/optimum.md)."""

    by: str = "blended"  # which $/M is minimised: blended (at pricing.blend_input_per_output), input or output
    tolerance: float = 0.10  # the search stops when the cheapest concurrency is bracketed within ±this
    range_within: float = 0.10  # the range: concurrencies whose $/M is within this of the minimum
    factor: float = 2.0  # the first phase's geometric step


@dataclass
class Config:
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    load: LoadConfig = field(default_factory=LoadConfig)
    pricing: PricingConfig = field(default_factory=PricingConfig)
    telemetry: str = ""  # nvml | dcgm:URL | none | "" (auto)
    gpu_detail: bool = False  # every GPU's own figures in each level of the session file (else a summary)
    search: SearchConfig = field(default_factory=SearchConfig)
    # Latency targets ([slo] in a config, --slo): core.slo.SloTarget, in the order given.
    slo: list = field(default_factory=list)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    def validate(self, where: str = "config") -> None:
        validate(self, where)


SECTIONS = {
    "endpoint": EndpointConfig,
    "workload": WorkloadConfig,
    "load": LoadConfig,
    "pricing": PricingConfig,
    "search": SearchConfig,
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
    if origin is dict:
        key_tp, value_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {type(value).__name__}")
        return {_coerce(k, key_tp, where): _coerce(v, value_tp, f"{where}.{k}") for k, v in value.items()}
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
        elif key == "gpu_detail":
            cfg.gpu_detail = _coerce(value, bool, f"{p}: gpu_detail")
        elif key == "slo":
            cfg.slo = slo_from_table(value, f"{p}: slo")
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
            raise ConfigError(f"{p}: unknown key {key!r} (known: {', '.join([*SECTIONS, 'slo', 'telemetry', 'gpu_detail'])})")
    validate(cfg, str(p))
    return cfg


def slo_from_table(table: Any, where: str) -> list:
    """`[slo]`: `ttft_p99 = "2s"`, `itl_p99 = "60ms"`, `e2e_p99 = 30` (a bare number is seconds)."""
    from befori_tui.core.slo import SloError, target_from

    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [slo] must be a table such as ttft_p99 = \"2s\"")
    try:
        return [target_from(k, v, where) for k, v in table.items()]
    except SloError as exc:
        raise ConfigError(str(exc)) from None


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
    for key in ("ca_bundle", "client_cert"):
        for path in (getattr(e, key).split(":", 1) if key == "client_cert" else [e.ca_bundle]):
            if path and not Path(path).is_file():
                raise ConfigError(f"{where}: endpoint.{key}: no such file {path!r}")
    for name, value in e.headers.items():
        check_header(name, value, f"{where}: endpoint.headers.{name}")
    if w.input_tokens_mean < 1:
        raise ConfigError(f"{where}: workload.input_tokens_mean must be ≥ 1, got {w.input_tokens_mean}")
    if w.output_tokens_mean < 1:
        raise ConfigError(f"{where}: workload.output_tokens_mean must be ≥ 1, got {w.output_tokens_mean}")
    if w.input_tokens_sd < 0 or w.output_tokens_sd < 0:
        raise ConfigError(f"{where}: workload token standard deviations must be ≥ 0")
    validate_workload_shape(w, where)
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
    if ld.on_decrease not in ON_DECREASE:
        raise ConfigError(f"{where}: load.on_decrease must be one of {', '.join(ON_DECREASE)}, got {ld.on_decrease!r}")
    for r in ld.rate:
        if not r > 0:
            raise ConfigError(f"{where}: load.rate must be > 0 requests per second, got {r:g}")
    if not ld.burstiness > 0:
        raise ConfigError(f"{where}: load.burstiness must be > 0 (1 is Poisson), got {ld.burstiness:g}")
    if not 1 <= ld.max_in_flight <= 4096:
        raise ConfigError(f"{where}: load.max_in_flight must be 1 to 4096, got {ld.max_in_flight}")
    if ld.rate and ld.workers > 1:
        # The load processes (core/pool.py) share out slots of a closed loop; one arrival schedule is not split.
        raise ConfigError(f"{where}: load.rate: the open loop runs in one load process; set load.workers to 0 or 1")
    if ld.rate and cfg.cluster.ray:
        raise ConfigError(f"{where}: load.rate: the open loop runs in one load process, not on Ray actors; "
                          "leave out cluster.ray (--ray)")
    tr = cfg.workload.trace
    if tr.path:
        if not tr.speed > 0:
            raise ConfigError(f"{where}: workload.trace.speed must be > 0, got {tr.speed:g}")
        # A trace is its own arrival schedule, in the open loop's one load process.
        if ld.rate:
            raise ConfigError(f"{where}: workload.trace (--trace) and load.rate (--rate) both say when requests "
                              "arrive; give one")
        if ld.workers > 1 or cfg.cluster.ray:
            raise ConfigError(f"{where}: workload.trace: a trace is replayed by one load process; set load.workers "
                              "to 0 or 1 and leave out cluster.ray")
        w = cfg.workload
        if w.dataset.path or w.prompt_source != "sonnets" or w.turns or w.shared_prefix_tokens \
                or w.input_tokens_dist or w.output_tokens_dist:
            raise ConfigError(f"{where}: workload.trace says each request's lengths and shared prefix; leave out "
                              "the dataset, prompts, turns, shared prefix and length distributions")
    if not 1 <= ld.max_concurrency <= 4096:
        raise ConfigError(f"{where}: load.max_concurrency must be 1 to 4096, got {ld.max_concurrency}")
    sc = cfg.search
    if sc.by not in OPTIMUM_BY:
        raise ConfigError(f"{where}: search.by must be one of {', '.join(OPTIMUM_BY)}, got {sc.by!r}")
    for key in ("tolerance", "range_within"):
        if not 0 < getattr(sc, key) < 1:
            raise ConfigError(f"{where}: search.{key} must be between 0 and 1 (0.1 is ±10%), got {getattr(sc, key):g}")
    if not 1.1 <= sc.factor <= 16:
        raise ConfigError(f"{where}: search.factor must be 1.1 to 16, got {sc.factor:g}")
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


def validate_workload_shape(w: WorkloadConfig, where: str) -> None:
    """The keys of issue 12's workloads: distributions, dataset, turns, think time, shared prefixes."""
    from befori_tui.core.lengths import parse_length

    has_data = bool(w.dataset.path) or w.prompt_source != "sonnets"
    for key in ("input_tokens_dist", "output_tokens_dist", "turns"):
        if getattr(w, key):
            parse_length(getattr(w, key), f"{where}: workload.{key}", allow_dataset=has_data)
    if w.dataset.format not in ("auto", "sharegpt", "openai-chat", "prompts"):
        raise ConfigError(f"{where}: workload.dataset.format must be auto, sharegpt, openai-chat or prompts, "
                          f"got {w.dataset.format!r}")
    if w.dataset.path and w.prompt_source != "sonnets":
        raise ConfigError(f"{where}: workload.dataset and workload.prompt_source (--prompts) both name a file; "
                          "give one")
    if w.think_time_s_mean < 0 or w.think_time_s_sd < 0:
        raise ConfigError(f"{where}: workload.think_time_s_mean and _sd must be ≥ 0")
    if not 0 <= w.shared_prefix_tokens <= 131072:
        raise ConfigError(f"{where}: workload.shared_prefix_tokens must be 0 to 131072, got {w.shared_prefix_tokens}")
    if not 1 <= w.prefix_groups <= 100_000:
        raise ConfigError(f"{where}: workload.prefix_groups must be 1 to 100000, got {w.prefix_groups}")


# RFC 9110 §5.1: a header name is a token.
_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
# Set by the client itself: a gateway header must not replace them (the framing would be wrong).
RESERVED_HEADERS = ("host", "content-length", "transfer-encoding", "connection")


def check_header(name: str, value: str, where: str) -> None:
    """A header from --header or [endpoint.headers]: a token for a name, no line break in the value, and an
    env:VAR that is set."""
    if not name or not set(name) <= _TOKEN_CHARS:
        raise ConfigError(f"{where}: {name!r} is not a header name")
    if name.lower() in RESERVED_HEADERS:
        raise ConfigError(f"{where}: {name} is set by befori-tui itself")
    if value.startswith("env:"):
        var = value[4:]
        if not var or var not in os.environ:
            raise ConfigError(f"{where}: env:{var} names an environment variable that is not set")
        value = os.environ[var]
    if "\r" in value or "\n" in value or "\0" in value:
        raise ConfigError(f"{where}: the value holds a line break")


def header_values(headers: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The headers to send (env:VAR read now) and the values that came from the environment (secrets)."""
    out, secrets = {}, []
    for name, value in headers.items():
        if value.startswith("env:"):
            value = os.environ.get(value[4:], "")
            if value:
                secrets.append(value)
        out[name] = value
    return out, secrets


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
