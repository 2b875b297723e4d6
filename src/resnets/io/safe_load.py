"""The one safe `torch.load`: the torch.save zip and its pickle are checked before torch reads them,
and the tensors' sizes after, so a hostile file neither runs code nor allocates more than it holds."""

from __future__ import annotations

import itertools
import pickletools
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from resnets.errors import CheckpointError

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
