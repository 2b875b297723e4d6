"""A training run is a directory (DESIGN.md): creating one, refusing to overwrite one, finding the run
a restarted torchrun job rejoins, and its logs (metrics.jsonl and TensorBoard events, written by the
`MetricsLog` callback)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from resnets.errors import ConfigError
from resnets.io.atomic import open_append, symlinks_in, write_text
from resnets.train.callbacks import Callback
from resnets.train.checkpoint import find_checkpoint
from resnets.train.config import TrainConfig, build_config, load_yaml
from resnets.train.distributed import DistInfo, broadcast_text, job_id, restart_count

if TYPE_CHECKING:
    from resnets.train.engine import Trainer

LAST, BEST = "last", "best"


def default_run_dir(cfg: TrainConfig) -> Path:
    """runs/<model>-<dataset>-<time>."""
    data = cfg.data.name.replace("imagefolder:", "folder-").replace("/", "_").replace(os.sep, "_")
    return Path("runs") / f"{cfg.model.name}-{data}-{time.strftime('%Y%m%d-%H%M%S')}"


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class RunLog:
    """metrics.jsonl (one JSON object per record) and TensorBoard scalars, written by rank 0."""

    def __init__(self, run_dir: Path, purge_step: int | None) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.file = open_append(self.path)  # closed in close()
        self.last: dict[str, Any] = {}  # the latest record, for what the console prints
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir), purge_step=purge_step)
        except ImportError:  # tensorboard is an install dependency; tolerate its absence
            self.tb = None

    def write(self, record: dict[str, Any]) -> None:
        """Append one record and mirror its numbers to TensorBoard as split/name."""
        self.last = record
        self.file.write(json.dumps({k: _jsonable(v) for k, v in record.items()}) + "\n")
        self.file.flush()
        if self.tb is not None:
            for key, value in record.items():
                if isinstance(value, int | float) and key not in ("epoch", "step"):
                    self.tb.add_scalar(f"{record['split']}/{key}", value, record["step"])

    def close(self) -> None:
        """Flush and close both writers."""
        self.file.close()
        if self.tb is not None:
            self.tb.close()


class NoLog(RunLog):
    """What ranks other than 0 log: nothing (rank 0 writes the run directory)."""

    def __init__(self) -> None:
        self.last = {}

    def write(self, record: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def truncate_metrics(path: Path, step: int) -> None:
    """Drop records logged after the checkpoint a run resumes from (a crash may have left some)."""
    if path.is_file():
        kept = [r for r in iter_json_lines(path) if r.get("step", 0) <= step]
        write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


def prepare_run_dir(cfg: TrainConfig, restarted: bool = False) -> Path:
    """Create the run directory and write config.yaml; refuses to overwrite an existing run.
    `restarted`: torchrun restarted a job that failed before its first checkpoint, so its logs are
    dropped and the run starts over in the same directory."""
    run_dir = Path(cfg.run.out) if cfg.run.out else default_run_dir(cfg)
    check_run_dir(run_dir)
    if find_checkpoint(run_dir / "checkpoints" / LAST) or (run_dir / "summary.json").exists():
        raise ConfigError(
            f"{run_dir} already holds a run; resume it with --resume {run_dir} or choose another --out"
        )
    if restarted:
        for stale in [run_dir / "metrics.jsonl", *run_dir.glob("events.out.tfevents.*")]:
            stale.unlink(missing_ok=True)
    if (run_dir / "metrics.jsonl").exists():
        raise ConfigError(
            f"{run_dir} holds the logs of a run that stopped before its first checkpoint; delete the folder "
            "or choose another --out"
        )
    if run_dir.is_dir() and any(run_dir.iterdir()) and not _is_run(run_dir):
        raise ConfigError(
            f"{run_dir} exists, is not empty and is not a resnets run (no config.yaml of one): resnets would "
            "write config.yaml, model.safetensors and checkpoints/ into it. Choose a new --out (resnets "
            "creates the folder) or an empty folder"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.run.out = str(run_dir)
    if cfg.data.data_dir:  # absolute, so that eval and --resume find the data from any folder
        cfg.data.data_dir = str(Path(cfg.data.data_dir).expanduser().resolve())
    write_text(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return run_dir


def discard_unstarted_run(run_dir: Path) -> None:
    """Remove what `prepare_run_dir` and the lock wrote into a run that failed before training began
    (no data, a bad model): a folder holding only config.yaml would pass for a run and block its --out.
    The folder goes too if nothing else is in it (it was new or empty: nothing saved is lost)."""
    if find_checkpoint(run_dir / "checkpoints" / LAST) or (run_dir / "summary.json").exists():
        return  # never: a run with a checkpoint has started
    for name in ("config.yaml", LOCK_FILE, JOB_MARKER):
        (run_dir / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not empty: what else is there is not ours to delete
        run_dir.rmdir()


def _is_run(folder: Path) -> bool:
    try:
        build_config(load_yaml(folder / "config.yaml"))
    except (ConfigError, OSError):
        return False
    return True


def check_run_dir(run_dir: Path) -> None:
    """Refuse a run directory that holds symbolic links: resnets never makes one there, and each is a
    place where a write or a delete inside the run would reach a file outside it."""
    links = symlinks_in(run_dir)
    if links:
        shown = ", ".join(str(p) for p in links[:3]) + (
            f" and {len(links) - 3} more" if len(links) > 3 else ""
        )
        raise ConfigError(
            f"{run_dir} holds symbolic links ({shown}); resnets writes and deletes files inside a run and "
            "never follows links there. Remove the links (a run resnets made has none) or use another folder"
        )


def resumable_config(run_dir: Path, quiet: bool | None) -> TrainConfig:
    """The config of a run directory that has a checkpoint to continue from."""
    check_run_dir(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no config.yaml)")
    if find_checkpoint(run_dir / "checkpoints" / LAST) is None:
        raise ConfigError(f"{run_dir} has no checkpoint to resume from; start a new run instead")
    cfg = build_config(load_yaml(run_dir / "config.yaml"))
    if quiet is not None:  # a display preference, not part of the run's definition
        cfg.run.quiet = quiet
    return cfg


JOB_MARKER = ".torchrun_job"  # the torchrun job id that created the run: only that job may rejoin it


def start_or_rejoin(cfg: TrainConfig, info: DistInfo, quiet: bool | None) -> tuple[Path, bool, TrainConfig]:
    """Rank 0 decides, and every rank learns: a new run directory, or (in a job torchrun restarted) the
    run this same job started, resumed from its last checkpoint. Returns (run_dir, resuming, config)."""
    decision = ""
    if info.is_main:
        try:
            out = Path(cfg.run.out) if cfg.run.out else None
            same_job = (
                restart_count() > 0
                and out is not None
                and job_id() is not None
                and (out / JOB_MARKER).is_file()
                and (out / JOB_MARKER).read_text().strip() == job_id()
            )
            if same_job and find_checkpoint(out / "checkpoints" / LAST) is not None:  # type: ignore[operator]
                decision = f"resume:{out}"
            else:
                run_dir = prepare_run_dir(cfg, restarted=same_job)
                if job_id() is not None:
                    write_text(run_dir / JOB_MARKER, job_id() + "\n")  # type: ignore[operator]
                decision = f"new:{run_dir}"
        except (ConfigError, OSError) as err:
            decision = f"error:{err}"
    decision = broadcast_text(info, decision)
    kind, _, value = decision.partition(":")
    if kind == "error":
        raise ConfigError(value)
    if kind == "resume":
        return Path(value), True, resumable_config(Path(value), quiet)
    cfg.run.out = value
    return Path(value), False, cfg


def iter_json_lines(path: Path) -> Iterator[dict[str, Any]]:
    """Records of a metrics.jsonl file (a torn last line from a crash is skipped)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


