"""Pieces the benchmark scripts share: the machine line, a made-up CIFAR-10 for --smoke, and the
tutorial path that resnets is measured against.

The tutorial path is written here as the PyTorch tutorials teach it: a torchvision-style CIFAR-10
dataset that turns each image into a PIL image and applies RandomCrop(32, padding=4),
RandomHorizontalFlip, ToTensor and Normalize per sample in a DataLoader with 2 workers; fp32, NCHW,
eager; SGD with a cosine schedule stepped per batch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

import resnets

BATCH = 128
# The recipe both paths train with in the comparisons (epoch.py, parity.py).
LR, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 5e-4


def machine_line() -> str:
    """The machine (CPU model, bf16/AMX support), torch version, thread count and what precision `auto`
    picks here, for the head of every benchmark's output."""
    from resnets.runtime import machine_line as line

    return line()


def write_fake_cifar10(root: Path, per_file: int) -> Path:
    """A made-up CIFAR-10 in the official binary layout (5 training files and the test file) under
    `root`; returns `root`, to pass as the data directory."""
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        records = rng.integers(0, 256, size=(per_file, 3073), dtype=np.uint8)
        records[:, 0] %= 10
        records.tofile(folder / name)
    return root


def resnets_config(model: str, data_dir: str, epochs: int, seed: int, out: str) -> dict:
    """resnets' default path (in-memory uint8 data, batched augmentation, auto precision, channels_last)
    with the comparison recipe: SGD 0.1, momentum 0.9, wd 5e-4, cosine per step, batch 128."""
    return {
        # Every value that shapes training is given here; naming the plain base recipe keeps CIFAR's
        # default (fast-cifar: EMA, alternating flips, a 5k validation split) out of the comparison.
        "recipe": "quick",
        "model": {"name": model},
        "data": {"name": "cifar10", "data_dir": data_dir, "batch_size": BATCH, "val_split": 0},
        "optim": {
            "name": "sgd",
            "lr": LR,
            "momentum": MOMENTUM,
            "nesterov": False,
            "weight_decay": WEIGHT_DECAY,
        },
        "schedule": {"name": "cosine", "unit": "epoch", "warmup": 0},
        "run": {"epochs": epochs, "seed": seed, "out": out, "quiet": True},
    }


class TutorialCIFAR(Dataset):
    """CIFAR-10 as torchvision's CIFAR10 serves it: HWC uint8 → PIL image → per-sample transforms."""

    def __init__(self, images_hwc: np.ndarray, labels: np.ndarray, transform: transforms.Compose) -> None:
        self.images, self.labels, self.transform = images_hwc, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def tutorial_train(
    model_name: str,
    images_hwc: np.ndarray,
    labels: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    epochs: int = 1,
    seed: int = 0,
) -> tuple[torch.nn.Module, float]:
    """Train the tutorial way; returns the model and training images per second (data time included)."""
    transform = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )
    torch.manual_seed(seed)
    loader = DataLoader(
        TutorialCIFAR(images_hwc, labels, transform),
        batch_size=BATCH,
        shuffle=True,
        num_workers=2,
        drop_last=True,
    )
    model = resnets.create_model(model_name)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * len(loader))
    seen, t = 0, time.perf_counter()
    for _ in range(epochs):
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            seen += len(y)
    return model, seen / (time.perf_counter() - t)


@torch.no_grad()
def tutorial_accuracy(
    model: torch.nn.Module,
    images_hwc: np.ndarray,
    labels: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
) -> float:
    """Test accuracy the tutorial way: ToTensor + Normalize per sample, fp32."""
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
    loader = DataLoader(TutorialCIFAR(images_hwc, labels, transform), batch_size=500, num_workers=2)
    model.eval()
    correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in loader)
    return correct / len(labels)
