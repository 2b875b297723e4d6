"""`train()`: start a run, resume one, or rejoin one under torchrun, and hand it to the Trainer."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from resnets.errors import ConfigError
from resnets.runtime import pick_device
from resnets.train.callbacks import Callback, StepFunction
from resnets.train.config import TrainConfig, build_config, resolve_config
from resnets.train.distributed import device_for, from_env, process_group
from resnets.train.engine import RunResult, Trainer
from resnets.train.rundir import resumable_config, start_or_rejoin


def train(
    config: TrainConfig | dict[str, Any] | None = None,
    *,
    resume: str | Path | None = None,
    stop_after_steps: int | None = None,
    quiet: bool | None = None,
    callbacks: Sequence[Callback | StepFunction] = (),
) -> RunResult:
    """Train a model. `config` is a TrainConfig or a nested mapping of overrides on the recipe it names
    (default: `fast-cifar` for CIFAR data, else `quick`); `resume=RUN_DIR` continues a stopped run
    exactly where it stopped.
    `stop_after_steps` stops (as Ctrl-C does) after that many steps, leaving a resumable checkpoint;
    `callbacks` are `resnets.train.callbacks.Callback`s, or plain functions `f(trainer, log)` called in a
    fresh run at step 0 and at every log interval. Under torchrun every process calls
    this; a job torchrun restarts after a failure continues from the run's last checkpoint."""
    info = from_env()
    if resume is not None:
        cfg = resumable_config(Path(resume), quiet)
    elif config is None or isinstance(config, dict):
        cfg = resolve_config(flags=config or {})
    else:
        cfg = build_config(config.to_dict())  # validated, and a copy: the caller's object is not changed
    if resume is None and not cfg.run.out and int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0") or 0) > 0:
        raise ConfigError(
            "torchrun may restart this job (--max-restarts): give --out, so the restarted processes find "
            "the run and resume it"
        )
    device = device_for(info, pick_device(cfg.run.device))
    with process_group(info, device):
        if resume is not None:
            run_dir, resuming = Path(resume), True
        else:
            run_dir, resuming, cfg = start_or_rejoin(cfg, info, quiet)
        return Trainer(cfg, run_dir, resuming, stop_after_steps, callbacks, info).fit()
