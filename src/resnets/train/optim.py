"""Optimizers, learning-rate schedules (as a function of the step) and weight averaging."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from resnets.train.config import OptimConfig, ScheduleConfig


def param_groups(model: nn.Module, weight_decay: float, no_decay_norm_bias: bool) -> list[dict]:
    """One group, or two when norm parameters and biases (all 1-D tensors) get no weight decay."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not no_decay_norm_bias:
        return [{"params": params, "weight_decay": weight_decay}]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD (momentum, optionally Nesterov) or AdamW, with the configured weight decay."""
    groups = param_groups(model, cfg.weight_decay, cfg.no_decay_norm_bias)
    if cfg.name == "sgd":
        kind = torch.optim.SGD
        options = {"lr": cfg.lr, "momentum": cfg.momentum, "nesterov": cfg.nesterov and cfg.momentum > 0}
    else:
        kind, options = torch.optim.AdamW, {"lr": cfg.lr, "betas": cfg.betas}
    # The fused kernel updates every tensor in one pass: resnet20's SGD step took 0.2 ms instead of 0.8 ms
    # (for-loop) on an AMX Xeon (README, Performance; benchmarks/optimizer_step.py). Others: the for-loop.
    try:
        return kind(groups, fused=True, **options)
    except (RuntimeError, ValueError, TypeError):
        return kind(groups, **options)


def scaled_lr(cfg: OptimConfig, global_batch: int) -> float:
    """The lr the optimizer starts from: `cfg.lr` as given, or scaled linearly with the global batch
    (Goyal et al. 2017, §2.1: lr × batch / base batch) when `cfg.lr_scaling` is "linear"."""
    if cfg.lr_scaling == "linear":
        return cfg.lr * global_batch / cfg.lr_base_batch
    return cfg.lr


class LrSchedule:
    """The lr multiplier at optimizer step t (0-based) of a run of `total_steps`, as a pure function.
    `planned_steps`: the length the recipe laid the schedule out for (its epochs); a run cut shorter
    (--max-steps) gets the same schedule compressed to its real length, so it still warms up, reaches
    its milestones and decays, instead of stopping part-way through it."""

    def __init__(
        self, cfg: ScheduleConfig, total_steps: int, steps_per_epoch: int, planned_steps: int | None = None
    ) -> None:
        self.cfg, self.total = cfg, max(1, total_steps)
        self.per_epoch = max(1, steps_per_epoch)
        self.shrink = min(1.0, self.total / planned_steps) if planned_steps else 1.0
        self.warmup_steps = self.to_steps(cfg.warmup, cfg.warmup_unit or cfg.unit)
        self.milestones = sorted(self.to_steps(m, cfg.unit) for m in cfg.milestones)

    def to_steps(self, amount: float, unit: str) -> int:
        """Convert an amount in `unit` (epoch, step or fraction of the run) to optimizer steps of this
        run (epochs and steps compressed as the run is, see `planned_steps`)."""
        if unit == "epoch":
            return round(amount * self.per_epoch * self.shrink)
        if unit == "fraction":
            return round(amount * self.total)
        return round(amount * self.shrink)

    def __call__(self, step: int) -> float:
        cfg = self.cfg
        if step < self.warmup_steps and cfg.name != "onecycle":
            if cfg.warmup_mode == "constant":
                return cfg.warmup_factor
            return cfg.warmup_factor + (1.0 - cfg.warmup_factor) * step / self.warmup_steps
        if cfg.name == "constant":
            return 1.0
        if cfg.name == "multistep":
            return cfg.gamma ** sum(step >= m for m in self.milestones)
        if cfg.name == "cosine":
            t = (step - self.warmup_steps) / max(1, self.total - self.warmup_steps)
            return cfg.final_factor + (1 - cfg.final_factor) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
        # One-cycle (Smith & Topin 2019): linear rise over the warm-up (default 30% of the run) from
        # warmup_factor, then a linear fall to final_factor.
        peak = self.warmup_steps or round(0.3 * self.total)
        if step < peak:
            return cfg.warmup_factor + (1.0 - cfg.warmup_factor) * step / peak
        t = (step - peak) / max(1, self.total - peak)
        return 1.0 + (cfg.final_factor - 1.0) * min(t, 1.0)


def build_scheduler(
    optimizer: torch.optim.Optimizer, schedule: LrSchedule
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepped once per optimizer step; its state is the step count."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def ema_decay_at(decay: float, updates: int) -> float:
    """The EMA's decay after `updates` updates: min(decay, (1 + n) / (10 + n)), the warm-up of
    TensorFlow's ExponentialMovingAverage(num_updates=...), so that early averages are not dominated by
    the random initial weights (at decay 0.999 they would weigh e^-1 after a full 1,000 steps)."""
    return min(decay, (1 + updates) / (10 + updates))


def build_ema(model: nn.Module, decay: float | None) -> AveragedModel | None:
    """An exponential moving average of the weights (buffers too) with a warm-up (`ema_decay_at`), or None."""
    if decay is None:
        return None

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n: torch.Tensor) -> None:
        # Called once per (device, dtype) group; n: the updates so far, counting the first (which copies
        # the weights). The decay stays a tensor on the device: no host sync per step.
        if not averaged[0].is_floating_point():  # e.g. batch norm's num_batches_tracked: the current count
            torch._foreach_copy_(averaged, current)
            return
        d = torch.clamp((1 + n) / (10 + n), max=decay).to(averaged[0].dtype)
        torch._foreach_mul_(averaged, d)
        torch._foreach_add_(averaged, torch._foreach_mul(current, 1 - d))

    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)
