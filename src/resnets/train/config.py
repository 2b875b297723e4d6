"""One typed configuration for a training run, resolved from layers:

    recipe (named, shipped)  →  --config FILE.yaml  →  command-line flags  →  --set key.sub=value

Every layer is a nested mapping; `resolve_config` merges them and builds the dataclasses, failing
on unknown keys and bad values with the key's name and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from resnets.errors import ConfigError

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


@dataclass
class DataConfig:
    """Which dataset, where it is, and how batches are made."""

    name: str = "digits"  # digits | cifar10 | cifar100 | mnist | fashion-mnist | imagefolder:PATH
    data_dir: str | None = None  # where the dataset's files are ($RESNETS_DATA_DIR or ~/.cache/resnets/data)
    download: bool = False  # fetch the official archive (with its checksum) if missing
    val_split: int = 0  # hold out this many training images for validation (He et al.: 5,000)
    batch_size: int = 128  # the global batch: split evenly over the processes of a multi-process run
    eval_batch_size: int = 512
    augment: bool = True  # the dataset's standard augmentation (CIFAR: 4-pixel pad-crop + flip)
    crop_padding: int | None = None  # override the augmentation's padding
    flip: bool | None = None  # override the augmentation's horizontal flips
    image_size: int | None = None  # imagefolder: resize to this square size
    skip_bad_images: bool = False  # imagefolder: skip unreadable files instead of failing
    workers: int = 2  # DataLoader workers when a dataset streams from disk
    max_in_memory_mb: int = 4096  # larger image folders stream from disk


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
    channels_last: bool = True  # NHWC memory format for conv nets
    compile: bool = False  # torch.compile the model
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


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """`update` over `base`, recursively for nested mappings (except free-form `kwargs`)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_assignment(text: str) -> dict[str, Any]:
    """'optim.lr=0.05' → {'optim': {'lr': 0.05}}; the value is read as YAML (numbers, booleans, lists)."""
    if "=" not in text:
        raise ConfigError(f"--set expects key.sub=value, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    out: dict[str, Any] = {}
    node = out
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


MAX_CONFIG_BYTES = 2**20  # config files are a few KB
MAX_CONFIG_NODES = 10_000  # values in a config file, every alias expanded (a "billion laughs" has 10^9)
MAX_CONFIG_DEPTH = 32


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A config file, read with YAML's safe loader only (no tags that build Python objects), and
    refused if it is larger, deeper or, with its aliases expanded, bigger than a config can be."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"config file {path} is larger than {MAX_CONFIG_BYTES:,} bytes; is it a config?"
            )
        data = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {path} cannot be read as UTF-8 text: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    except RecursionError:
        raise ConfigError(f"config file {path} is nested too deeply to be a config") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(data).__name__}")
    _check_size(data, path)
    return data


def _check_size(data: Any, path: Path) -> None:
    """Refuse cycles, nesting deeper than MAX_CONFIG_DEPTH and more than MAX_CONFIG_NODES values with
    aliases expanded: merging, validating and printing a config walk it as if it were a tree."""
    sizes: dict[int, int] = {}  # id → expanded size of an already measured container

    def size(node: Any, depth: int, open_ids: set[int]) -> int:
        if not isinstance(node, dict | list):
            return 1
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in open_ids:
            raise ConfigError(f"config file {path}: an alias refers to itself; a config must be a tree")
        if depth > MAX_CONFIG_DEPTH:
            raise ConfigError(f"config file {path} is nested more than {MAX_CONFIG_DEPTH} levels deep")
        open_ids.add(id(node))
        total = 1
        for child in (*node.keys(), *node.values()) if isinstance(node, dict) else node:
            total += size(child, depth + 1, open_ids)
            if total > MAX_CONFIG_NODES:
                raise ConfigError(
                    f"config file {path} holds more than {MAX_CONFIG_NODES:,} values once its aliases are "
                    "expanded; a config is much smaller"
                )
        open_ids.discard(id(node))
        sizes[id(node)] = total
        return total

    size(data, 0, set())


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check and convert `value` to the annotated type `hint`; ConfigError names `key` on failure."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0])
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if hint is float:
        # YAML 1.1 reads 1e-3 (no dot) as a string; inf and nan would poison training silently.
        number = None
        if isinstance(value, int | float | str) and not isinstance(value, bool):
            try:
                number = float(value)
            except (ValueError, OverflowError):
                number = None
        if number is not None and math.isfinite(number):
            return number
        raise ConfigError(f"{key} must be a{' finite' if number is not None else ''} number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be a string, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        args = typing.get_args(hint)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key} must have {len(args)} items, got {value!r}")
            return tuple(_coerce(v, a, key) for v, a in zip(value, args, strict=True))
        return [_coerce(v, args[0], key) for v in value] if args else list(value)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return dict(value)
    raise ConfigError(f"{key}: unsupported type {hint}")


