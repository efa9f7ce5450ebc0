"""A user's command line as a study's trainer: the template and its config file.

The template is the user's command with ``{param}`` fields (``python train.py --lr {lr}``), split like
a shell would (``shlex``) and run without one, so a value never needs quoting. The search fills
``{config}`` (the trial's copy of the user's config file, the params with a ``key`` set in it),
``{run_dir}`` (a folder of the trial's own), ``{trial}`` and ``{seed}``. How the command's output lines
read is ``studies/metrics_lines.py``.
"""

from __future__ import annotations

import copy
import json
import os
import shlex
import shutil
import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import UserError
from space.user import RESERVED, UserSpace
from studies.metrics_lines import MetricsFormat

CONFIG_SUFFIXES = (".json", ".yaml", ".yml")


@dataclass(frozen=True, kw_only=True, slots=True)
class ConfigTarget:
    """The user's config file (JSON or YAML): each trial gets a copy with its params at their keys."""

    base: Path

    @property
    def suffix(self) -> str:
        return self.base.suffix.lower()

    def load(self) -> dict[str, Any]:
        text = self.base.read_text(encoding="utf-8")
        if self.suffix == ".json":
            return json.loads(text)
        import yaml  # optuna's dependency: always installed

        return yaml.safe_load(text)

    def filled(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The config with each dotted key set to its value."""
        data = copy.deepcopy(self.load())
        for key, value in values.items():
            *parents, last = key.split(".")
            node = data
            for part in parents:
                node = node[part]
            node[last] = value
        return data

    def write(self, path: Path, values: Mapping[str, Any]) -> Path:
        data = self.filled(values)
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.suffix == ".json":
            path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        else:
            import yaml

            path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return path


def config_target(
    table: Any, space: UserSpace, where: str, root: Path, *, required: bool = True
) -> ConfigTarget | None:
    """A space file's ``[config]`` table (``file = "config.json"``, relative to the space file), with
    every param ``key`` checked against the file: a typo in a key fails here, not as a silent no-op.
    ``required``: params with a key need the file (a command runs them; in process they come by name)."""
    keyed = [p for p in space.params if p.key is not None]
    if table is None:
        if keyed and required:
            raise UserError(
                f"{where} [params.{keyed[0].name}]: key {keyed[0].key!r} needs a config file: "
                'add [config] file = "your_config.json"'
            )
        return None
    if not isinstance(table, Mapping) or set(table) != {"file"} or not isinstance(table["file"], str):
        raise UserError(f'{where} [config]: takes one field, file = "config.json" (JSON or YAML)')
    base = (root / table["file"]).resolve()
    target = ConfigTarget(base=base)
    if target.suffix not in CONFIG_SUFFIXES:
        raise UserError(
            f"{where} [config]: {table['file']}: a config file is JSON or YAML ({', '.join(CONFIG_SUFFIXES)})"
        )
    if not base.is_file():
        raise UserError(f"{where} [config]: {base} does not exist")
    try:
        data = target.load()
    except Exception as e:  # noqa: BLE001  (any parse error of the user's file is one line)
        raise UserError(f"{where} [config]: {base} does not parse: {str(e).splitlines()[0]}") from None
    for p in keyed:
        node, path = data, []
        for part in p.key.split("."):
            if not isinstance(node, dict) or part not in node:
                known = ", ".join(map(str, node)) if isinstance(node, dict) else "(not a table)"
                at = ".".join(path) or "the top level"
                raise UserError(
                    f"{where} [params.{p.name}]: key {p.key!r} is not in {base.name} (at {at}: {known})"
                )
            node, path = node[part], [*path, part]
    return target


@dataclass(frozen=True, kw_only=True, slots=True)
class CommandSpec:
    """The command a trial runs, how its output reads, where it runs, and its grace after SIGTERM."""

    template: str
    metrics: MetricsFormat
    cwd: Path
    grace_s: float = 10.0

    @property
    def argv(self) -> tuple[str, ...]:
        return tuple(shlex.split(self.template))

    def uses(self, name: str) -> bool:
        return name in fields_of(self.template)

    def fill(self, values: Mapping[str, Any]) -> list[str]:
        """The command's arguments with every field filled (no shell: a value needs no quoting)."""
        return [token.format_map(values) for token in self.argv]

    def line(self, values: Mapping[str, Any]) -> str:
        """The filled command as a line a person can paste into a shell."""
        return shlex.join(self.fill(values))


def runnable_argv(template: str, values: Mapping[str, Any], cwd: Path) -> list[str]:
    """The filled command as it runs from any folder: the program (``python``, looked up on PATH as the
    trial's was, or a path) and every literal argument naming a file there (your ``train.py``), or a
    folder when written with a slash, made absolute against ``cwd``, the folder the search ran in.
    Values from fields pass as they are (the export makes the ``{run_dir}`` and ``{config}`` it fills absolute)."""
    argv = []
    for i, token in enumerate(shlex.split(template)):
        filled = token.format_map(values)
        literal = all(name is None for _, name, _, _ in string.Formatter().parse(token))
        if literal and not filled.startswith("-"):
            filled = _absolute(filled, cwd, program=i == 0)
        argv.append(filled)
    return argv


def _absolute(arg: str, cwd: Path, *, program: bool) -> str:
    path = Path(arg)
    if path.is_absolute():
        return arg
    if program and "/" not in arg:
        found = shutil.which(arg)  # not resolved: a venv's python is a link that must stay one
        return os.path.abspath(found) if found else arg
    there = cwd / path
    if there.is_file() or ("/" in arg and there.is_dir()):
        return os.path.abspath(there)
    return arg


def fields_of(template: str) -> list[str]:
    """The ``{field}`` names a template uses (a format spec like ``{lr:.3g}`` is allowed)."""
    found = []
    for token in shlex.split(template):
        for _, name, _, _ in string.Formatter().parse(token):
            if name is not None:
                found.append(name)
    return found


def command_spec(
    template: str, space: UserSpace, metrics: MetricsFormat, config: ConfigTarget | None, where: str
) -> CommandSpec:
    """``--command TEMPLATE`` checked against the space: every field known, every param placed, the
    program there. Every problem is one line, before any trial starts."""
    try:
        argv = shlex.split(template)
        fields = fields_of(template)
    except ValueError as e:  # an unclosed quote or brace
        raise UserError(f"--command: cannot read the template: {e}") from None
    if not argv:
        raise UserError("--command: the template is empty")
    known = [*space.param_names, *RESERVED]
    for name in fields:
        if name == "" or name.isdigit():
            raise UserError("--command: a field needs a name, like {lr} (a literal brace is {{ or }})")
        if name not in known:
            raise UserError(
                f"--command: unknown field {{{name}}}; fields: {', '.join('{' + k + '}' for k in known)}"
            )
    loose = [p.name for p in space.params if p.key is None and p.name not in fields]
    if loose:
        raise UserError(
            f"{where} [params.{loose[0]}]: goes nowhere: put {{{loose[0]}}} in --command, or give it a config key"
        )
    if config is not None and "config" not in fields:
        raise UserError(
            f"--command: {where} has a [config] file, but the command never gets it: add {{config}}"
        )
    if config is None and "config" in fields:
        raise UserError(f'--command: {{config}} needs a config file: add [config] file = "..." to {where}')
    program = argv[0]
    if not fields_of(program):
        cwd = Path.cwd()
        if shutil.which(program) is None and not (cwd / program).is_file():
            raise UserError(f"--command: program {program!r} not found (on PATH or in {cwd})")
    try:  # a format spec that cannot take the param's values (e.g. {lr:d} for a float) fails here
        sample = {p.name: p.coerce(p.low) if p.numeric else p.choices[0] for p in space.params}
        [token.format_map({**sample, **dict.fromkeys(RESERVED, "x")}) for token in argv]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        raise UserError(f"--command: a field cannot be filled: {e}") from None
    return CommandSpec(template=template, metrics=metrics, cwd=Path.cwd())
