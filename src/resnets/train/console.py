"""What a run prints: a few lines on stdout (what is trained, the batch and lr rule, one line per epoch,
the result) and a tqdm progress bar on a terminal's stderr. Both are callbacks the trainer attaches
unless the run is quiet; only rank 0 prints."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from resnets.info import count_params
from resnets.train.callbacks import Callback

if TYPE_CHECKING:
    import torch

    from resnets.train.engine import Trainer
    from resnets.train.rundir import RunLog


class ConsoleLines(Callback):
    """The run's lines on stdout; where no progress bar shows (stderr is not a terminal: a log file, a
    notebook, a CI job), also the step record of every log interval, so a long epoch is not silent."""

    def on_fit_start(self, trainer: Trainer, log: RunLog) -> None:
        """What is trained where, and how the global batch and learning rate are set."""
        t, data = trainer, trainer.data
        if t.resume:
            t.say(f"resuming {t.run_dir} at epoch {t.start_epoch + 1}, step {t.step}")
        t.say(
            f"training {t.cfg.model.name} ({count_params(t.model):,} params) on {data.name} "
            f"({len(data.train):,} train / {len(data.test):,} test), {t.device.type} {t.precision}, "
            f"{run_length(trainer)}, recipe {t.cfg.recipe} -> {t.run_dir}"
        )
        t.say(batch_line(trainer))

    def on_step(self, trainer: Trainer, log: RunLog) -> None:
        """The log interval's record (written just before) as a line, unless a progress bar shows it."""
        r = log.last
        if sys.stderr.isatty() or r.get("split") != "train_step":
            return
        batch = trainer.step - (trainer.epoch * trainer.steps_per_epoch)
        trainer.say(
            f"  epoch {r['epoch']:>3} batch {batch:>5}/{trainer.steps_per_epoch}  step {r['step']:>6}  "
            f"loss {r['loss']:.4f}  acc {r['accuracy']:.4f}  lr {r['lr']:.4g}  "
            f"{r['images_per_second']:,.0f} img/s"
        )

    def on_epoch_end(self, trainer: Trainer, epoch: int, train: dict[str, Any]) -> None:
        """One line per epoch: training and held-out (val, else test) loss and accuracy, lr, throughput."""
        split, held = next(iter(trainer.last_eval.items()))
        trainer.say(
            f"epoch {epoch:>3}/{trainer.epochs}  step {trainer.step:>6}  train loss {train['loss']:.4f} "
            f"acc {train['accuracy']:.4f}  {split} loss {held['loss']:.4f} acc {held['accuracy']:.4f}  "
            f"lr {trainer.last_lr:.4g}  {trainer.images_per_second():,.0f} img/s"
        )

    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        """The final test accuracy and where the run is."""
        trainer.say(
            f"done: test accuracy {summary['test_accuracy']:.4f}, loss {summary['test_loss']:.4f} "
            f"in {summary['wall_seconds']:.1f} s; run directory {trainer.run_dir}"
        )


def run_length(trainer: Trainer) -> str:
    """'30 epochs × 703 steps', or '400 steps (0.51 of 781-step epochs)' for a run cut by --max-steps."""
    t = trainer
    if t.total_steps == t.epochs * t.steps_per_epoch:
        return f"{t.epochs} epoch{'s' * (t.epochs != 1)} × {t.steps_per_epoch} steps"
    schedule = ", schedule compressed to fit" if t.schedule.shrink < 1 else ""
    epochs = t.total_steps / t.steps_per_epoch
    return f"{t.total_steps} steps ({epochs:.2f} of {t.steps_per_epoch}-step epochs{schedule})"


def batch_line(trainer: Trainer) -> str:
    """The global batch, how it is split, and the lr rule: stated in every run's log."""
    o, b, dist = trainer.cfg.optim, trainer.cfg.data.batch_size, trainer.dist
    rule = (
        f"lr {trainer.lr:g} = {o.lr:g} × {b}/{o.lr_base_batch} (linear scaling rule)"
        if o.lr_scaling == "linear"
        else f"lr {trainer.lr:g} for the global batch (optim.lr_scaling none)"
    )
    split = f" = {dist.world_size} processes × {trainer.process_batch}" if dist.enabled else ""
    sync = ", batch norm over the global batch" if dist.enabled and trainer.cfg.run.sync_bn else ""
    return f"global batch {b}{split}{sync}; {rule}"


class ProgressBar(Callback):
    """A tqdm bar per epoch on a terminal, its loss/accuracy/lr/throughput read from the device at most
    every `refresh` seconds (each read is a host sync)."""

    def __init__(self, refresh: float = 0.5) -> None:
        self.refresh, self.bar = refresh, None

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        """Open the epoch's bar where the epoch starts (mid-epoch on resume)."""
        if not sys.stderr.isatty():
            return
        from tqdm import tqdm

        self.bar = tqdm(
            total=trainer.steps_per_epoch,
            initial=trainer.first_batch,
            desc=f"epoch {epoch}/{trainer.epochs}",
            leave=False,
            dynamic_ncols=True,
        )
        self.shown = self.since = time.perf_counter()
        self.images = trainer.images_seen

    def on_batch_end(self, trainer: Trainer, loss: torch.Tensor) -> None:
        """Advance the bar; refresh its numbers now and then."""
        if self.bar is None:
            return
        self.bar.update(1)
        now = time.perf_counter()
        if now - self.shown > self.refresh:
            self.shown, meter = now, trainer.meter
            self.bar.set_postfix(
                loss=f"{float(loss):.3f}",
                acc=f"{int(meter.top1) / max(1, meter.count):.3f}",
                lr=f"{trainer.last_lr:.3g}",
                img_s=f"{(trainer.images_seen - self.images) / max(now - self.since, 1e-9):.0f}",
            )

    def on_train_epoch_end(self, trainer: Trainer, epoch: int, train: dict[str, Any]) -> None:
        """Close the bar before the epoch's lines are printed."""
        self.teardown(trainer)

    def teardown(self, trainer: Trainer) -> None:
        """Close a bar left open by a stopped run."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