def _build(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(
            f"unknown config key '{prefix}{unknown[0]}'; allowed keys under "
            f"{prefix.rstrip('.') or 'the top level'}: "
            f"{', '.join(names)}"
        )
    kwargs = {}
    for name in names:
        if name not in data:
            continue
        hint, value = hints[name], data[name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, Mapping):
                raise ConfigError(
                    f"{prefix}{name} must be a mapping of "
                    f"{', '.join(f.name for f in dataclasses.fields(hint))}"
                )
            kwargs[name] = _build(hint, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, hint, f"{prefix}{name}")
    return cls(**kwargs)


def build_config(data: Mapping[str, Any]) -> TrainConfig:
    """Validate a nested mapping into a TrainConfig (choices and ranges included)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"a config is a mapping of sections, got {type(data).__name__}")
    cfg = _build(TrainConfig, data, "")
    for (section, key), allowed in _CHOICES.items():
        value = getattr(getattr(cfg, section), key)
        if value not in allowed:
            raise ConfigError(f"{section}.{key} must be one of {', '.join(allowed)}, got {value!r}")
    o, d, s, r = cfg.optim, cfg.data, cfg.schedule, cfg.run
    checks = [
        (d.batch_size >= 1, "data.batch_size must be >= 1"),
        (d.eval_batch_size >= 1, "data.eval_batch_size must be >= 1"),
        (d.val_split >= 0, "data.val_split must be >= 0"),
        (d.workers >= 0, "data.workers must be >= 0"),
        (d.crop_padding is None or d.crop_padding >= 0, "data.crop_padding must be >= 0"),
        (d.image_size is None or d.image_size >= 1, "data.image_size must be >= 1"),
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
        (0 <= cfg.optim.label_smoothing < 1, "optim.label_smoothing must be in [0, 1)"),
        (cfg.optim.ema_decay is None or 0 < cfg.optim.ema_decay < 1, "optim.ema_decay must be in (0, 1)"),
        (cfg.run.epochs is not None or cfg.run.max_steps is not None, "set run.epochs or run.max_steps"),
        (cfg.run.epochs is None or cfg.run.epochs >= 1, "run.epochs must be >= 1"),
        (cfg.run.max_steps is None or cfg.run.max_steps >= 1, "run.max_steps must be >= 1"),
        (cfg.run.log_every >= 1, "run.log_every must be >= 1"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    _check_names(cfg)
    return cfg


def _check_names(cfg: TrainConfig) -> None:
    """Fail before any work on an unknown model, model option, dataset name or device."""
    import torch

    from resnets.data import DATASETS
    from resnets.registry import create_model, get_spec

    try:
        get_spec(cfg.model.name)
    except KeyError as err:
        raise ConfigError(f"model.name: {err}") from None
    reserved = {"num_classes", "in_chans"} & set(cfg.model.kwargs)
    if reserved:
        raise ConfigError(
            f"model.kwargs cannot set {', '.join(sorted(reserved))}: they come from the dataset"
        )
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
    if cfg.data.name not in DATASETS and not cfg.data.name.startswith("imagefolder:"):
        raise ConfigError(
            f"data.name must be one of {', '.join(DATASETS)} or imagefolder:PATH, got {cfg.data.name!r}"
        )


def resolve_config(
    recipe: str | None = None,
    files: Sequence[str | Path] = (),
    flags: Mapping[str, Any] | None = None,
    assignments: Sequence[str] = (),
) -> TrainConfig:
    """Merge recipe → files → flags → `key=value` assignments and validate the result."""
    from resnets.train.recipes import recipe_layer

    layers = [load_yaml(f) for f in files]
    if recipe is not None:  # the --recipe flag sits above the files, like every other flag
        layers.append({"recipe": recipe})
    layers.append(dict(flags or {}))
    layers.extend(parse_assignment(a) for a in assignments)
    # The recipe may be named in any layer; the last one wins. Its values sit under every layer.
    name = "quick"
    for layer in layers:
        name = layer.get("recipe", name)
    if not isinstance(name, str):
        raise ConfigError(f"recipe must be a recipe's name, got {name!r}")
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = deep_merge(merged, layer)
    model_name = merged.get("model", {}).get("name") if isinstance(merged.get("model"), Mapping) else None
    base = recipe_layer(name, model_name if isinstance(model_name, str) else None)
    return build_config(deep_merge(base, {**merged, "recipe": name}))


def data_options(cfg: TrainConfig) -> dict[str, Any]:
    """The options `load_dataset` takes, from a run's config (the one place they are copied)."""
    d = cfg.data
    return {
        "data_dir": d.data_dir,
        "download": d.download,
        "val_split": d.val_split,
        "image_size": d.image_size,
        "skip_bad_images": d.skip_bad_images,
        "max_in_memory_mb": d.max_in_memory_mb,
        "seed": cfg.run.seed,
    }
