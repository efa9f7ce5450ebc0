"""`--margin` and `--validate` for a study of your trainer: its command at lr x 2^k and at other seeds,
each run guarded and judged like a trial, stored in the study and shown in its report."""

from __future__ import annotations

import sys
from pathlib import Path

import optuna
import pytest

import search
from common.cli import run_cli
from studies.evidence import margin, validate

TRAINER = """
import argparse, json, math, random
p = argparse.ArgumentParser()
p.add_argument("--lr", type=float, required=True)
p.add_argument("--seed", type=int, default=0)
a = p.parse_args()
rng = random.Random(a.seed)
for step in range(40):
    # a quiet run below lr 0.3; above it the gradient norm explodes from step 25 on
    grad = 1.0 + rng.gauss(0, 0.02) if a.lr <= 0.3 or step < 25 else 10.0 ** (step - 20)
    loss = 1.0 + math.exp(-step / 10) + abs(math.log10(a.lr / 0.01)) * 0.1 + rng.gauss(0, 0.001)
    print(json.dumps({"step": step, "loss": loss, "grad_norm": grad}))
    if step % 10 == 9:
        print(json.dumps({"step": step, "metric": loss}))
"""

SPACE = """
[study]
trials = 3
steps = 40
metric = "val loss"

[params.lr]
low = 1e-3
high = 1.0
scale = "log"

[presets.basic]
lr = 0.01

[presets.enhanced]
lr = 0.05
"""


@pytest.fixture
def study(tmp_path: Path) -> tuple[list[str], str, Path]:
    (tmp_path / "train.py").write_text(TRAINER, encoding="utf-8")
    (tmp_path / "space.toml").write_text(SPACE, encoding="utf-8")
    runs = tmp_path / "runs"
    flags = ["--study", "toy", "--space", str(tmp_path / "space.toml"), "--runs-dir", str(runs)]
    command = f"{sys.executable} {tmp_path / 'train.py'} --lr {{lr}} --seed {{seed}}"
    assert run_cli(search.main, [*flags, "--command", command]) == 0
    return flags, command, runs


def test_the_margin_and_the_validation_of_your_presets(study) -> None:
    flags, command, runs = study
    assert (
        run_cli(search.main, [*flags, "--command", command, "--margin", "basic", "--margin-max", "64"]) == 0
    )
    assert run_cli(search.main, [*flags, "--command", command, "--validate", "basic", "--seeds", "2"]) == 0

    stored = optuna.load_study(study_name="toy", storage=f"sqlite:///{runs / 'toy' / 'study.db'}")
    m = margin.stored(stored)["basic"]
    # lr 0.32 explodes: the full ladder ran x1 .. x32 (6 runs); the search gives its answer in fewer
    assert len(m.rungs) < 6 and [r.multiplier for r in m.rungs] == sorted(r.multiplier for r in m.rungs)
    assert m.largest_survived.multiplier == 16 and m.first_diverged.multiplier == 32
    assert m.first_diverged.divergence_kind == "explosion" and m.first_diverged.divergence_step < 40
    v = validate.stored_results(stored)["basic"]
    assert [r.seed for r in v.runs] == [0, 1] and v.diverged == 0 and v.stable == 2
    html = (runs / "toy" / "report.html").read_text(encoding="utf-8")
    assert 'id="margin-table"' in html and 'id="validation-table"' in html
    assert "basic: no guard fired in the study (trial 0: stable); survived up to 16x its lr" in html
    assert "fp16" not in html and "val mel" not in html  # your study's words: its metric is "val loss"


def test_what_margin_and_validate_need_is_said_in_one_line(study, tmp_path: Path, capsys) -> None:
    flags, command, _ = study
    capsys.readouterr()
    no_seed = command.replace(" --seed {seed}", "")
    assert run_cli(search.main, [*flags, "--command", no_seed, "--validate", "basic"]) == 2
    assert "takes no {seed}" in capsys.readouterr().err
    assert run_cli(search.main, [*flags, "--margin", "basic"]) == 2
    assert "give --command" in capsys.readouterr().err
    assert run_cli(search.main, [*flags, "--command", command, "--margin", "nosuch"]) == 2
    assert "not a preset of space.toml" in capsys.readouterr().err
    other = tmp_path / "other.toml"
    other.write_text(
        SPACE.replace("params.lr", "params.rate").replace("lr = 0.0", "rate = 0.0"), encoding="utf-8"
    )
    assert (
        run_cli(
            search.main,
            [
                *flags[:2],
                "--space",
                str(other),
                *flags[4:],
                "--command",
                command.replace("{lr}", "{rate}"),
                "--margin",
                "basic",
            ],
        )
        == 2
    )
    assert "names no lr param" in capsys.readouterr().err
