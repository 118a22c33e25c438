"""Results: the TOML summary (docs/results.md, written atomically) and the raw JSON-lines records.

Schema and units: docs/results.md. Every `usd_*` figure of a level is linear in the hourly price, which is
what lets `befori-tui cost session.toml --usd-per-hour X` re-price a saved session exactly.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import os
import tempfile
import threading
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from befori_tui.core.observer import NullObserver
from befori_tui.core.records import RequestRecord

SCHEMA_VERSION = 1


def _read_umask() -> int:
    # Read once at import: setting and restoring the umask later could race with other threads' file creation.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def tidy_float(key: str, value: float) -> float:
    """A float rounded to what it can mean, so that a person reads 738.6, not 738.6000000000001: times (`_s`)
    to the microsecond, everything else (money, rates, tokens, watts) to 6 significant figures."""
    if value == 0 or not math.isfinite(value):
        return value
    if (key.endswith("_s") or "_s_" in key) and not key.endswith("_per_s") and "_per_s_" not in key:
        return round(value, 6) + 0.0  # + 0.0: no -0.0
    return float(f"{value:.6g}") + 0.0


def clean_for_toml(value: Any, key: str = "") -> Any:
    """TOML has no null or infinity: drop them (a missing key means 'not known'). Floats are tidied
    (tidy_float) by the name of the key that holds them."""
    if isinstance(value, dict):
        return {k: clean_for_toml(v, k) for k, v in value.items()
                if v is not None and not (isinstance(v, float) and not math.isfinite(v))}
    if isinstance(value, (list, tuple)):
        return [clean_for_toml(v, key) for v in value if v is not None]
    if isinstance(value, float):
        return tidy_float(key, value)
    return value


SUMMARY_NOTE = ("one row per level, the figures bench prints: TTFT and ITL medians, output tokens per second the "
                "server processed, $ per million tokens by the befori and occupancy methods, and the dollars of the "
                "level's bill spent on requests that failed; the [[levels]] tables below have everything, and say "
                "why a figure is missing")


def summary_table(levels: list[dict]) -> str:
    """The [summary] table at the top of a session file: a person reads the run here before the details."""
    def usd(v) -> str:
        return "—" if v is None else f"{v:.4g}"

    def ms(v) -> str:
        return "—" if v is None else f"{v * 1e3:.3g}"

    head = (f"{'level':>5} {'conc':>5} {'ok':>6} {'failed':>6} {'TTFT p50 ms':>11} {'ITL p50 ms':>10}"
            f" {'out tok/s':>9} {'$/M in':>8} {'$/M out':>8} {'occ. in':>8} {'occ. out':>8} {'failed $':>8}")
    rows = [head]
    for s in levels:
        occ = s.get("occupancy", {})
        rate = s.get("output_tok_per_s_total")
        rows.append(f"{s['level']:>5} {s['concurrency']:>5} {s['requests_ok']:>6} {s['requests_failed']:>6}"
                    f" {ms(s.get('ttft_s_p50')):>11} {ms(s.get('itl_s_p50')):>10}"
                    f" {'—' if rate is None else f'{rate:.0f}':>9} {usd(s.get('usd_per_million_input')):>8}"
                    f" {usd(s.get('usd_per_million_output')):>8} {usd(occ.get('usd_per_million_input')):>8}"
                    f" {usd(occ.get('usd_per_million_output')):>8} {usd(occ.get('usd_failed')):>8}"
                    + (f"  {s['cost_missing']}" if s.get("cost_missing") else ""))
    return "\n".join(rows) + "\n"


def session_summary(levels: list[dict]) -> dict:
    return {"levels_run": len(levels), "note": SUMMARY_NOTE, "table": summary_table(levels)}


def write_toml_atomic(path: str | os.PathLike[str], data: dict) -> Path:
    """Write to a temp file in the same directory, fsync, rename: readers see the old file or the new one."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    payload = tomli_w.dumps(clean_for_toml(data), multiline_strings=True).encode()
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        # mkstemp makes the file private (0600); a results file should get the usual mode for new files.
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def read_session(path: str | os.PathLike[str]) -> dict:
    from befori_tui.core.config import ConfigError

    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read session ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not a TOML session file ({exc})") from None
    if data.get("schema_version") != SCHEMA_VERSION or "levels" not in data:
        raise ConfigError(f"{p}: not a befori-tui session (schema_version {SCHEMA_VERSION} with [[levels]])")
    return data


