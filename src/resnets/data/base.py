"""What a dataset load is asked for (`DataRequest`) and what it returns: in-memory labelled images and
the splits a training run uses."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from resnets.errors import DataError


@dataclass
class DataRequest:
    """What loading a dataset needs: the one definition of these fields. A run's `DataConfig` extends
    it with how batches are made, so a config section is itself a request."""

    name: str = "digits"  # digits | cifar10 | cifar100 | mnist | fashion-mnist | imagefolder:PATH
    data_dir: str | None = None  # where the dataset's files are ($RESNETS_DATA_DIR or ~/.cache/resnets/data)
    download: bool = False  # fetch the official archive (with its checksum) if missing
    val_split: int = 0  # hold out this many training images for validation (He et al.: 5,000)
    train_subset: int = 0  # train on a class-balanced subset of this many of the rest (0: all of them)
    image_size: int | None = None  # imagefolder: resize to this square size
    channels: int | None = None  # imagefolder: 1 (grey) or 3 (RGB); default 1 only if every image is grey
    skip_bad_images: bool = False  # imagefolder: skip unreadable files instead of failing
    max_in_memory_mb: int = 4096  # larger image folders stream from disk


@dataclass
class ImageData:
    """Labelled images held in memory as uint8 NCHW (the compact form; augmentation happens per batch)."""

    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 NCHW, got {self.images.dtype} {tuple(self.images.shape)}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    @classmethod
    def from_numpy(cls, images: np.ndarray, labels: np.ndarray) -> ImageData:
        """Wrap NCHW (or NHW for one channel) uint8 arrays."""
        if images.ndim == 3:
            images = images[:, None]
        return cls(
            torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8)),
            torch.from_numpy(np.asarray(labels, dtype=np.int64)),
        )

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> ImageData:
        """The images at `index`, in that order."""
        return ImageData(self.images[index], self.labels[index])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width)."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]


@dataclass(frozen=True)
class Augment:
    """Training augmentation, applied per batch on the device: He et al. 2016 §4.2 pad-and-crop
    (`pad` pixels of zeros, a random crop of the original size) and random horizontal flips."""

    pad: int = 0
    flip: bool = False


@dataclass
class DatasetSplits:
    """Everything a run needs from a dataset: splits, class names, normalisation and augmentation."""

    name: str
    train: ImageData | Dataset
    test: ImageData | Dataset
    classes: list[str]
    mean: tuple[float, ...]  # per channel, on the [0, 1] scale, from the training images
    std: tuple[float, ...]
    augment: Augment
    image_shape: tuple[int, int, int]
    val: ImageData | Dataset | None = None
    notes: list[str] = field(default_factory=list)  # things the user should know (skipped files, …)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)


def channel_stats(
    images: torch.Tensor | Iterable[torch.Tensor], chunk: int = 4096
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and std on the [0, 1] scale, accumulated in float64 chunk by chunk, of a
    uint8 (N, C, H, W) tensor or of images (C, H, W) given one at a time (memory: one image)."""
    chunks = (
        (images[i : i + chunk] for i in range(0, len(images), chunk))
        if isinstance(images, torch.Tensor)
        else (x.unsqueeze(0) if x.dim() == 3 else x for x in images)
    )
    total: torch.Tensor | float = 0.0
    squares: torch.Tensor | float = 0.0
    count = 0
    for x in chunks:
        x = x.to(torch.float64)
        total = total + x.sum(dim=(0, 2, 3))
        squares = squares + x.square().sum(dim=(0, 2, 3))
        count += x.numel() // x.shape[1]
    if count == 0:
        raise ValueError("channel_stats needs at least one image")
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0).sqrt()
    std = (std / 255.0).clamp_min(1e-6)  # a constant channel must not divide by zero
    return tuple(round(float(v), 6) for v in mean / 255.0), tuple(round(float(v), 6) for v in std)


def hold_out(data: ImageData, count: int, seed: int) -> tuple[ImageData, ImageData]:
    """Split off `count` images (a seeded random choice) as a validation set: (rest, held_out)."""
    if not 0 < count < len(data):
        raise DataError(
            f"--val-split must be between 1 and {len(data) - 1} (the training images), got {count}"
        )
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    return data.subset(order[count:].sort().values), data.subset(order[:count].sort().values)


def balanced_subset(data: ImageData, count: int, num_classes: int, seed: int) -> ImageData:
    """`count` images, as many of each class as there are (count // classes, the remainder going to the
    lowest class indices), each class's chosen by a seeded permutation; kept in their original order."""
    if not 0 < count <= len(data):
        raise DataError(
            f"data.train_subset must be between 1 and {len(data)} (the training images), got {count}"
        )
    g = torch.Generator().manual_seed(seed)
    chosen = []
    for c in range(num_classes):
        members = (data.labels == c).nonzero().flatten()
        want = count // num_classes + (1 if c < count % num_classes else 0)
        if want > len(members):
            rarest = min(int((data.labels == k).sum()) for k in range(num_classes))
            raise DataError(
                f"data.train_subset={count} needs {want} images of class {c}, which has {len(members)}; "
                f"ask for at most {num_classes * rarest}"
            )
        chosen.append(members[torch.randperm(len(members), generator=g)[:want]])
    return data.subset(torch.cat(chosen).sort().values)


def make_splits(
    name: str,
    train: ImageData,
    test: ImageData,
    classes: list[str],
    augment: Augment,
    req: DataRequest,
    seed: int,
    notes: list[str] | None = None,
) -> DatasetSplits:
    """The splits of an in-memory dataset: the requested validation images held out of `train` (with
    `seed`), a class-balanced `train_subset` of the rest if asked, then normalisation statistics from
    what remains, so no held-out image informs them."""
    val = None
    if req.val_split:
        train, val = hold_out(train, req.val_split, seed=seed)
    if req.train_subset:
        train = balanced_subset(train, req.train_subset, len(classes), seed)
    mean, std = channel_stats(train.images)
    return DatasetSplits(name, train, test, classes, mean, std, augment, train.image_shape, val, notes or [])
