"""Parsers for the official on-disk formats, strict about sizes so a bad file fails clearly.

Nothing here executes code from a file: the CIFAR python batches are unpickled by a loader that
admits only the NumPy array constructors those files use. Every failure is a DataError that names the
file; sizes are checked against the file before anything is allocated.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import numpy as np

from resnets.errors import DataError

CIFAR_IMAGE_BYTES = 3 * 32 * 32
# Refuse IDX headers that claim more than this many bytes of data (MNIST's largest file is 47 MB):
# a corrupt or hostile header must not make us allocate.
MAX_IDX_BYTES = 2**30
MAX_IDX_DIMS = 8  # MNIST's files have 1 or 3; NumPy allows 64, and a corrupt header may claim 255
# The official CIFAR files are 30–150 MB; a much larger file is the wrong file, not a dataset to read whole.
MAX_CIFAR_BYTES = 2**30
MAX_SHELL_BYTES = 4096  # NumPy pickles an array as an empty shell; CIFAR's shells hold 0 bytes
REFETCH = "replace it with an intact copy (delete the dataset folder and run again with --download)"


def read_cifar_binary(
    path: Path, label_bytes: int = 1, label_index: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Read an official CIFAR binary batch: records of `label_bytes` label bytes then 3,072 pixel bytes
    (R, G, B planes of 32×32). CIFAR-100 has 2 label bytes (coarse, fine): `label_index=1` picks fine."""
    record = label_bytes + CIFAR_IMAGE_BYTES
    try:
        size = path.stat().st_size
        if size > MAX_CIFAR_BYTES:
            raise DataError(f"{path}: {size:,} bytes is far larger than a CIFAR batch; is it the right file?")
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err})") from None
    if raw.size == 0 or raw.size % record:
        raise DataError(
            f"{path}: {raw.size} bytes is not a whole number of {record}-byte CIFAR records; "
            f"the file is truncated or not a CIFAR binary batch: {REFETCH}"
        )
    raw = raw.reshape(-1, record)
    return raw[:, label_bytes:].reshape(-1, 3, 32, 32).copy(), raw[:, label_index].astype(np.int64)


def _safe_dtype(*args: object) -> np.dtype:
    """A fresh numeric dtype for what the pickle asks. Fresh, because the pickle then BUILDs it with a
    state of its choosing (flags such as 'holds objects' on a uint8): np.dtype(..., copy=False) would
    hand it NumPy's own uint8 to change for the whole process."""
    try:
        dtype = np.dtype(*args[:2])  # type: ignore[call-overload]  # (obj, align); never copy=False
    except (TypeError, ValueError) as err:
        raise DataError(f"refusing dtype {args[:1]!r:.60}: {err}") from None
    return np.dtype(_numeric(dtype).str, False, True)


def _numeric(dtype: object) -> np.dtype:
    """`dtype` rebuilt from its type string alone (kind, byte order, size), which drops any state a
    pickle set on it; only plain numbers (bool, int, uint, float) are a CIFAR batch's."""
    try:
        given = dtype if isinstance(dtype, np.dtype) else np.dtype(dtype)  # type: ignore[call-overload]
    except (TypeError, ValueError) as err:
        raise DataError(f"refusing dtype {dtype!r:.60}: {err}") from None
    if given.kind not in "biuf" or given.fields or given.subdtype:
        what = "an object" if given.hasobject else f"a {given!r:.60}"
        raise DataError(f"refusing {what} array: a CIFAR batch holds only numbers")
    return np.dtype(given.str)


class _NdarrayName:
    """What the unpickler gives for the global numpy.ndarray: a name for `_reconstruct`'s subtype argument
    only. numpy.ndarray itself, called by the file (REDUCE), would allocate an array of any shape."""

    __slots__ = ()  # one shared instance: a pickle's BUILD must not be able to set attributes on it

    def __call__(self, *args: object) -> None:
        raise DataError("refusing numpy.ndarray(...): NumPy pickles arrays through _reconstruct, not a call")

    def __repr__(self) -> str:
        return "numpy.ndarray (as a name)"


_NDARRAY = _NdarrayName()


