"""What every experiment shares: its settings, training through `resnets.train` (the same code as every
other run), probe batches from the real data, and figures."""

from __future__ import annotations

import functools
import json
import shlex
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from resnets.data import DatasetSplits, Normalize, load_dataset
from resnets.runtime import pick_device
from resnets.train.callbacks import Callback, StepFunction
from resnets.train.config import resolve_config
from resnets.train.engine import RunResult, TrainingDiverged, train
from resnets.train.rundir import iter_json_lines

# He et al.'s lr 0.1 from the first iteration sends 56-layer nets to chance on CIFAR-10 within ten
# iterations (loss 3.3 -> 13 -> 2.30, gradients ~0 after), and an independent 40-line ResNet-56 written
# beside ours does the same, so it is the recipe, not the model. Their 110-layer rule (lr 0.01 for 400
# iterations, then 0.1) collapses the same way at the switch. A linear ramp from 0.01 to 0.1 over the
# first 200 iterations (Goyal et al. 2017, §2.2) trains every depth; experiments that compare depths
# give it to every net, so the recipe stays one recipe. See docs/experiments/README.md.
LINEAR_WARMUP = {
    "schedule": {"warmup": 200, "warmup_unit": "step", "warmup_mode": "linear", "warmup_factor": 0.1}
}


