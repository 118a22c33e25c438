"""Saved sessions as the report, compare and export read them: the TOML's levels, its API prices and optimum,
and the raw records of one level from the JSONL beside it.

Read defensively: a key that is missing means "not known" (docs/results.md), and other versions of the tool
may add tables (`[optimum]`, `[summary]`) or move per-GPU detail out of `[levels.gpu]`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from befori_tui.core.config import ConfigError
from befori_tui.core.results import read_session

# Keys a level may carry for an open-loop run's arrival rate (requests per second), in the order tried.
RATE_KEYS = ("rate", "rate_per_s", "target_rate_per_s")


@dataclass
class LoadedSession:
    path: Path
    label: str
    data: dict
    levels: list[dict] = field(default_factory=list)

    @property
    def api_compare(self) -> list[dict]:
        return [a for a in self.data.get("api_compare", []) if isinstance(a, dict)]

    @property
    def optimum(self) -> dict | None:
        opt = self.data.get("optimum")
        return opt if isinstance(opt, dict) else None

    @property
    def raw_path(self) -> Path:
        """The JSONL: `raw_records` relative to the TOML when beside it, else the TOML's name with .jsonl."""
        raw = self.data.get("raw_records")
        if isinstance(raw, str) and raw:
            p = Path(raw)
            return p if p.is_absolute() else self.path.parent / p
        return self.path.with_suffix(".jsonl")

    def level(self, index: int) -> dict | None:
        return next((lv for lv in self.levels if lv.get("level") == index), None)


def load_sessions(paths: list[str | os.PathLike[str]]) -> list[LoadedSession]:
    """Each session once, labelled by its file name (with the folder when two share a name). ConfigError on a
    file that is not a session."""
    out = []
    for p in paths:
        data = read_session(p)
        levels = data.get("levels")
        if not isinstance(levels, list) or not all(isinstance(lv, dict) for lv in levels):
            raise ConfigError(f"{p}: [[levels]] is not a list of tables")
        out.append(LoadedSession(Path(p), Path(p).stem, data, levels))
    stems = [s.label for s in out]
    for s in out:
        if stems.count(s.label) > 1:
            s.label = str(s.path)
    return out


def level_axis(sessions: list[LoadedSession]) -> tuple[str, str]:
    """(key, axis label) the levels are placed and matched by: the arrival rate when every level of every
    session has one (an open-loop run), else the concurrency."""
    levels = [lv for s in sessions for lv in s.levels]
    for key in RATE_KEYS:
        if levels and all(isinstance(lv.get(key), (int, float)) for lv in levels):
            return key, "arrival rate (requests/s)"
    return "concurrency", "concurrency (requests in flight)"


def cheapest_level(session: LoadedSession) -> dict | None:
    """The level the timeline shows by default: the optimum's when the session found one, else the lowest
    blended $/M, else the last level."""
    if not session.levels:
        return None
    opt = session.optimum
    if opt and opt.get("found", True) and isinstance(opt.get("concurrency"), (int, float)):
        same = [lv for lv in session.levels if lv.get("concurrency") == opt["concurrency"]]
        if same:
            return same[-1]
    priced = [lv for lv in session.levels if isinstance(lv.get("usd_per_million_blended"), (int, float))]
    if priced:
        return min(priced, key=lambda lv: lv["usd_per_million_blended"])
    return session.levels[-1]


def read_level_records(session: LoadedSession, level_index: int) -> list[dict]:
    """The raw records sent in one level, as JSON objects. ConfigError naming the file and line when the
    JSONL cannot be read or a line is not JSON; FileNotFoundError when it is not there (the caller says what
    is then missing)."""
    path = session.raw_path
    out = []
    try:
        f = open(path, encoding="utf-8")  # noqa: SIM115 — closed below
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ConfigError(f"{path}: cannot read raw records ({exc.strerror or exc})") from None
    with f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                if n > 1 and not line.endswith("\n"):
                    break  # the last line of a run killed mid-write: what came before is whole
                raise ConfigError(f"{path}:{n}: not a JSON line") from None
            if isinstance(rec, dict) and rec.get("level") == level_index:
                out.append(rec)
    return out