class MetricsLog(Callback):
    """The run's records in metrics.jsonl and TensorBoard: one per log interval (loss, accuracy and
    images/s over the batches since the last one, augmented and in training mode), one per epoch's
    training, one per held-out evaluation (with the wall time it was known at: time to accuracy)."""

    def on_fit_start(self, trainer: Trainer, log: RunLog) -> None:
        """Keep the run's log."""
        self.log = log

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        """The first window starts with the epoch."""
        self._open_window(trainer)

    def _open_window(self, trainer: Trainer) -> None:
        meter = trainer.meter
        self.since, self.images = time.perf_counter(), trainer.images_seen
        self.hits, self.count = meter.top1.clone(), meter.count

    def on_step(self, trainer: Trainer, log: RunLog) -> None:
        """The log interval's record."""
        meter, now = trainer.meter, time.perf_counter()
        log.write(
            {
                "split": "train_step",
                "epoch": trainer.epoch + 1,
                "step": trainer.step,
                "loss": trainer.last_loss,
                "accuracy": int(meter.top1 - self.hits) / max(1, meter.count - self.count),
                "lr": trainer.last_lr,
                "images_per_second": (trainer.images_seen - self.images) / max(now - self.since, 1e-9),
            }
        )
        self._open_window(trainer)

    def on_train_epoch_end(self, trainer: Trainer, epoch: int, train: dict[str, Any]) -> None:
        """The epoch's training metrics over the whole job."""
        self.log.write(
            {
                "split": "train",
                "epoch": epoch,
                "step": trainer.step,
                "loss": train["loss"],
                "accuracy": train["accuracy"],
                "top5_accuracy": train["top5_accuracy"],
                "lr": trainer.last_lr,
                "images_per_second": trainer.images_per_second(),
                "wall_seconds": trainer.wall_seconds(),
            }
        )

    def on_eval(self, trainer: Trainer, split: str, metrics: dict[str, Any]) -> None:
        """A held-out split's metrics, with when they were known."""
        self.log.write(
            {
                "split": split,
                "epoch": trainer.epoch + 1,
                "step": trainer.step,
                "loss": metrics["loss"],
                "accuracy": metrics["accuracy"],
                "top5_accuracy": metrics["top5_accuracy"],
                "wall_seconds": trainer.wall_seconds(),
            }
        )


LOCK_FILE = ".lock"


@contextlib.contextmanager
def run_lock(run_dir: Path, holder: bool = True) -> Iterator[None]:
    """Hold an exclusive lock on the run directory while training writes it (`holder`: rank 0), so a
    second `train --resume` of the same run is refused instead of logging every epoch twice and
    swapping checkpoints under the first. fcntl.flock: released by the OS if the process dies."""
    if not holder:
        yield
        return
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, as before
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder_pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "another process"
            raise ConfigError(
                f"{run_dir} is being trained by another resnets process (pid {holder_pid}); wait for it "
                "to finish, or train into another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
