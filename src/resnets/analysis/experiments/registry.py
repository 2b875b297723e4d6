"""The experiment registry: each experiment module registers its `run` function by decorator, and
`resnets experiment` lists and runs what is registered. A module of its own so the experiment modules
can import it without importing the package that imports them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from resnets.errors import ConfigError
from resnets.registry import Registry

if TYPE_CHECKING:
    from resnets.analysis.experiments.common import Settings
    from resnets.analysis.report import Report

RunFunction = Callable[["Settings"], "Report"]


@dataclass(frozen=True)
class Experiment:
    """One registered experiment: its CLI name, the one-line summary `resnets experiment --help`
    shows, and the function that runs it and returns its report."""

    name: str
    summary: str
    run: RunFunction


EXPERIMENTS: Registry[Experiment] = Registry("experiment", ConfigError)


def experiment(name: str, summary: str) -> Callable[[RunFunction], RunFunction]:
    """Decorator: register the function below as experiment `name` with `summary`; returns it unchanged."""

    def decorator(run: RunFunction) -> RunFunction:
        EXPERIMENTS.add(name, Experiment(name, summary, run))
        return run

    return decorator
