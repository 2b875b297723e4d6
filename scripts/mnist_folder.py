"""Write a small real image folder for README's fine-tuning example: the first PER_CLASS MNIST training
digits of each class under train/, and the first TEST_PER_CLASS test digits under test/, as PNG files.

    python scripts/mnist_folder.py DATA/mnist /tmp/digits --per-class 50 --test-per-class 100
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import numpy as np
from PIL import Image


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip or not) as a numpy array: magic, dims, then big-endian uint8 data."""
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def write_split(images: np.ndarray, labels: np.ndarray, out: Path, per_class: int) -> None:
    """The first `per_class` images of each digit as out/DIGIT/INDEX.png."""
    for digit in range(10):
        (out / str(digit)).mkdir(parents=True, exist_ok=True)
        for i in np.flatnonzero(labels == digit)[:per_class]:
            Image.fromarray(images[i]).save(out / str(digit) / f"{i}.png")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mnist", type=Path, help="folder of the official MNIST IDX files")
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--test-per-class", type=int, default=100)
    args = parser.parse_args()
    find = {p.name.split(".")[0]: p for p in args.mnist.iterdir()}
    for split, prefix, count in (("train", "train", args.per_class), ("test", "t10k", args.test_per_class)):
        images, labels = (
            read_idx(find[f"{prefix}-images-idx3-ubyte"]),
            read_idx(find[f"{prefix}-labels-idx1-ubyte"]),
        )
        write_split(images, labels, args.out / split, count)


if __name__ == "__main__":
    main()
