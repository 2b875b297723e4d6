"""Weights on disk: safetensors only (tensors and a JSON metadata string; nothing to execute), with
`ModelMeta`, what a weights file says about its model, and the range checks applied before anything is
built from it."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, safe_open, save_file

from resnets.errors import CheckpointError
from resnets.io.atomic import atomic_write

METADATA_KEY = "resnets"
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
    """Read a safetensors weights file and its resnets metadata (None if absent). The metadata is checked
    for its types only; `check_meta` checks its values, before anything is built from them."""
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
            meta = meta_from_json(raw_meta)
        except ValueError as err:
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


def meta_from_json(raw: str) -> ModelMeta:
    """Parse resnets metadata JSON into a ModelMeta of the declared types; ValueError says what is wrong."""
    try:
        return ModelMeta(**_checked_meta(json.loads(raw)))
    except (TypeError, RecursionError) as err:  # wrong types, missing fields, JSON nested too deeply
        raise ValueError(str(err)) from None


# Bounds on what metadata may describe, far beyond any real model, so that values a file was crafted
# with cannot make resnets build, resize or allocate without limit:
MAX_CLASSES = 100_000  # ImageNet-21k has 21,843
MAX_SIDE = 4_096  # pixels per side of the input; also bounds the channel count
# model_kwargs: `depth` and `span` set how many layers a builder creates (each a Python object even on
# the meta device); lists (e.g. skipnet's `layers`, one entry per layer) hold this many items in all.
MAX_DEPTH = 10_000
DEPTH_KEYS = ("depth", "span")
MAX_KWARG = 2**24  # any other number in model_kwargs (widths, …): keeps size arithmetic from overflowing


def _kwarg_values(value: object, key: str) -> Iterator[tuple[str, object]]:
    """Every scalar in `value` (nested lists and dicts) with its path, e.g. ("layers[2].width", 64)."""
    stack = [(key, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, dict):
            stack.extend((f"{where}.{k}", v) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(item))
        else:
            yield where, item


def _count_list_items(value: object) -> int:
    stack, total = [value], 0
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            total += len(item)
            stack.extend(item)
    return total


# A registered dataset's name. An image folder's path is recorded too, but `evaluate` never scans a
# folder a file names (a file could point it at /proc): the user names it with --data.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_meta(meta: ModelMeta) -> None:
    """Refuse (ValueError) metadata values no resnets model has: input_size [in_chans, h, w] with sides
    1…4,096; 1…100,000 classes, one name each; a finite mean and positive std per channel; model_kwargs
    numbers within MAX_DEPTH (depth, span; list items in all) or MAX_KWARG (anything else)."""
    size = meta.input_size
    if len(size) != 3 or size[0] != meta.in_chans or not all(1 <= s <= MAX_SIDE for s in size):
        raise ValueError(
            f"input_size must be [in_chans, height, width] with in_chans {meta.in_chans} and each value "
            f"1…{MAX_SIDE:,}, got {size!r:.80}"
        )
    if not 1 <= meta.num_classes <= MAX_CLASSES:
        raise ValueError(f"num_classes must be 1…{MAX_CLASSES:,}, got {meta.num_classes}")
    if len(meta.classes) != meta.num_classes:
        raise ValueError(f"{len(meta.classes)} class names for {meta.num_classes} classes")
    for key, values in (("mean", meta.mean), ("std", meta.std)):
        if len(values) != meta.in_chans:
            raise ValueError(f"{key} needs {meta.in_chans} values (one per channel), got {len(values)}")
        if not all(math.isfinite(v) for v in values) or (key == "std" and min(values) <= 0):
            what = "finite and positive" if key == "std" else "finite"
            raise ValueError(f"{key} values must be {what}, got {values!r:.80}")
    if not 0 <= meta.data_seed < 2**32:
        raise ValueError(f"data_seed must be in 0 … 2^32 - 1 (a run's seed), got {meta.data_seed:.3g}")
    folder = meta.dataset is not None and meta.dataset.startswith("imagefolder:")
    if meta.dataset is not None and not (
        _PLAIN_NAME.fullmatch(meta.dataset)
        or (folder and len(meta.dataset) <= 4096 and meta.dataset.isprintable())
    ):
        raise ValueError(
            "dataset must be a dataset's name (letters, digits, '-', '_', '.', at most 64) or "
            f"imagefolder:PATH (printable, at most 4,096), got {meta.dataset!r:.80}"
        )
    if _count_list_items(meta.model_kwargs) > MAX_DEPTH:
        raise ValueError(f"model_kwargs hold more than {MAX_DEPTH:,} list items")
    for key, value in meta.model_kwargs.items():
        if key in DEPTH_KEYS and not (isinstance(value, int) and not isinstance(value, bool)):
            raise ValueError(f"model_kwargs.{key} must be an int, got {value!r:.80}")
        for where, item in _kwarg_values(value, f"model_kwargs.{key}"):
            if isinstance(item, bool) or not isinstance(item, int | float):
                continue
            bound = MAX_DEPTH if key in DEPTH_KEYS else MAX_KWARG
            low = 1 if key in DEPTH_KEYS else -bound
            if not (math.isfinite(item) and low <= item <= bound):
                raise ValueError(f"{where} must be a number in {low:,}…{bound:,}, got {item!r:.80}")