def _scale_usd(table: dict, factor: float) -> dict:
    out = {}
    for k, v in table.items():
        if isinstance(v, dict):
            v = _scale_usd(v, factor) if k == "occupancy" else v
        elif k.startswith("usd_") and "energy" not in k and isinstance(v, (int, float)) and not isinstance(v, bool):
            v = v * factor
        out[k] = v
    return out


def reprice_session(data: dict, usd_per_hour: float) -> dict:
    """The same session at another hourly price. Both cost methods are linear in it; energy cost is not."""
    old = float(data.get("pricing", {}).get("usd_per_hour", 0.0))
    if old <= 0:
        from befori_tui.core.config import ConfigError

        raise ConfigError("session: pricing.usd_per_hour is 0, so its costs cannot be scaled")
    factor = usd_per_hour / old
    new = dict(data)
    new["pricing"] = {**data["pricing"], "usd_per_hour": usd_per_hour, "source": "flag"}  # `cost --usd-per-hour`
    new["levels"] = [_scale_usd(level, factor) for level in data["levels"]]
    if "summary" in data:
        new["summary"] = {**data["summary"], **session_summary(new["levels"])}
    return new


class JsonlWriter(NullObserver):
    """Appends each finished request as one JSON line, off the hot path, in a worker thread.

    Every write holds a lock (only ever inside that thread, never across an await on the loop), so a hard exit
    (a second Ctrl-C) can append what is pending with `flush_sync` from any thread and never leave half a line.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._pending: list[str] = []
        self._wake = asyncio.Event()
        self._file: io.TextIOBase | None = None
        self._lock = threading.Lock()
        self._task: asyncio.Task | None = None
        self._closing = False
        self.written = 0

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 — closed in close()
        self._task = asyncio.create_task(self._run(), name="jsonl-writer")

    def on_record(self, record: RequestRecord) -> None:
        self._pending.append(json.dumps(record.to_json_dict(), separators=(",", ":")) + "\n")
        self._wake.set()

    async def _run(self) -> None:
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            await self.flush()

    def _take(self) -> list[str]:
        # One swap: a line appended from another thread lands in either list, never in neither.
        lines, self._pending = self._pending, []
        return lines

    def _write(self, text: str) -> None:
        with self._lock:
            if self._file is not None:
                self._file.write(text)
                self._file.flush()

    async def flush(self) -> None:
        if not self._pending or self._file is None:
            return
        lines = self._take()
        await asyncio.to_thread(self._write, "".join(lines))
        self.written += len(lines)

    def flush_sync(self, timeout_s: float = 2.0) -> None:
        """Last resort on a hard exit, from any thread: append what is pending, after any write in progress."""
        lines = self._take()
        if not lines:
            return
        locked = self._lock.acquire(timeout=timeout_s)
        try:
            if self._file is not None:
                self._file.write("".join(lines))
                self._file.flush()
            else:
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write("".join(lines))
            self.written += len(lines)
        finally:
            if locked:
                self._lock.release()

    async def close(self) -> None:
        if self._task is not None:
            # Let the writer finish the write it is in (cancelling it could drop the lines it holds).
            self._closing = True
            self._wake.set()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._file is not None:
            await self.flush()
            with self._lock:
                self._file.close()
                self._file = None


def read_records(path: str | os.PathLike[str]) -> list[RequestRecord]:
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                records.append(RequestRecord.from_json_dict(json.loads(line)))
    return records
