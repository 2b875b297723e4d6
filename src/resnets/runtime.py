"""Where and how a model runs: device, precision and autocast, the machine it runs on, and the one
evaluation loop (used by the trainer, inference, benchmarks and experiments).

Below training, inference and analysis; above data and models only in that the evaluation loop takes
their objects as arguments (it imports neither).
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from resnets.errors import ConfigError


class _Batches(Protocol):
    def epoch(self, epoch: int, first: int = 0) -> Any: ...


# ---- the machine --------------------------------------------------------------------------------


@functools.cache
def cpu_model() -> str:
    """The CPU's marketing name (/proc/cpuinfo's "model name", else what `platform` knows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def environment(device: torch.device | None = None, runs: int | None = None) -> dict[str, Any]:
    """The machine a result was measured on, as airbench records it: CPU model and its bf16/AMX support,
    threads, GPU, Python and torch versions, the device, and (when given) the number of runs."""
    import torchvision

    flags = cpu_flags()
    env: dict[str, Any] = {
        "cpu": cpu_model(),
        "arch": platform.machine(),
        "cpu_bf16": "amx" if "amx_bf16" in flags else ("avx512_bf16" if "avx512_bf16" in flags else "none"),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "device": str(device or "cpu"),
        # what --precision auto resolves to for a conv net here (pick_precision: oneDNN's own bf16 test)
        "auto_precision": pick_precision("auto", device or torch.device("cpu")),
    }
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(device if device is not None and device.type == "cuda" else 0)
    if runs is not None:
        env["runs"] = runs
    return env


def code_commit() -> str | None:
    """The git commit of resnets' source ("abc1234", "+modified" when src/ differs from it), or None
    outside a git checkout (an installed wheel). Runs and experiments read it when they start, not when
    they end, so that a commit made meanwhile is not credited with their numbers."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return None
    return commit + (
        "+modified" if git("status", "--porcelain", "--", str(Path(__file__).parents[1])) else ""
    )


def machine_line(device: torch.device | None = None) -> str:
    """One line naming the CPU (and GPU), its bf16 support (AMX, AVX-512 BF16 or none), torch, threads and
    what `--precision auto` picks: the head of every benchmark table."""
    env = environment(device)
    gpu = f", GPU {env['gpu']}" if "gpu" in env else ""
    return (
        f"machine: {env['cpu']} ({env['arch']}, bf16: {env['cpu_bf16']}){gpu}, torch {env['torch']}, "
        f"{env['threads']} threads, precision auto = {env['auto_precision']}"
    )


class TensorBatches:
    """Tensors already in memory as the evaluation loop's input: `batch` rows at a time, in order,
    moved to `device`."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch: int, device: torch.device) -> None:
        self.x, self.y, self.batch, self.device = x, y, batch, device

    def epoch(self, epoch: int = 0, first: int = 0) -> Any:
        """Every (images, labels) batch, from batch `first` on."""
        for i in range(first * self.batch, len(self.x), self.batch):
            yield self.x[i : i + self.batch].to(self.device), self.y[i : i + self.batch].to(self.device)


# ---- device and precision ----------------------------------------------------------------------


def pick_device(name: str = "auto") -> torch.device:
    """CUDA if available, else the CPU, unless `name` says otherwise."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    return device


def cpu_has_bf16() -> bool:
    """True where the CPU computes bf16 natively (AVX-512 BF16 or AMX), so bf16 autocast pays."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def pick_precision(precision: str, device: torch.device, family: str | None = None) -> str:
    """Resolve 'auto' to the fastest safe precision: bf16 where the hardware supports it, else fp32.
    Fully connected nets (`family="mlp"`) stay fp32 on the CPU: their small matrix products ran
    1.4–1.7× slower in bf16 on an AVX-512 BF16 CPU (`resnets bench --models highway_mlp plain_mlp`)."""
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(
            "precision fp16 needs a CUDA device (it relies on a gradient scaler); use bf16 or fp32"
        )
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_bf16() and family != "mlp" else "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed-precision context for `precision` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


@torch.no_grad()
def evaluate_batches(
    model: nn.Module,
    batches: _Batches,
    normalize: nn.Module,
    num_classes: int,
    device: torch.device,
    precision: str = "fp32",
    per_class: bool = False,
    flip_tta: bool = False,
) -> dict[str, Any]:
    """Loss, top-1/top-5 accuracy (and per-class accuracy, confusion matrix) of `model` on `batches`.
    `flip_tta`: the logits averaged over each image and its mirror image (test-time augmentation, as
    airbench and Page's ResNet-9 report it: a second number, never the single-view one)."""
    was_training = model.training
    model.eval()
    meter = ClassificationMeter(num_classes, device)
    try:
        for images, labels in batches.epoch(0):
            x = normalize(images)
            with autocast(device, precision):
                logits = model(x).float()
                if flip_tta:
                    logits = 0.5 * (logits + model(x.flip(3)).float())
            meter.update(logits, labels, F.cross_entropy(logits, labels, reduction="sum"))
    finally:
        model.train(was_training)
    return meter.compute(per_class=per_class)


class ClassificationMeter:
    """Accumulates loss, top-1/top-5 hits and the confusion matrix on the device; syncs on `compute`."""

    def __init__(self, num_classes: int, device: torch.device) -> None:
        self.num_classes = num_classes
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.top1 = torch.zeros((), dtype=torch.int64, device=device)
        self.top5 = torch.zeros((), dtype=torch.int64, device=device)
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
        self.count = 0

    def state_dict(self) -> dict[str, Any]:
        """The sums so far, on the CPU (a checkpoint taken mid-epoch carries them)."""
        return {
            "loss_sum": self.loss_sum.cpu(),
            "top1": self.top1.cpu(),
            "top5": self.top5.cpu(),
            "confusion": self.confusion.cpu(),
            "count": self.count,
        }

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Add sums saved by `state_dict` (to a fresh meter: continue a resumed epoch's metrics)."""
        self.loss_sum += saved["loss_sum"].to(self.loss_sum.device)
        self.top1 += saved["top1"].to(self.top1.device)
        self.top5 += saved["top5"].to(self.top5.device)
        self.confusion += saved["confusion"].to(self.confusion.device)
        self.count += saved["count"]

    def update(self, logits: torch.Tensor, labels: torch.Tensor, loss_sum: torch.Tensor) -> None:
        """Add a batch: raw logits, integer labels and the batch's summed loss."""
        self.loss_sum += loss_sum.detach().to(torch.float64)
        k = min(5, logits.shape[1])
        topk = logits.detach().topk(k, dim=1).indices
        hits = topk == labels[:, None]
        self.top1 += hits[:, 0].sum()
        self.top5 += hits.any(dim=1).sum()
        self.confusion += torch.bincount(
            labels * self.num_classes + topk[:, 0], minlength=self.num_classes**2
        ).view(self.num_classes, self.num_classes)
        self.count += len(labels)

    def compute(self, per_class: bool = False) -> dict[str, object]:
        """loss, accuracy, top5_accuracy (fractions), and optionally per-class accuracy and confusion."""
        n = max(1, self.count)
        out: dict[str, object] = {
            "loss": float(self.loss_sum) / n,
            "accuracy": int(self.top1) / n,
            "top5_accuracy": int(self.top5) / n,
            "count": self.count,
        }
        if per_class:
            conf = self.confusion.cpu()
            hits, totals = conf.diag().tolist(), conf.sum(1).tolist()
            out["per_class_accuracy"] = [h / max(1, t) for h, t in zip(hits, totals, strict=True)]
            out["confusion_matrix"] = conf.tolist()  # rows: true class, columns: predicted
        return out
