"""The user's search space: their trainer's own knobs, ranges and scales, read from their space file.

A study of a trainer this project did not write names its knobs in a TOML file (``studies/foreign.py``
reads the file; this module reads its ``[params]`` and ``[presets]`` tables). Each param has a range and
a scale (``log``, ``linear``, ``int``, ``categorical``) and a place it goes: the template field
``{name}`` of the command line, or, with ``key = "optimizer.lr"``, a dotted key of the trainer's config
file. The presets to validate (the user's ``basic`` and ``enhanced``) are values of those params. The
value ``UserSpace`` is a ``space.SearchSpace``: the study, the pruner, the live view, the summary and
the report read it the way they read the built-in space.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from common.errors import UserError

Scale = Literal["log", "linear", "int", "categorical"]
SCALES: tuple[str, ...] = ("log", "linear", "int", "categorical")
# Template fields the search fills itself; a param cannot take these names.
RESERVED = ("config", "trial", "run_dir", "seed")
PARAM_FIELDS = ("scale", "low", "high", "step", "log", "choices", "key")
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
KEY = re.compile(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*")
MAP_PANELS = 3  # the stability map draws the first param against at most this many others


@dataclass(frozen=True, kw_only=True, slots=True)
class Param:
    """One knob: its range on its scale, and where its value goes (``key``: a dotted config key; None:
    the command's template field of the same name). ``log``: an int param sampled on a log scale (a
    warmup of 1 to 4,000 steps: linear sampling would spend nearly every trial above 100)."""

    name: str
    scale: Scale
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    choices: tuple[Any, ...] = ()
    key: str | None = None
    log: bool = False

    @property
    def numeric(self) -> bool:
        return self.scale != "categorical"

    def distribution(self) -> BaseDistribution:
        if self.scale == "categorical":
            return CategoricalDistribution(self.choices)
        if self.scale == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return FloatDistribution(float(self.low), float(self.high), log=self.scale == "log", step=self.step)

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.scale == "categorical":
            return trial.suggest_categorical(self.name, self.choices)
        if self.scale == "int":
            return trial.suggest_int(
                self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log
            )
        return trial.suggest_float(
            self.name, float(self.low), float(self.high), log=self.scale == "log", step=self.step
        )

    def coerce(self, value: Any) -> Any:
        """A value read back from a storage (ints may come back as floats) on this param's type."""
        if self.scale == "int":
            return int(value)
        if self.numeric:
            return float(value)
        return value

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not one this param can take (None: it can). An enqueued value outside the
        distribution would be re-sampled by Optuna without a word, and the preset never judged."""
        if self.scale == "categorical":
            return None if value in self.choices else f"{value!r} is not one of {list(self.choices)}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{value!r} is not a number"
        if self.scale == "int" and not float(value).is_integer():
            return f"{value!r} is not an integer"
        if not self.low <= value <= self.high:
            return f"{value!r} lies outside the range [{self.low}, {self.high}]"
        if self.step and not _on_grid(value, self.low, self.step):
            return f"{value!r} is not on the grid {self.low} + k x {self.step}"
        return None


@dataclass(frozen=True, kw_only=True, slots=True)
class UserSpace:
    """The user's params and presets. ``warmup``: the param that is the trainer's warmup, in steps (the
    pruner does not judge a trial still warming up; the ceiling guard waits it out). ``axes``: the param
    the stability map and the boundary put on x, then those it is drawn against."""

    params: tuple[Param, ...]
    presets: tuple[tuple[str, Mapping[str, Any]], ...] = ()
    warmup: str | None = None
    map: tuple[str, ...] = ()
    warmup_scale: float = 1.0  # the protocol's: a user's warmup is on their own scale
    by_name: Mapping[str, Param] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {p.name: p for p in self.params})

    # -- space.SearchSpace ------------------------------------------------------------------------------
    @property
    def warmup_max(self) -> int:
        return int(self.by_name[self.warmup].high) if self.warmup else 0

    @property
    def warmup_step(self) -> int:
        return int(self.by_name[self.warmup].step or 1) if self.warmup else 1

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    @property
    def log_params(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params if p.scale == "log" or p.log)

    @property
    def switches(self) -> tuple[str, ...]:
        """Categorical params whose choices are true and false."""
        return tuple(
            p.name
            for p in self.params
            if p.scale == "categorical" and set(p.choices) <= {True, False} and len(p.choices) == 2
        )

    @property
    def warmup_param(self) -> str | None:
        return self.warmup

    @property
    def headline(self) -> tuple[tuple[str, str], ...]:
        return tuple((p.name, p.name[:10]) for p in self.params[:5])

    @property
    def axes(self) -> tuple[str | None, tuple[str, ...]]:
        """(x, others): the map's x ("lr" when there is one) and up to three params drawn against it."""
        if self.map:
            return self.map[0], self.map[1:]
        numeric = [p.name for p in self.params if p.numeric]
        if not numeric:
            return None, ()
        x = "lr" if "lr" in numeric else numeric[0]
        return x, tuple(n for n in numeric if n != x)[:MAP_PANELS]

    def range_of(self, name: str) -> tuple[float, float]:
        p = self.by_name[name]
        return float(p.low), float(p.high)

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        return {p.name: p.suggest(trial) for p in self.params}

    def to_overrides(self, params: Mapping[str, Any]) -> dict[str, Any]:
        missing = [p.name for p in self.params if p.name not in params]
        if missing:
            raise ValueError(f"params lack {', '.join(missing)}; expected {', '.join(self.param_names)}")
        return {p.name: p.coerce(params[p.name]) for p in self.params}

    def export_overrides(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return self.to_overrides(params)

    def preset_params(self, preset_values: Mapping[str, Any]) -> dict[str, Any]:
        return self.to_overrides(preset_values)

    def distributions(self) -> dict[str, BaseDistribution]:
        return {p.name: p.distribution() for p in self.params}

    def preset_values(self) -> dict[str, dict[str, Any]]:
        return {name: dict(values) for name, values in self.presets}


def parse_space(
    params: Any, presets: Any, *, where: str, warmup: Any = None, map_axes: Any = None
) -> UserSpace:
    """``[params]`` and ``[presets]`` tables of a space file -> a checked ``UserSpace``; anything wrong is
    one ``UserError`` naming the file, the table and what to do."""
    if not isinstance(params, Mapping) or not params:
        raise UserError(f"{where}: no [params.NAME] table: the space needs at least one param")
    parsed = tuple(_param(name, table, where) for name, table in params.items())
    names = [p.name for p in parsed]
    if warmup is not None:
        if warmup not in names:
            raise UserError(
                f"{where}: [study] warmup = {warmup!r} is not a param; params: {', '.join(names)}"
            )
        if parsed[names.index(warmup)].scale != "int":
            raise UserError(f"{where}: [study] warmup = {warmup!r} must be an int param (steps)")
    axes: tuple[str, ...] = ()
    if map_axes is not None:
        if not isinstance(map_axes, list) or not 1 <= len(map_axes) <= 1 + MAP_PANELS:
            raise UserError(f"{where}: [study] map must be a list of 1 to {1 + MAP_PANELS} param names")
        for name in map_axes:
            if name not in names or not parsed[names.index(name)].numeric:
                raise UserError(f"{where}: [study] map names {name!r}, which is not a numeric param")
        axes = tuple(map_axes)
    space = UserSpace(params=parsed, warmup=warmup, map=axes)
    return UserSpace(params=parsed, presets=_presets(presets, space, where), warmup=warmup, map=axes)


def _param(name: Any, table: Any, where: str) -> Param:
    at = f"{where} [params.{name}]"
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise UserError(f"{at}: a param name is letters, digits and _ (it is a template field {{name}})")
    if name in RESERVED:
        raise UserError(
            f"{at}: {name!r} is a field the search fills itself ({', '.join(RESERVED)}); rename it"
        )
    if not isinstance(table, Mapping):
        raise UserError(f"{at}: must be a table (low, high, scale / choices, key)")
    for k in table:
        if k not in PARAM_FIELDS:
            close = difflib.get_close_matches(str(k), PARAM_FIELDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(PARAM_FIELDS)}"
            raise UserError(f"{at}: unknown field {k!r}{hint}")
    key = table.get("key")
    if key is not None and (not isinstance(key, str) or not KEY.fullmatch(key)):
        raise UserError(f"{at}: key must be a dotted config key like 'optimizer.lr', got {key!r}")
    if "choices" in table:
        choices = table["choices"]
        if table.get("scale", "categorical") != "categorical" or {"low", "high", "step", "log"} & set(table):
            raise UserError(f"{at}: choices make a categorical param: no low, high, step or other scale")
        if not isinstance(choices, list) or len(choices) < 2 or len(set(map(repr, choices))) != len(choices):
            raise UserError(f"{at}: choices must be a list of at least two different values")
        if not all(isinstance(c, str | int | float | bool) for c in choices):
            raise UserError(f"{at}: choices must be strings, numbers or true/false")
        return Param(name=name, scale="categorical", choices=tuple(choices), key=key)
    scale = table.get("scale")
    if scale not in SCALES or scale == "categorical":
        raise UserError(f"{at}: scale must be one of log, linear, int (or give choices), got {scale!r}")
    low, high, step = table.get("low"), table.get("high"), table.get("step")
    for label, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise UserError(f"{at}: {label} must be a finite number, got {value!r}")
    if not low < high:
        raise UserError(f"{at}: low ({low}) must be below high ({high})")
    if scale == "log" and low <= 0:
        raise UserError(f"{at}: a log scale needs low > 0, got {low}")
    if scale == "log" and step is not None:
        raise UserError(f"{at}: a log scale takes no step")
    log = table.get("log", False)
    if not isinstance(log, bool) or (log and scale != "int"):
        raise UserError(f'{at}: log = true goes with scale = "int" (a float param takes scale = "log")')
    if scale == "int":
        if not (isinstance(low, int) and isinstance(high, int)):
            raise UserError(f"{at}: an int param needs integer low and high, got {low!r}, {high!r}")
        if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 1):
            raise UserError(f"{at}: an int param's step must be an integer >= 1, got {step!r}")
        if log and (step is not None or low < 1):
            raise UserError(f"{at}: an int param on a log scale needs low >= 1 and no step")
    elif step is not None and (isinstance(step, bool) or not isinstance(step, int | float) or step <= 0):
        raise UserError(f"{at}: step must be a number > 0, got {step!r}")
    if step is not None and not _on_grid(high, low, step):
        raise UserError(f"{at}: high ({high}) must be low ({low}) plus a whole number of steps ({step})")
    return Param(name=name, scale=scale, low=low, high=high, step=step, key=key, log=log)


def _presets(table: Any, space: UserSpace, where: str) -> tuple[tuple[str, Mapping[str, Any]], ...]:
    if table is None:
        return ()
    if not isinstance(table, Mapping):
        raise UserError(f"{where}: [presets] must hold tables, one per preset: [presets.basic]")
    out = []
    for name, values in table.items():
        at = f"{where} [presets.{name}]"
        if not isinstance(values, Mapping):
            raise UserError(f"{at}: must be a table of param values")
        unknown = [k for k in values if k not in space.by_name]
        if unknown:
            raise UserError(f"{at}: unknown param {unknown[0]!r}; params: {', '.join(space.param_names)}")
        missing = [n for n in space.param_names if n not in values]
        if missing:
            raise UserError(
                f"{at}: lacks {', '.join(missing)} (a preset gives every param, or the search would pick the rest)"
            )
        for n, value in values.items():
            problem = space.by_name[n].problem(value)
            if problem is not None:
                raise UserError(f"{at}: {n} = {problem}")
        out.append((str(name), space.to_overrides(values)))
    return tuple(out)


def _on_grid(value: float, low: float, step: float) -> bool:
    k = (value - low) / step
    return math.isclose(k, round(k), abs_tol=1e-9)
