"""Experiments that turn each claim about skip connections into a figure, a table and a verdict, trained
with the same code as every other run. Each module states its sweep (`sweep.Sweep`: what it compares)
and its verdict rule, and registers itself in `EXPERIMENTS`; `run_experiment(name, settings)` runs one
and writes its directory (results.json, PNG figures, report.md)."""

from __future__ import annotations

import time
from pathlib import Path

from resnets.analysis.experiments.common import Settings
from resnets.analysis.experiments.registry import EXPERIMENTS, Experiment, experiment
from resnets.analysis.report import Report, write_report
from resnets.runtime import code_commit

# Each module registers its experiment as it is imported, and `resnets experiment --help` lists them in
# registration order, so the imports keep that order (not isort's).
# isort: off
from resnets.analysis.experiments import (
    degradation,
    gradients,
    highway,
    dynamics,
    lesion,
    landscape,
    normfree,
    shortcuts,
    skip_span,
    backprop,
    reproduce,
)
# isort: on

__all__ = [
    "EXPERIMENTS",
    "Experiment",
    "Settings",
    "backprop",
    "degradation",
    "dynamics",
    "experiment",
    "gradients",
    "highway",
    "landscape",
    "lesion",
    "normfree",
    "reproduce",
    "run_experiment",
    "shortcuts",
    "skip_span",
]


def run_experiment(name: str, settings: Settings) -> tuple[Report, Path]:
    """Run experiment `name` and write its report into `settings.out`; returns the report and its path.
    An unknown name raises ConfigError naming the closest ones."""
    # Each training run under OUT/runs is replaced when the experiment trains it again (sweep.train_run),
    # not here: two processes running other seeds into one OUT must not delete each other's runs.
    start, commit = time.perf_counter(), code_commit()  # the code it ran, even if HEAD moves meanwhile
    report = EXPERIMENTS[name].run(settings)
    # The whole experiment's wall time, training included (what a user waits for on this machine).
    report.environment["wall_minutes"] = round((time.perf_counter() - start) / 60, 1)
    if commit:
        report.environment["commit"] = commit
    return report, write_report(report, settings.out)
