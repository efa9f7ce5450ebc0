"""Adapters: a trainer this project did not write, as a function the study can call.

An adapter is one module here, ``trainer/adapters/<name>.py``, with one function::

    def train(params: dict[str, Any], reporter: trainer.reporter.Reporter) -> None

It builds the foreign trainer from ``params`` (the space file's names), and hooks the trainer's own
callbacks to the reporter: per step ``reporter.step(loss=..., grad_norm=..., mel=..., alignment=...,
loss_scale=...)`` with what that trainer has, per eval ``reporter.eval(metric=...)``. A guard that fires
raises out of those calls (``trainer.reporter.StopRun``); the adapter need not catch it, and a trainer
that turns every exception into ``sys.exit`` is still judged by the verdict the reporter kept. Run it
with ``studies.execution.inprocess.run_study(train, space=..., study=...)``.

Like everything in ``trainer/``, an adapter never imports Optuna or the studies.

Coqui TTS cannot be one: coqui-tts-trainer's top-level package is also called ``trainer``, and one
process imports one of the two. Coqui's Trainer runs as a command line instead
(``examples/coqui/coqui_runner.py``, ``python -I``: its hooks print the same numbers as JSON lines, which
the search reads and guards as they arrive); docs/coqui.md.
"""
