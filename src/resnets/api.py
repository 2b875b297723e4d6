"""The library's top-level calls that combine layers: `resnets.train` is the training loop with the
end-of-run plots attached (training itself never imports analysis)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from resnets.analysis.plots import PlotCurves
from resnets.train.callbacks import Callback, StepFunction
from resnets.train.config import TrainConfig
from resnets.train.engine import RunResult
from resnets.train.run import train as train_loop


def train(
    config: TrainConfig | dict[str, Any] | None = None,
    *,
    resume: str | Path | None = None,
    stop_after_steps: int | None = None,
    quiet: bool | None = None,
    callbacks: Sequence[Callback | StepFunction] = (),
    plots: bool = True,
) -> RunResult:
    """`resnets.train.run.train` (see there) plus RUN/plots/curves.png at the end unless `plots=False`."""
    attached = [*callbacks, PlotCurves()] if plots else list(callbacks)
    return train_loop(
        config, resume=resume, stop_after_steps=stop_after_steps, quiet=quiet, callbacks=attached
    )
