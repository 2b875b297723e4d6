"""The user's own images, named imagefolder:PATH: one folder per class, as torchvision's ImageFolder.

PATH/train with PATH/val (or PATH/test) keeps the given split; one class-per-folder tree is split 80/20
per class. Every file is probed up front, so a bad file fails with its name before training starts (or
is skipped and listed); folders that fit in memory are decoded once, larger ones stream from disk.
Memory follows from the decoded size: images sharing a size above MAX_DEFAULT_PIXELS are trained at
DEFAULT_SIZE unless --image-size says otherwise, and a streamed folder's statistics are summed one image
at a time. Symbolic links are followed only to files inside the folder; a link to a folder or to
anything outside it is refused with its name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from resnets.data.base import Augment, DataRequest, DatasetSplits, ImageData, channel_stats, make_splits
from resnets.data.images import inspect_image, load_image_tensor
from resnets.errors import DataError

IMAGEFOLDER = "imagefolder:"  # the dataset name's prefix; the rest is the folder
TEST_FRACTION = 0.2  # of each class, when one tree is split
DEFAULT_SIZE = (64, 64)  # (height, width) when the images' sizes differ and no image_size is given
MAX_DEFAULT_PIXELS = 512 * 512  # a common size above this is not taken as the training size by default
STATS_SAMPLE = 500  # about this many training images give a streamed dataset's statistics
MAX_LISTED = 10  # skipped files named in a note

Probed = dict[Path, tuple[bool, tuple[int, int]]]  # readable file → (grayscale, (width, height))


class Files(NamedTuple):
    """Image files and their class indices, in the same order."""

    paths: list[Path]
    labels: list[int]

    def keep(self, probed: Probed) -> Files:
        """Only the files that were read successfully."""
        kept = [(p, lb) for p, lb in zip(self.paths, self.labels, strict=True) if p in probed]
        return Files([p for p, _ in kept], [lb for _, lb in kept])


class FolderDataset(Dataset):
    """Image files decoded on access (for folders too large to hold in memory)."""

    def __init__(self, files: list[Path], labels: list[int], channels: int, size: tuple[int, int]) -> None:
        self.files, self.labels, self.channels, self.size = files, labels, channels, size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return load_image_tensor(self.files[i], self.channels, self.size), self.labels[i]


def load_imagefolder(req: DataRequest, seed: int) -> DatasetSplits:
    """The images under PATH, where `req.name` is imagefolder:PATH (see the module docstring); `seed`
    picks the test images of a single tree and the validation images."""
    root = Path(req.name.removeprefix(IMAGEFOLDER)).expanduser()
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist")
    notes: list[str] = []
    train, test, classes = _train_test(root, seed, notes)
    probed = _probe([*train.paths, *test.paths], root, req.skip_bad_images, notes)
    train, test = train.keep(probed), test.keep(probed)
    _check_problem(root, classes, train, test)
    channels = req.channels or (1 if all(grey for grey, _ in probed.values()) else 3)
    size = _image_size(probed, req.image_size, notes)
    name, augment = f"{IMAGEFOLDER}{root}", Augment(pad=size[0] // 8, flip=True)
    if (len(train.paths) + len(test.paths)) * channels * size[0] * size[1] <= req.max_in_memory_mb * 2**20:
        images = _decode_all(train, channels, size), _decode_all(test, channels, size)
        return make_splits(name, *images, classes, augment, req, seed, notes)
    if req.val_split or req.train_subset:
        raise DataError(
            "--val-split and data.train_subset are only supported for datasets held in memory; make a val/ "
            "folder (or a smaller folder) instead"
        )
    train_ds = FolderDataset(*train, channels, size)
    test_ds = FolderDataset(*test, channels, size)
    # Too large for memory: statistics from an evenly spaced sample, decoded one image at a time.
    sample = range(0, len(train_ds), max(1, len(train_ds) // STATS_SAMPLE))
    mean, std = channel_stats(train_ds[i][0] for i in sample)
    notes.append(f"streaming {len(train_ds)} images from disk (more than {req.max_in_memory_mb} MB)")
    return DatasetSplits(name, train_ds, test_ds, classes, mean, std, augment, (channels, *size), None, notes)


def _scan(folder: Path, root: Path) -> tuple[Files, list[str]]:
    """Every file under each class folder of `folder` (hidden ones left out), and the class names.
    Symbolic links are followed only to files inside `root`; any other link is refused with its name."""
    entries = sorted(d for d in folder.iterdir() if not d.name.startswith("."))
    classes = [d.name for d in entries if d.is_dir()]
    if not classes:
        raise DataError(f"{folder}: no class folders; expected {folder}/<class name>/<image files>")
    files = Files([], [])
    for label, cls in enumerate(classes):
        _check_link(folder / cls, root)
        for dirpath, dirnames, filenames in os.walk(folder / cls, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for d in dirnames:
                _check_link(Path(dirpath, d), root)
            for name in sorted(filenames):
                path = Path(dirpath, name)
                if not name.startswith(".") and _check_link(path, root).is_file():
                    files.paths.append(path)
                    files.labels.append(label)
    if not files.paths:
        raise DataError(f"{folder}: the class folders hold no files")
    return files, classes


def _check_link(path: Path, root: Path) -> Path:
    """`path`, unless it is a symbolic link to a folder or to anything outside `root`: a folder link
    can loop or repeat files, an outside one reads what the folder's author chose (e.g. /proc)."""
    if not path.is_symlink():
        return path
    target = path.resolve()
    if target.is_dir() or not target.is_relative_to(root.resolve()):
        where = "a folder" if target.is_dir() else f"{target}, outside {root}"
        raise DataError(
            f"{path} is a symbolic link to {where}; resnets follows links in an image folder only to files "
            "inside it. Copy the images in, or remove the link"
        )
    return path


