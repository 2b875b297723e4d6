"""Sweeps: the nets an experiment compares × its seeds → training runs under OUT/runs, trained through
`resnets.train` (the same code as every other run).

A sweep is resumable: with `--reuse-runs` (`Settings.reuse_runs`) a run that finished with exactly the
config it would be given is read back, one stopped at a checkpoint (Ctrl-C, a killed job) continues from
it, and anything else is trained again from scratch.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resnets.analysis.experiments.common import Settings, dataset_splits, records
from resnets.train.callbacks import Callback, StepFunction
from resnets.train.config import TrainConfig, build_config, load_yaml, resolve_config
from resnets.train.engine import RunResult, TrainingDiverged
from resnets.train.parsing import deep_merge
from resnets.train.run import train

TRAINED, RESUMED, REUSED = "trained", "resumed", "reused"  # how a sweep's run came to be


@dataclass(frozen=True)
class Net:
    """One net a sweep compares: `kind` (e.g. "plain") at `depth`, the registered `model` that builds it,
    and training overrides of its own (e.g. {"model": {"kwargs": {"depth": 10}}})."""

    kind: str
    model: str
    depth: int | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The net's name in results: kind and depth ("plain20"), or the kind alone."""
        return self.kind if self.depth is None else f"{self.kind}{self.depth}"


def grid(
    models: Mapping[str, str],
    depths: Iterable[int],
    overrides: Callable[[str, int], Mapping[str, Any]] | None = None,
) -> list[Net]:
    """Every kind at every depth, kinds outermost: `models` maps a kind to its model-name pattern
    ("resnet{d}"); `overrides(kind, depth)` gives each net its own training overrides."""
    depths = list(depths)
    return [
        Net(kind, pattern.format(d=d), d, overrides(kind, d) if overrides else {})
        for kind, pattern in models.items()
        for d in depths
    ]


def variants(pattern: str, depth: int, kwargs: Mapping[str, Mapping[str, Any]]) -> list[Net]:
    """One architecture built several ways: a net per kind, the model `pattern` ("resnet{d}") at `depth`
    with that kind's model kwargs (e.g. {"skip": "scaled"}), so the kinds differ only there."""
    return grid(
        {kind: pattern for kind in kwargs},
        [depth],
        lambda kind, _d: {"model": {"kwargs": dict(kwargs[kind])}},
    )


@dataclass
class Run:
    """One run of a sweep: its net and seed, its directory, its result and how it came to be."""

    net: Net
    seed: int
    run_dir: Path
    result: RunResult | None  # None: the loss became NaN (allowed by the sweep's `may_diverge`)
    how: str  # TRAINED, RESUMED (continued from its checkpoint) or REUSED (finished before)

    @property
    def diverged(self) -> bool:
        """Whether the run's loss became NaN before it finished."""
        return self.result is None

    @property
    def test_error(self) -> float:
        """The final test error, 1.0 (chance and worse) for a run that diverged."""
        return 1.0 if self.result is None else 1 - self.result.summary["test_accuracy"]

    def records(self, split: str) -> list[dict[str, Any]]:
        """The run's metrics.jsonl records of one split (train_step, train, test, val)."""
        return records(self.run_dir, split)

    def curve(self, split: str, value: Callable[[dict[str, Any]], float]) -> list[tuple[float, float]]:
        """(step, value(record)) for every record of `split`: one seed's curve for `mean_curve`."""
        return [(r["step"], value(r)) for r in self.records(split)]


@dataclass
class Sweep:
    """Train every net with `recipe` on `data` for `epochs` (or exactly `steps`) per seed. `overrides`
    apply to every net, each net's own on top; `run_name` names a run's directory under OUT/runs from
    the net's key, kind, model and depth and the seed."""

    settings: Settings
    nets: Sequence[Net]
    seeds: Sequence[int]
    recipe: str
    data: str
    epochs: float | None = None
    steps: int | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    log_points: int | None = None  # log (and call callbacks) about this many times per run
    may_diverge: bool = False  # a run whose loss becomes NaN is a result (a deep plain net), not an error
    run_name: str = "{key}-s{seed}"
    runs: list[Run] = field(default_factory=list, init=False)  # every run so far, in training order

    def jobs(self) -> list[tuple[Net, int]]:
        """Every (net, seed), seeds outermost: a sweep stopped halfway still has whole comparisons."""
        return [(net, seed) for seed in self.seeds for net in self.nets]

    def run_dir(self, net: Net, seed: int) -> Path:
        """Where the run of `net` with `seed` lives (no spaces in the name)."""
        name = self.run_name.format(key=net.key, kind=net.kind, model=net.model, depth=net.depth, seed=seed)
        return Path(self.settings.out) / "runs" / name.replace(" ", "-")

    def train(self, net: Net, seed: int, callbacks: Sequence[Callback | StepFunction] = ()) -> Run:
        """Train (or reuse, or resume) the run of `net` with `seed`; `callbacks` watch the training. Says
        which run of the sweep it is on, and how it ended, so a long experiment is never silent."""
        run_dir = self.run_dir(net, seed)
        where = f"[run {len(self.runs) + 1}/{len(self.jobs())}] {net.key} seed {seed}"
        print(f"{where}: {net.model} -> {run_dir}", flush=True)
        started = time.perf_counter()
        result, how = train_run(
            self.settings,
            net.model,
            run_dir,
            recipe=self.recipe,
            data=self.data,
            seed=seed,
            epochs=self.epochs,
            steps=self.steps,
            overrides=deep_merge(self.overrides, net.overrides),
            callbacks=callbacks,
            log_points=self.log_points,
            may_diverge=self.may_diverge,
        )
        run = Run(net, seed, run_dir, result, how)
        self.runs.append(run)
        ended = (
            "diverged (loss NaN)"
            if result is None
            else f"test accuracy {result.summary['test_accuracy']:.4f}"
        )
        print(f"{where}: {how}, {ended}, {time.perf_counter() - started:.0f} s", flush=True)
        return run

    def train_all(self) -> dict[str, list[Run]]:
        """Train every job; returns the runs per net key (in the order of `nets`), one per seed."""
        for net, seed in self.jobs():
            self.train(net, seed)
        return self.by_net()

    def by_net(self) -> dict[str, list[Run]]:
        """The runs so far per net key, nets in their order and each net's runs in seed order."""
        return {
            net.key: sorted((r for r in self.runs if r.net == net), key=lambda r: self.seeds.index(r.seed))
            for net in self.nets
        }


