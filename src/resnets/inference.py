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
    # Build on the meta device first: the metadata is the file author's word, and a model it describes
    # must match the file's tensors before any memory is allocated for it.
    try:
        with torch.device("meta"):
            model = create_model(meta.model, num_classes=meta.num_classes, in_chans=meta.in_chans, **kwargs)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{file}: its metadata does not describe a buildable model ({err})") from None
    expected = model.state_dict()
    mismatched = sorted(set(expected) ^ set(weights)) or [
        k for k, v in expected.items() if tuple(v.shape) != tuple(weights[k].shape)
    ]
    if mismatched:
        raise CheckpointError(
            f"{file} does not match a {meta.model} as its metadata describes (first mismatched key: "
            f"{mismatched[0]!r}); the file is corrupt or was written by something else"
        )
    model.load_state_dict(weights, strict=True, assign=True)
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
    # The run's seed chose an image folder's train/test split, and its input size the image size:
    # evaluate on that same held-out split, at that size.
    _, h, w = meta.input_size
    size = h if name.startswith("imagefolder:") and h == w else None
    splits = load_dataset(name, data_dir=data_dir, seed=meta.data_seed, image_size=size)
    if splits.num_classes != meta.num_classes or splits.image_shape[0] != meta.in_chans:
        raise CheckpointError(
            f"the model has {meta.num_classes} classes and {meta.in_chans} input channels, but {name} has "
            f"{splits.num_classes} classes and {splits.image_shape[0]} channels"
        )
    if "input_size" in meta.model_kwargs and list(splits.image_shape) != list(meta.input_size):
        raise CheckpointError(
            f"this fully connected model takes {meta.input_size} inputs, "
            f"but {name} has {list(splits.image_shape)}"
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
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
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
