"""The pieces a training run is built from, one small function each: data, augmentation, model, its
wrapping for many processes, batches, step counts and the weights' metadata. `Trainer` calls them."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import nn

from resnets.data import Augment, Batches, DatasetSplits, load_dataset
from resnets.errors import ConfigError
from resnets.io.weights import ModelMeta
from resnets.models.factory import create_model, weights_meta
from resnets.registry import get_spec
from resnets.train import tune
from resnets.train.config import TrainConfig
from resnets.train.distributed import DistInfo, barrier, convert_sync_batchnorm


def load_splits(cfg: TrainConfig, dist: DistInfo) -> DatasetSplits:
    """The run's dataset; local rank 0 reads (and downloads) it first, alone on its machine."""
    if dist.local_rank != 0:
        barrier(dist)
    request = cfg.data
    if cfg.model.weights is not None:
        meta = weights_meta(cfg.model.name, cfg.model.weights)
        if request.name.startswith("imagefolder:"):  # the images as the weights were trained on
            request = dataclasses.replace(
                request,
                image_size=request.image_size or meta.input_size[1],
                channels=request.channels or meta.in_chans,
            )
    data = load_dataset(request, cfg.run.seed)
    if dist.local_rank == 0:
        barrier(dist)
    if cfg.model.weights is not None:
        # A pretrained body expects its own input statistics, not the new images' (as torchvision's
        # weights.transforms()): the run normalises, and records, the weights' mean and std.
        data = dataclasses.replace(data, mean=tuple(meta.mean), std=tuple(meta.std))
    return data


def augmentation(cfg: TrainConfig, data: DatasetSplits) -> Augment:
    """The dataset's standard crop and flip, with the config's overrides (none if augment is off)."""
    if not cfg.data.augment:
        return Augment(pad=0, flip=False)
    base = data.augment
    return Augment(
        pad=base.pad if cfg.data.crop_padding is None else cfg.data.crop_padding,
        flip=base.flip if cfg.data.flip is None else cfg.data.flip,
    )


def model_kwargs(cfg: TrainConfig, data: DatasetSplits) -> dict[str, Any]:
    """The builder's keyword arguments: the config's, plus the image size for fully connected nets."""
    kwargs = dict(cfg.model.kwargs)
    if get_spec(cfg.model.name).family == "mlp":
        kwargs.setdefault("input_size", data.image_shape[1:])
    return kwargs


# Rough effective training speeds (FLOP/s) for the eager estimate of a run's length (is it long
# enough to probe?): ResNet-20 eager trained at 52 (fp32) to 86 (bf16) GFLOP/s on a 2-core AVX-512 CPU.
ASSUMED_FLOPS = {"cpu": 60e9, "cuda": 10e12}


def choose_levers(
    cfg: TrainConfig,
    model: nn.Module,
    data: DatasetSplits,
    dist: DistInfo,
    device: torch.device,
    precision: str,
    total_steps: int,
) -> tune.Levers:
    """channels_last and compile as the config asks, `auto` ones measured (resnets.train.tune). A
    multi-process run does not probe (its processes could time differently and disagree): its `auto`
    levers take the static defaults."""
    from resnets.info import count_flops

    conv = get_spec(cfg.model.name).family != "mlp"
    asked_cl = cfg.run.channels_last if conv else False
    key = tune.probe_key(
        cfg.model.name,
        cfg.model.kwargs,
        data.image_shape,
        process_batch(cfg, dist),
        precision,
        device,
        asked_cl,
        cfg.run.compile,
    )
    eager_seconds = (
        0.0
        if dist.enabled
        else (
            3
            * count_flops(model, data.image_shape)
            * total_steps
            * cfg.data.batch_size
            / ASSUMED_FLOPS.get(device.type, ASSUMED_FLOPS["cpu"])
        )
    )

    def measure(channels_last: bool | None, try_compile: bool) -> tune.Levers:
        return tune.probe(
            model,
            data.image_shape,
            key.batch,
            data.num_classes,
            precision,
            device,
            channels_last,
            try_compile,
        )

    return tune.choose(asked_cl, cfg.run.compile, key, measure, eager_seconds)


