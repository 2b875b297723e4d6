"""The datasets resnets knows by name (`DATASETS`), and `load_dataset` that returns their splits.

Each entry of `DATASETS` is a documented function `(DataRequest, seed) -> DatasetSplits`, registered by
name; imagefolder:PATH (data/folders.py) loads the user's own class-per-folder images. Datasets that
are not bundled are read from `data_dir`: $RESNETS_DATA_DIR, else ~/.cache/resnets/data.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from resnets.data.base import Augment, DataRequest, DatasetSplits, ImageData, make_splits
from resnets.data.folders import IMAGEFOLDER, load_imagefolder
from resnets.data.formats import REFETCH, read_cifar_binary, read_cifar_python, read_idx, read_pickled_names
from resnets.errors import DataError
from resnets.registry import Registry

Loader = Callable[[DataRequest, int], DatasetSplits]  # (what is asked for, seed) → the splits

DATASETS: Registry[Loader] = Registry(
    "dataset", DataError, f" Or {IMAGEFOLDER}PATH for a folder of your own images, one folder per class."
)

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


def default_data_dir() -> Path:
    """$RESNETS_DATA_DIR, else ~/.cache/resnets/data."""
    return Path(os.environ.get("RESNETS_DATA_DIR", Path.home() / ".cache" / "resnets" / "data")).expanduser()


def _data_root(req: DataRequest) -> Path:
    return Path(req.data_dir).expanduser() if req.data_dir else default_data_dir()


# ---- digits ----------------------------------------------------------------------------------


@DATASETS.register("digits")
def digits(req: DataRequest, seed: int) -> DatasetSplits:
    """The 1,797 8×8 handwritten digits bundled with scikit-learn (Alpaydin & Kaynak 1998, UCI): no
    download, values 0–16 scaled to 0–255, a fixed stratified split of 1,437 training and 360 test."""
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
    classes = [str(d) for d in range(10)]
    return make_splits("digits", train, test, classes, Augment(pad=1, flip=False), req, seed)


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


@DATASETS.register("cifar10")
def cifar10(req: DataRequest, seed: int) -> DatasetSplits:
    """CIFAR-10 (Krizhevsky 2009): 50,000 training and 10,000 test 32×32 colour images of 10 classes,
    from the official binary (cifar-10-batches-bin) or python (cifar-10-batches-py) version."""
    return load_cifar(req, seed, "cifar10")


@DATASETS.register("cifar100")
def cifar100(req: DataRequest, seed: int) -> DatasetSplits:
    """CIFAR-100 (Krizhevsky 2009) with its 100 fine labels: the same images' layout as CIFAR-10, from
    the official binary (cifar-100-binary) or python (cifar-100-python) version."""
    return load_cifar(req, seed, "cifar100")


def load_cifar(req: DataRequest, seed: int, name: str) -> DatasetSplits:
    """CIFAR-10 or CIFAR-100 (fine labels) from the binary or the python version under `data_dir`."""
    root = _data_root(req)
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
    # He et al. 2016 §4.2: 4 pixels of padding, a random 32×32 crop and random horizontal flips.
    return make_splits(name, parts["train"], parts["test"], classes, Augment(pad=4, flip=True), req, seed)


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


@DATASETS.register("mnist")
def mnist(req: DataRequest, seed: int) -> DatasetSplits:
    """MNIST (LeCun et al. 1998): 60,000 training and 10,000 test 28×28 handwritten digits, from the
    IDX files, gzipped or not, flat in `data_dir` or in torchvision's <data_dir>/MNIST/raw/."""
    return load_mnist_like(req, seed, "mnist")


@DATASETS.register("fashion-mnist")
def fashion_mnist(req: DataRequest, seed: int) -> DatasetSplits:
    """Fashion-MNIST (Xiao et al. 2017): MNIST's format and sizes with 10 classes of clothing, flat in
    `data_dir` or in torchvision's <data_dir>/FashionMNIST/raw/."""
    return load_mnist_like(req, seed, "fashion-mnist")


def load_mnist_like(req: DataRequest, seed: int, name: str) -> DatasetSplits:
    """MNIST or Fashion-MNIST from IDX files (gzipped or not), flat or in torchvision's raw folder."""
    root = _data_root(req)
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
    return make_splits(name, parts["train"], parts["test"], classes, Augment(pad=2, flip=flip), req, seed)


# ---- by name ----------------------------------------------------------------------------------


def dataset_loader(name: str) -> Loader:
    """The loader of dataset `name`: a registered one, or imagefolder:PATH; an unknown name raises
    DataError with the closest names."""
    return load_imagefolder if name.startswith(IMAGEFOLDER) else DATASETS[name]


def load_dataset(request: DataRequest | str = "digits", seed: int = 0, **options: Any) -> DatasetSplits:
    """The splits of a dataset: `load_dataset(cfg.data, seed)` for a request (a run's DataConfig is one),
    or `load_dataset("cifar10", data_dir=...)` with DataRequest's fields as keywords. `seed` picks the
    held-out validation images (and the test images of a single image folder)."""
    if isinstance(request, str):
        request = DataRequest(request, **options)
    elif options:
        raise TypeError(f"load_dataset(request, seed) takes no other options, got {', '.join(options)}")
    return dataset_loader(request.name)(request, seed)
