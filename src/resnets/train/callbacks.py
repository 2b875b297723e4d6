"""The trainer's hooks (Lightning-style): everything that watches a run without being the loop itself
attaches here, e.g. the end-of-run plots (`resnets.analysis.plots.PlotCurves`) and the analysis probes.

Every rank calls them, so a callback that runs the model runs its collectives on every process. A
callback may set `trainer.stop_requested = True` to stop the run with a checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from resnets.train.engine import Trainer
    from resnets.train.rundir import RunLog


class Callback:
    """Override the hooks you need; each does nothing by default."""

    def on_fit_start(self, trainer: Trainer, log: RunLog) -> None:
        """A fresh run, before the first step (not called on resume): the model as initialised."""

    def on_step(self, trainer: Trainer, log: RunLog) -> None:
        """Every `run.log_every` steps, after the step's record was logged."""

    def on_eval(self, trainer: Trainer, split: str, metrics: dict[str, Any]) -> None:
        """After each held-out split was evaluated at an epoch's end."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, train: dict[str, Any]) -> None:
        """After an epoch's evaluations and checkpoints; `epoch` counts from 1."""

    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        """After the final weights and summary.json are written."""


StepFunction = Callable[["Trainer", "RunLog"], None]
"""A plain function `f(trainer, log)`: called at step 0 of a fresh run and at every log interval."""


class _StepFunctionCallback(Callback):
    def __init__(self, fn: StepFunction) -> None:
        self.fn = fn

    def on_fit_start(self, trainer: Trainer, log: RunLog) -> None:
        self.fn(trainer, log)

    def on_step(self, trainer: Trainer, log: RunLog) -> None:
        self.fn(trainer, log)


def as_callbacks(items: Iterable[Callback | StepFunction]) -> list[Callback]:
    """Callbacks as given, with plain step functions wrapped (the form `resnets.train` always took)."""
    return [c if isinstance(c, Callback) else _StepFunctionCallback(c) for c in items]