def _checked_reconstruct(reconstruct: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    def safe(subtype: object, shape: object, dtype: object) -> np.ndarray:
        # NumPy pickles an array as an empty shell of `shape` filled by __setstate__ (whose data must
        # match the shape, so it is bounded by the file); a large shell can only be an attempt to
        # allocate memory, by many elements or by a huge item size.
        checked = _numeric(dtype)
        count = int(np.prod(shape, dtype=np.float64))  # type: ignore[call-overload]
        if subtype is not _NDARRAY or count * checked.itemsize > MAX_SHELL_BYTES:
            raise DataError(f"refusing an array shell of shape {shape}: not how NumPy pickles a CIFAR batch")
        return reconstruct(np.ndarray, shape, checked)

    return safe


def _checked_frombuffer(frombuffer: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    # Protocol 5 pickles an array as its bytes (from the file, so bounded by it) plus dtype and shape.
    def safe(buf: object, dtype: object, shape: object, order: object) -> np.ndarray:
        return frombuffer(buf, _numeric(dtype), shape, order)

    return safe


def _latin1_encode(text: object, encoding: object = "utf-8", errors: object = "strict") -> bytes:
    # Python 3 pickles bytes at protocols 0–2 as _codecs.encode(str, 'latin1'); no other codec.
    if not isinstance(text, str) or str(encoding).lower().replace("-", "").replace("_", "") != "latin1":
        raise DataError(f"refusing _codecs.encode(..., {encoding!r}): only latin1 text encodes pickled bytes")
    return text.encode("latin1")


def _empty_bytes(*args: object) -> bytes:
    # Python 3 pickles b"" at protocols 0–2 as bytes(); bytes(n) would allocate n bytes.
    if args:
        raise DataError("refusing bytes(...) with arguments: pickled bytes come from bytes() or latin1 text")
    return b""


_PLAIN_DTYPE_STATE = (None, None, None, -1, -1, 0)  # no subarray, names or fields; default size, flags


def _load_build(self: _ArrayOnlyUnpickler) -> None:
    # BUILD on a dtype is dtype.__setstate__, which takes any flags ("holds objects" on a uint8 breaks
    # NumPy's internals): only the state NumPy writes for a plain number type is let through.
    target, state = self.stack[-2], self.stack[-1]
    if isinstance(target, np.dtype) and not (
        isinstance(state, tuple)
        and len(state) == 8
        and state[1] in "<>|="
        and state[2:] == _PLAIN_DTYPE_STATE
    ):
        raise DataError(f"refusing a dtype state {state!r:.80}: not the state NumPy writes for a number type")
    pickle._Unpickler.dispatch[pickle.BUILD[0]](self)  # type: ignore[attr-defined]


class _ArrayOnlyUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    """Unpickles dicts, lists, strings, numbers and NumPy numeric arrays as NumPy pickles them at
    protocols 0–5 (as CIFAR's python batches are); any other global is refused. The pure-Python
    unpickler, for its dispatch table: BUILD is checked (`_load_build`)."""

    dispatch: ClassVar[dict] = {**pickle._Unpickler.dispatch, pickle.BUILD[0]: _load_build}  # type: ignore[attr-defined]

    ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.numeric", "_frombuffer"),
            ("numpy._core.numeric", "_frombuffer"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),
            ("__builtin__", "bytes"),
            ("builtins", "bytes"),
        }
    )

    def find_class(self, module: str, name: str) -> object:
        """Resolve only the allowed globals, each through a checking wrapper where it could allocate."""
        if (module, name) in self.ALLOWED:
            if name == "_reconstruct":
                return _checked_reconstruct(super().find_class(module, name))
            if name == "_frombuffer":
                return _checked_frombuffer(super().find_class(module, name))
            if name == "dtype":
                return _safe_dtype
            if name == "encode":
                return _latin1_encode
            if name == "bytes":
                return _empty_bytes
            if name == "ndarray":
                return _NDARRAY  # never np.ndarray itself: only _reconstruct may turn it into one
        raise DataError(f"refusing to unpickle {module}.{name}: a CIFAR batch holds only arrays and lists")


