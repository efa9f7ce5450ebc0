"""A study of a trainer this project did not write: the user's space file, read and checked.

The same search (sampler, ``StabilityPruner``, the guards, the judge, ``TrialRecord``) runs a user's
trainer two ways: a command line (``--command``, ``studies/command.py``) or a Python function in this
process (``studies/execution/inprocess.py``, calling ``trainer/reporter.py``'s ``Reporter``). Both are
described by one file, TOML, because Python 3.11 reads it without a dependency (``tomllib``), it keeps
comments, and its numbers stay numbers (YAML 1.1 readers turn ``1e-5`` into a string, JSON has no
comments). The file:

    [study]    description, trials, metric (the eval metric's name), warmup (the warmup param, in
               steps), map (the params the stability map draws), steps (a trial's usual length),
               grace_s (how long a stopped command gets after SIGTERM before SIGKILL; default 10),
               stall_s (a run with no report for that long is stopped; default 600, 0: never),
               timeout_s (a trial's wall time; default none)
    [params.NAME]  low, high, scale = log | linear | int, step; or choices = [...]; key = "a.b"
    [presets.NAME] a value for every param: the recipes the study judges (your basic, enhanced)
    [guards]   GuardConfig thresholds (trainer/config.py), e.g. explosion_min_steps = 30
    [pruner]   PrunerSettings fields;   [sampler]  n_startup_trials, gamma_fraction
    [metrics]  how the command's output reads, and score = "last_loss" for a trainer without an
               eval (studies/metrics_lines.py)
    [config]   file = "config.json": the user's config; params with a key are set in a copy per trial

Every problem is one ``UserError`` naming the file and the table, raised before a study is created.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.errors import UserError
from space.user import UserSpace, parse_space
from studies.command import CommandSpec, ConfigTarget, command_spec, config_target
from studies.guard_waits import sized_waits
from studies.metrics_lines import LAST_LOSS, METRIC, metrics_format
from studies.pruner import PrunerSettings
from studies.registry import SamplerSpec, StudyDef, study_names
from trainer.config import ConfigError, GuardConfig, TrainConfig, apply_overrides

SECTIONS = ("study", "params", "presets", "guards", "pruner", "sampler", "metrics", "config")
STUDY_FIELDS = (
    *("description", "trials", "metric", "warmup", "map", "steps", "lr"),
    *("grace_s", "stall_s", "timeout_s"),
)
# Long enough for what a healthy trainer does between two reports (a startup that loads and prepares
# its data, an eval pass, a checkpoint), short enough that a hang costs minutes, not the night.
DEFAULT_STALL_S = 600.0
# A foreign trainer's study prunes like the quick study until told otherwise: after its first evals,
# against at least 3 peers, keeping the better half.
DEFAULT_PRUNER = PrunerSettings(keep_fraction=0.5, min_step=0, n_startup_trials=4, n_min_peers=3)
DEFAULT_SAMPLER = SamplerSpec(n_startup_trials=8, gamma_fraction=0.25)


@dataclass(frozen=True, kw_only=True, slots=True)
class ForeignStudy:
    """Everything that makes a study of the user's trainer; the counterpart of ``StudyDef``.

    command: the command line each trial runs (None: a Python function run in this process).
    """

    name: str
    description: str
    space: UserSpace
    source: Path  # the space file
    n_trials: int = 20
    metric: str = "validation metric"
    steps: int | None = None  # a trial's usual length in steps, for the live view's estimate
    guards: GuardConfig = field(default_factory=GuardConfig)
    pruner: PrunerSettings = DEFAULT_PRUNER
    sampler: SamplerSpec = DEFAULT_SAMPLER
    command: CommandSpec | None = None
    config: ConfigTarget | None = None
    needs_gpu: bool = False  # the user's trainer picks its own device
    stall_s: float | None = DEFAULT_STALL_S  # no report for this long: stopped, FAIL (None: never)
    timeout_s: float | None = None  # a trial's wall time (None: no limit)
    score: str = METRIC  # what a trial's value is: its last eval's metric, or LAST_LOSS
    lr_param: str | None = None  # the param --margin multiplies ([study] lr, else a param named "lr")

    # -- what the launch and the evidence read of any study (as of ``StudyDef``) ---------------------
    @property
    def presets(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.space.presets)

    def preset_values(self) -> dict[str, dict[str, Any]]:
        return self.space.preset_values()

    @property
    def runs_project_trainer(self) -> bool:
        return False

    @property
    def metric_label(self) -> str:
        return "last training loss" if self.score == LAST_LOSS else self.metric

    @property
    def telemetry_metric(self) -> str:
        return "metric"  # trainer/reporter.py logs each eval's value under this name

    @property
    def trial_words(self) -> str:
        if self.command is None:
            return "each trial runs your trainer, its numbers read through the reporter"
        return (
            f"each trial runs `{self.command.template}`, its output read as {self.command.metrics.describe()}"
        )

    @property
    def speech_rung(self) -> None:
        """No long rung: a user's trainer has no free-running decode to judge there."""
        return None

    def warmup_of(self, params: Mapping[str, Any]) -> int:
        w = self.space.warmup
        return int(params[w]) if w else 0