@dataclass
class Settings:
    """How an experiment runs; None means the experiment's own default for `quick` or the full setting."""

    quick: bool = True
    out: Path = Path("experiments")
    data: str | None = None  # dataset name (default: the experiment's, e.g. cifar10)
    data_dir: str | None = None
    seeds: list[int] | None = None
    depths: list[int] | None = None
    budget: float | None = None  # training length per run, in epochs (fractions allowed)
    recipe: str | None = None  # reproduce: which paper's recipe
    device: str = "auto"
    precision: str = "auto"
    reuse_runs: bool = False  # keep finished runs under OUT/runs whose config matches, instead of retraining
    argv: list[str] = field(default_factory=lambda: list(sys.argv))

    def pick(self, name: str, quick: Any, full: Any) -> Any:
        """The setting `name` if given, else the experiment's default for quick or full runs."""
        value = getattr(self, name)
        if value is not None:
            return value
        return quick if self.quick else full

    @property
    def command(self) -> str:
        """The command line that ran the experiment, as a user would type it."""
        argv = list(self.argv)
        if argv and argv[0].endswith(("resnets", "__main__.py", "-c")):
            argv[0] = "resnets"
        return shlex.join(argv)

    @property
    def torch_device(self) -> torch.device:
        return pick_device(self.device)


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
    overrides: dict[str, Any] | None = None,
    callbacks: Sequence[Callback | StepFunction] = (),
    log_points: int | None = None,
    may_diverge: bool = False,
) -> RunResult | None:
    """Train `model` with `recipe` on `data` for `epochs` (fractions become a step count) or exactly
    `steps` optimizer steps, quietly, into `run_dir`; `overrides` is a nested mapping on top (e.g.
    {"optim": {"lr": 0.05}}). The schedule spans the run, so a short run still decays. `log_points`
    logs (and calls `callbacks`) about that many times over the run, whatever its length. With
    `may_diverge`, a run whose loss becomes NaN (a result, for a very deep plain net) returns None."""
    from resnets.train.config import deep_merge

    flags: dict[str, Any] = {
        "model": {"name": model},
        "data": {"name": data, "data_dir": settings.data_dir},
        "run": {
            "seed": seed,
            "out": str(run_dir),
            "quiet": True,
            "device": settings.device,
            "precision": settings.precision,
        },
    }
    flags = deep_merge(flags, overrides or {})
    cfg = resolve_config(recipe, flags=flags)
    if steps is None:
        if epochs is None:
            raise ValueError("give epochs or steps")
        steps = max(1, round(epochs * _steps_per_epoch(cfg)))
    cfg.run.epochs, cfg.run.max_steps = None, steps
    if log_points:
        cfg.run.log_every = max(1, steps // log_points)
    if settings.reuse_runs and not callbacks:
        finished = _finished_run(run_dir, cfg)
        if finished is not None:
            return finished
    # A rerun replaces this run only (unfinished, or trained with another config): experiments with other
    # seeds running at the same time into the same OUT keep theirs.
    shutil.rmtree(run_dir, ignore_errors=True)
    try:
        return train(cfg, callbacks=callbacks)
    except TrainingDiverged:
        if may_diverge:
            return None
        raise


def _finished_run(run_dir: Path, cfg: Any) -> RunResult | None:
    """The result of a run already finished in `run_dir` with exactly this config, or None."""
    from resnets.deploy.inference import load_model
    from resnets.train.config import build_config, load_yaml

    summary, saved = Path(run_dir) / "summary.json", Path(run_dir) / "config.yaml"
    if not (summary.is_file() and saved.is_file()):
        return None
    mine = cfg.to_dict()
    mine["run"]["out"] = str(run_dir)
    if build_config(load_yaml(saved)).to_dict() != mine:  # defaults filled in: older files compare too
        return None
    return RunResult(Path(run_dir), json.loads(summary.read_text()), load_model(run_dir))


def _steps_per_epoch(cfg: Any) -> int:
    train_images = len(_splits(cfg.data.name, cfg.data.data_dir).train) - cfg.data.val_split
    return max(1, train_images // cfg.data.batch_size)


@functools.lru_cache(maxsize=2)
def _splits(data: str, data_dir: str | None) -> DatasetSplits:
    """The dataset, read once per experiment process: every run, probe batch and step count of an
    experiment asks for the same one."""
    return load_dataset(data, data_dir=data_dir)


def records(run_dir: Path, split: str) -> list[dict[str, Any]]:
    """The run's metrics.jsonl records of one split (train_step, train, test, val)."""
    return [r for r in iter_json_lines(Path(run_dir) / "metrics.jsonl") if r.get("split") == split]


def probe_batch(
    data: str, data_dir: str | None, n: int, seed: int = 0, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` training images (normalised as training normalises them) and labels, chosen by `seed`."""
    splits = _splits(data, data_dir)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(splits.train), generator=g)[:n]
    images, labels = splits.train.images[idx], splits.train.labels[idx]
    x = Normalize(splits.mean, splits.std)(images)
    device = device or torch.device("cpu")
    return x.to(device), labels.to(device)


def held_out_split(data: str, data_dir: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole test split, normalised, and its labels."""
    splits = _splits(data, data_dir)
    return Normalize(splits.mean, splits.std)(splits.test.images), splits.test.labels


def error_rate(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str = "auto", batch: int = 500
) -> float:
    """Top-1 error of `model` (eval mode, on its device; bf16 autocast where `precision` picks it) on
    normalised images `x`, through the one evaluation loop (resnets.runtime.evaluate_batches)."""
    from resnets.runtime import TensorBatches, evaluate_batches, pick_precision

    device = next(model.parameters()).device
    metrics = evaluate_batches(
        model,
        TensorBatches(x, y, batch, device),
        torch.nn.Identity(),
        model.num_classes,
        device,
        pick_precision(precision, device),
    )
    return 1.0 - metrics["accuracy"]


def figure(ncols: int = 1, nrows: int = 1, size: tuple[float, float] = (5.5, 4.0)) -> tuple[Any, Any]:
    """A matplotlib figure on the Agg backend (no display needed) and its axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)


def save_figure(fig: Any, out: Path, name: str) -> str:
    """Save `fig` as out/name (PNG) and close it; returns the file name for the report."""
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def seeds_for(
    settings: Settings, quick: Sequence[int] = (0, 1), full: Sequence[int] = (0, 1, 2)
) -> list[int]:
    """The seeds to run: given ones, else 2 for quick and 3 for the full setting."""
    return list(settings.pick("seeds", list(quick), list(full)))