def train_run(
    settings: Settings,
    model: str,
    run_dir: Path,
    *,
    recipe: str,
    data: str,
    seed: int,
    epochs: float | None = None,
    steps: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    callbacks: Sequence[Callback | StepFunction] = (),
    log_points: int | None = None,
    may_diverge: bool = False,
) -> tuple[RunResult | None, str]:
    """Train `model` into `run_dir` (see `run_config`) and say how: TRAINED, or with
    `settings.reuse_runs` REUSED (finished with this config) or RESUMED (stopped at a checkpoint with
    it). With `may_diverge`, a run whose loss becomes NaN returns None."""
    cfg = run_config(settings, model, run_dir, recipe, data, seed, epochs, steps, overrides, log_points)
    # A callback must watch the whole run, so a watched run is never read back or continued.
    if settings.reuse_runs and not callbacks and _same_config(run_dir, cfg):
        if (run_dir / "summary.json").is_file():
            return _finished(run_dir), REUSED
        if _has_checkpoint(run_dir):
            return _guarded(lambda: train(resume=run_dir, quiet=True), may_diverge), RESUMED
    # A rerun replaces this run only (unfinished, or trained with another config): experiments with other
    # seeds running at the same time into the same OUT keep theirs.
    shutil.rmtree(run_dir, ignore_errors=True)
    return _guarded(lambda: train(cfg, callbacks=callbacks), may_diverge), TRAINED


def run_config(
    settings: Settings,
    model: str,
    run_dir: Path,
    recipe: str,
    data: str,
    seed: int,
    epochs: float | None = None,
    steps: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    log_points: int | None = None,
) -> TrainConfig:
    """The config of one quiet run of `model` with `recipe` on `data` into `run_dir`, for `epochs`
    (fractions become a step count) or exactly `steps` optimizer steps, `overrides` (a nested mapping,
    e.g. {"optim": {"lr": 0.05}}) on top. The schedule spans the run, so a short run still decays;
    `log_points` sets the log interval to about that many logs over the run, whatever its length."""
    flags: dict[str, Any] = {
        "model": {"name": model},
        # All training images, the test curve after every epoch: an experiment compares curves and
        # chooses nothing on them (the CIFAR recipes' own 5k validation split is for choosing).
        "data": {"name": data, "data_dir": settings.data_dir, "val_split": 0},
        "run": {
            "seed": seed,
            "out": str(run_dir),
            "quiet": True,
            "device": settings.device,
            "precision": settings.precision,
        },
    }
    cfg = resolve_config(recipe, flags=deep_merge(flags, overrides or {}))
    if steps is None:
        if epochs is None:
            raise ValueError("give epochs or steps")
        steps = max(1, round(epochs * steps_per_epoch(cfg)))
    cfg.run.epochs, cfg.run.max_steps = None, steps
    if log_points:
        cfg.run.log_every = max(1, steps // log_points)
    return cfg


def steps_per_epoch(cfg: TrainConfig) -> int:
    """Optimizer steps in one epoch of `cfg`'s training images (validation images held out, the
    training subset if one is asked for)."""
    train_images = len(dataset_splits(cfg.data.name, cfg.data.data_dir).train) - cfg.data.val_split
    if cfg.data.train_subset:
        train_images = min(train_images, cfg.data.train_subset)
    return max(1, train_images // cfg.data.batch_size)


def _same_config(run_dir: Path, cfg: TrainConfig) -> bool:
    """Whether `run_dir` holds a run started with exactly `cfg` (defaults filled in: older files too)."""
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        return False
    mine, theirs = cfg.to_dict(), build_config(load_yaml(saved)).to_dict()
    mine["run"]["out"] = str(run_dir)
    for d in (mine, theirs):  # a run records its data folder as an absolute path
        if d["data"]["data_dir"]:
            d["data"]["data_dir"] = str(Path(d["data"]["data_dir"]).expanduser().resolve())
    return theirs == mine


def _has_checkpoint(run_dir: Path) -> bool:
    from resnets.train.checkpoint import find_checkpoint
    from resnets.train.rundir import LAST

    return find_checkpoint(run_dir / "checkpoints" / LAST) is not None


def _finished(run_dir: Path) -> RunResult:
    """The result of the run finished in `run_dir`: its summary and its trained model."""
    from resnets.deploy.inference import load_model

    return RunResult(run_dir, json.loads((run_dir / "summary.json").read_text()), load_model(run_dir))


def _guarded(start: Callable[[], RunResult], may_diverge: bool) -> RunResult | None:
    """`start()`'s result, or None when its loss became NaN and `may_diverge` allows that."""
    try:
        return start()
    except TrainingDiverged:
        if may_diverge:
            return None
        raise
