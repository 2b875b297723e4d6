"""What a checkpoint carries besides the weights, typed: `TrainState` is written as the plain dict of
tensors and containers that `torch.load(weights_only=True)` reads back (the file format is unchanged)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from resnets.errors import CheckpointError

_OPTIONAL = ("rng_cuda", "ema", "meter")


@dataclass
class TrainState:
    """Where a run stands and everything needed to continue it bit for bit."""

    step: int  # optimizer steps taken
    epoch: int  # the epoch to continue (0-based): the one in progress, or the next when batch_in_epoch is 0
    batch_in_epoch: int  # batches of `epoch` already trained
    optimizer: dict[str, Any]  # optimizer.state_dict()
    scheduler: dict[str, Any]  # the lr scheduler's counters (its lambdas are rebuilt from the config)
    scaler: dict[str, Any]  # the fp16 GradScaler's state (empty when disabled)
    rng_cpu: torch.Tensor  # torch.get_rng_state(): dropout and anything else drawn from the global RNG
    best: dict[str, Any] | None  # the best epoch so far: epoch, step, accuracy, split
    train_seconds: float  # time spent in training steps (images/s)
    wall_seconds: float  # wall time since the run started, across resumes (time to accuracy)
    images_seen: int  # training images of the whole job
    last_train: dict[str, Any] = field(default_factory=dict)  # the last full epoch's training metrics
    rng_cuda: list[torch.Tensor] | None = None  # torch.cuda.get_rng_state_all(), where CUDA exists
    ema: dict[str, Any] | None = None  # the EMA model's state_dict, when optim.ema_decay is set
    meter: dict[str, Any] | None = None  # the epoch's partial training metrics, mid-epoch only

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint's dict (the optional entries rng_cuda, ema and meter only when present)."""
        state = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {k: v for k, v in state.items() if v is not None or k not in _OPTIONAL}

    @classmethod
    def from_dict(cls, state: dict[str, Any], source: object = "training state") -> TrainState:
        """A TrainState from a checkpoint's dict; missing or unknown entries raise a CheckpointError."""
        names = {f.name for f in dataclasses.fields(cls)}
        required = {
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        missing, unknown = sorted(required - set(state)), sorted(set(state) - names)
        if missing or unknown:
            problems = [f"missing {', '.join(missing)}"] * bool(missing) + [
                f"unknown {', '.join(unknown)}"
            ] * bool(unknown)
            raise CheckpointError(
                f"{source} is not a resnets training state ({'; '.join(problems)}). Resume from another "
                "checkpoint, or start the run afresh"
            )
        return cls(**state)
