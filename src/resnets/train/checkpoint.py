"""Weights and training state on disk, written atomically and read without executing code.

- Weights: safetensors (tensors and a JSON metadata string; nothing to execute).
- Training state (optimizer, schedule, scaler, RNG, position): a torch file that
  `torch.load(..., weights_only=True)` reads: tensors and plain containers only.
- A checkpoint is a folder holding both; it is written beside the old one and swapped in by renames,
  so a crash at any moment leaves a complete checkpoint (the new one, or the previous one).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import pickletools
import shutil
import struct
import tempfile
import zipfile
from collections.abc import Callable, Iterator
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


# The globals torch.save writes for state_dicts, optimizer / GradScaler / scheduler / RNG states and plain
# containers (checked on resnets checkpoints and torchvision .pth files). torch's weights_only unpickler
# admits more, and some of those allocate whatever size the file names, from a file of a few hundred
# bytes: bytearray(n), torch.FloatTensor(n), torch.UntypedStorage(n), or _codecs.encode with a hex codec
# applied to its own output (doubling each time). A file that refers to anything else is refused.
_SAFE_GLOBALS = frozenset(
    {
        "collections.OrderedDict",
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_parameter",
        "torch.Size",
        "torch.device",
        # Named in each tensor's persistent id; torch.load reads them as markers that cannot be called.
        *(
            f"torch.{kind}Storage"
            for kind in (
                "Float", "Double", "Half", "BFloat16", "Byte", "Char", "Short", "Int", "Long", "Bool",
                "ComplexFloat", "ComplexDouble",
            )
        ),
    }
)  # fmt: skip
# Opcodes that name a class or function through a value computed while unpickling (STACK_GLOBAL: strings
# on the stack; EXT1/2/4: the copyreg registry) or call a class (INST, OBJ): torch.save never writes them,
# and a check that only reads the pickle cannot tell what they name.
_UNCHECKABLE_OPCODES = frozenset({"STACK_GLOBAL", "INST", "OBJ", "EXT1", "EXT2", "EXT4"})
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # zip local file header: signature, …, name and extra lengths


def check_torch_zip(path: Path, advice: str = "") -> None:
    """Refuse, before torch.load reads `path`, what would make it allocate more than the file holds:
    anything but torch.save's zip of stored, non-overlapping records within the file, whose pickle refers
    only to the globals state_dicts and training states need. `advice` ends the refusal of a global."""
    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as archive, open(path, "rb") as raw:
            records = archive.infolist()
            _check_records(path, raw, records, size)
            for r in records:
                # torch.load reads the pickle from <archive>/data.pkl, with a case-insensitive lookup.
                if r.filename.lower().rsplit("/", 1)[-1] == "data.pkl":
                    _check_pickle(path, r.filename, archive.read(r), advice)
    except CheckpointError:
        raise
    except Exception as err:  # BadZipFile, OSError, NotImplementedError (odd zip versions), …
        # The legacy (pre-1.6) format is a pickle stream whose storage sizes are allocated as declared.
        raise CheckpointError(
            f"{path} is not a zip archive as torch.save writes ({err}); it is truncated, not a PyTorch "
            "file, or in the legacy format, which resnets does not read"
        ) from None


def _check_records(path: Path, raw: Any, records: list[zipfile.ZipInfo], size: int) -> None:
    def refuse(problem: str) -> CheckpointError:
        return CheckpointError(
            f"{path}: {problem}; torch.save never writes such records, so the file is damaged or crafted"
        )

    for r in records:
        if r.compress_type != zipfile.ZIP_STORED or r.file_size > size or r.compress_size > size:
            raise refuse(f"record {r.filename!r} is compressed or larger than the file")
        if r.file_size != r.compress_size:
            raise refuse(f"record {r.filename!r} has a stored size that differs from its size")
    # Directory entries may all point at the same bytes: a small file whose records add up to far more
    # than it holds (each becomes a separate allocation). Every record must have bytes of its own.
    if sum(r.file_size for r in records) > size:
        raise refuse(f"its {len(records):,} records add up to more than the file's {size:,} bytes")
    names = [r.filename.lower() for r in records]
    if len(set(names)) != len(names):
        raise refuse("two records have the same name")
    spans = []
    for r in records:
        raw.seek(r.header_offset)
        header = raw.read(_LOCAL_HEADER.size)
        if len(header) < _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
            raise refuse(f"record {r.filename!r} points at no record header")
        _, name_length, extra_length = _LOCAL_HEADER.unpack(header)
        start = r.header_offset + _LOCAL_HEADER.size + name_length + extra_length
        spans.append((r.header_offset, start + r.compress_size, r.filename))
    spans.sort()
    for (_, end, name), (begin, _, other) in itertools.pairwise(spans):
        if end > begin:
            raise refuse(f"records {name!r} and {other!r} overlap")
    if spans and spans[-1][1] > size:
        raise refuse(f"record {spans[-1][2]!r} ends beyond the file")


def _check_pickle(path: Path, name: str, data: bytes, advice: str) -> None:
    ops = pickletools.genops(data)
    while True:
        try:
            op, arg, _ = next(ops)
        except StopIteration:
            return
        except Exception as err:  # ValueError mostly (unknown opcode, truncated, bad UTF-8)
            raise CheckpointError(
                f"{path}: its pickle record {name!r} cannot be parsed ({err}); the file is truncated or "
                "damaged"
            ) from None
        if op.name == "GLOBAL":
            found = str(arg).replace(" ", ".", 1)  # torch.load looks globals up as "module.name"
            if found not in _SAFE_GLOBALS:
                raise CheckpointError(
                    f"{path} could not be loaded safely: it refers to the unsupported global {found}, which "
                    "a file of tensors and plain containers does not (torch.save refers only to storages, "
                    "torch._utils' tensor rebuilders, OrderedDict, torch.Size and torch.device); it holds "
                    f"other objects or was crafted. {advice}".rstrip()
                )
        elif op.name in _UNCHECKABLE_OPCODES:
            raise CheckpointError(
                f"{path} could not be loaded safely: its pickle names a class or function through "
                f"{op.name}, which torch.save never writes; it was crafted or written by other software. "
                f"{advice}".rstrip()
            )


def check_loaded_tensors(obj: object, path: Path, advice: str = "") -> None:
    """Refuse a loaded tensor that claims more bytes than its storage holds (stride 0 or overlapping
    strides): torch.load allows it from a few bytes of file, and any copy of it allocates its full size."""
    stack, seen = [obj], set()
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            claimed = item.numel() * item.element_size()
            held = item.untyped_storage().nbytes()
            if claimed > held:
                raise CheckpointError(
                    f"{path} holds a tensor of shape {list(item.shape)} ({claimed:,} bytes) built on "
                    f"{held:,} bytes of data, a view torch.save writes only for expanded tensors, which "
                    f"state_dicts and training states do not hold; copying it would allocate it all. The "
                    f"file is damaged or crafted. {advice}".rstrip()
                )
        elif isinstance(item, dict | list | tuple | set | frozenset) and id(item) not in seen:
            seen.add(id(item))  # a container may hold itself (the pickle memo allows cycles)
            stack.extend([*item.keys(), *item.values()] if isinstance(item, dict) else item)


# Lines of torch's weights_only errors that advise loading with weights_only=False: never pass those on.
_TORCH_ADVICE = (
    "weights only load failed",
    "please file an issue",
    "check the documentation",
    "weights_only",
)


def torch_load_reason(err: BaseException) -> str:
    """The first useful sentence of a torch.load error, without torch's advice to load with
    weights_only=False or to allow-list a global (either would let the file run code)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not any(a in ln.lower() for a in _TORCH_ADVICE)]
    reason = next((ln for ln in lines if "unsupported global" in ln.lower()), None)
    # The first sentence only: the rest tells how to allow-list the class, which we must not.
    reason = (reason or (useful[0] if useful else type(err).__name__)).split(". ")[0].rstrip(".")
    # A KeyError or IndexError says only the key (a pickle's reference to a memo slot it never filled).
    return f"{type(err).__name__}: {reason}" if isinstance(err, LookupError) else reason