def _unpickle_dict(path: Path, what: str) -> dict:
    """The dict pickled in `path` (bytes keys decoded), read by the array-only unpickler."""
    try:
        with open(path, "rb") as f:
            obj = _ArrayOnlyUnpickler(f, encoding="latin1").load()
    except DataError as err:
        raise DataError(f"{path}: {err}; {REFETCH}") from None
    except Exception as err:  # the unpickler fails on a broken file in many ways, none of them ours
        raise DataError(f"{path}: not a readable {what} ({type(err).__name__}: {err}); {REFETCH}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: a {what} is a pickled dict, found {type(obj).__name__}; {REFETCH}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def read_cifar_python(path: Path, label_key: str = "labels") -> tuple[np.ndarray, np.ndarray, dict]:
    """Read a CIFAR 'python version' batch (as torchvision downloads) safely; returns images NCHW,
    labels and the whole dict. The data must be an integer array of N×3072 bytes, the labels N integers."""
    batch = _unpickle_dict(path, "CIFAR python batch")
    if "data" not in batch or label_key not in batch:
        keys = sorted(map(str, batch))[:20]
        raise DataError(
            f"{path}: a CIFAR python batch needs 'data' and {label_key!r}, found {keys}; {REFETCH}"
        )
    data, labels = batch["data"], batch[label_key]
    # Checked before any conversion: np.asarray of a pickled nested list could be arbitrarily large.
    if not (isinstance(data, np.ndarray) and data.dtype.kind in "ui" and data.ndim == 2):
        kind = f"{data.dtype} array" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: 'data' must be a 2-D uint8 array, found a {kind}; {REFETCH}")
    if isinstance(labels, np.ndarray):
        ok = labels.ndim == 1 and labels.dtype.kind in "ui"
    else:
        ok = isinstance(labels, list | tuple) and all(
            isinstance(v, int | np.integer) and not isinstance(v, bool) and -(2**63) <= v < 2**63
            for v in labels
        )
    if not ok:
        raise DataError(f"{path}: {label_key!r} must be a flat list of integers; {REFETCH}")
    labels = np.asarray(labels, dtype=np.int64)
    if data.shape[1] != CIFAR_IMAGE_BYTES or len(labels) != len(data) or len(data) == 0:
        raise DataError(
            f"{path}: expected data of shape (N, 3072) and N labels, N > 0, got {data.shape} and "
            f"{len(labels)}; {REFETCH}"
        )
    if data.min() < 0 or data.max() > 255:
        raise DataError(f"{path}: pixel values must lie in 0…255, found {data.min()}…{data.max()}; {REFETCH}")
    return data.astype(np.uint8).reshape(-1, 3, 32, 32), labels, batch


def read_pickled_names(path: Path, key: str) -> list[str]:
    """Class names from a CIFAR python meta file (`batches.meta` or `meta`)."""
    names = _unpickle_dict(path, "CIFAR meta file").get(key)
    if not isinstance(names, list | tuple) or not all(isinstance(n, str | bytes) for n in names):
        raise DataError(f"{path}: {key!r} must be a list of class names; {REFETCH}")
    return [n.decode("latin1") if isinstance(n, bytes) else n for n in names]


_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (MNIST's format), gzip-compressed or not (told by content): magic 0x0000TTDD,
    DD big-endian uint32 dimensions, then the data."""
    try:
        with open(path, "rb") as raw:
            gzipped = raw.read(2) == b"\x1f\x8b"
        with (gzip.open if gzipped else open)(path, "rb") as f:
            return _read_idx(f, path, None if gzipped else path.stat().st_size)
    except (OSError, EOFError, zlib.error) as err:  # BadGzipFile is an OSError
        raise DataError(f"{path}: cannot read ({err}); {REFETCH}") from None


def _read_idx(f: io.BufferedIOBase, path: Path, file_size: int | None) -> np.ndarray:
    header = f.read(4)
    if len(header) < 4 or header[:2] != b"\x00\x00" or header[2] not in _IDX_TYPES or header[3] == 0:
        raise DataError(f"{path}: not an IDX file (bad magic number {header.hex() or 'empty'}); {REFETCH}")
    ndim = header[3]
    if ndim > MAX_IDX_DIMS:
        raise DataError(f"{path}: header claims {ndim} dimensions (at most {MAX_IDX_DIMS}); {REFETCH}")
    dims = struct.unpack(f">{ndim}I", _read_exact(f, 4 * ndim, path))
    dtype = np.dtype(_IDX_TYPES[header[2]])
    # In floating point: the product of 2**32-sized dims must not overflow before it is compared.
    expected = float(np.prod(dims, dtype=np.float64)) * dtype.itemsize
    if expected > MAX_IDX_BYTES:
        raise DataError(
            f"{path}: header claims dimensions {dims} ({expected:,.0f} bytes); refusing: "
            f"that is not an MNIST file; {REFETCH}"
        )
    expected = int(expected)
    if file_size is not None and expected > file_size - 4 - 4 * ndim:
        raise DataError(f"{path}: truncated (header claims {expected:,} bytes of data); {REFETCH}")
    data = _read_exact(f, expected, path)
    if f.read(1):
        raise DataError(f"{path}: more data than the header's dimensions {dims}; {REFETCH}")
    return np.frombuffer(data, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def _read_exact(f: io.BufferedIOBase, n: int, path: Path) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise DataError(f"{path}: truncated (expected {n:,} more bytes, found {len(data):,}); {REFETCH}")
    return data
