"""Themes as TOML data files (posting's pattern): validated, then registered with the app at start.

A file is one theme: `name`, `primary` and optionally the other Textual theme colours, `dark`, `ansi`, and a
`[variables]` table (our own: timeline-prefill, timeline-decode, timeline-error, bar-empty). A bad file is
reported (path and reason) and skipped; the app falls back to the default theme.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from textual.color import Color, ColorParseError
from textual.theme import Theme

DEFAULT_THEME = "befori-dark"
COLOR_KEYS = ("primary", "secondary", "accent", "warning", "error", "success", "foreground", "background",
              "surface", "panel", "boost")
OTHER_KEYS = {"name": str, "dark": bool, "ansi": bool, "luminosity_spread": float, "text_alpha": float}
# Our variables, used by app.tcss; a theme may leave any out (the app derives them from its colours).
OUR_VARIABLES = ("timeline-prefill", "timeline-decode", "timeline-error", "bar-empty")


@dataclass
class ThemeError:
    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path.name}: {self.reason}"


def _check_color(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where} must be a colour string")
    try:
        Color.parse(value)
    except ColorParseError:
        raise ValueError(f"{where}: {value!r} is not a colour") from None
    return value


def theme_from_dict(data: dict) -> Theme:
    """A Theme from a TOML table; ValueError names the key that is wrong."""
    unknown = set(data) - set(COLOR_KEYS) - set(OTHER_KEYS) - {"variables"}
    if unknown:
        raise ValueError(f"unknown key {sorted(unknown)[0]!r}")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError("`name` is missing")
    if "primary" not in data:
        raise ValueError("`primary` is missing")
    kwargs: dict = {"name": name.strip()}
    for key in COLOR_KEYS:
        if key in data:
            kwargs[key] = _check_color(data[key], key)
    for key, tp in OTHER_KEYS.items():
        if key in data and key != "name":
            value = data[key]
            if tp is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, tp):
                raise ValueError(f"`{key}` must be {tp.__name__}")
            kwargs[key] = value
    variables = data.get("variables", {})
    if not isinstance(variables, dict):
        raise ValueError("[variables] must be a table")
    for key, value in variables.items():
        if not isinstance(value, str):
            raise ValueError(f"variables.{key} must be a string")
        if key in OUR_VARIABLES:
            _check_color(value, f"variables.{key}")
    kwargs["variables"] = dict(variables)
    return Theme(**kwargs)


def load_theme_file(path: Path) -> Theme:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"invalid TOML ({exc})") from None
    return theme_from_dict(data)


def load_themes(directory: Path) -> tuple[list[Theme], list[ThemeError]]:
    themes, errors = [], []
    for path in sorted(Path(directory).glob("*.toml")):
        try:
            themes.append(load_theme_file(path))
        except ValueError as exc:
            errors.append(ThemeError(path, str(exc)))
    return themes, errors


def bundled_theme_dir() -> Path:
    """Our themes: the repository's top-level themes/ folder. An installed wheel carries it as befori_tui/themes
    (setup.py maps it there); a checkout — an editable install, or the source tree — has it beside the package."""
    packaged = Path(str(resources.files("befori_tui"))) / "themes"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "themes"


def all_themes(user_dir: Path | None = None) -> tuple[list[Theme], list[ThemeError]]:
    """The bundled themes, then the user's (a user theme with the same name replaces a bundled one)."""
    themes, errors = load_themes(bundled_theme_dir())
    if user_dir is not None:
        if not Path(user_dir).is_dir():
            errors.append(ThemeError(Path(user_dir), "no such directory"))
        else:
            more, more_errors = load_themes(Path(user_dir))
            themes += more
            errors += more_errors
    return themes, errors
