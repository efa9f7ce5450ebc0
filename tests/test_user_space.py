"""The user's space file and command template: read, checked, and turned into params, lines and configs.

In-process and in milliseconds: what each table becomes (distributions, presets, a config copy with the
params at their keys, a filled command line), how output lines read (JSON and regex), and that every
mistake a user can make is one line naming the file and the table.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest
import yaml

from common.errors import UserError
from studies.foreign import load_foreign_study
from studies.metrics_lines import MetricsFormat, metrics_format
from trainer.reporter import ReportError

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "tests" / "byot_space.toml"
TRAINER = "python tests/byot_trainer.py --lr {lr} --grad-clip {grad_clip} --warmup {warmup_steps}"


def write(tmp_path: Path, text: str, name: str = "space.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_the_space_file_becomes_distributions_presets_and_settings(monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    study = load_foreign_study(SPACE, name="toy", command=TRAINER)
    dists = study.space.distributions()
    assert dists["lr"] == optuna.distributions.FloatDistribution(1e-3, 3.0, log=True)
    assert dists["warmup_steps"] == optuna.distributions.IntDistribution(0, 50, step=10)
    assert study.presets == ("basic", "enhanced") and study.preset_values()["enhanced"]["lr"] == 1.0
    assert study.space.warmup_param == "warmup_steps" and study.space.axes == (
        "lr",
        ("grad_clip", "warmup_steps"),
    )
    assert (study.guards.explosion_min_steps, study.guards.spike_min_steps) == (20, 20)
    assert study.n_trials == 8 and study.metric == "val loss" and study.command is not None
    line = study.command.line({"lr": 0.01, "grad_clip": 1.0, "warmup_steps": 30})
    assert line == "python tests/byot_trainer.py --lr 0.01 --grad-clip 1.0 --warmup 30"


def test_an_int_param_on_a_log_scale(tmp_path: Path) -> None:
    """A warmup of 1 to 4,000 steps: log sampling, and the maps draw it on a log axis."""
    text = '[study]\nwarmup = "w"\n[params.w]\nlow = 1\nhigh = 4000\nscale = "int"\nlog = true\n'
    space = load_foreign_study(
        write(tmp_path, text + "[presets.p]\nw = 4000\n"), name="s", command=None
    ).space
    assert space.distributions()["w"] == optuna.distributions.IntDistribution(1, 4000, log=True)
    assert space.log_params == ("w",) and space.warmup_max == 4000
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    values = [space.suggest(study.ask())["w"] for _ in range(40)]
    assert all(isinstance(v, int) for v in values) and sum(v < 100 for v in values) >= 15


def test_params_with_config_keys_go_into_a_copy_of_the_users_config(tmp_path: Path) -> None:
    config = {"optim": {"lr": 0.1, "betas": [0.9, 0.99]}, "model": {"ema": False}, "epochs": 5}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    space = write(
        tmp_path,
        """
[params.lr]
low = 1e-4
high = 1e-1
scale = "log"
key = "optim.lr"

[params.ema]
choices = [true, false]
key = "model.ema"

