"""One real CIFAR-10 training epoch, end to end: resnets' default path against the tutorial path.

    python benchmarks/epoch.py --data-dir ../shared/data                  # resnet20 and resnet56
    python benchmarks/epoch.py --smoke                                    # seconds, on made-up data

The tutorial path is written here as the PyTorch tutorials teach it: a torchvision-style CIFAR-10
dataset that turns each image into a PIL image and applies RandomCrop(32, padding=4),
RandomHorizontalFlip, ToTensor and Normalize per sample in a DataLoader with 2 workers, fp32, NCHW,
eager. resnets' path is `resnets.train` for one epoch with its defaults (in-memory uint8 data,
batched augmentation, bf16 autocast where the CPU has it, channels_last). Same model, batch 128,
SGD; the two run interleaved so that drift of the machine's speed hits both.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

import resnets
from resnets.data import load_dataset

BATCH = 128


class TutorialCIFAR(Dataset):
    """CIFAR-10 as torchvision's CIFAR10 serves it: HWC uint8 → PIL image → per-sample transforms."""

    def __init__(self, images_hwc: np.ndarray, labels: np.ndarray, transform: transforms.Compose) -> None:
        self.images, self.labels, self.transform = images_hwc, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def tutorial_epoch(model_name: str, images_hwc: np.ndarray, labels: np.ndarray, mean, std) -> float:
    """Train one epoch the tutorial way; returns training images per second (data time included)."""
    transform = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )
    loader = DataLoader(
        TutorialCIFAR(images_hwc, labels, transform),
        batch_size=BATCH,
        shuffle=True,
        num_workers=2,
        drop_last=True,
    )
    torch.manual_seed(0)
    model = resnets.create_model(model_name)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    seen, t = 0, time.perf_counter()
    for x, y in loader:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen += len(y)
    return seen / (time.perf_counter() - t)


def resnets_epoch(model_name: str, data_dir: str) -> float:
    """Train one epoch with `resnets.train` defaults; returns its training images per second."""
    with tempfile.TemporaryDirectory() as out:
        result = resnets.train(
            {
                "model": {"name": model_name},
                "data": {"name": "cifar10", "data_dir": data_dir, "batch_size": BATCH},
                "run": {"epochs": 1, "out": str(Path(out) / "run"), "quiet": True},
            }
        )
    return float(result.summary["images_per_second"])


def _fake_cifar(root: Path, per_file: int) -> None:
    """A made-up CIFAR-10 in the official binary layout, for --smoke."""
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        records = rng.integers(0, 256, size=(per_file, 3073), dtype=np.uint8)
        records[:, 0] %= 10
        records.tofile(folder / name)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--models", nargs="+", default=["resnet20", "resnet56"])
    parser.add_argument(
        "--rounds", type=int, default=1, help="interleaved rounds per model (median reported)"
    )
    parser.add_argument("--smoke", action="store_true", help="made-up data, 2 batches per epoch")
    args = parser.parse_args()

    tmp = None
    if args.smoke:
        tmp = tempfile.TemporaryDirectory()
        _fake_cifar(Path(tmp.name), per_file=BATCH * 2 // 5 + 1)
        args.data_dir, args.models = tmp.name, args.models[:1]
    data = load_dataset("cifar10", data_dir=args.data_dir)
    images_hwc = data.train.images.permute(0, 2, 3, 1).contiguous().numpy()
    labels = data.train.labels.numpy()

    print(
        f"machine: {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"batch {BATCH}, {len(labels):,} training images per epoch"
    )
    print("| model | resnets img/s | tutorial img/s | speed-up | resnets epoch (s) | tutorial epoch (s) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in args.models:
        fast, slow = [], []
        for _ in range(args.rounds):  # interleaved, so drift of the machine's speed cancels
            fast.append(resnets_epoch(name, args.data_dir))
            slow.append(tutorial_epoch(name, images_hwc, labels, data.mean, data.std))
        f, s = float(np.median(fast)), float(np.median(slow))
        n = len(labels)
        print(f"| {name} | {f:,.0f} | {s:,.0f} | {f / s:.2f}× | {n / f:,.1f} | {n / s:,.1f} |")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
