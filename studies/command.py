"""A user's command line as a study's trainer: the template, how its output lines read, its config file.

The template is the user's command with ``{param}`` fields (``python train.py --lr {lr}``), split like
a shell would (``shlex``) and run without one, so a value never needs quoting. The search fills
``{config}`` (the trial's copy of the user's config file, the params with a ``key`` set in it),
``{run_dir}`` (a folder of the trial's own), ``{trial}`` and ``{seed}``.

Metrics come from the process's output (stdout and stderr together), line by line, as they arrive:
- ``json`` (the default): a line that is a JSON object with ``loss`` is a step, with ``metric`` an eval
  (both: a step then its eval); other keys: ``step``, ``grad_norm``, ``mel``, ``alignment``,
  ``loss_scale``. ``names`` maps these to the trainer's own keys (``{metric = "val_loss"}``).
- ``regex``: for a trainer that prints its own log lines (the way Kubeflow Katib's metrics collector
  reads them): a ``step`` pattern whose named groups give ``loss`` and any of the step keys, and an
  ``eval`` pattern giving ``metric``.
Every other line is output: kept for the record's tail, never an error.
"""

from __future__ import annotations

import copy
import json
import math
import re
import shlex
import shutil
import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from common.errors import UserError
from space.user import RESERVED, UserSpace
from trainer.reporter import ReportError

STEP_KEYS = ("step", "loss", "grad_norm", "mel", "alignment", "loss_scale")
EVAL_KEYS = ("step", "metric", "alignment")
KEYS = tuple(dict.fromkeys(STEP_KEYS + EVAL_KEYS))
CONFIG_SUFFIXES = (".json", ".yaml", ".yml")


@dataclass(frozen=True, slots=True)
class StepLine:
    """A step as one output line gave it (None: not on the line)."""

    step: int | None
    loss: float
    grad_norm: float | None = None
    mel: float | None = None
    alignment: float | None = None
    loss_scale: float | None = None


@dataclass(frozen=True, slots=True)
class EvalLine:
    step: int | None
    metric: float
    alignment: float | None = None


@dataclass(frozen=True, slots=True)
class ParsedLine:
    step: StepLine | None = None
    eval: EvalLine | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class MetricsFormat:
    """How the command's output lines read: JSON objects (``names``: our key -> the trainer's), or
    ``step_pattern`` / ``eval_pattern`` regexes with named groups."""

    kind: Literal["json", "regex"] = "json"
    names: tuple[tuple[str, str], ...] = ()
    step_pattern: str | None = None
    eval_pattern: str | None = None

    def parse(self, line: str) -> ParsedLine | None:
        """The numbers on one output line, or None when it holds none. A metric that is there but is
        not a number is a ``ReportError`` (the trainer's output broke the contract)."""
        if self.kind == "json":
            return self._json(line)
        found = ParsedLine()
        if self.step_pattern and (m := re.search(self.step_pattern, line)):
            found = ParsedLine(step=_step(m.groupdict()))
        if self.eval_pattern and (m := re.search(self.eval_pattern, line)):
            found = ParsedLine(step=found.step, eval=_eval(m.groupdict()))
        return found if found.step or found.eval else None

    def _json(self, line: str) -> ParsedLine | None:
        text = line.strip()
        if not text.startswith("{"):
            return None
        try:
            obj = json.loads(text)
        except ValueError:
            return None  # output that happens to start with a brace
        if not isinstance(obj, dict):
            return None
        theirs = dict(self.names)
        values = {ours: obj[theirs.get(ours, ours)] for ours in KEYS if theirs.get(ours, ours) in obj}
        if "loss" not in values and "metric" not in values:
            return None  # a JSON line of the trainer's own, not a metrics line
        return ParsedLine(
            step=_step(values) if "loss" in values else None,
            eval=_eval(values) if "metric" in values else None,
        )

    def describe(self) -> str:
        if self.kind == "json":
            renamed = ", ".join(f"{ours} as {theirs!r}" for ours, theirs in self.names)
            return "JSON lines" + (f" ({renamed})" if renamed else "")
        return "log lines read by regex"


def _num(name: str, value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ReportError(f"{name} is {value!r}, not a number") from None


def _int(value: Any) -> int | None:
    number = _num("step", value)
    if number is None:
        return None
    if not (math.isfinite(number) and number.is_integer()):
        raise ReportError(f"step is {value!r}, not an integer")
    return int(number)


def _step(v: Mapping[str, Any]) -> StepLine:
    return StepLine(
        step=_int(v.get("step")),
        loss=_num("loss", v["loss"]),
        grad_norm=_num("grad_norm", v.get("grad_norm")),
        mel=_num("mel", v.get("mel")),
        alignment=_num("alignment", v.get("alignment")),
        loss_scale=_num("loss_scale", v.get("loss_scale")),
    )


def _eval(v: Mapping[str, Any]) -> EvalLine:
    return EvalLine(
        step=_int(v.get("step")),
        metric=_num("metric", v["metric"]),
        alignment=_num("alignment", v.get("alignment")),
    )


def metrics_format(table: Any, where: str) -> MetricsFormat:
    """A space file's ``[metrics]`` table, checked; every problem is one line."""
    at = f"{where} [metrics]"
    if table is None:
        return MetricsFormat()
    if not isinstance(table, Mapping):
        raise UserError(f'{at}: must be a table (format = "json" or "regex")')
    kind = table.get("format", "json")
    allowed = {"json": ("format", "names"), "regex": ("format", "step", "eval")}
    if kind not in allowed:
        raise UserError(f'{at}: format must be "json" or "regex", got {kind!r}')
    extra = [k for k in table if k not in allowed[kind]]
    if extra:
        raise UserError(
            f"{at}: {extra[0]!r} does not go with format {kind!r}; it takes {', '.join(allowed[kind])}"
        )
    if kind == "json":
        names = table.get("names", {})
        if not isinstance(names, Mapping) or not all(isinstance(v, str) for v in names.values()):
            raise UserError(
                f'{at}: names must map our keys to the trainer\'s: names = {{ metric = "val_loss" }}'
            )
        unknown = [k for k in names if k not in KEYS]
        if unknown:
            raise UserError(f"{at}: names: {unknown[0]!r} is not one of ours ({', '.join(KEYS)})")
        return MetricsFormat(kind="json", names=tuple(names.items()))
    step, ev = table.get("step"), table.get("eval")
    for label, pattern, keys, required in (
        ("step", step, STEP_KEYS, "loss"),
        ("eval", ev, EVAL_KEYS, "metric"),
    ):
        if not isinstance(pattern, str):
            raise UserError(
                f"{at}: missing metric: no {label} pattern; give {label} = '...(?P<{required}>...)...'"
            )
        try:
            groups = re.compile(pattern).groupindex
        except re.error as e:
            raise UserError(f"{at}: the {label} pattern is not a regex: {e}") from None
        if required not in groups:
            raise UserError(f"{at}: missing metric: the {label} pattern has no (?P<{required}>...) group")
        unknown = [g for g in groups if g not in keys]
        if unknown:
            raise UserError(
                f"{at}: the {label} pattern's group {unknown[0]!r} is not one of {', '.join(keys)}"
            )
    return MetricsFormat(kind="regex", step_pattern=step, eval_pattern=ev)


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
