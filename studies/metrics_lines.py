"""How a user's command reports its numbers: its output lines, read as they arrive.

Metrics come from the process's output (stdout and stderr together), line by line:
- ``json`` (the default): a line that is a JSON object with ``loss`` is a step, with ``metric`` an eval
  (both: a step then its eval); other keys: ``step``, ``grad_norm``, ``mel``, ``alignment``,
  ``loss_scale``. ``names`` maps these to the trainer's own keys (``{metric = "val_loss"}``).
- ``regex``: for a trainer that prints its own log lines (the way Kubeflow Katib's metrics collector
  reads them): a ``step`` pattern whose named groups give ``loss`` and any of the step keys, and an
  ``eval`` pattern giving ``metric``.
Every other line is output: kept for the record's tail, never an error. The keys of the JSON lines a
run printed are kept (``MetricsFormat.keys``), so a run that reported no metric is told which
``[metrics]`` line would read them (``hint``). ``score = "last_loss"``: a trainer without an eval is
scored by its last training loss.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from common.errors import UserError
from trainer.report_contract import ReportError

STEP_KEYS = ("step", "loss", "grad_norm", "mel", "alignment", "loss_scale")
EVAL_KEYS = ("step", "metric", "alignment")
KEYS = tuple(dict.fromkeys(STEP_KEYS + EVAL_KEYS))
METRIC, LAST_LOSS = "metric", "last_loss"  # what a trial's value is: its eval metric, its last loss
SCORES = (METRIC, LAST_LOSS)
EVAL_LIKE = re.compile(r"val|eval|dev|test|metric|score|wer|cer|mcd", re.IGNORECASE)
MAX_KEYS = 12  # keys a hint names


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
    score: str = METRIC

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

    def keys(self, line: str) -> list[str]:
        """The keys with numbers of a JSON line (none for a regex format): what a hint names."""
        text = line.strip()
        if self.kind != "json" or not text.startswith("{"):
            return []
        try:
            obj = json.loads(text)
        except ValueError:
            return []
        if not isinstance(obj, dict):
            return []
        return [k for k, v in obj.items() if isinstance(v, int | float) and not isinstance(v, bool)]

    def hint(self, seen: list[str], *, stepped: bool) -> str:
        """What would read a run that reported no metric: ``seen``, the keys of its JSON lines;
        ``stepped``, whether its steps were read."""
        if self.kind == "regex":
            which = "eval" if stepped else "step"
            return f"no output line matched the [metrics] {which} pattern" + (_NO_EVAL if stepped else "")
        read = {dict(self.names).get(ours, ours) for ours in KEYS}
        unread = [k for k in seen if k not in read]
        if not unread:
            if stepped:
                return "its output had no key that looks like an eval" + _NO_EVAL
            return (
                'print a JSON line per step, {"step": 1, "loss": 2.3}, and per eval, {"step": 50, '
                '"metric": 1.9}, or read your own log lines with [metrics] format = "regex"'
            )
        names = dict(self.names)
        metric = next((k for k in unread if EVAL_LIKE.search(k)), None)
        loss = None if stepped else next((k for k in unread if "loss" in k.lower() and k != metric), None)
        names |= {"loss": loss} if loss else {}
        names |= {"metric": metric} if metric else {}
        had = f"its JSON lines had the keys {', '.join(seen)}"
        if metric is None or (not stepped and loss is None):
            return had + (_NO_EVAL if stepped else "; none reads as loss or metric")
        mapping = ", ".join(f'{ours} = "{theirs}"' for ours, theirs in names.items())
        return f"{had}; [metrics] names = {{ {mapping} }} reads them"

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
    kind, score = table.get("format", "json"), table.get("score", METRIC)
    if score not in SCORES:
        raise UserError(f'{at}: score must be "metric" (your evals) or "last_loss" (no eval), got {score!r}')
    allowed = {"json": ("format", "names", "score"), "regex": ("format", "step", "eval", "score")}
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
        return MetricsFormat(kind="json", names=tuple(names.items()), score=score)
    step, ev = table.get("step"), table.get("eval")
    for label, pattern, keys, required in (
        ("step", step, STEP_KEYS, "loss"),
        ("eval", ev, EVAL_KEYS, "metric"),
    ):
        if label == "eval" and pattern is None and score == LAST_LOSS:
            continue  # no eval to read
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
    return MetricsFormat(kind="regex", step_pattern=step, eval_pattern=ev, score=score)


_NO_EVAL = '; with no eval, [metrics] score = "last_loss" scores its last training loss'