[config]
file = "config.yaml"
""",
    )
    study = load_foreign_study(space, name="cfg", command="echo --config {config}")
    assert study.config is not None
    written = study.config.write(tmp_path / "trial" / "config.yaml", {"optim.lr": 0.003, "model.ema": True})
    assert yaml.safe_load(written.read_text()) == {
        "optim": {"lr": 0.003, "betas": [0.9, 0.99]},
        "model": {"ema": True},
        "epochs": 5,
    }


def test_output_lines_read_as_json_or_by_regex() -> None:
    fmt = MetricsFormat(names=(("metric", "val_loss"),))
    both = fmt.parse('{"step": 50, "loss": NaN, "grad_norm": Infinity, "val_loss": 1.5}')
    assert both.step.step == 50 and math.isnan(both.step.loss) and both.step.grad_norm == math.inf
    assert both.eval.metric == 1.5
    assert (
        fmt.parse("epoch 1 done") is None and fmt.parse("{not json") is None and fmt.parse('{"x": 1}') is None
    )
    with pytest.raises(ReportError, match="loss is 'high'"):
        fmt.parse('{"loss": "high"}')
    regex = metrics_format(
        {
            "format": "regex",
            "step": r"\| step\s+(?P<step>\d+) \| loss (?P<loss>\S+) \| grad (?P<grad_norm>\S+)",
            "eval": r"EVAL step=(?P<step>\d+) val_loss=(?P<metric>\S+)",
        },
        "space.toml",
    )
    line = regex.parse("| step    12 | loss nan | grad 1.0e+03 | lr 1e-3 |")
    assert line.step.step == 12 and math.isnan(line.step.loss) and line.step.grad_norm == 1000.0
    assert regex.parse("EVAL step=20 val_loss=1.25000").eval.metric == 1.25


BAD_SPACES = {
    "not toml": ("[params.lr\nlow = 1", "not valid TOML"),
    "no params": ("[study]\ntrials = 3\n", "no [params.NAME] table"),
    "unknown section": (
        '[parms.lr]\nlow = 1\n[params.x]\nlow=0\nhigh=1\nscale="linear"',
        "did you mean 'params'",
    ),
    "bad scale": (
        '[params.lr]\nlow = 1e-4\nhigh = 1e-1\nscale = "logg"',
        "scale must be one of log, linear, int",
    ),
    "log below zero": ('[params.lr]\nlow = 0.0\nhigh = 1.0\nscale = "log"', "a log scale needs low > 0"),
    "low above high": (
        '[params.lr]\nlow = 1.0\nhigh = 0.1\nscale = "linear"',
        "low (1.0) must be below high",
    ),
    "int of floats": ('[params.w]\nlow = 0.5\nhigh = 10\nscale = "int"', "needs integer low and high"),
    "off the grid": ('[params.w]\nlow = 0\nhigh = 25\nscale = "int"\nstep = 10', "whole number of steps"),
    "typo in a field": ('[params.lr]\nlow = 1e-4\nhihg = 1e-1\nscale = "log"', "did you mean 'high'"),
    "reserved name": ('[params.config]\nlow = 0.0\nhigh = 1.0\nscale = "linear"', "a field the search fills"),
    "preset outside": (
        '[params.lr]\nlow = 1e-4\nhigh = 1e-1\nscale = "log"\n[presets.basic]\nlr = 0.5',
        "[presets.basic]: lr = 0.5 lies outside the range",
    ),
    "preset partial": (
        '[params.lr]\nlow = 1e-4\nhigh = 1e-1\nscale = "log"\n[params.c]\nchoices = [1, 2]\n[presets.basic]\nlr = 0.01',
        "[presets.basic]: lacks c",
    ),
    "bad guard": (
        '[params.lr]\nlow = 1e-4\nhigh = 1e-1\nscale = "log"\n[guards]\nspike_z = -1',
        "guards.spike_z",
    ),
    "unknown guard": (
        '[params.lr]\nlow = 1e-4\nhigh = 1e-1\nscale = "log"\n[guards]\nspike = 3',
        "unknown field",
    ),
    "log on a float": (
        '[params.lr]\nlow = 1e-4\nhigh = 1e-1\nscale = "linear"\nlog = true',
        "log = true goes with",
    ),
    "log int from 0": (
        '[params.w]\nlow = 0\nhigh = 10\nscale = "int"\nlog = true',
        "needs low >= 1 and no step",
    ),
    "warmup not a param": (
        '[study]\nwarmup = "wu"\n[params.lr]\nlow = 1e-4\nhigh = 1e-1\nscale = "log"',
        "is not a param",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_SPACES))
def test_a_bad_space_file_is_one_line_naming_the_file(tmp_path: Path, case: str) -> None:
    text, words = BAD_SPACES[case]
    path = write(tmp_path, text)
    with pytest.raises(UserError) as info:
        load_foreign_study(path, name="s", command=None)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and words in message, message


ONE_PARAM = '[params.lr]\nlow = 1e-4\nhigh = 1e-1\nscale = "log"\n'
BAD_COMMANDS = {
    "unknown field": ("python x.py --lr {lr} --clip {clip}", ONE_PARAM, "unknown field {clip}"),
    "param goes nowhere": ("python x.py", ONE_PARAM, "[params.lr]: goes nowhere"),
    "no program": ("pyhton3 x.py --lr {lr}", ONE_PARAM, "program 'pyhton3' not found"),
    "config without a file": (
        "python x.py --lr {lr} --config {config}",
        ONE_PARAM,
        "{config} needs a config file",
    ),
    "unnamed field": ("python x.py --lr {lr} {}", ONE_PARAM, "a field needs a name"),
    "bad spec": ("python x.py --lr {lr:d}", ONE_PARAM, "a field cannot be filled"),
    "regex without loss": (
        "python x.py --lr {lr}",
        ONE_PARAM
        + '[metrics]\nformat = "regex"\nstep = "step (?P<step>\\\\d+)"\neval = "(?P<metric>\\\\S+)"',
        "missing metric: the step pattern has no (?P<loss>...) group",
    ),
    "regex without eval": (
        "python x.py --lr {lr}",
        ONE_PARAM + '[metrics]\nformat = "regex"\nstep = "loss (?P<loss>\\\\S+)"',
        "missing metric: no eval pattern",
    ),
    "not a regex": (
        "python x.py --lr {lr}",
        ONE_PARAM + '[metrics]\nformat = "regex"\nstep = "loss (?P<loss>\\\\S+"\neval = "(?P<metric>.)"',
        "the step pattern is not a regex",
    ),
    "key not in config": (
        "python x.py --config {config}",
        '[params.lr]\nlow = 1e-4\nhigh = 1e-1\nscale = "log"\nkey = "optim.lrr"\n[config]\nfile = "c.json"',
        "key 'optim.lrr' is not in c.json (at optim: lr)",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_COMMANDS))
def test_a_bad_command_template_is_one_line(tmp_path: Path, case: str) -> None:
    template, text, words = BAD_COMMANDS[case]
    (tmp_path / "c.json").write_text(json.dumps({"optim": {"lr": 0.1}}))
    path = write(tmp_path, text)
    with pytest.raises(UserError) as info:
        load_foreign_study(path, name="s", command=template)
    assert "\n" not in str(info.value) and words in str(info.value), str(info.value)
