"""What a checkpoint carries besides the weights, typed: `TrainState` is written as the plain dict of
tensors and containers that `torch.load(weights_only=True)` reads back (the file format is unchanged).
`capture_state` and `restore_state` move it between a trainer and a checkpoint."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from resnets.errors import CheckpointError
from resnets.train.checkpoint import load_checkpoint

if TYPE_CHECKING:
    from resnets.train.engine import Trainer

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


def update_best(
    best: dict[str, Any] | None, results: dict[str, dict[str, Any]], epoch: int, step: int
) -> dict[str, Any] | None:
    """The new best epoch if this one's accuracy beats `best`, else None. Chosen on the validation split
    when there is one (He et al. 2016 tuned on a 45k/5k split), else on the test split."""
    split = "val" if "val" in results else "test"
    accuracy = results[split]["accuracy"]
    if best is not None and accuracy <= best["accuracy"]:
        return None
    return {"epoch": epoch, "step": step, "accuracy": accuracy, "split": split}


def capture_state(trainer: Trainer, batch: int) -> TrainState:
    """The trainer's state at the end of its epoch (`batch` 0) or after `batch` batches of it."""
    t = trainer
    # The schedule is a pure function of the step, rebuilt from the config: store only the counters.
    scheduler = t.scheduler.state_dict()
    scheduler["lr_lambdas"] = [None] * len(t.scheduler.lr_lambdas)
    return TrainState(
        step=t.step,
        epoch=t.epoch + (batch == 0),  # an epoch's end saves the next epoch's start
        batch_in_epoch=batch,
        optimizer=t.optimizer.state_dict(),
        scheduler=scheduler,
        scaler=t.scaler.state_dict(),
        rng_cpu=torch.get_rng_state(),
        best=t.best,
        train_seconds=t.train_seconds,
        wall_seconds=t.wall_seconds(),
        images_seen=t.images_seen,
        last_train=t.last_train,
        rng_cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        ema=t.ema.state_dict() if t.ema is not None else None,
        meter=t.meter.state_dict() if batch > 0 else None,
    )


def restore_state(trainer: Trainer, folder: Path) -> TrainState:
    """Load checkpoint `folder` into the trainer (weights, optimizer, schedule, scaler, RNG, EMA,
    counters and clocks); returns the state for where the loop continues."""
    weights, raw = load_checkpoint(folder)
    state, t = TrainState.from_dict(raw, folder), trainer
    t.model.load_state_dict(weights)
    t.optimizer.load_state_dict(state.optimizer)
    t.scheduler.load_state_dict(state.scheduler)
    t.scaler.load_state_dict(state.scaler)
    torch.set_rng_state(state.rng_cpu)
    if state.rng_cuda is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state.rng_cuda)
    if t.ema is not None and state.ema is not None:
        t.ema.load_state_dict(state.ema)
    t.step, t.best, t.images_seen, t.last_train = state.step, state.best, state.images_seen, state.last_train
    t.train_seconds, t.wall_before = state.train_seconds, state.wall_seconds
    return state
