"""Weights and training state on disk, written atomically and read without executing code.

- Weights: safetensors (tensors and a JSON metadata string; nothing to execute).
- Training state (optimizer, schedule, scaler, RNG, position): a torch file that
  `torch.load(..., weights_only=True)` reads: tensors and plain containers only.
- A checkpoint is a folder holding both; it is written beside the old one and swapped in by renames,
  so a crash at any moment leaves a complete checkpoint (the new one, or the previous one).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from resnets.errors import CheckpointError

METADATA_KEY = "resnets"
WEIGHTS_FILE, STATE_FILE = "weights.safetensors", "state.pt"
CONVERT_HINT = (
    'If you trust the file, convert it once: python -c "import torch, safetensors.torch as st; '
    "sd = torch.load('IN.pt', weights_only=True); st.save_file({k: v.contiguous() for k, v in "
    "sd.items()}, 'OUT.safetensors')\" (weights_only=True still refuses code; never unpickle a file "
    "from a stranger)."
)


@dataclass
class ModelMeta:
    """What a weights file says about its model: enough to rebuild it and preprocess its input."""

    model: str
    num_classes: int
    in_chans: int
    input_size: list[int]  # [channels, height, width]
    mean: list[float]
    std: list[float]
    classes: list[str]
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    dataset: str | None = None
    data_seed: int = 0  # the seed of the run, which also chose an image folder's train/test split

    def to_json(self) -> str:
        """Compact JSON for the safetensors metadata."""
        return json.dumps(asdict(self), separators=(",", ":"))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Any) -> None:
    """Call `write(tmp_path)`, fsync the file, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_weights(path: Path, state_dict: dict[str, torch.Tensor], meta: ModelMeta | None = None) -> None:
    """Write a state_dict (CPU copies) as safetensors, with the model's metadata, atomically."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    metadata = {"format": "pt"}
    if meta is not None:
        metadata[METADATA_KEY] = meta.to_json()
    atomic_write(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def _refuse_pickle(path: Path) -> None:
    with open(path, "rb") as f:
        head = f.read(9)
    # safetensors: an 8-byte little-endian header length, then the JSON header's "{". The length's
    # first byte may be 0x80 too, so only a file without that "{" counts as a pickle (0x80 protocol
    # marker) or a torch.save zip ("PK").
    if head[8:9] != b"{" and (head[:2] == b"PK" or head[:1] == b"\x80"):
        raise CheckpointError(
            f"{path} is a pickle-based PyTorch file, which can run arbitrary code when loaded; resnets "
            f"loads weights only from safetensors. {CONVERT_HINT}"
        )


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], ModelMeta | None]:
    """Read a safetensors weights file and its resnets metadata (None if absent)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    _refuse_pickle(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw_meta = (f.metadata() or {}).get(METADATA_KEY)
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(
            f"{path} is not a valid safetensors file (truncated or corrupt?): {err}"
        ) from None
    meta = None
    if raw_meta:
        try:
            meta = ModelMeta(**json.loads(raw_meta))
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{path}: unreadable resnets metadata ({err})") from None
    return tensors, meta


def load_state(path: str | Path) -> dict[str, Any]:
    """Read a training-state file with `torch.load(weights_only=True)`: refuses anything but tensors
    and plain containers."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"training state {path} does not exist") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError) as err:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        reason = next(
            (ln for ln in lines if "Unsupported global" in ln), lines[0] if lines else type(err).__name__
        )
        raise CheckpointError(
            f"{path} could not be loaded safely (it holds objects other than tensors and plain data, or it "
            f"is truncated): {reason}"
        ) from None


def save_checkpoint(
    folder: Path, weights: dict[str, torch.Tensor], state: dict[str, Any], meta: ModelMeta | None = None
) -> None:
    """Write weights + training state into `folder` as one unit: build a sibling folder, then swap
    it in with renames. A crash leaves `folder` or `folder.old` complete (load_checkpoint reads either)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
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
        _fsync_dir(folder.parent)
        if old.exists():
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def find_checkpoint(folder: Path) -> Path | None:
    """The complete checkpoint at `folder`, or the previous one left by an interrupted swap."""
    for candidate in (Path(folder), Path(str(folder) + ".old")):
        if (candidate / WEIGHTS_FILE).is_file() and (candidate / STATE_FILE).is_file():
            return candidate
    return None


def load_checkpoint(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Weights and training state of a checkpoint folder (see find_checkpoint)."""
    found = find_checkpoint(folder)
    if found is None:
        raise CheckpointError(f"no complete checkpoint at {folder}")
    weights, _ = load_weights(found / WEIGHTS_FILE)
    return weights, load_state(found / STATE_FILE)
