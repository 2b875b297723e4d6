"""Writers of tiny files in the real on-disk formats, so tests need no downloaded data."""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch


def random_images(n: int, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def write_cifar_binary(
    path: Path, images: np.ndarray, labels: np.ndarray, coarse: np.ndarray | None = None
) -> None:
    """Official binary records: [coarse label,] label, then 3,072 pixel bytes (R, G, B planes)."""
    cols = [labels.astype(np.uint8)[:, None]]
    if coarse is not None:
        cols.insert(0, coarse.astype(np.uint8)[:, None])
    np.concatenate([*cols, images.reshape(len(images), -1)], axis=1).tofile(path)


def write_cifar_python(path: Path, images: np.ndarray, labels: np.ndarray, label_key: str = "labels") -> None:
    """A 'python version' batch: a pickled dict with 'data' (N×3072 uint8) and the labels list."""
    batch = {"data": images.reshape(len(images), -1), label_key: labels.tolist(), "batch_label": "test"}
    path.write_bytes(pickle.dumps(batch, protocol=2))


def write_cifar10(root: Path, layout: str, per_file: int = 4, seed: int = 0) -> dict[str, tuple]:
    """A complete tiny CIFAR-10 in `layout` ('bin' or 'py'); returns the images and labels written."""
    folder = root / ("cifar-10-batches-bin" if layout == "bin" else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    written: dict[str, list] = {"train": [], "test": []}
    names = [(f"data_batch_{i}", "train") for i in range(1, 6)] + [("test_batch", "test")]
    for k, (name, split) in enumerate(names):
        images = random_images(per_file, (3, 32, 32), seed + k)
        labels = np.arange(k, k + per_file) % 10
        if layout == "bin":
            write_cifar_binary(folder / f"{name}.bin", images, labels)
        else:
            write_cifar_python(folder / name, images, labels)
        written[split].append((images, labels))
    return {
        s: (np.concatenate([w[0] for w in v]), np.concatenate([w[1] for w in v])) for s, v in written.items()
    }


def write_idx(path: Path, array: np.ndarray) -> None:
    """IDX: magic 0x0000 0x08 ndim, big-endian uint32 dims, uint8 data; gzipped if path ends in .gz."""
    data = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def write_mnist(folder: Path, gz: bool = True, n_train: int = 12, n_test: int = 6) -> dict[str, tuple]:
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    out = {}
    for split, n, prefix in (("train", n_train, "train"), ("test", n_test, "t10k")):
        images = random_images(n, (28, 28), seed=n)
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", labels)
        out[split] = (images, labels)
    return out


class MarkerPayload:
    """Stands in for an attacker's code: unpickling it with a plain unpickler creates `marker`, through
    exec (builtins.exec) or a shell (os.system)."""

    def __init__(self, marker: Path, via: str = "exec") -> None:
        self.marker, self.via = str(marker), via

    def __reduce__(self) -> tuple:
        if self.via == "os.system":
            return (os.system, (f"touch {self.marker}",))
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def png_declaring(width: int, height: int) -> bytes:
    """A valid 1-bit greyscale PNG of width×height black pixels: a few KB on disk (zeros compress
    ~1000:1), but width×height bytes once decoded (Pillow keeps one byte per 1-bit pixel)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte 0, then the packed bits
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def safetensors_bytes(header: object, data: bytes = b"", length: int | None = None) -> bytes:
    """A safetensors file: the 8-byte little-endian header length (`length` to lie about it), the
    JSON header, then the data."""
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text + data


def torch_records(obj: object) -> dict[str, bytes]:
    """The records of torch.save(obj)'s zip, by name, in the order torch wrote them."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    with zipfile.ZipFile(buf) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def stored_zip(records: dict[str, bytes], aliases: dict[str, str] | None = None) -> bytes:
    """A zip of uncompressed records, written by hand so that its central directory can also list
    `aliases`: entries named as each key that point at the record named by its value (sharing its bytes)."""
    out, located = bytearray(), {}
    for name, data in records.items():
        crc, raw_name = zlib.crc32(data), name.encode()
        located[name] = (len(out), crc, len(data))
        out += struct.pack(
            "<4s5H3I2H", b"PK\x03\x04", 20, 0, 0, 0, 0, crc, len(data), len(data), len(raw_name), 0
        )
        out += raw_name + data
    entries = [(name, name) for name in records] + list((aliases or {}).items())
    directory = len(out)
    for name, target in entries:
        offset, crc, size = located[target]
        raw_name = name.encode()
        out += struct.pack(
            "<4s6H3I5H2I",
            b"PK\x01\x02",
            20,
            20,
            0,
            0,
            0,
            0,
            crc,
            size,
            size,
            len(raw_name),
            0,
            0,
            0,
            0,
            0,
            offset,
        )
        out += raw_name
    end = struct.pack(
        "<4s4H2IH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(out) - directory, directory, 0
    )
    return bytes(out + end)


def torch_file_with_pickle(pickled: bytes) -> bytes:
    """A torch.save zip of {} whose data.pkl is `pickled`: what a crafted state.pt looks like."""
    records = torch_records({})
    name = next(n for n in records if n.endswith("/data.pkl"))
    return stored_zip({**records, name: pickled})