def _train_test(root: Path, seed: int, notes: list[str]) -> tuple[Files, Files, list[str]]:
    """The training and test files: the given train/ and val/ (or test/) folders, or one tree split."""
    test_dir = next((root / n for n in ("val", "test") if (root / n).is_dir()), None)
    if (root / "train").is_dir() != (test_dir is not None):
        found = "train/ but no val/ or test/" if test_dir is None else f"{test_dir.name}/ but no train/"
        raise DataError(
            f"{root}: found {found}; give both, or put the class folders directly in {root} "
            "to split them 80/20"
        )
    if test_dir is not None:
        train, classes = _scan(root / "train", root)
        test, test_classes = _scan(test_dir, root)
        if test_classes != classes:
            raise DataError(
                f"{test_dir}: class folders {test_classes} differ from {root / 'train'}: {classes}"
            )
        return train, test, classes
    files, classes = _scan(root, root)
    is_test = _test_mask(np.asarray(files.labels), len(classes), seed)
    train = Files(*_pick(files, ~is_test))
    test = Files(*_pick(files, is_test))
    notes.append(f"one folder split into {len(train.paths)} training and {len(test.paths)} test images")
    return train, test, classes


def _test_mask(labels: np.ndarray, num_classes: int, seed: int) -> np.ndarray:
    """A seeded TEST_FRACTION of each class (at least one image, none of a class with only one)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), dtype=bool)
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        mask[rng.permutation(idx)[: max(1, round(TEST_FRACTION * len(idx))) if len(idx) > 1 else 0]] = True
    return mask


def _pick(files: Files, mask: np.ndarray) -> tuple[list[Path], list[int]]:
    chosen = [i for i, m in enumerate(mask) if m]
    return [files.paths[i] for i in chosen], [files.labels[i] for i in chosen]


def _probe(paths: list[Path], root: Path, skip_bad: bool, notes: list[str]) -> Probed:
    """Decode every file as training will: modes decide the channels, sizes the default size. A bad
    file fails with its name, or with `skip_bad` is left out and listed in a note."""
    probed: Probed = {}
    bad: list[Path] = []
    for path in paths:
        try:
            probed[path] = inspect_image(path)
        except DataError as err:
            if not skip_bad:
                raise DataError(
                    f"{err}. Remove the file, or pass --skip-bad-images to skip such files"
                ) from None
            bad.append(path)
    if bad:
        listed = ", ".join(str(f.relative_to(root)) for f in bad[:MAX_LISTED])
        more = f" and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
        notes.append(f"skipped {len(bad)} unreadable file(s) (--skip-bad-images): {listed}{more}")
    return probed


def _check_problem(root: Path, classes: list[str], train: Files, test: Files) -> None:
    """Refuse folders that make no classification problem: one class, or an empty split."""
    if len(classes) < 2:
        raise DataError(
            f"{root}: found {len(classes)} class folder(s) {classes}; classification needs at least 2"
        )
    if not train.paths or not test.paths:
        raise DataError(
            f"{root}: {len(train.paths)} training and {len(test.paths)} test images remain; each class "
            "needs at least 2 readable images (one goes to the test split)"
        )


def _image_size(probed: Probed, image_size: int | None, notes: list[str]) -> tuple[int, int]:
    """(height, width): the requested square, else the images' common size up to MAX_DEFAULT_PIXELS,
    else DEFAULT_SIZE. What a batch and the statistics hold follows from it, so a folder of a few huge
    images (64 Mpx decodes to 192 MB each) is not trained at that size unless asked for."""
    if image_size:
        return image_size, image_size
    sizes = {size for _, size in probed.values()}
    if len(sizes) != 1:
        return DEFAULT_SIZE
    width, height = sizes.pop()
    if width * height > MAX_DEFAULT_PIXELS:
        notes.append(
            f"the images are {width}×{height}: training at {DEFAULT_SIZE[1]}×{DEFAULT_SIZE[0]} "
            "(--image-size N to choose)"
        )
        return DEFAULT_SIZE
    return height, width


def _decode_all(files: Files, channels: int, size: tuple[int, int]) -> ImageData:
    images = torch.empty((len(files.paths), channels, *size), dtype=torch.uint8)
    for i, path in enumerate(files.paths):
        images[i] = load_image_tensor(path, channels, size)
    return ImageData(images, torch.tensor(files.labels, dtype=torch.int64))