def build_model(cfg: TrainConfig, data: DatasetSplits, device: torch.device) -> nn.Module:
    """The configured model for the dataset's classes and channels, on `device` (in the default memory
    format: `choose_levers` picks the training layout)."""
    model = create_model(
        cfg.model.name,
        num_classes=data.num_classes,
        in_chans=data.image_shape[0],
        weights=cfg.model.weights,
        **model_kwargs(cfg, data),
    )
    return model.to(device)


def wrap_model(
    model: nn.Module, cfg: TrainConfig, dist: DistInfo, device: torch.device, levers: tune.Levers
) -> nn.Module:
    """What the loop calls: `model` in the chosen memory format, DistributedDataParallel across
    processes (batch norm synced on request), then torch.compile if chosen. `model` itself stays the
    unwrapped module."""
    if levers.channels_last:
        model.to(memory_format=torch.channels_last)
    net = model
    if dist.enabled:
        if cfg.run.sync_bn:
            convert_sync_batchnorm(model, device)
        from torch.nn.parallel import DistributedDataParallel

        # Rank 0's initial weights are broadcast; gradients are averaged over the processes in
        # buckets while the backward pass still runs.
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return torch.compile(net) if levers.compile else net


def process_batch(cfg: TrainConfig, dist: DistInfo) -> int:
    """Each process's slice of the global batch; refuses a batch that does not split evenly."""
    if cfg.data.batch_size % dist.world_size:
        raise ConfigError(
            f"the global batch size {cfg.data.batch_size} does not split evenly over "
            f"{dist.world_size} processes; choose a --batch-size that is a multiple of it"
        )
    return cfg.data.batch_size // dist.world_size


def train_batches(cfg: TrainConfig, data: DatasetSplits, dist: DistInfo, device: torch.device) -> Batches:
    """Shuffled global batches of the training split, each process taking its own shard of each."""
    return Batches(
        data.train,
        cfg.data.batch_size,
        shuffle=True,
        drop_last=True,
        seed=cfg.run.seed,
        device=device,
        workers=cfg.data.workers,
        shard=(dist.rank, dist.world_size),
    )


def eval_batches(cfg: TrainConfig, data: DatasetSplits, device: torch.device) -> dict[str, Batches]:
    """The held-out splits (test, and val when held out), in order. Every process evaluates the whole
    of each (the weights are the same everywhere), so each knows the best epoch without a collective."""
    sets = {"test": data.test} if data.val is None else {"test": data.test, "val": data.val}
    return {
        split: Batches(
            ds,
            cfg.data.eval_batch_size,
            shuffle=False,
            drop_last=False,
            device=device,
            workers=cfg.data.workers,
        )
        for split, ds in sets.items()
    }


def count_steps(cfg: TrainConfig, steps_per_epoch: int) -> tuple[int, int]:
    """(total steps, epochs): run.max_steps or run.epochs, the smaller where both are given."""
    if cfg.run.max_steps is not None:
        total = cfg.run.max_steps
        if cfg.run.epochs is not None:
            total = min(total, cfg.run.epochs * steps_per_epoch)
    else:
        total = cfg.run.epochs * steps_per_epoch  # type: ignore[operator]
    return total, math.ceil(total / steps_per_epoch)


def planned_steps(cfg: TrainConfig, steps_per_epoch: int) -> int | None:
    """The run length the schedule is laid out for: the recipe's epochs (None: only --max-steps given)."""
    return None if cfg.run.epochs is None else cfg.run.epochs * steps_per_epoch


def model_meta(cfg: TrainConfig, data: DatasetSplits) -> ModelMeta:
    """What the run's weights files say about the model: enough to rebuild it and preprocess input."""
    c, h, w = data.image_shape
    return ModelMeta(
        model=cfg.model.name,
        num_classes=data.num_classes,
        in_chans=c,
        input_size=[c, h, w],
        mean=list(data.mean),
        std=list(data.std),
        classes=list(data.classes),
        model_kwargs={k: list(v) if isinstance(v, tuple) else v for k, v in model_kwargs(cfg, data).items()},
        dataset=cfg.data.name,
        data_seed=cfg.run.seed,
    )
