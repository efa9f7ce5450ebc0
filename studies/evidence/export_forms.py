"""The files an export of a user's study writes: data (JSON, TOML, YAML) and a shell script.

The file's extension decides its form, so ``best.json`` is always JSON and ``best.sh`` always a script.
TOML is written here (Python reads it, ``tomllib``, but has no writer, and the project takes no dependency
for one): nested tables, arrays and inline tables, enough for a param set or a config file; a null, which
TOML cannot hold, is one line naming the key.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from common.errors import UserError
from tts_model.cache import atomic_write_text

DATA_SUFFIXES = (".json", ".toml", ".yaml", ".yml")
SCRIPT_SUFFIX = ".sh"
BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def write_data(path: Path, data: Mapping[str, Any]) -> Path:
    """``data`` in the format ``path``'s extension names (one of ``DATA_SUFFIXES``)."""
    suffix = path.suffix.lower()
    if suffix == ".json":
        text = json.dumps(data, indent=2) + "\n"
    elif suffix == ".toml":
        text = toml_text(data, where=str(path))
    else:
        import yaml  # optuna's dependency: always installed

        text = yaml.safe_dump(dict(data), sort_keys=False)
    atomic_write_text(path, text)
    return path


def write_script(path: Path, argv: Sequence[str], head: str) -> Path:
    """A POSIX shell script that runs ``argv`` (absolute paths) with the caller's arguments after it."""
    text = (
        f"#!/bin/sh\n# {head}\n"
        "# Arguments after it go to your trainer after the study's own, e.g. `sh best.sh --steps 20000`.\n"
        f'exec {shlex.join(argv)} "$@"\n'
    )
    atomic_write_text(path, text)
    path.chmod(0o755)
    return path


def toml_text(data: Mapping[str, Any], *, where: str) -> str:
    lines: list[str] = []
    _table(data, "", lines, where)
    return "\n".join(lines).lstrip("\n") + "\n"


def _table(data: Mapping[str, Any], prefix: str, lines: list[str], where: str) -> None:
    values = [(k, v) for k, v in data.items() if not isinstance(v, Mapping)]
    tables = [(k, v) for k, v in data.items() if isinstance(v, Mapping)]
    if prefix and (values or not tables):
        lines.append(f"\n[{prefix}]")
    lines += [f"{_key(k)} = {_value(v, f'{prefix}.{k}'.lstrip('.'), where)}" for k, v in values]
    for k, v in tables:
        _table(v, f"{prefix}.{_key(k)}".lstrip("."), lines, where)


def _key(key: Any) -> str:
    key = str(key)
    return key if BARE_KEY.fullmatch(key) else json.dumps(key)


def _value(v: Any, at: str, where: str) -> str:
    if v is None:
        raise UserError(f"--export-preset {where}: TOML has no null (at {at}); give a .json or .yaml file")
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a TOML basic string
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_value(x, f'{at}.{k}', where)}" for k, x in v.items()) + " }"
    if isinstance(v, Sequence):
        return "[" + ", ".join(_value(x, at, where) for x in v) + "]"
    raise UserError(f"--export-preset {where}: TOML cannot hold {type(v).__name__} (at {at})")
