"""The training loop and evaluation: one engine for every model, dataset and recipe.

A run is a directory (DESIGN.md): config.yaml, metrics.jsonl, TensorBoard events, checkpoints/,
model.safetensors, summary.json and plots/. The loop syncs with the device only at log intervals and
epoch ends; all randomness comes from generators keyed by (seed, epoch, batch) plus the global RNG
state saved in each checkpoint, so a resumed run continues bit for bit (on the CPU).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from resnets.data import (
    Normalize,
    epoch_generator,
    random_crop_flip,
)
from resnets.errors import ConfigError, ResnetsError
from resnets.info import count_params
from resnets.io.weights import save_weights
from resnets.registry import get_spec
from resnets.runtime import (
    ClassificationMeter,
    autocast,
    cpu_model,
    evaluate_batches,
    pick_device,
    pick_precision,
)
from resnets.train import setup
from resnets.train.callbacks import Callback, StepFunction, as_callbacks
from resnets.train.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint, tidy_checkpoint
from resnets.train.config import TrainConfig, build_config, resolve_config
from resnets.train.distributed import (
    SINGLE,
    DistInfo,
    agree,
    all_reduce_sum,
    barrier,
    device_for,
    from_env,
    process_group,
)
from resnets.train.optim import LrSchedule, build_ema, build_optimizer, build_scheduler, scaled_lr
from resnets.train.rundir import (
    BEST,
    LAST,
    NoLog,
    RunLog,
    resumable_config,
    start_or_rejoin,
    truncate_metrics,
)
from resnets.train.state import TrainState

# The numbers every summary.json holds (DESIGN.md), first among its other fields.
SUMMARY_KEYS = (
    "test_accuracy",
    "test_loss",
    "train_accuracy",
    "train_loss",
    "epochs",
    "steps",
    "wall_seconds",
    "images_per_second",
)


class TrainingDiverged(ResnetsError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingInterrupted(ResnetsError):
    """The run was stopped (Ctrl-C or a requested stop) after saving a checkpoint."""


@dataclass
class RunResult:
    """What `train` returns: where the run is, its summary and the trained model."""

    run_dir: Path
    summary: dict[str, Any]
    model: nn.Module


# ---- device and precision ----------------------------------------------------------------------


# ---- the trainer -------------------------------------------------------------------------------


class Trainer:
    """Owns everything one run needs; `fit()` trains and writes the run directory."""

    def __init__(
        self,
        cfg: TrainConfig,
        run_dir: Path,
        resume: bool = False,
        stop_after_steps: int | None = None,
        callbacks: Sequence[Callback | StepFunction] = (),
        dist: DistInfo = SINGLE,
    ) -> None:
        self.cfg, self.run_dir, self.resume = cfg, run_dir, resume
        self.stop_after_steps = stop_after_steps
        self.dist = dist
        # Every rank calls them, so a callback that runs the model runs its collectives everywhere.
        self.callbacks = as_callbacks(callbacks)
        self.stop_requested = False
        self.quiet = cfg.run.quiet or not dist.is_main

    # -- setup
    def _setup(self) -> None:
        cfg, dist = self.cfg, self.dist
        torch.manual_seed(cfg.run.seed)
        self.device = device_for(dist, pick_device(cfg.run.device))
        self.precision = pick_precision(cfg.run.precision, self.device, get_spec(cfg.model.name).family)
        self.data = setup.load_splits(cfg, dist)
        for note in self.data.notes:
            self.say(f"data: {note}")
        self.augment = setup.augmentation(cfg, self.data)
        self.model = setup.build_model(cfg, self.data, self.device)
        self.channels_last = setup.uses_channels_last(cfg)
        self.normalize = Normalize(self.data.mean, self.data.std, self.channels_last).to(self.device)
        self.net = setup.wrap_model(self.model, cfg, dist, self.device)
        self.process_batch = setup.process_batch(cfg, dist)
        self.train_batches = setup.train_batches(cfg, self.data, dist, self.device)
        self.eval_batches = setup.eval_batches(cfg, self.data, self.device)
        self.steps_per_epoch = len(self.train_batches)
        self.total_steps, self.epochs = setup.count_steps(cfg, self.steps_per_epoch)
        self.lr = scaled_lr(cfg.optim, cfg.data.batch_size)
        self.optimizer = build_optimizer(self.model, dataclasses.replace(cfg.optim, lr=self.lr))
        self.schedule = LrSchedule(cfg.schedule, self.total_steps, self.steps_per_epoch)
        self.scheduler = build_scheduler(self.optimizer, self.schedule)
        self.ema = build_ema(self.model, cfg.optim.ema_decay)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.meta = setup.model_meta(cfg, self.data)

    # -- state
    def _state(
        self, epoch: int, batch: int, meter: ClassificationMeter | None, train_seconds: float
    ) -> TrainState:
        return TrainState(
            step=self.step,
            epoch=epoch,
            batch_in_epoch=batch,
            optimizer=self.optimizer.state_dict(),
            scheduler=self._scheduler_state(),
            scaler=self.scaler.state_dict(),
            rng_cpu=torch.get_rng_state(),
            best=self.best,
            train_seconds=train_seconds,
            wall_seconds=self._wall(),
            images_seen=self.images_seen,
            last_train=self.last_train,
            rng_cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            ema=self.ema.state_dict() if self.ema is not None else None,
            meter=meter.state_dict() if meter is not None and batch > 0 else None,
        )

    def _scheduler_state(self) -> dict[str, Any]:
        # The schedule is a pure function of the step, rebuilt from the config: store only the counters.
        state = self.scheduler.state_dict()
        state["lr_lambdas"] = [None] * len(self.scheduler.lr_lambdas)
        return state

    def _save(
        self, name: str, epoch: int, batch: int, meter: ClassificationMeter | None, train_seconds: float
    ) -> None:
        if not self.dist.is_main:
            return
        save_checkpoint(
            self.run_dir / "checkpoints" / name,
            self.model.state_dict(),
            self._state(epoch, batch, meter, train_seconds).to_dict(),
            self.meta,
        )

    def _restore(self) -> TrainState:
        folder = self.run_dir / "checkpoints" / LAST
        weights, raw = load_checkpoint(folder)
        state = TrainState.from_dict(raw, folder)
        self.model.load_state_dict(weights)
        self.optimizer.load_state_dict(state.optimizer)
        self.scheduler.load_state_dict(state.scheduler)
        self.scaler.load_state_dict(state.scaler)
        torch.set_rng_state(state.rng_cpu)
        if state.rng_cuda is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state.rng_cuda)
        if self.ema is not None and state.ema is not None:
            self.ema.load_state_dict(state.ema)
        return state

    def _wall(self) -> float:
        return self.wall_before + time.perf_counter() - self.t_start

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)

    # -- the loop
    def fit(self) -> RunResult:
        """Train, evaluate each epoch, checkpoint, and write the run directory; returns the result."""
        self.t_start = time.perf_counter()
        self.wall_before = 0.0
        self._setup()
        if self.dist.is_main:  # what a writer killed mid-swap left, before anything reads or writes
            for name in (LAST, BEST):
                tidy_checkpoint(self.run_dir / "checkpoints" / name)
        barrier(self.dist)
        self.step, self.best, self.images_seen, self.last_train = 0, None, 0, {}
        self.last_lr = self.optimizer.param_groups[0]["lr"]
        start_epoch, start_batch, train_seconds, saved_meter = 0, 0, 0.0, None
        if self.resume:
            state = self._restore()
            self.step, self.best = state.step, state.best
            start_epoch, start_batch = state.epoch, state.batch_in_epoch
            train_seconds, self.wall_before = state.train_seconds, state.wall_seconds
            self.images_seen, self.last_train, saved_meter = state.images_seen, state.last_train, state.meter
            if self.step >= self.total_steps and (self.run_dir / "summary.json").is_file():
                raise ConfigError(
                    f"{self.run_dir} has already finished ({self.step} steps); start a new run, or "
                    f"evaluate this one with: resnets eval {self.run_dir}"
                )
            self.say(f"resuming {self.run_dir} at epoch {start_epoch + 1}, step {self.step}")
            if self.dist.is_main:
                truncate_metrics(self.run_dir / "metrics.jsonl", self.step)
        # TensorBoard hides events at or after purge_step: keep what was logged up to the checkpoint.
        log = (
            RunLog(self.run_dir, purge_step=self.step + 1 if self.resume else None)
            if self.dist.is_main
            else NoLog()
        )
        self.say(
            f"training {self.cfg.model.name} ({count_params(self.model):,} params) on {self.data.name} "
            f"({len(self.data.train):,} train / {len(self.data.test):,} test), "
            f"{self.device.type} {self.precision}, "
            f"{self.epochs} epochs × {self.steps_per_epoch} steps -> {self.run_dir}"
        )
        self.say(self._batch_line())
        previous = signal.getsignal(signal.SIGINT)
        # Ctrl-C stops after the current step and checkpoints, in one process. Processes of a job would
        # each stop at a step of their own and leave the others waiting in a collective: there torchrun
        # handles signals and a restarted job resumes from the last checkpoint.
        graceful = _main_thread() and not self.dist.enabled
        if graceful:
            signal.signal(signal.SIGINT, self._on_sigint)
        try:
            if self.step == 0:  # a fresh run: callbacks also see the model as initialised
                for callback in self.callbacks:
                    callback.on_fit_start(self, log)
            epoch = start_epoch - 1  # the last epoch completed, if the loop has nothing left to do
            for epoch in range(start_epoch, self.epochs):
                meter = ClassificationMeter(self.data.num_classes, self.device)
                first = start_batch if epoch == start_epoch else 0
                if saved_meter is not None and epoch == start_epoch and self.dist.is_main:
                    meter.load_state_dict(saved_meter)  # the whole job's, summed when it was saved
                train_seconds = self._train_epoch(epoch, first, meter, log, train_seconds)
                self._reduce_meter(meter)
                self.last_train = meter.compute()
                if not math.isfinite(self.last_train["loss"]):
                    self._diverged(epoch)
                self._epoch_end(epoch, self.last_train, log, train_seconds)
                for callback in self.callbacks:
                    callback.on_epoch_end(self, epoch + 1, self.last_train)
                if self.step >= self.total_steps:
                    break
            summary = self._finish(self.last_train, train_seconds, epoch)
            for callback in self.callbacks:
                callback.on_fit_end(self, summary)
        except _StopRun as stop:
            self._reduce_meter(stop.meter)
            if not torch.isfinite(stop.meter.loss_sum):  # never replace a good checkpoint with NaNs
                self._diverged(stop.epoch)
            self._save(LAST, stop.epoch, stop.batch, stop.meter, stop.train_seconds)
            ckpt = self.run_dir / "checkpoints" / LAST
            raise TrainingInterrupted(
                f"stopped at step {self.step} (epoch {stop.epoch + 1}); checkpoint saved in {ckpt}. "
                f"Resume with: resnets train --resume {self.run_dir}"
            ) from None
        finally:
            log.close()
            if graceful:
                signal.signal(signal.SIGINT, previous)
        return RunResult(self.run_dir, summary, self.model)

    def _batch_line(self) -> str:
        """The global batch, how it is split, and the lr rule: stated in every run's log."""
        o, b = self.cfg.optim, self.cfg.data.batch_size
        rule = (
            f"lr {self.lr:g} = {o.lr:g} × {b}/{o.lr_base_batch} (linear scaling rule)"
            if o.lr_scaling == "linear"
            else f"lr {self.lr:g} for the global batch (optim.lr_scaling none)"
        )
        split = f" = {self.dist.world_size} processes × {self.process_batch}" if self.dist.enabled else ""
        sync = ", batch norm over the global batch" if self.dist.enabled and self.cfg.run.sync_bn else ""
        return f"global batch {b}{split}{sync}; {rule}"

    def _reduce_meter(self, meter: ClassificationMeter) -> None:
        """Sum the epoch's training metrics over the processes (every rank then holds the job's)."""
        if not self.dist.enabled:
            return
        count = torch.tensor([meter.count], dtype=torch.float64, device=self.device)
        loss, top1, top5, confusion, count = all_reduce_sum(
            [meter.loss_sum, meter.top1, meter.top5, meter.confusion, count]
        )
        meter.loss_sum, meter.top1, meter.top5, meter.confusion = loss, top1, top5, confusion
        meter.count = int(count.item())

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.stop_requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.stop_requested = True
        print(
            "\ninterrupt: finishing this step and saving a checkpoint (Ctrl-C again to abort)",
            file=sys.stderr,
        )

    def _progress(self, epoch: int, first: int) -> Any:
        if self.quiet or not sys.stderr.isatty():
            return None
        from tqdm import tqdm

        return tqdm(
            total=self.steps_per_epoch,
            initial=first,
            desc=f"epoch {epoch + 1}/{self.epochs}",
            leave=False,
            dynamic_ncols=True,
        )

    def _train_epoch(
        self, epoch: int, first: int, meter: ClassificationMeter, log: RunLog, train_seconds: float
    ) -> float:
        """Run the batches of one epoch from `first`; returns the accumulated training seconds."""
        cfg = self.cfg
        self.model.train()
        if self.dist.enabled and first == 0:
            # Dropout masks of their own per rank (the seed alone would repeat one pattern on every
            # slice), keyed by (seed, epoch, rank) so a job resumed at an epoch draws them again.
            torch.manual_seed(int(epoch_generator(cfg.run.seed, epoch, self.dist.rank).initial_seed()))
        bar = self._progress(epoch, first)
        t0 = time.perf_counter()
        window_t, window_images = t0, self.images_seen
        window_hits, window_count = meter.top1.clone(), meter.count
        bar_t = t0
        batch = first
        try:
            for batch, (images, labels) in enumerate(self.train_batches.epoch(epoch, first), start=first):
                if self.step >= self.total_steps:
                    break
                x = random_crop_flip(
                    images,
                    self.augment,
                    epoch_generator(cfg.run.seed, epoch, batch),
                    part=(self.dist.rank * self.process_batch, cfg.data.batch_size),
                )
                loss = self._train_step(self.normalize(x), labels, meter)
                self.step += 1
                self.images_seen += len(labels) * self.dist.world_size  # the whole job's images
                if bar is not None:
                    bar.update(1)
                    if time.perf_counter() - bar_t > 0.5:  # one host sync per half second, for the bar
                        bar_t = time.perf_counter()
                        self._show(
                            bar, loss, meter, (self.images_seen - window_images) / max(bar_t - window_t, 1e-9)
                        )
                if self.step % cfg.run.log_every == 0:
                    value = float(loss)  # the one host sync per log interval
                    if agree(self.dist, not math.isfinite(value)):  # every rank stops, or none
                        self._diverged(epoch)
                    now = time.perf_counter()
                    rate = (self.images_seen - window_images) / max(now - window_t, 1e-9)
                    # Accuracy over the batches since the last log line (augmented, in training mode).
                    accuracy = int(meter.top1 - window_hits) / max(1, meter.count - window_count)
                    window_t, window_images = now, self.images_seen
                    window_hits, window_count = meter.top1.clone(), meter.count
                    lr = self.last_lr
                    log.write(
                        {
                            "split": "train_step",
                            "epoch": epoch + 1,
                            "step": self.step,
                            "loss": value,
                            "accuracy": accuracy,
                            "lr": lr,
                            "images_per_second": rate,
                        }
                    )
                    for callback in self.callbacks:
                        callback.on_step(self, log)
                    if self.dist.enabled:  # a stop one rank's callback asked for is every rank's
                        self.stop_requested = agree(self.dist, self.stop_requested)
                # In one process a stop takes effect after any step; in many, at a log interval.
                at_log = self.step % cfg.run.log_every == 0
                stop_now = self.stop_requested and (not self.dist.enabled or at_log)
                if stop_now or (self.stop_after_steps is not None and self.step >= self.stop_after_steps):
                    raise _StopRun(epoch, batch + 1, meter, train_seconds + time.perf_counter() - t0)
        finally:
            if bar is not None:
                bar.close()
        return train_seconds + time.perf_counter() - t0

    def _show(self, bar: Any, loss: torch.Tensor, meter: ClassificationMeter, rate: float) -> None:
        acc = int(meter.top1) / max(1, meter.count)
        bar.set_postfix(
            loss=f"{float(loss):.3f}", acc=f"{acc:.3f}", lr=f"{self.last_lr:.3g}", img_s=f"{rate:.0f}"
        )

    def _train_step(self, x: torch.Tensor, labels: torch.Tensor, meter: ClassificationMeter) -> torch.Tensor:
        cfg = self.cfg
        with autocast(self.device, self.precision):
            logits = self.net(x)
        logits = logits.float()
        loss = F.cross_entropy(logits, labels, label_smoothing=cfg.optim.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if cfg.optim.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.last_lr = self.optimizer.param_groups[0]["lr"]  # the lr this step used, for the logs
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        meter.update(logits, labels, loss.detach() * len(labels))
        return loss.detach()

    def _eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def _evaluate(self, split: str, per_class: bool = False) -> dict[str, Any]:
        """Metrics of the evaluated model (the EMA if kept) on a held-out split."""
        return evaluate_batches(
            self._eval_model(),
            self.eval_batches[split],
            self.normalize,
            self.data.num_classes,
            self.device,
            self.precision,
            per_class=per_class,
        )

    def _epoch_end(self, epoch: int, train: dict[str, Any], log: RunLog, train_seconds: float) -> None:
        """Log the epoch, evaluate every held-out split, checkpoint, print one line."""
        lr = self.last_lr
        rate = self.images_seen / max(train_seconds, 1e-9)
        log.write(
            {
                "split": "train",
                "epoch": epoch + 1,
                "step": self.step,
                "loss": train["loss"],
                "accuracy": train["accuracy"],
                "top5_accuracy": train["top5_accuracy"],
                "lr": lr,
                "images_per_second": rate,
                "wall_seconds": self._wall(),
            }
        )
        results = {}
        for split in self.eval_batches:
            results[split] = self._evaluate(split)
            log.write(
                {
                    "split": split,
                    "epoch": epoch + 1,
                    "step": self.step,
                    "loss": results[split]["loss"],
                    "accuracy": results[split]["accuracy"],
                    "top5_accuracy": results[split]["top5_accuracy"],
                    "wall_seconds": self._wall(),  # when this accuracy was known (time to accuracy)
                }
            )
            for callback in self.callbacks:
                callback.on_eval(self, split, results[split])
        # "best" is chosen on the validation split when there is one (He et al. tuned on 45k/5k).
        select = results.get("val", results["test"])
        is_best = self.best is None or select["accuracy"] > self.best["accuracy"]
        if is_best:
            self.best = {
                "epoch": epoch + 1,
                "step": self.step,
                "accuracy": select["accuracy"],
                "split": "val" if "val" in results else "test",
            }
        last_epoch = self.step >= self.total_steps or epoch + 1 == self.epochs
        if (epoch + 1) % self.cfg.run.checkpoint_every == 0 or last_epoch:
            self._save(LAST, epoch + 1, 0, None, train_seconds)
        if is_best:
            self._save(BEST, epoch + 1, 0, None, train_seconds)
        test = results["test"]
        self.say(
            f"epoch {epoch + 1:>3}/{self.epochs}  step {self.step:>6}  train loss {train['loss']:.4f} "
            f"acc {train['accuracy']:.4f}  test loss {test['loss']:.4f} acc {test['accuracy']:.4f}  "
            f"lr {lr:.4g}  {rate:,.0f} img/s"
        )

    def _diverged(self, epoch: int) -> None:
        found = find_checkpoint(self.run_dir / "checkpoints" / LAST)
        where = f"the last good checkpoint is {found}" if found else "no checkpoint had been written yet"
        raise TrainingDiverged(
            f"the training loss became NaN or infinite at step {self.step} (epoch {epoch + 1}); {where}. "
            "Lower the learning rate (--lr), add gradient clipping (--set optim.grad_clip=1.0) or use "
            "--precision fp32."
        )

    def _finish(self, train: dict[str, Any], train_seconds: float, epoch: int) -> dict[str, Any]:
        model = self._eval_model()
        test = self._evaluate("test", per_class=True)
        if self.dist.is_main:
            save_weights(self.run_dir / "model.safetensors", model.state_dict(), self.meta)
        summary = {
            "model": self.cfg.model.name,
            "dataset": self.data.name,
            "test_accuracy": test["accuracy"],
            "test_loss": test["loss"],
            "test_top5_accuracy": test["top5_accuracy"],
            "train_accuracy": train.get("accuracy"),
            "train_loss": train.get("loss"),
            "epochs": epoch + 1,
            "steps": self.step,
            "wall_seconds": round(self._wall(), 3),
            "images_per_second": round(self.images_seen / max(train_seconds, 1e-9), 1),
            "params": count_params(self.model),
            "device": str(self.device),
            "precision": self.precision,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "processes": self.dist.world_size,
            "global_batch": self.cfg.data.batch_size,
            "machine": platform.machine(),
            "cpu": cpu_model(),
            "best": self.best,
        }
        if "val" in self.eval_batches:
            val = self._evaluate("val")
            summary["val_accuracy"], summary["val_loss"] = val["accuracy"], val["loss"]
        if not self.dist.is_main:
            return summary
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        (self.run_dir / "eval_test.json").write_text(json.dumps(test, indent=1) + "\n")
        self.say(
            f"done: test accuracy {test['accuracy']:.4f}, loss {test['loss']:.4f} "
            f"in {summary['wall_seconds']:.1f} s; run directory {self.run_dir}"
        )
        return summary


class _StopRun(Exception):
    def __init__(self, epoch: int, batch: int, meter: ClassificationMeter, train_seconds: float) -> None:
        super().__init__("stop")
        self.epoch, self.batch, self.meter, self.train_seconds = epoch, batch, meter, train_seconds


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


# ---- public entry points ------------------------------------------------------------------------


def train(
    config: TrainConfig | dict[str, Any] | None = None,
    *,
    resume: str | Path | None = None,
    stop_after_steps: int | None = None,
    quiet: bool | None = None,
    callbacks: Sequence[Callback | StepFunction] = (),
) -> RunResult:
    """Train a model. `config` is a TrainConfig or a nested mapping of overrides on the recipe it names
    (default recipe `quick`); `resume=RUN_DIR` continues a stopped run exactly where it stopped.
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
