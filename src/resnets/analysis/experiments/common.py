"""What every experiment shares: its settings, the data (read once per process), probe batches, the one
evaluation path, and the recipes' shared pieces (the warm-up, the highway nets'
gate bias). Training runs are in `sweep.py`, figures in `resnets.analysis.plots`."""

from __future__ import annotations

import functools
import math
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from resnets.data import DatasetSplits, Normalize, load_dataset
from resnets.runtime import pick_device
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
    cpu: bool = False  # reproduce: the paper's nets with a short complete schedule (hours of a CPU)
    out: Path = Path("experiments")
    data: str | None = None  # dataset name (default: the experiment's, e.g. cifar10)
    data_dir: str | None = None
    seeds: list[int] | None = None
    depths: list[int] | None = None
    budget: float | None = None  # training length per run, in epochs (fractions allowed)
    subset: int | None = None  # degradation: a class-balanced subset of this many training images (0: all)
    recipe: str | None = None  # reproduce: which paper's recipe
    device: str = "auto"
    precision: str = "auto"
    # Runs under OUT/runs started with the same config: read back finished ones, continue stopped ones.
    reuse_runs: bool = False
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
        """The device the experiment's runs train on (`auto`: CUDA if there is one)."""
        return pick_device(self.device)


@functools.lru_cache(maxsize=2)
def dataset_splits(data: str, data_dir: str | None) -> DatasetSplits:
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
    splits = dataset_splits(data, data_dir)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(splits.train), generator=g)[:n]
    images, labels = splits.train.images[idx], splits.train.labels[idx]
    x = Normalize(splits.mean, splits.std)(images)
    device = device or torch.device("cpu")
    return x.to(device), labels.to(device)


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


def seeds_for(
    settings: Settings, quick: Sequence[int] = (0, 1), full: Sequence[int] = (0, 1, 2)
) -> list[int]:
    """The seeds to run: given ones, else 2 for quick and 3 for the full setting."""
    return list(settings.pick("seeds", list(quick), list(full)))


def carry_gate_bias(depth: int) -> float:
    """The transform-gate bias b_T at which a stack of `depth` closed gates still carries half its
    input: (1 − σ(b_T))^depth = 1/2. Srivastava et al. 2015 searched b_T in −1…−10 per net; a fixed −3
    carries only 0.953^100 ≈ 0.8% through 100 layers, and such a net did not train here."""
    t = 1 - 0.5 ** (1 / depth)
    return math.log(t / (1 - t))


def mlp_kwargs(kind: str, depth: int) -> dict[str, Any]:
    """Model kwargs of a fully connected net (highway and gradients experiments): depth, and for highway
    nets the gate bias of `carry_gate_bias`."""
    return {"depth": depth, "gate_bias": carry_gate_bias(depth)} if kind == "highway" else {"depth": depth}
