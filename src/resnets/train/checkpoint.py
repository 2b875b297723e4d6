"""Checkpoint folders: weights (safetensors) + training state, written as one unit and read back.

- Training state (optimizer, schedule, scaler, RNG, position): a torch file that
  `torch.load(..., weights_only=True)` reads (through `resnets.io.safe_load`): tensors and plain
  containers only.
- A checkpoint is a folder holding both; it is written beside the old one and swapped in by renames,
  so a crash at any moment leaves a complete checkpoint (the new one, or the previous one).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from resnets.errors import CheckpointError
from resnets.io.atomic import atomic_write, fsync_dir
from resnets.io.safe_load import safe_torch_load
from resnets.io.weights import ModelMeta, load_weights, save_weights

WEIGHTS_FILE, STATE_FILE = "weights.safetensors", "state.pt"

_RESUME_ADVICE = "Resume from another checkpoint, or start the run afresh"


def load_state(path: str | Path) -> dict[str, Any]:
    """Read a training-state file with `torch.load(weights_only=True)`: refuses anything but tensors
    and plain containers, in a dict."""
    path = Path(path)
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise CheckpointError(f"training state {path} {what}")
    state = safe_torch_load(
        path,
        _RESUME_ADVICE,
        lambda reason: (
            f"{path} could not be loaded safely (it holds objects other than tensors and plain "
            f"data, or it is truncated): {reason}. {_RESUME_ADVICE}"
        ),
    )
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: a training state is a dict, found {type(state).__name__}")
    return state


def save_checkpoint(
    folder: Path, weights: dict[str, torch.Tensor], state: dict[str, Any], meta: ModelMeta | None = None
) -> None:
    """Write weights + training state into `folder` as one unit: build a sibling folder, then swap
    it in with renames. A crash leaves `folder` or `folder.old` complete (load_checkpoint reads either)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    for stale in folder.parent.glob(f".{folder.name}.*"):  # left by a writer killed mid-write
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        save_weights(tmp / WEIGHTS_FILE, weights, meta)
        atomic_write(tmp / STATE_FILE, lambda p: torch.save(state, p))
        old = folder.with_name(folder.name + ".old")
        if folder.exists():
            if old.exists():
                shutil.rmtree(old)
            os.replace(folder, old)
        os.replace(tmp, folder)
        fsync_dir(folder.parent)
        if old.exists():
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def find_checkpoint(folder: Path) -> Path | None:
    """The complete checkpoint at `folder`, or the previous one left by an interrupted swap (complete:
    both files present; `load_checkpoint` also checks that they load)."""
    found = _complete(folder)
    return found[0] if found else None


def _complete(folder: Path) -> list[Path]:
    candidates = (Path(folder), Path(str(folder) + ".old"))
    return [c for c in candidates if (c / WEIGHTS_FILE).is_file() and (c / STATE_FILE).is_file()]


def _read(candidate: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    weights, _ = load_weights(candidate / WEIGHTS_FILE)
    return weights, load_state(candidate / STATE_FILE)


def load_checkpoint(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Weights and training state of checkpoint `folder`; when it is refused (damaged, crafted), the
    previous checkpoint an interrupted swap left beside it. The first refusal is raised if neither loads."""
    candidates = _complete(folder)
    if not candidates:
        raise CheckpointError(f"no complete checkpoint at {folder}")
    first: CheckpointError | None = None
    for candidate in candidates:
        try:
            return _read(candidate)
        except CheckpointError as err:
            first = first or err
    assert first is not None
    raise first


def _loads(candidate: Path) -> bool:
    try:
        _read(candidate)
    except CheckpointError:
        return False
    return True


def tidy_checkpoint(folder: Path) -> None:
    """After a crash: drop what a killed writer left beside checkpoint `folder` (its temporary folder,
    and the previous checkpoint once the new one loads), or put the previous one back in place when the
    new one is incomplete or refused. Never deletes the last checkpoint that loads. Call with no writer
    running."""
    folder = Path(folder)
    if not folder.parent.is_dir():
        return
    for stale in folder.parent.glob(f".{folder.name}.*"):
        shutil.rmtree(stale, ignore_errors=True)
    old = folder.with_name(folder.name + ".old")
    if not old.exists():
        return
    # Validate before deleting: a file present is not a file that loads (a truncated state.pt is).
    if _loads(folder):
        shutil.rmtree(old, ignore_errors=True)
    elif _loads(old):
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(old, folder)
        fsync_dir(folder.parent)
