"""Parsers for the official on-disk formats, strict about sizes so a bad file fails clearly.

Nothing here executes code from a file: the CIFAR python batches are unpickled by a loader that
admits only the NumPy array constructors those files use.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np

from resnets.errors import DataError

CIFAR_IMAGE_BYTES = 3 * 32 * 32
# Refuse IDX headers that claim more than this many bytes of data (MNIST's largest file is 47 MB):
# a corrupt or hostile header must not make us allocate.
MAX_IDX_BYTES = 2**30


def read_cifar_binary(
    path: Path, label_bytes: int = 1, label_index: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Read an official CIFAR binary batch: records of `label_bytes` label bytes then 3,072 pixel bytes
    (R, G, B planes of 32×32). CIFAR-100 has 2 label bytes (coarse, fine): `label_index=1` picks fine."""
    raw = np.fromfile(path, dtype=np.uint8)
    record = label_bytes + CIFAR_IMAGE_BYTES
    if raw.size == 0 or raw.size % record:
        raise DataError(
            f"{path}: {raw.size} bytes is not a whole number of {record}-byte CIFAR records; "
            "the file is truncated or not a CIFAR binary batch"
        )
    raw = raw.reshape(-1, record)
    return raw[:, label_bytes:].reshape(-1, 3, 32, 32).copy(), raw[:, label_index].astype(np.int64)


def _safe_dtype(*args: object) -> np.dtype:
    dtype = np.dtype(*args)  # type: ignore[call-overload]
    if dtype.hasobject:
        raise DataError("refusing an object array: a CIFAR batch holds only numbers")
    return dtype


def _checked_reconstruct(reconstruct: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    def safe(subtype: type, shape: object, dtype: object) -> np.ndarray:
        # NumPy pickles an array as an empty shell of `shape` filled by __setstate__; CIFAR's shells
        # are empty, so a large one can only be an attempt to allocate memory.
        if subtype is not np.ndarray or int(np.prod(shape)) > 1024:  # type: ignore[call-overload]
            raise DataError(f"refusing an array shell of shape {shape}: not how NumPy pickles a CIFAR batch")
        return reconstruct(subtype, shape, _safe_dtype(dtype))

    return safe


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings, numbers and NumPy numeric arrays as NumPy pickles them at
    protocols 2–4 (as CIFAR's python batches are); any other global is refused."""

    ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),  # how Python 3 pickles bytes at protocol 2
        }
    )

    def find_class(self, module: str, name: str) -> object:
        """Resolve only the allowed globals, the NumPy ones through checking wrappers."""
        if (module, name) in self.ALLOWED:
            if name == "_reconstruct":
                return _checked_reconstruct(super().find_class(module, name))
            if name == "dtype":
                return _safe_dtype
            return super().find_class(module, name)
        raise DataError(f"refusing to unpickle {module}.{name}: a CIFAR batch holds only arrays and lists")


def read_cifar_python(path: Path, label_key: str = "labels") -> tuple[np.ndarray, np.ndarray, dict]:
    """Read a CIFAR 'python version' batch (as torchvision downloads) safely; returns images NCHW,
    labels and the whole dict."""
    try:
        with open(path, "rb") as f:
            batch = _ArrayOnlyUnpickler(f, encoding="latin1").load()
    except DataError as err:
        raise DataError(f"{path}: {err}") from None
    except Exception as err:
        raise DataError(f"{path}: not a readable CIFAR python batch ({type(err).__name__}: {err})") from None
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or label_key not in batch:
        raise DataError(f"{path}: a CIFAR python batch needs 'data' and {label_key!r}, found {sorted(batch)}")
    data = np.asarray(batch["data"], dtype=np.uint8)
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != CIFAR_IMAGE_BYTES or len(labels) != len(data):
        raise DataError(
            f"{path}: expected data of shape (N, 3072) and N labels, got {data.shape} and {len(labels)}"
        )
    return data.reshape(-1, 3, 32, 32), labels, batch


def read_pickled_names(path: Path, key: str) -> list[str]:
    """Class names from a CIFAR python meta file (`batches.meta` or `meta`)."""
    try:
        with open(path, "rb") as f:
            meta = _ArrayOnlyUnpickler(f, encoding="latin1").load()
        meta = {k.decode() if isinstance(k, bytes) else k: v for k, v in meta.items()}
        return [n.decode() if isinstance(n, bytes) else str(n) for n in meta[key]]
    except DataError as err:
        raise DataError(f"{path}: {err}") from None
    except Exception as err:
        raise DataError(f"{path}: not a readable CIFAR meta file ({type(err).__name__}: {err})") from None


_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (MNIST's format), gzip-compressed or not: magic 0x0000TTDD, DD big-endian
    uint32 dimensions, then the data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            header = f.read(4)
            if len(header) < 4 or header[:2] != b"\x00\x00" or header[2] not in _IDX_TYPES or header[3] == 0:
                raise DataError(f"{path}: not an IDX file (bad magic number {header.hex() or 'empty'})")
            ndim = header[3]
            dims = struct.unpack(f">{ndim}I", _read_exact(f, 4 * ndim, path))
            dtype = np.dtype(_IDX_TYPES[header[2]])
            expected = int(np.prod(dims, dtype=np.float64)) * dtype.itemsize
            if expected > MAX_IDX_BYTES:
                raise DataError(f"{path}: header claims dimensions {dims} ({expected:,} bytes); refusing")
            if opener is open and expected > path.stat().st_size:
                raise DataError(f"{path}: truncated (header claims {expected:,} bytes of data)")
            data = _read_exact(f, expected, path)
            if f.read(1):
                raise DataError(f"{path}: more data than the header's dimensions {dims}")
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DataError(f"{path}: cannot read ({err})") from None
    return np.frombuffer(data, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def _read_exact(f: io.BufferedIOBase, n: int, path: Path) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise DataError(f"{path}: truncated (expected {n:,} more bytes, found {len(data):,})")
    return data
