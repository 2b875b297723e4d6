"""Using a trained model: load it safely, evaluate it on a dataset, predict image files."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnets.data import Batches, Normalize, load_dataset
from resnets.data.images import load_image_tensor
from resnets.errors import CheckpointError
from resnets.registry import create_model
from resnets.train.checkpoint import ModelMeta, load_weights
from resnets.train.engine import evaluate_batches, pick_device, pick_precision


def weights_path(path: str | Path) -> Path:
    """A run directory's model.safetensors, or the file itself."""
    path = Path(path)
    return path / "model.safetensors" if path.is_dir() else path


def load_model(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model from a resnets weights file (or run directory) and load its weights strictly.
    The returned model is in eval mode and carries its metadata as `model.meta` (a ModelMeta)."""
    file = weights_path(path)
    weights, meta = load_weights(file)
    if meta is None:
        raise CheckpointError(
            f"{file} has no resnets metadata (model name, classes, normalisation); load it into "
            "resnets.create_model(...) yourself with model.load_state_dict(safetensors.torch.load_file(path))"
        )
    kwargs = dict(meta.model_kwargs)
    if "input_size" in kwargs:
        kwargs["input_size"] = tuple(kwargs["input_size"])
    model = create_model(meta.model, num_classes=meta.num_classes, in_chans=meta.in_chans, **kwargs)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{file} does not match a {meta.model}: {str(err).splitlines()[0]}") from None
    model.meta = meta  # type: ignore[assignment]
    return model.to(device).eval()


def evaluate(
    path: str | Path,
    data: str | None = None,
    data_dir: str | None = None,
    device: str = "auto",
    precision: str = "fp32",
    batch_size: int = 512,
) -> dict[str, Any]:
    """Test-set metrics (loss, top-1/top-5, per-class accuracy, confusion matrix) of a saved model on
    `data` (default: the dataset it was trained on)."""
    dev = pick_device(device)
    model = load_model(path, dev)
    meta: ModelMeta = model.meta  # type: ignore[assignment]
    name = data or meta.dataset or "digits"
    splits = load_dataset(name, data_dir=data_dir)
    if splits.num_classes != meta.num_classes or splits.image_shape[0] != meta.in_chans:
        raise CheckpointError(
            f"the model has {meta.num_classes} classes and {meta.in_chans} input channels, but {name} has "
            f"{splits.num_classes} classes and {splits.image_shape[0]} channels"
        )
    batches = Batches(splits.test, batch_size, shuffle=False, drop_last=False, device=dev)
    normalize = Normalize(meta.mean, meta.std).to(dev)
    metrics = evaluate_batches(
        model, batches, normalize, meta.num_classes, dev, pick_precision(precision, dev), per_class=True
    )
    return {"model": meta.model, "dataset": name, **metrics}


@dataclass
class Prediction:
    """Top-k classes of one image."""

    file: str
    top: list[tuple[str, float]]  # (class name, probability), most likely first


@torch.no_grad()
def predict(path: str | Path, images: Sequence[str | Path], top_k: int = 5) -> list[Prediction]:
    """Classify image files with the preprocessing stored beside the weights: converted to the model's
    channels, resized to its input size, normalised with its training statistics."""
    model = load_model(path)
    meta: ModelMeta = model.meta  # type: ignore[assignment]
    c, h, w = meta.input_size
    batch = torch.stack([load_image_tensor(Path(f), c, (h, w)) for f in images])
    probs = model(Normalize(meta.mean, meta.std)(batch)).softmax(dim=1)
    k = min(top_k, meta.num_classes)
    values, indices = probs.topk(k, dim=1)
    return [
        Prediction(
            str(f), [(meta.classes[i], float(p)) for p, i in zip(v.tolist(), ix.tolist(), strict=True)]
        )
        for f, v, ix in zip(images, values, indices, strict=True)
    ]
