"""Experiments that turn each claim about skip connections into a figure, a table and a verdict, trained
with the same code as every other run. `run_experiment(name, settings)` runs one and writes its
directory (results.json, PNG figures, report.md)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from resnets.analysis.experiments import (
    backprop,
    degradation,
    dynamics,
    gradients,
    highway,
    lesion,
    reproduce,
)
from resnets.analysis.experiments.common import Settings
from resnets.analysis.report import Report, write_report
from resnets.errors import ConfigError

EXPERIMENTS: dict[str, tuple[Callable[[Settings], Report], str]] = {
    "degradation": (degradation.run, "plain vs residual nets of increasing depth (He et al. 2016, Fig. 6)"),
    "gradients": (
        gradients.run,
        "gradient norm per layer at init and after training, plain/residual/highway",
    ),
    "highway": (highway.run, "plain vs highway fully connected nets on MNIST (Srivastava et al. 2015)"),
    "skip-dynamics": (dynamics.run, "branch/skip ratio and gates per block during training"),
    "lesion": (lesion.run, "delete blocks at test time (Veit et al. 2016)"),
    "backprop": (backprop.run, "the seed's back-propagation rules against autograd on a trained skipnet"),
    "reproduce": (reproduce.run, "a paper's recipe, our error beside the paper's"),
}

__all__ = ["EXPERIMENTS", "Settings", "run_experiment"]


def run_experiment(name: str, settings: Settings) -> tuple[Report, Path]:
    """Run experiment `name` and write its report into `settings.out`; returns the report and its path."""
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}")
    # Each training run under OUT/runs is replaced when the experiment trains it again (train_run), not
    # here: two processes running other seeds into one OUT must not delete each other's runs.
    report = EXPERIMENTS[name][0](settings)
    return report, write_report(report, settings.out)
