"""The one safe `torch.load`: the torch.save zip and its pickle are checked before torch reads them,
and the tensors' sizes after, so a hostile file neither runs code nor allocates more than it holds."""

from __future__ import annotations

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
_END = struct.Struct("<4s4H2LH")  # end of central directory: signature, disks, entries, size, offset, comment
_END64_LOCATOR = struct.Struct("<4sLQL")  # zip64 end locator: signature, disk, offset of the zip64 end
_END64 = struct.Struct("<4sQ2H2L4Q")  # zip64 end: signature, size, versions, disks, entries, size, offset


class _Refusal(Exception):
    """A problem with the archive's layout, raised inside the check and reworded once."""


def check_torch_zip(path: Path, advice: str = "") -> None:
    """Refuse, before torch.load reads `path`, what would make it allocate more than the file holds or
    read something other than what was checked: anything but torch.save's zip of stored records laid
    end to end from the first byte to one central directory that ends the file, whose pickle (read
    with torch's own archive reader) refers only to the globals state_dicts and training states need.
    `advice` ends the refusal of a global."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as raw:
            if raw.read(4) != b"PK\x03\x04":
                # torch.load takes a file that does not start with a record for the legacy (pre-1.6)
                # format: a pickle stream whose storage sizes are allocated as declared, whatever a zip
                # appended after it says.
                raise _Refusal("it does not start with a zip record")
            directory = _central_directory(raw, size)
            with zipfile.ZipFile(raw) as archive:
                data_at = _check_records(raw, archive.infolist(), size, directory)
        # What torch.load will read, from the reader it reads with: the same records at the same places.
        reader = torch._C.PyTorchFileReader(str(path))
        _same_archive(reader, data_at)
        pickle_name = next((n for n in data_at if n.split("/", 1)[-1] == "data.pkl"), "data.pkl")
        _check_pickle(path, pickle_name, reader.get_record("data.pkl"), advice)
    except _Refusal as err:
        raise CheckpointError(
            f"{path} is not a zip archive as torch.save writes: {err}; the file is damaged or crafted, or "
            "in the legacy (pre-1.6) format, which resnets does not read"
        ) from None
    except CheckpointError:
        raise
    except Exception as err:  # BadZipFile, OSError, NotImplementedError (odd zip versions), …
        raise CheckpointError(
            f"{path} is not a zip archive as torch.save writes ({err}); it is truncated, not a PyTorch "
            "file, or in the legacy format, which resnets does not read"
        ) from None


def _central_directory(raw: Any, size: int) -> tuple[int, int, int]:
    """(offset, end, entries) of the one central directory: it must end where the end records begin,
    and the end record must end the file. Readers find the directory in different ways (Python by the
    end record's position minus the directory's size, miniz by the offset it states); bytes between
    them or after the end are how two readers are made to see two archives."""
    if size < _END.size:
        raise _Refusal("it is too short to be a zip archive")
    raw.seek(size - _END.size)
    signature, _, _, _, entries, cd_size, cd_offset, comment = _END.unpack(raw.read(_END.size))
    if signature != b"PK\x05\x06" or comment:
        raise _Refusal("it has bytes after the archive's end record")
    directory_end = size - _END.size
    locator_at = directory_end - _END64_LOCATOR.size
    if locator_at >= 0:
        raw.seek(locator_at)
        locator = raw.read(_END64_LOCATOR.size)
    if locator_at >= 0 and locator[:4] == b"PK\x06\x07":
        # zip64 end records (torch.save writes them, needed or not): theirs are the numbers readers use.
        end64_at = _END64_LOCATOR.unpack(locator)[2]
        if end64_at != locator_at - _END64.size:
            raise _Refusal("it has bytes between its zip64 end records")
        raw.seek(end64_at)
        signature, _, _, _, _, _, _, entries, cd_size, cd_offset = _END64.unpack(raw.read(_END64.size))
        if signature != b"PK\x06\x06":
            raise _Refusal("its zip64 end record is damaged")
        directory_end = end64_at
    elif 0xFFFFFFFF in (cd_size, cd_offset) or entries == 0xFFFF:
        raise _Refusal("its zip64 end record cannot be found")
    if cd_offset + cd_size != directory_end:
        raise _Refusal("its central directory does not end where its end record begins")
    return cd_offset, directory_end, entries


def _check_records(
    raw: Any, records: list[zipfile.ZipInfo], size: int, directory: tuple[int, int, int]
) -> dict[str, int]:
    """Check each record and the layout; returns where each record's data starts, by name."""
    for r in records:
        if r.compress_type != zipfile.ZIP_STORED or r.file_size > size or r.compress_size > size:
            raise _Refusal(f"record {r.filename!r} is compressed or larger than the file")
        if r.file_size != r.compress_size:
            raise _Refusal(f"record {r.filename!r} has a stored size that differs from its size")
    cd_offset, _, entries = directory
    if entries != len(records):
        raise _Refusal(f"its end record counts {entries} records, its directory {len(records)}")
    names = [r.filename.lower() for r in records]
    if len(set(names)) != len(names):
        raise _Refusal("two records have the same name")
    # Records laid end to end from byte 0 to the directory: no byte the archive does not account for,
    # no record sharing bytes with another (each becomes a separate allocation).
    position, data_at = 0, {}
    for r in sorted(records, key=lambda r: r.header_offset):
        if r.header_offset != position:
            raise _Refusal(f"record {r.filename!r} does not start where the previous record ends")
        raw.seek(r.header_offset)
        header = raw.read(_LOCAL_HEADER.size)
        if len(header) < _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
            raise _Refusal(f"record {r.filename!r} points at no record header")
        _, name_length, extra_length = _LOCAL_HEADER.unpack(header)
        data_at[r.filename] = r.header_offset + _LOCAL_HEADER.size + name_length + extra_length
        position = data_at[r.filename] + r.compress_size
        if r.flag_bits & 0x08:  # a data descriptor follows the data (torch.save writes one per record)
            raw.seek(position)
            if raw.read(4) != b"PK\x07\x08":
                raise _Refusal(f"record {r.filename!r} has no data descriptor where it says it does")
            position += 24 if max(r.file_size, r.compress_size) >= 0xFFFFFFFF else 16
    if position != cd_offset:
        raise _Refusal("its records do not end where its central directory begins")
    return data_at


def _same_archive(reader: Any, data_at: dict[str, int]) -> None:
    """torch's reader must list the records checked (names without the archive's folder) with their
    data where it was checked; a reader that disagrees would load bytes the check never saw."""
    checked = {name.split("/", 1)[-1]: offset for name, offset in data_at.items()}
    if sorted(reader.get_all_records()) != sorted(checked):
        raise _Refusal("torch's zip reader lists other records than Python's")
    if hasattr(reader, "get_record_offset"):  # torch >= 2.1; before, the names alone are compared
        for name, offset in checked.items():
            if reader.get_record_offset(name) != offset:
                raise _Refusal(f"torch's zip reader finds record {name!r} elsewhere than Python's")


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