AnyStudy = StudyDef | ForeignStudy


def load_foreign_study(path: Path, *, name: str, command: str | None) -> ForeignStudy:
    """The study described by the space file at ``path``, run by ``command`` (None: in process)."""
    where = str(path)
    if name in study_names():
        raise UserError(
            f"--study {name!r} is a built-in study of the project's trainer; name yours otherwise"
        )
    if not path.is_file():
        raise UserError(f"--space {path}: no such file")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{where}: not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise UserError(f"{where}: not a text file") from None
    _known(doc, SECTIONS, where, "section")
    study = _table(doc, "study", where)
    _known(study, STUDY_FIELDS, f"{where} [study]", "field")
    space = parse_space(
        doc.get("params"),
        doc.get("presets"),
        where=where,
        warmup=study.get("warmup"),
        map_axes=study.get("map"),
    )
    trials = study.get("trials", 20)
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise UserError(f"{where} [study]: trials must be an integer >= 1, got {trials!r}")
    steps = study.get("steps")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise UserError(f"{where} [study]: steps must be an integer >= 1, got {steps!r}")
    grace = study.get("grace_s", 10.0)
    if isinstance(grace, bool) or not isinstance(grace, int | float) or not 0 <= grace <= 600:
        raise UserError(f"{where} [study]: grace_s must be a number of seconds in [0, 600], got {grace!r}")
    stall_s = _seconds(study, "stall_s", DEFAULT_STALL_S, where)
    timeout_s = _seconds(study, "timeout_s", None, where)
    lr_param = study.get("lr", "lr" if "lr" in space.param_names else None)
    if lr_param is not None and lr_param not in space.param_names:
        raise UserError(
            f"{where} [study]: lr = {lr_param!r} names no param; one of {', '.join(space.param_names)}"
        )
    if lr_param is not None and not space.by_name[lr_param].numeric:
        raise UserError(
            f"{where} [study]: lr = {lr_param!r} must name a numeric param, not a categorical one"
        )
    for text_field in ("description", "metric"):
        if not isinstance(study.get(text_field, ""), str):
            raise UserError(f"{where} [study]: {text_field} must be a string")
    config = config_target(
        doc.get("config"), space, where, path.resolve().parent, required=command is not None
    )
    spec, metrics = None, metrics_format(doc.get("metrics"), where)
    if command is not None:
        spec = command_spec(command, space, metrics, config, where)
        spec = dataclasses.replace(spec, grace_s=float(grace))
    return ForeignStudy(
        name=name,
        description=study.get("description") or f"your trainer's study {name} ({path.name})",
        space=space,
        source=path.resolve(),
        n_trials=trials,
        metric=study.get("metric") or "validation metric",
        steps=steps,
        guards=_guards(_table(doc, "guards", where), where, steps=steps),
        pruner=_replace(DEFAULT_PRUNER, _table(doc, "pruner", where), f"{where} [pruner]"),
        sampler=_replace(DEFAULT_SAMPLER, _table(doc, "sampler", where), f"{where} [sampler]"),
        command=spec,
        config=config,
        stall_s=stall_s or None,  # 0: never
        timeout_s=timeout_s,
        score=metrics.score,
        lr_param=lr_param,
    )


def _seconds(study: Mapping[str, Any], name: str, default: float | None, where: str) -> float | None:
    """A [study] duration in seconds: finite and > 0 (``stall_s`` may be 0: never)."""
    value = study.get(name, default)
    if value is None:
        return None
    zero = name == "stall_s"
    number = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
    if not number or value < 0 or (value == 0 and not zero):
        bound = ">= 0 (0: never)" if zero else "> 0"
        raise UserError(f"{where} [study]: {name} must be a number of seconds {bound}, got {value!r}")
    return float(value)


def _known(table: Mapping[str, Any], known: tuple[str, ...], where: str, what: str) -> None:
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(known)}"
            raise UserError(f"{where}: unknown {what} {key!r}{hint}")


def _table(doc: Mapping[str, Any], name: str, where: str) -> dict[str, Any]:
    table = doc.get(name, {})
    if not isinstance(table, Mapping):
        raise UserError(f"{where}: [{name}] must be a table")
    return dict(table)


def _guards(table: dict[str, Any], where: str, *, steps: int | None) -> GuardConfig:
    """``[guards]`` over the trainer's defaults, checked field by field as a preset file's are; the step
    guards' waits it does not set follow the trial's length, ``steps`` (``studies/guard_waits.py``)."""
    sized = {} if steps is None else sized_waits(steps)
    try:
        return apply_overrides(
            TrainConfig(), {"guards": {**sized, **table}}, where=f"{where} [guards]"
        ).guards
    except ConfigError as e:
        raise UserError(str(e)) from None


def _replace(settings: Any, table: dict[str, Any], where: str) -> Any:
    known = tuple(f.name for f in dataclasses.fields(settings))
    _known(table, known, where, "field")
    try:
        return dataclasses.replace(settings, **table)
    except (TypeError, ValueError) as e:
        raise UserError(f"{where}: {e}") from None
