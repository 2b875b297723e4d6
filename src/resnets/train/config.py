"""One typed configuration for a training run, resolved from layers:

    recipe (named, shipped)  →  --config FILE.yaml  →  command-line flags  →  --set key.sub=value

Every layer is a nested mapping; `resolve_config` merges them and builds the dataclasses, failing
on unknown keys and bad values with the key's name and what is allowed. This module is the schema and
its checks; reading and merging the layers (generic over dataclasses) is in train/parsing.py, whose
public names are re-exported here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resnets.data.base import DataRequest
from resnets.errors import ConfigError, DataError
from resnets.train.parsing import (
    MAX_CONFIG_BYTES,
    MAX_CONFIG_DEPTH,
    MAX_CONFIG_NODES,
    build_dataclass,
    deep_merge,
    load_yaml,
    parse_assignment,
)

__all__ = [
    "LR_SCALING",
    "MAX_CONFIG_BYTES",
    "MAX_CONFIG_DEPTH",
    "MAX_CONFIG_NODES",
    "OPTIMIZERS",
    "PRECISIONS",
    "SCHEDULES",
    "UNITS",
    "WARMUP_MODES",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "ScheduleConfig",
    "TrainConfig",
    "build_config",
    "build_dataclass",
    "deep_merge",
    "load_yaml",
    "parse_assignment",
    "resolve_config",
]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "multistep", "cosine", "onecycle")
UNITS = ("epoch", "step", "fraction")
WARMUP_MODES = ("linear", "constant")
LR_SCALING = ("none", "linear")


@dataclass
class ModelConfig:
    """Which network to build."""

    name: str = "resnet20"  # a name from `resnets models`
    kwargs: dict[str, Any] = field(default_factory=dict)  # builder options, e.g. {zero_init_last: true}
    # Start from these weights (fine-tuning): shipped ones ("cifar10", "resnet20.cifar10") or a resnets
    # .safetensors file. A dataset with other classes gets a fresh classifier; the images are
    # normalised with the weights' mean and std and sized as they were trained.
    weights: str | None = None


@dataclass
class DataConfig(DataRequest):
    """Which dataset and where it is (the fields of `DataRequest`, defined once in the data layer, so
    this section is what `load_dataset` takes), and how batches are made from it (the fields below)."""

    batch_size: int = 128  # the global batch: split evenly over the processes of a multi-process run
    eval_batch_size: int = 512
    augment: bool = True  # the dataset's standard augmentation (CIFAR: 4-pixel pad-crop + flip)
    crop_padding: int | None = None  # override the augmentation's padding
    flip: bool | None = None  # override the augmentation's horizontal flips
    alternate_flips: bool = False  # flip each image every other epoch (Jordan 2024) instead of by coin
    workers: int = 2  # DataLoader workers when a dataset streams from disk


@dataclass
class OptimConfig:
    """The optimizer and the loss's regularisers."""

    name: str = "sgd"  # sgd | adamw
    lr: float = 0.1
    momentum: float = 0.9  # SGD momentum
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW
    weight_decay: float = 5e-4
    no_decay_norm_bias: bool = False  # no weight decay on norm parameters and biases
    label_smoothing: float = 0.0
    grad_clip: float | None = None  # clip the global gradient norm to this
    ema_decay: float | None = None  # keep an exponential moving average of the weights (e.g. 0.999)
    # none: `lr` is the lr of the global batch as given; linear: lr × data.batch_size / lr_base_batch
    # (Goyal et al. 2017's rule, for a global batch other than the one the lr was tuned for).
    lr_scaling: str = "none"
    lr_base_batch: int = 256


@dataclass
class ScheduleConfig:
    """The learning rate as a function of the step."""

    name: str = "cosine"  # constant | multistep | cosine | onecycle
    unit: str = "epoch"  # unit of milestones: epoch | step | fraction (of the whole run)
    milestones: list[float] = field(default_factory=list)  # multistep: where lr is multiplied by gamma
    gamma: float = 0.1
    warmup: float = 0.0  # length of the warm-up, in `warmup_unit`
    warmup_unit: str | None = None  # unit of warmup (default: `unit`)
    warmup_mode: str = "linear"  # linear ramp from warmup_factor·lr, or constant warmup_factor·lr
    warmup_factor: float = 0.1
    final_factor: float = 0.0  # cosine/onecycle: lr at the end, as a fraction of lr