def safe_torch_load(path: Path, advice: str, failure: Callable[[str], str]) -> Any:
    """torch.load(weights_only=True) of `path` between the checks that keep it bounded: the zip and its
    pickle before, the tensors' sizes after. A failure raises CheckpointError(failure(reason))."""
    check_torch_zip(path, advice)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load fails on a broken or hostile file in many ways
        raise CheckpointError(failure(torch_load_reason(err))) from None
    check_loaded_tensors(loaded, path, advice)
    return loaded


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


def tidy_checkpoint(folder: Path) -> None:
    """After a crash: drop what a killed writer left beside checkpoint `folder` (its temporary folder,
    and the previous checkpoint once the new one is complete), or put the previous one back in place
    when the swap was cut between its two renames. Call with no writer running."""
    folder = Path(folder)
    if not folder.parent.is_dir():
        return
    for stale in folder.parent.glob(f".{folder.name}.*"):
        shutil.rmtree(stale, ignore_errors=True)
    old = folder.with_name(folder.name + ".old")
    if not old.exists():
        return
    complete = (folder / WEIGHTS_FILE).is_file() and (folder / STATE_FILE).is_file()
    if not complete and (old / WEIGHTS_FILE).is_file() and (old / STATE_FILE).is_file():
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(old, folder)
        _fsync_dir(folder.parent)
    else:
        shutil.rmtree(old, ignore_errors=True)
