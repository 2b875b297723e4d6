"""The training loop: one `Trainer` for every model, dataset and recipe, and `train()` to start one.

A run is a directory (DESIGN.md): config.yaml, metrics.jsonl, TensorBoard events, checkpoints/,
model.safetensors, summary.json and plots/. The pieces a run is built from are in `setup`, what it
logs and prints are callbacks (`rundir.MetricsLog`, `console`), its end is `summary.finish_run`. The
loop syncs with the device only at log intervals and epoch ends; all randomness comes from generators
keyed by (seed, epoch, batch) plus the global RNG state saved in each checkpoint, so a resumed run
continues bit for bit (on the CPU).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from resnets.data import AlternatingFlips, Normalize, epoch_generator, random_crop_flip
from resnets.errors import ConfigError, TrainingDiverged, TrainingInterrupted, printable
from resnets.registry import get_spec
from resnets.runtime import (
    ClassificationMeter,
    autocast,
    code_commit,
    evaluate_batches,
    pick_device,
    pick_precision,
)
from resnets.train import setup
from resnets.train.callbacks import Callback, StepFunction, as_callbacks
from resnets.train.checkpoint import find_checkpoint, save_checkpoint, tidy_checkpoint
from resnets.train.config import TrainConfig
from resnets.train.console import ConsoleLines, ProgressBar
from resnets.train.distributed import (
    SINGLE,
    DistInfo,
    agree,
    all_reduce_meter,
    barrier,
    device_for,
)
from resnets.train.interrupt import stop_on_sigint
from resnets.train.optim import LrSchedule, build_ema, build_optimizer, build_scheduler, scaled_lr
from resnets.train.rundir import (
    BEST,
    LAST,
    MetricsLog,
    NoLog,
    RunLog,
    discard_unstarted_run,
    run_lock,
    truncate_metrics,
)
from resnets.train.state import capture_state, restore_state, update_best
from resnets.train.summary import SUMMARY_KEYS, finish_run

__all__ = ["SUMMARY_KEYS", "RunResult", "Trainer", "TrainingDiverged", "TrainingInterrupted"]


@dataclass
class RunResult:
    """What `train` returns: where the run is, its summary and the trained model."""

    run_dir: Path
    summary: dict[str, Any]
    model: nn.Module


class Trainer:
    """Runs the loop: steps, epoch-end evaluation, checkpoints; everything else attaches as a callback."""

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
        self.quiet = cfg.run.quiet or not dist.is_main
        # The run's own records first (callbacks' records follow a step's), then what it prints.
        printing = [] if self.quiet else [ProgressBar(), ConsoleLines()]
        self.callbacks = [MetricsLog(), *printing, *as_callbacks(callbacks)]
        self.stop_requested = False
        self.set_up = False  # _setup finished: from here on a failed run keeps its folder

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
        self.process_batch = setup.process_batch(cfg, dist)
        self.train_batches = setup.train_batches(cfg, self.data, dist, self.device)
        self.eval_batches = setup.eval_batches(cfg, self.data, self.device)
        self.steps_per_epoch = len(self.train_batches)
        self.flips = (
            AlternatingFlips(self.train_batches.size, cfg.run.seed) if cfg.data.alternate_flips else None
        )
        self.total_steps, self.epochs = setup.count_steps(cfg, self.steps_per_epoch)
        self.levers = setup.choose_levers(
            cfg, self.model, self.data, dist, self.device, self.precision, self.total_steps
        )
        if self.levers.source != "asked":
            self.say(f"speed levers: {self.levers.describe()}")
        self.normalize = Normalize(self.data.mean, self.data.std, self.levers.channels_last).to(self.device)
        self.net = setup.wrap_model(self.model, cfg, dist, self.device, self.levers)
        self.lr = scaled_lr(cfg.optim, cfg.data.batch_size)
        self.optimizer = build_optimizer(self.model, dataclasses.replace(cfg.optim, lr=self.lr))
        self.schedule = LrSchedule(
            cfg.schedule,
            self.total_steps,
            self.steps_per_epoch,
            setup.planned_steps(cfg, self.steps_per_epoch),
        )
        self.scheduler = build_scheduler(self.optimizer, self.schedule)
        self.ema = build_ema(self.model, cfg.optim.ema_decay)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.meta = setup.model_meta(cfg, self.data)
        self.last_lr = self.optimizer.param_groups[0]["lr"]
        self.set_up = True

    def _save(self, name: str, batch: int = 0) -> None:
        """Checkpoint `name` at the end of the epoch (batch 0) or mid-epoch after `batch` batches."""
        if self.dist.is_main:
            state = capture_state(self, batch).to_dict()
            save_checkpoint(self.run_dir / "checkpoints" / name, self.model.state_dict(), state, self.meta)

    def wall_seconds(self) -> float:
        """Wall time since the run started, across resumes."""
        return self.wall_before + time.perf_counter() - self.t_start

    def images_per_second(self) -> float:
        """Training throughput of the whole job so far (time in training steps only)."""
        return self.images_seen / max(self.train_seconds, 1e-9)

    def say(self, text: str) -> None:
        """Print a line unless the run is quiet (or this is not rank 0)."""
        if not self.quiet:
            print(printable(text), flush=True)

    def _hook(self, name: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, name)(self, *args)

    def _start(self) -> RunLog:
        """Set up the run, continue a resumed one from its last checkpoint; returns the run's log."""
        self.t_start, self.wall_before = time.perf_counter(), 0.0
        self.commit = code_commit()  # the code this process runs, read before it trains
        self._setup()
        if self.dist.is_main:  # what a writer killed mid-swap left, before anything reads or writes
            for name in (LAST, BEST):
                tidy_checkpoint(self.run_dir / "checkpoints" / name)
        barrier(self.dist)
        self.step, self.best, self.images_seen, self.train_seconds = 0, None, 0, 0.0
        self.last_train, self.last_eval, self.last_loss = {}, {}, math.nan
        self.start_epoch, self.start_batch, self.saved_meter = 0, 0, None
        if self.resume:
            state = restore_state(self, self.run_dir / "checkpoints" / LAST)
            self.start_epoch, self.start_batch, self.saved_meter = (
                state.epoch,
                state.batch_in_epoch,
                state.meter,
            )
            if self.step >= self.total_steps and (self.run_dir / "summary.json").is_file():
                raise ConfigError(
                    f"{self.run_dir} has already finished ({self.step} steps); start a new run, or "
                    f"evaluate this one with: resnets eval {self.run_dir}"
                )
            if self.dist.is_main:
                truncate_metrics(self.run_dir / "metrics.jsonl", self.step)
        # TensorBoard hides events at or after purge_step: keep what was logged up to the checkpoint.
        purge = self.step + 1 if self.resume else None
        return RunLog(self.run_dir, purge_step=purge) if self.dist.is_main else NoLog()

    # -- the loop
    def fit(self) -> RunResult:
        """Train, evaluate each epoch, checkpoint, and write the run directory; returns the result."""
        try:
            with run_lock(self.run_dir, self.dist.is_main):
                return self._fit()
        except BaseException:
            if not self.resume and not self.set_up and self.dist.is_main:
                discard_unstarted_run(self.run_dir)
            raise

    def _fit(self) -> RunResult:
        log = self._start()
        self.epoch = self.start_epoch - 1  # the last epoch completed, if the loop has nothing left to do
        try:
            with stop_on_sigint(self):
                self._hook("on_fit_start", log)
                for epoch in range(self.start_epoch, self.epochs):
                    self.epoch = epoch
                    resumed = epoch == self.start_epoch
                    self.first_batch = self.start_batch if resumed else 0
                    self.meter = ClassificationMeter(self.data.num_classes, self.device)
                    if resumed and self.saved_meter is not None and self.dist.is_main:
                        self.meter.load_state_dict(self.saved_meter)  # the whole job's, summed when saved
                    self._train_epoch(log)
                    self._end_epoch()
                    if self.step >= self.total_steps:
                        break
                summary = finish_run(self, self.epoch + 1)
                self._hook("on_fit_end", summary)
        except _StopRun as stop:
            all_reduce_meter(self.meter, self.dist, self.device)
            if not torch.isfinite(self.meter.loss_sum):  # never replace a good checkpoint with NaNs
                self._diverged()
            self._save(LAST, stop.batch)
            raise TrainingInterrupted(
                f"stopped at step {self.step} (epoch {self.epoch + 1}); checkpoint saved in "
                f"{self.run_dir / 'checkpoints' / LAST}. Resume with: resnets train --resume {self.run_dir}"
            ) from None
        finally:
            self._hook("teardown")
            log.close()
        return RunResult(self.run_dir, summary, self.model)

    def _train_epoch(self, log: RunLog) -> None:
        """Run the batches of one epoch from `first_batch`, timing them into `train_seconds`."""
        cfg, epoch, dist = self.cfg, self.epoch, self.dist
        self.model.train()
        if dist.enabled and self.first_batch == 0:
            # Dropout masks of their own per rank (the seed alone would repeat one pattern on every
            # slice), keyed by (seed, epoch, rank) so a job resumed at an epoch draws them again.
            torch.manual_seed(int(epoch_generator(cfg.run.seed, epoch, dist.rank).initial_seed()))
        self._hook("on_epoch_start", epoch + 1)
        batches = self.train_batches.epoch(epoch, self.first_batch)
        t0 = time.perf_counter()
        for batch, (images, labels) in enumerate(batches, start=self.first_batch):
            if self.step >= self.total_steps:
                break
            generator = epoch_generator(cfg.run.seed, epoch, batch)
            part = (dist.rank * self.process_batch, cfg.data.batch_size)
            indices = self.train_batches.batch_indices(epoch, batch) if self.flips else None
            flips = self.flips(indices, epoch) if self.flips and indices is not None else None
            loss = self._train_step(
                self.normalize(random_crop_flip(images, self.augment, generator, part, flips)), labels
            )
            self.step += 1
            self.images_seen += len(labels) * dist.world_size  # the whole job's images
            self._hook("on_batch_end", loss)
            at_log = self.step % cfg.run.log_every == 0
            if at_log:
                self.last_loss = float(loss)  # the one host sync per log interval
                if agree(dist, not math.isfinite(self.last_loss)):  # every rank stops, or none
                    self._diverged()
                self._hook("on_step", log)
                if dist.enabled:  # a stop one rank's callback asked for is every rank's
                    self.stop_requested = agree(dist, self.stop_requested)
            # In one process a stop takes effect after any step; in many, at a log interval.
            stop_now = self.stop_requested and (not dist.enabled or at_log)
            if stop_now or (self.stop_after_steps is not None and self.step >= self.stop_after_steps):
                self.train_seconds += time.perf_counter() - t0
                raise _StopRun(batch + 1)
        self.train_seconds += time.perf_counter() - t0

    def _train_step(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
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
        self.meter.update(logits, labels, loss.detach() * len(labels))
        return loss.detach()

    def _end_epoch(self) -> None:
        """The epoch's training metrics over the job, the watched held-out split evaluated, checkpoints."""
        epoch = self.epoch + 1
        all_reduce_meter(self.meter, self.dist, self.device)
        self.last_train = self.meter.compute()
        if not math.isfinite(self.last_train["loss"]):
            self._diverged()
        self._hook("on_train_epoch_end", epoch, self.last_train)
        self.last_eval = {}
        for split in self.watched_splits():
            self.last_eval[split] = self.evaluate(split)
            self._hook("on_eval", split, self.last_eval[split])
        best = update_best(self.best, self.last_eval, epoch, self.step)
        self.best = best or self.best
        last_epoch = self.step >= self.total_steps or epoch == self.epochs
        if epoch % self.cfg.run.checkpoint_every == 0 or last_epoch:
            self._save(LAST)
        if best is not None:
            self._save(BEST)
        self._hook("on_epoch_end", epoch, self.last_train)

    def watched_splits(self) -> list[str]:
        """The splits evaluated after every epoch: the validation split when one is held out, so that
        the test set is touched once, at the end (He et al. 2016 chose on a 45k/5k split); else test."""
        return ["val"] if "val" in self.eval_batches else ["test"]

    def eval_model(self) -> nn.Module:
        """The model evaluated and saved: the EMA average if one is kept."""
        return self.ema.module if self.ema is not None else self.model

    def evaluate(self, split: str, per_class: bool = False) -> dict[str, Any]:
        """Metrics of the evaluated model on a held-out split."""
        return evaluate_batches(
            self.eval_model(),
            self.eval_batches[split],
            self.normalize,
            self.data.num_classes,
            self.device,
            self.precision,
            per_class=per_class,
        )

    def _diverged(self) -> None:
        found = find_checkpoint(self.run_dir / "checkpoints" / LAST)
        where = f"the last good checkpoint is {found}" if found else "no checkpoint had been written yet"
        raise TrainingDiverged(
            f"the training loss became NaN or infinite at step {self.step} (epoch {self.epoch + 1}); "
            f"{where}. Lower the learning rate (--lr), add gradient clipping "
            "(--set optim.grad_clip=1.0) or use --precision fp32."
        )


class _StopRun(Exception):
    def __init__(self, batch: int) -> None:
        super().__init__("stop")
        self.batch = batch  # batches of the epoch trained