@dataclass
class RunConfig:
    """How long, where and how the run executes, and where it is written."""

    epochs: int | None = 15  # None: as many as max_steps needs
    max_steps: int | None = None  # stop after this many optimizer steps
    seed: int = 0
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (fp16: CUDA only)
    device: str = "auto"  # auto (CUDA if available, else CPU) | cpu | cuda | cuda:N
    # NHWC memory format for conv nets, and torch.compile: true, false, or auto (timed on first use of
    # the model, input, batch, precision and machine, then cached: resnets.train.tune)
    channels_last: bool | str = "auto"
    compile: bool | str = "auto"
    out: str | None = None  # the run directory (default runs/<model>-<data>-<time>)
    log_every: int = 50  # steps between loss/accuracy syncs and log lines
    checkpoint_every: int = 1  # epochs between checkpoints
    quiet: bool = False
    sync_bn: bool = False  # multi-process runs: batch-norm statistics over the global batch


@dataclass
class TrainConfig:
    """Everything a training run needs; written to the run directory as config.yaml."""

    recipe: str = "quick"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested data (tuples become lists) for YAML."""
        return _plain(dataclasses.asdict(self))


_CHOICES = {
    ("optim", "name"): OPTIMIZERS,
    ("schedule", "name"): SCHEDULES,
    ("schedule", "unit"): UNITS,
    ("schedule", "warmup_unit"): (*UNITS, None),
    ("schedule", "warmup_mode"): WARMUP_MODES,
    ("run", "precision"): PRECISIONS,
    ("optim", "lr_scaling"): LR_SCALING,
}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def build_config(data: Mapping[str, Any]) -> TrainConfig:
    """Validate a nested mapping into a TrainConfig (choices and ranges included)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"a config is a mapping of sections, got {type(data).__name__}")
    cfg = build_dataclass(TrainConfig, data)
    for (section, key), allowed in _CHOICES.items():
        value = getattr(getattr(cfg, section), key)
        if value not in allowed:
            raise ConfigError(f"{section}.{key} must be one of {', '.join(allowed)}, got {value!r}")
    o, d, s, r = cfg.optim, cfg.data, cfg.schedule, cfg.run
    checks = [
        (d.batch_size >= 1, "data.batch_size must be >= 1"),
        (d.eval_batch_size >= 1, "data.eval_batch_size must be >= 1"),
        (d.val_split >= 0, "data.val_split must be >= 0"),
        (d.train_subset >= 0, "data.train_subset must be >= 0 (0: every training image)"),
        (d.workers >= 0, "data.workers must be >= 0"),
        (d.crop_padding is None or d.crop_padding >= 0, "data.crop_padding must be >= 0"),
        (d.image_size is None or d.image_size >= 1, "data.image_size must be >= 1"),
        (d.channels in (None, 1, 3), "data.channels must be 1 (grey) or 3 (RGB)"),
        (o.lr > 0, "optim.lr must be > 0"),
        (o.lr_base_batch >= 1, "optim.lr_base_batch must be >= 1"),
        (0 <= o.momentum < 1, "optim.momentum must be in [0, 1)"),
        (all(0 <= b < 1 for b in o.betas), "optim.betas must be in [0, 1)"),
        (o.weight_decay >= 0, "optim.weight_decay must be >= 0"),
        (o.grad_clip is None or o.grad_clip > 0, "optim.grad_clip must be > 0 (or null for none)"),
        (s.gamma > 0, "schedule.gamma must be > 0"),
        (s.warmup >= 0, "schedule.warmup must be >= 0"),
        (all(m >= 0 for m in s.milestones), "schedule.milestones must be >= 0"),
        (0 <= s.warmup_factor <= 1 and 0 <= s.final_factor <= 1, "schedule factors must be in [0, 1]"),
        (r.checkpoint_every >= 1, "run.checkpoint_every must be >= 1"),
        (0 <= r.seed < 2**32, "run.seed must be in 0 … 2^32 - 1 (NumPy's and torch's seed range)"),
        (0 <= cfg.optim.label_smoothing < 1, "optim.label_smoothing must be in [0, 1)"),
        (cfg.optim.ema_decay is None or 0 < cfg.optim.ema_decay < 1, "optim.ema_decay must be in (0, 1)"),
        (cfg.run.epochs is not None or cfg.run.max_steps is not None, "set run.epochs or run.max_steps"),
        (cfg.run.epochs is None or cfg.run.epochs >= 1, "run.epochs must be >= 1"),
        (cfg.run.max_steps is None or cfg.run.max_steps >= 1, "run.max_steps must be >= 1"),
        (cfg.run.log_every >= 1, "run.log_every must be >= 1"),
        (r.channels_last in (True, False, "auto"), "run.channels_last must be true, false or auto"),
        (r.compile in (True, False, "auto"), "run.compile must be true, false or auto"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    _check_names(cfg)
    return cfg


def _check_names(cfg: TrainConfig) -> None:
    """Fail before any work on an unknown model, model option, dataset name or device."""
    import torch

    from resnets.data import dataset_loader
    from resnets.models.factory import create_model
    from resnets.registry import get_spec

    try:
        get_spec(cfg.model.name)
    except KeyError as err:
        raise ConfigError(f"model.name: {err}") from None
    reserved = {"num_classes", "in_chans"} & set(cfg.model.kwargs)
    if reserved:
        raise ConfigError(
            f"model.kwargs cannot set {', '.join(sorted(reserved))}: they come from the dataset"
        )
    if cfg.model.weights is not None:
        from resnets.models.factory import weights_meta

        weights_meta(cfg.model.name, cfg.model.weights)  # a ConfigError/CheckpointError before any work
    try:  # the options must fit the builder; on the meta device this allocates nothing
        with torch.device("meta"):
            create_model(cfg.model.name, **cfg.model.kwargs)
    except Exception as err:  # builders check their options in many ways (TypeError, KeyError, …)
        raise ConfigError(f"model.kwargs {cfg.model.kwargs} do not fit {cfg.model.name}: {err}") from None
    if cfg.run.device != "auto":
        try:
            torch.device(cfg.run.device)
        except (RuntimeError, ValueError, TypeError):
            raise ConfigError(
                f"run.device must be auto, cpu, cuda or cuda:N, got {cfg.run.device!r}"
            ) from None
    try:
        dataset_loader(cfg.data.name)
    except DataError as err:
        raise ConfigError(f"data.name: {err}") from None


def resolve_config(
    recipe: str | None = None,
    files: Sequence[str | Path] = (),
    flags: Mapping[str, Any] | None = None,
    assignments: Sequence[str] = (),
) -> TrainConfig:
    """Merge recipe → files → flags → `key=value` assignments and validate the result."""
    from resnets.train.recipes import DEFAULT_RECIPES, recipe_layer

    layers = [load_yaml(f) for f in files]
    if recipe is not None:  # the --recipe flag sits above the files, like every other flag
        layers.append({"recipe": recipe})
    layers.append(dict(flags or {}))
    layers.extend(parse_assignment(a) for a in assignments)
    # The recipe may be named in any layer; the last one wins. Its values sit under every layer.
    name = None
    for layer in layers:
        name = layer.get("recipe", name)
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = deep_merge(merged, layer)
    if name is None:  # none named: the dataset's default (fast-cifar for CIFAR), else quick
        data = merged.get("data")
        dataset = data.get("name") if isinstance(data, Mapping) else None
        name = DEFAULT_RECIPES.get(dataset, "quick") if isinstance(dataset, str) else "quick"
    if not isinstance(name, str):
        raise ConfigError(f"recipe must be a recipe's name, got {name!r}")
    model_name = merged.get("model", {}).get("name") if isinstance(merged.get("model"), Mapping) else None
    base = recipe_layer(name, model_name if isinstance(model_name, str) else None)
    return build_config(deep_merge(base, {**merged, "recipe": name}))
