"""Search the params of your own training function, in this process: the Python form of the study.

    from studies.execution.inprocess import run_study

    def train(params, reporter):          # your loop; three lines added
        ...
        reporter.step(loss=loss, grad_norm=norm)   # every step
        reporter.eval(metric=val_loss)             # every eval

    run_study(train, space="space.toml", study="my-study", trials=20)

``params`` holds a value for each ``[params.NAME]`` of the space file (config ``key``s are for the
command-line form: here every value comes by its name). Everything else is the search's: the sampler,
the guards and the pruner (through ``reporter``: see ``trainer/reporter.py``), the judge, the records,
resuming after Ctrl-C, ending a loop that hangs (``[study] stall_s``: ``Stalled`` is raised in it);
``python search.py --study my-study --space space.toml --report`` reads the study like any other. One process runs one trial at a time; for ``--workers`` use the command-line form.
"""

from __future__ import annotations

from pathlib import Path

from common.cli import run_cli
from common.errors import UserError
from studies.execution.function_trial import TrainFn
from studies.execution.launch import SearchRun, run_search
from studies.execution.storage import resolve_storage
from studies.foreign import load_foreign_study
from trainer.reporter import Diverged, Pruned, Reporter, Stalled, StopRun

__all__ = ["Diverged", "Pruned", "Reporter", "Stalled", "StopRun", "run_study"]


def run_study(
    train: TrainFn,
    *,
    space: str | Path,
    study: str,
    trials: int | None = None,
    runs_dir: str | Path = "runs",
    storage: str | None = None,
    seed: int = 0,
) -> int:
    """Run ``train`` as the study ``study`` until it holds ``trials`` finished trials (default: the space
    file's ``[study] trials``); the exit code ``search.py`` would give (0: done; 2: bad input, said in
    one line; 3: incomplete; 130: Ctrl-C). Running it again resumes."""

    def main(_argv: object) -> int:
        definition = load_foreign_study(Path(space), name=study, command=None)
        n = definition.n_trials if trials is None else trials
        if n < 1:
            raise UserError(f"trials must be >= 1, got {n}")
        url = resolve_storage(storage, definition.name, Path(runs_dir))
        run = SearchRun(
            study=definition,
            url=url,
            trials=n,
            seed=seed,
            runs_dir=Path(runs_dir),
            shared_storage=storage is not None,
            function=train,
        )
        return run_search(run, [])

    return run_cli(main, None)
