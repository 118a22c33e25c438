"""`befori-tui export RUN.toml --format csv|json`: one row per level, for a spreadsheet or a notebook.

A level's sub-tables become dotted columns (`occupancy.usd_idle`, `gpu.energy_j_total`), arrays of tables get
their position (`gpu.gpus.3.power_w_mean`). Values are written exactly: floats with Python's repr (the
shortest text that reads back to the same float), booleans as `true`/`false`, and a key the level does not
have is an empty CSV cell or a key left out of the JSON object (TOML has no null: missing means not known).
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any


def flatten(table: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for i, v in enumerate(value):
                out.update(flatten(v, f"{name}.{i}."))
        elif isinstance(value, list):
            out[name] = json.dumps(value)  # a list of plain values: one cell, as JSON
        else:
            out[name] = value
    return out


def columns(rows: list[dict]) -> list[str]:
    """Every key of every row, in the order first seen (levels may differ: a level with no GPU table)."""
    seen: dict[str, None] = {}
    for row in rows:
        for k in row:
            seen.setdefault(k, None)
    return list(seen)


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def level_rows(levels: list[dict]) -> list[dict[str, Any]]:
    return [flatten(lv) for lv in levels]


def to_csv(rows: list[dict]) -> str:
    cols = columns(rows)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for row in rows:
        w.writerow([cell(row.get(c)) for c in cols])
    return buf.getvalue()


def to_json(rows: list[dict]) -> str:
    return json.dumps(rows, indent=1, ensure_ascii=False) + "\n"
