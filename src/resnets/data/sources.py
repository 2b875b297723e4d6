"""The datasets resnets knows by name, and `load_dataset` that returns their splits.

digits           scikit-learn's 1,797 8×8 handwritten digits: bundled, no download (the default)
cifar10/100      official binary (`cifar-10-batches-bin`) or python (`cifar-10-batches-py`) layout
mnist            IDX files, gzipped or not, flat or in torchvision's <root>/MNIST/raw/
fashion-mnist    the same for Fashion-MNIST (<root>/FashionMNIST/raw/)
imagefolder:PATH class-per-folder images; PATH/train + PATH/val (or test), or one folder split
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from resnets.data.base import Augment, DatasetSplits, ImageData, channel_stats, hold_out
from resnets.data.formats import REFETCH, read_cifar_binary, read_cifar_python, read_idx, read_pickled_names
from resnets.data.images import inspect_image, load_image_tensor
from resnets.errors import DataError

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
# Official archives of the binary versions, with torchvision's/the authors' published MD5s.
CIFAR_ARCHIVES = {
    "cifar10": (
        "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
        "c32a1d4ab5d03f1284b67883e8d87530",
    ),
    "cifar100": (
        "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
        "03b5dce01913d631647c71ecec9e9cb8",
    ),
}
DIGITS_TEST_SIZE = 360  # 20% of 1,797, stratified; fixed so every run tests on the same images
MAX_LISTED = 10  # skipped files named in a note


@dataclass(frozen=True)
class DataRequest:
    """What `load_dataset` was asked for (the data part of a run's config)."""

    name: str = "digits"
    data_dir: str | None = None
    download: bool = False
    val_split: int = 0
    image_size: int | None = None
    skip_bad_images: bool = False
    max_in_memory_mb: int = 4096
    seed: int = 0


def default_data_dir() -> Path:
    """$RESNETS_DATA_DIR, else ~/.cache/resnets/data."""
    return Path(os.environ.get("RESNETS_DATA_DIR", Path.home() / ".cache" / "resnets" / "data")).expanduser()


def _splits(
    name: str,
    train: ImageData,
    test: ImageData,
    classes: list[str],
    augment: Augment,
    req: DataRequest,
    notes: list[str] | None = None,
) -> DatasetSplits:
    val = None
    if req.val_split:
        train, val = hold_out(train, req.val_split, seed=req.seed)
    mean, std = channel_stats(train.images)
    return DatasetSplits(name, train, test, classes, mean, std, augment, train.image_shape, val, notes or [])


# ---- digits ----------------------------------------------------------------------------------


def load_digits(req: DataRequest) -> DatasetSplits:
    """scikit-learn's bundled 8×8 digits (values 0–16 scaled to 0–255), a fixed stratified split."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    idx_train, idx_test = train_test_split(
        np.arange(len(images)), test_size=DIGITS_TEST_SIZE, stratify=bunch.target, random_state=0
    )
    idx_train.sort(), idx_test.sort()
    train = ImageData.from_numpy(images[idx_train], bunch.target[idx_train])
    test = ImageData.from_numpy(images[idx_test], bunch.target[idx_test])
    # Digits are not mirror-symmetric: crop jitter by one pixel, no flips.
    return _splits("digits", train, test, [str(d) for d in range(10)], Augment(pad=1, flip=False), req)


# ---- CIFAR -------------------------------------------------------------------------------------


def _cifar_layouts(name: str) -> dict[str, dict[str, object]]:
    if name == "cifar10":
        return {
            "cifar-10-batches-bin": {
                "train": [f"data_batch_{i}.bin" for i in range(1, 6)],
                "test": ["test_batch.bin"],
            },
            "cifar-10-batches-py": {
                "train": [f"data_batch_{i}" for i in range(1, 6)],
                "test": ["test_batch"],
            },
        }
    return {
        "cifar-100-binary": {"train": ["train.bin"], "test": ["test.bin"]},
        "cifar-100-python": {"train": ["train"], "test": ["test"]},
    }


def _find_layout(root: Path, layouts: dict[str, dict[str, object]]) -> tuple[str, Path] | None:
    for layout, files in layouts.items():
        for folder in (root / layout, root):
            if all((folder / f).is_file() for f in [*files["train"], *files["test"]]):  # type: ignore[misc]
                return layout, folder
    return None


def load_cifar(req: DataRequest, name: str) -> DatasetSplits:
    """CIFAR-10 or CIFAR-100 (fine labels) from the binary or the python version under `data_dir`."""
    root = Path(req.data_dir).expanduser() if req.data_dir else default_data_dir()
    layouts = _cifar_layouts(name)
    found = _find_layout(root, layouts)
    if found is None and req.download:
        _download_cifar(name, root)
        found = _find_layout(root, layouts)
    if found is None:
        raise DataError(
            f"{name} not found in {root} (looked in {', '.join(str(root / k) for k in layouts)} "
            f"and {root} itself). "
            f"Accepted layouts: {', '.join(layouts)} (the official binary or python versions). "
            f"Point --data-dir at the folder that holds one, or add --download to fetch the official archive."
        )
    layout, folder = found
    files = layouts[layout]
    binary = layout.endswith(("bin", "binary"))
    num_classes = 100 if name == "cifar100" else 10
    parts = {}
    for split in ("train", "test"):
        chunks = []
        for f in files[split]:  # type: ignore[attr-defined]
            if binary:
                chunk = read_cifar_binary(folder / f, *((2, 1) if name == "cifar100" else (1, 0)))
            else:
                chunk = read_cifar_python(folder / f, "fine_labels" if name == "cifar100" else "labels")[:2]
            _check_labels(folder / f, chunk[1], num_classes, split, name)
            chunks.append(chunk)
        parts[split] = ImageData.from_numpy(
            np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks])
        )
    classes = _cifar_classes(name, folder, binary)
    return _splits(name, parts["train"], parts["test"], classes, Augment(pad=4, flip=True), req)


def _check_labels(path: Path, labels: np.ndarray, num_classes: int, split: str, name: str) -> None:
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if len(bad):
        raise DataError(
            f"{path}: {split} labels must lie in 0…{num_classes - 1}, found {int(bad[0])} "
            f"({len(bad)} out of range); is this really {name}? If so, {REFETCH}"
        )


def _cifar_classes(name: str, folder: Path, binary: bool) -> list[str]:
    """The class names of the meta file, or the defaults if it is absent or lists another number."""
    if name == "cifar10":
        meta, key = folder / ("batches.meta.txt" if binary else "batches.meta"), "label_names"
        default = list(CIFAR10_CLASSES)
    else:
        meta, key = folder / ("fine_label_names.txt" if binary else "meta"), "fine_label_names"
        default = [f"class_{i}" for i in range(100)]
    if meta.is_file():
        names = _read_names_txt(meta) if binary else read_pickled_names(meta, key)
        if len(names) == len(default):
            return names
    return default


def _read_names_txt(path: Path) -> list[str]:
    # The official files are ~1 KB: never read a stray huge file whole.
    why = "too large for a list of class names"
    try:
        if path.stat().st_size <= 2**20:
            return path.read_bytes().decode("utf-8").split()
    except (OSError, UnicodeDecodeError) as err:
        why = f"not a readable list of class names ({err})"
    raise DataError(f"{path}: {why}; delete it to use the default names")


def _download_cifar(name: str, root: Path) -> None:
    from torchvision.datasets.utils import download_and_extract_archive

    url, md5 = CIFAR_ARCHIVES[name]
    root.mkdir(parents=True, exist_ok=True)
    try:
        download_and_extract_archive(url, str(root), md5=md5)
    except Exception as err:
        raise DataError(f"could not download {name} from {url} into {root}: {err}") from None


# ---- MNIST and Fashion-MNIST -------------------------------------------------------------------

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def load_mnist_like(req: DataRequest, name: str) -> DatasetSplits:
    """MNIST or Fashion-MNIST from IDX files (gzipped or not), flat or in torchvision's raw folder."""
    root = Path(req.data_dir).expanduser() if req.data_dir else default_data_dir()
    tv_name = "MNIST" if name == "mnist" else "FashionMNIST"
    folders = [root, root / tv_name / "raw", root / name]
    folder = next(
        (f for f in folders if all(_find_idx(f, s) for pair in _IDX_FILES.values() for s in pair)), None
    )
    if folder is None and req.download:
        import torchvision

        try:
            getattr(torchvision.datasets, tv_name)(str(root), download=True)
        except Exception as err:
            raise DataError(f"could not download {name} into {root}: {err}") from None
        folder = root / tv_name / "raw"
    if folder is None:
        raise DataError(
            f"{name} not found: looked for train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
            f"t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz] in {', '.join(map(str, folders))}. "
            f"Point --data-dir at the folder that holds them, or add --download."
        )
    parts = {}
    for split, (img_stem, lbl_stem) in _IDX_FILES.items():
        img_path, lbl_path = _find_idx(folder, img_stem), _find_idx(folder, lbl_stem)
        images, labels = read_idx(img_path), read_idx(lbl_path)  # type: ignore[arg-type]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels) or not len(images):
            raise DataError(
                f"{img_path} / {lbl_path}: expected N×H×W images and N labels (N > 0), "
                f"got {images.shape} and {labels.shape}; {REFETCH}"
            )
        if images.dtype != np.uint8 or labels.dtype != np.uint8:
            raise DataError(
                f"{img_path} / {lbl_path}: expected uint8 images and labels, got {images.dtype} and "
                f"{labels.dtype}; {REFETCH}"
            )
        _check_labels(lbl_path, labels, 10, split, name)  # type: ignore[arg-type]
        parts[split] = ImageData.from_numpy(images, labels)
    classes = [str(d) for d in range(10)] if name == "mnist" else list(FASHION_CLASSES)
    flip = name == "fashion-mnist"  # clothes are mirror-symmetric, digits are not
    return _splits(name, parts["train"], parts["test"], classes, Augment(pad=2, flip=flip), req)


# ---- the user's image folders --------------------------------------------------------------------


class FolderDataset(Dataset):
    """Image files decoded on access (for folders too large to hold in memory)."""

    def __init__(self, files: list[Path], labels: list[int], channels: int, size: tuple[int, int]) -> None:
        self.files, self.labels, self.channels, self.size = files, labels, channels, size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return load_image_tensor(self.files[i], self.channels, self.size), self.labels[i]


def _scan(folder: Path) -> tuple[list[Path], list[int], list[str]]:
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"{folder}: no class folders; expected {folder}/<class name>/<image files>")
    files, labels = [], []
    for label, cls in enumerate(classes):
        for path in sorted((folder / cls).rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                files.append(path)
                labels.append(label)
    if not files:
        raise DataError(f"{folder}: the class folders hold no files")
    return files, labels, classes


def load_imagefolder(req: DataRequest, path: str) -> DatasetSplits:
    """Images in torchvision's ImageFolder layout: PATH/train and PATH/val (or PATH/test), or one
    class-per-folder tree split deterministically (20% of each class for testing)."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist")
    test_dir = next((root / n for n in ("val", "test") if (root / n).is_dir()), None)
    notes: list[str] = []
    if (root / "train").is_dir() != (test_dir is not None):
        found = "train/ but no val/ or test/" if test_dir is None else f"{test_dir.name}/ but no train/"
        raise DataError(
            f"{root}: found {found}; give both, or put the class folders directly in {root} "
            "to split them 80/20"
        )
    if (root / "train").is_dir() and test_dir is not None:
        train_files, train_labels, classes = _scan(root / "train")
        test_files, test_labels, test_classes = _scan(test_dir)
        if test_classes != classes:
            raise DataError(
                f"{test_dir}: class folders {test_classes} differ from {root / 'train'}: {classes}"
            )
    else:
        files, labels, classes = _scan(root)
        rng = np.random.default_rng(req.seed)
        test_mask = np.zeros(len(files), dtype=bool)
        for c in range(len(classes)):
            idx = np.flatnonzero(np.asarray(labels) == c)
            test_mask[rng.permutation(idx)[: max(1, round(0.2 * len(idx))) if len(idx) > 1 else 0]] = True
        train_files = [f for f, t in zip(files, test_mask, strict=True) if not t]
        train_labels = [lb for lb, t in zip(labels, test_mask, strict=True) if not t]
        test_files = [f for f, t in zip(files, test_mask, strict=True) if t]
        test_labels = [lb for lb, t in zip(labels, test_mask, strict=True) if t]
        notes.append(f"one folder split into {len(train_files)} training and {len(test_files)} test images")

    # Probe every file (decoded and converted, as training will): modes decide the channels, sizes the
    # default size; bad files fail here with their name, or are skipped and listed.
    good: dict[Path, tuple[bool, tuple[int, int]]] = {}
    bad: list[Path] = []
    for f in [*train_files, *test_files]:
        try:
            good[f] = inspect_image(f)
        except DataError as err:
            if not req.skip_bad_images:
                raise DataError(
                    f"{err}. Remove the file, or pass --skip-bad-images to skip such files"
                ) from None
            bad.append(f)
    if bad:
        listed = ", ".join(str(f.relative_to(root)) for f in bad[:MAX_LISTED])
        more = f" and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
        notes.append(f"skipped {len(bad)} unreadable file(s) (--skip-bad-images): {listed}{more}")
        train_files, train_labels = _drop(train_files, train_labels, good)
        test_files, test_labels = _drop(test_files, test_labels, good)
    if len(classes) < 2:
        raise DataError(
            f"{root}: found {len(classes)} class folder(s) {classes}; classification needs at least 2"
        )
    if not train_files or not test_files:
        raise DataError(
            f"{root}: {len(train_files)} training and {len(test_files)} test images remain; each class needs "
            "at least 2 readable images (one goes to the test split)"
        )
    channels = 1 if all(g for g, _ in good.values()) else 3
    if req.image_size:
        size = (req.image_size, req.image_size)
    else:
        sizes = {s for _, s in good.values()}
        w, h = sizes.pop() if len(sizes) == 1 else (64, 64)
        size = (h, w)
    bytes_needed = (len(train_files) + len(test_files)) * channels * size[0] * size[1]
    if bytes_needed <= req.max_in_memory_mb * 2**20:
        train = _decode_all(train_files, train_labels, channels, size)
        test = _decode_all(test_files, test_labels, channels, size)
        return _splits(
            f"imagefolder:{root}", train, test, classes, Augment(pad=size[0] // 8, flip=True), req, notes
        )
    # Too large for memory: stream, with statistics from a sample of training images.
    train_ds = FolderDataset(train_files, train_labels, channels, size)
    test_ds = FolderDataset(test_files, test_labels, channels, size)
    sample = torch.stack([train_ds[i][0] for i in range(0, len(train_ds), max(1, len(train_ds) // 500))])
    mean, std = channel_stats(sample)
    val = None
    if req.val_split:
        raise DataError(
            "--val-split is only supported for datasets held in memory; make a val/ folder instead"
        )
    notes.append(f"streaming {len(train_files)} images from disk (more than {req.max_in_memory_mb} MB)")
    return DatasetSplits(
        f"imagefolder:{root}",
        train_ds,
        test_ds,
        classes,
        mean,
        std,
        Augment(pad=size[0] // 8, flip=True),
        (channels, *size),
        val,
        notes,
    )


def _drop(files: list[Path], labels: list[int], good: dict) -> tuple[list[Path], list[int]]:
    kept = [(f, lb) for f, lb in zip(files, labels, strict=True) if f in good]
    return [f for f, _ in kept], [lb for _, lb in kept]


def _decode_all(files: list[Path], labels: list[int], channels: int, size: tuple[int, int]) -> ImageData:
    images = torch.empty((len(files), channels, *size), dtype=torch.uint8)
    for i, f in enumerate(files):
        images[i] = load_image_tensor(f, channels, size)
    return ImageData(images, torch.tensor(labels, dtype=torch.int64))


# ---- by name ----------------------------------------------------------------------------------

DATASETS: dict[str, Callable[[DataRequest], DatasetSplits]] = {
    "digits": load_digits,
    "cifar10": lambda r: load_cifar(r, "cifar10"),
    "cifar100": lambda r: load_cifar(r, "cifar100"),
    "mnist": lambda r: load_mnist_like(r, "mnist"),
    "fashion-mnist": lambda r: load_mnist_like(r, "fashion-mnist"),
}


def load_dataset(name: str = "digits", **options: object) -> DatasetSplits:
    """Load a dataset by name (see the module docstring); options are DataRequest's fields."""
    req = DataRequest(name=name, **options)  # type: ignore[arg-type]
    if name.startswith("imagefolder:"):
        return load_imagefolder(req, name.split(":", 1)[1])
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)} or imagefolder:PATH")
    return DATASETS[name](req)
