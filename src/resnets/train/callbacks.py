"""The trainer's hooks (Lightning-style): everything that watches a run without being the loop itself
attaches here. The run's own metrics.jsonl/TensorBoard records, its console lines and progress bar
(`resnets.train.console`), the end-of-run plots (`resnets.analysis.plots.PlotCurves`) and the analysis
probes are all callbacks.

Every rank calls them, so a callback that runs the model runs its collectives on every process. A
callback may set `trainer.stop_requested = True` to stop the run with a checkpoint. Epochs count from 1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from resnets.train.engine import Trainer
    from resnets.train.rundir import RunLog


class Callback:
    """Override the hooks you need; each does nothing by default. They run in this order."""

    def on_fit_start(self, trainer: Trainer, log: RunLog) -> None:
        """Before the first step of this process (`trainer.step` is 0 in a fresh run, not on resume)."""

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        """Before an epoch's first batch (`trainer.first_batch` > 0 when resumed mid-epoch)."""

    def on_batch_end(self, trainer: Trainer, loss: torch.Tensor) -> None:
        """After every optimizer step; `loss` is still on the device (reading it syncs: do so rarely)."""

    def on_step(self, trainer: Trainer, log: RunLog) -> None:
        """Every `run.log_every` steps, after the step's record was logged (`trainer.last_loss`)."""

    def on_train_epoch_end(self, trainer: Trainer, epoch: int, train: dict[str, Any]) -> None:
        """An epoch's training metrics summed over the job, before any evaluation."""

    def on_eval(self, trainer: Trainer, split: str, metrics: dict[str, Any]) -> None:
        """After each held-out split was evaluated at an epoch's end."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, train: dict[str, Any]) -> None:
        """After an epoch's evaluations (`trainer.last_eval`) and checkpoints."""

    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        """After the final weights and summary.json are written."""

    def teardown(self, trainer: Trainer) -> None:
        """Last, however the run ended (finished, stopped, diverged or failed): release what you hold."""


StepFunction = Callable[["Trainer", "RunLog"], None]
"""A plain function `f(trainer, log)`: called at step 0 of a fresh run and at every log interval."""


class _StepFunctionCallback(Callback):
    def __init__(self, fn: StepFunction) -> None:
        self.fn = fn

    def on_fit_start(self, trainer: Trainer, log: RunLog) -> None:
        if trainer.step == 0:  # the model as initialised, once per run
            self.fn(trainer, log)

    def on_step(self, trainer: Trainer, log: RunLog) -> None:
        self.fn(trainer, log)


def as_callbacks(items: Iterable[Callback | StepFunction]) -> list[Callback]:
    """Callbacks as given, with plain step functions wrapped (the form `resnets.train` always took)."""
    return [c if isinstance(c, Callback) else _StepFunctionCallback(c) for c in items]
