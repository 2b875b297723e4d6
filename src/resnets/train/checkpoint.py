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
import shutil
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
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
    """Call `write(tmp_path)`, fsync the file, then rename it over `path`. Temporary files an earlier
    writer left when it was killed mid-write are removed first (one writer per path: rank 0)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)
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
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError as err:
        raise CheckpointError(f"cannot read weights file {path}: {err}") from None
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
        raise CheckpointError(f"weights file {path} {'is not a file' if path.exists() else 'does not exist'}")
    _refuse_pickle(path)
    # safetensors checks the header (its length against the file, at most 100 MB; every tensor's
    # offsets and dtype) before it allocates, so a tensor's memory is bounded by the file's size.
    try:
        with safe_open(str(path), framework="pt") as f:
            raw_meta = (f.metadata() or {}).get(METADATA_KEY)
        tensors = load_file(str(path))
    except Exception as err:  # SafetensorError mostly, but a broken file fails in many ways
        raise CheckpointError(
            f"{path} is not a valid safetensors file (truncated or corrupt?): {err}. Use an intact copy, "
            "or the weights.safetensors of another checkpoint of the run"
        ) from None
    meta = None
    if raw_meta:
        try:
            meta = ModelMeta(**_checked_meta(json.loads(raw_meta)))
        except (TypeError, ValueError, RecursionError) as err:
            raise CheckpointError(
                f"{path}: unreadable resnets metadata ({err}); the file was not written by resnets or is "
                "damaged. Load its tensors with safetensors.torch.load_file and build the model yourself"
            ) from None
    return tensors, meta


_META_TYPES: dict[str, tuple[type, ...]] = {
    "model": (str,),
    "num_classes": (int,),
    "in_chans": (int,),
    "input_size": (list,),
    "mean": (list,),
    "std": (list,),
    "classes": (list,),
    "model_kwargs": (dict,),
    "dataset": (str, type(None)),
    "data_seed": (int,),
}


def _checked_meta(meta: object) -> dict[str, Any]:
    """The metadata as ModelMeta's keyword arguments, each of its declared type (TypeError if not)."""
    if not isinstance(meta, dict):
        raise TypeError(f"expected a JSON object, found {type(meta).__name__}")
    for key, value in meta.items():
        types = _META_TYPES.get(key)
        if types is None:
            raise TypeError(f"unknown field {key!r}")
        if not isinstance(value, types) or isinstance(value, bool):
            raise TypeError(f"{key} must be {' or '.join(t.__name__ for t in types)}, got {value!r:.80}")
    items = {
        "input_size": (int,),
        "mean": (int, float),
        "std": (int, float),
        "classes": (str,),
    }
    for key, types in items.items():
        if not all(isinstance(v, types) and not isinstance(v, bool) for v in meta.get(key, [])):
            raise TypeError(f"{key} must be a list of {' or '.join(t.__name__ for t in types)}")
    return meta


def check_torch_zip(path: Path) -> None:
    """Refuse, before torch.load reads `path`, what would make it allocate more than the file holds:
    anything but torch.save's zip of stored (uncompressed) records, each within the file."""
    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
    except Exception as err:  # BadZipFile, OSError, NotImplementedError (odd zip versions), …
        # The legacy (pre-1.6) format is a pickle stream whose storage sizes are allocated as declared.
        raise CheckpointError(
            f"{path} is not a zip archive as torch.save writes ({err}); it is truncated, not a PyTorch "
            "file, or in the legacy format, which resnets does not read"
        ) from None
    for r in records:
        if r.compress_type != zipfile.ZIP_STORED or r.file_size > size or r.compress_size > size:
            raise CheckpointError(
                f"{path}: record {r.filename!r} is compressed or larger than the file; torch.save never "
                "writes such records, so the file is damaged or crafted"
            )


# Lines of torch's weights_only errors that advise loading with weights_only=False: never pass those on.
_TORCH_ADVICE = (
    "weights only load failed",
    "please file an issue",
    "check the documentation",
    "weights_only",
)


def load_state(path: str | Path) -> dict[str, Any]:
    """Read a training-state file with `torch.load(weights_only=True)`: refuses anything but tensors
    and plain containers, in a dict."""
    path = Path(path)
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise CheckpointError(f"training state {path} {what}")
    check_torch_zip(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load fails on a broken or hostile file in many ways
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        useful = [ln for ln in lines if not any(a in ln.lower() for a in _TORCH_ADVICE)]
        reason = next((ln for ln in lines if "unsupported global" in ln.lower()), None)
        # The first sentence only: the rest tells how to allow-list the class, which we must not.
        reason = (reason or (useful[0] if useful else type(err).__name__)).split(". ")[0].rstrip(".")
        raise CheckpointError(
            f"{path} could not be loaded safely (it holds objects other than tensors and plain data, or it "
            f"is truncated): {reason}. Resume from another checkpoint, or start the run afresh"
        ) from None
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
