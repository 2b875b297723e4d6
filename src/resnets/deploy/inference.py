"""Using a trained model: load it safely, evaluate it on a dataset, predict image files."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from resnets.data import Batches, Normalize, load_dataset
from resnets.data.images import load_image_tensor
from resnets.errors import CheckpointError
from resnets.io.weights import ModelMeta
from resnets.models.factory import model_from_file
from resnets.registry import get_spec
from resnets.runtime import autocast, evaluate_batches, pick_device, pick_precision
from resnets.weights import find_weights, is_weights_name


def weights_path(path: str | Path) -> Path:
    """A run directory's model.safetensors, a file itself, or the file of shipped weights named like
    "resnet20.cifar10" (checked against its SHA-256)."""
    path = Path(path)
    if not path.exists() and is_weights_name(str(path)):
        return find_weights(None, str(path)).path()
    return path / "model.safetensors" if path.is_dir() else path


def load_model(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model from a resnets weights file, run directory or shipped weights name and load its
    weights strictly. The model is in eval mode and carries its metadata as `model.meta` (a ModelMeta)."""
    return model_from_file(weights_path(path)).to(device).eval()


def recorded_data_dir(path: str | Path) -> str | None:
    """The `data.data_dir` a run directory's config.yaml records, or None (a file, shipped weights, or a
    run trained on data that needs no folder): where `resnets eval RUN` finds the run's dataset."""
    config = Path(path) / "config.yaml"
    if not config.is_file():
        return None
    try:
        data = (yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("data") or {}
    except (yaml.YAMLError, UnicodeDecodeError, AttributeError) as e:
        raise CheckpointError(
            f"{config} is not a readable run config ({type(e).__name__}); pass --data-dir to evaluate"
        ) from None
    value = data.get("data_dir") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class InferenceOptions:
    """The levers of the inference path; each is measured by `resnets bench` and can be turned off."""

    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (CUDA), as for training
    channels_last: bool = True  # NHWC activations for conv nets
    fuse: bool = True  # fold each batch norm into the convolution before it
    compile: bool = False  # torch.compile with weight freezing: pays only for long runs (~1 min to compile)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of an eval-mode model with every conv → batch-norm pair folded into one convolution
    (w' = w·γ/σ, b' = (b − μ)·γ/σ + β), by torch.fx's fusion pass. Batch norms that follow anything
    else (pre-activation blocks, DenseNet layers) stay. A model fx cannot trace is returned unchanged."""
    from torch.fx.experimental.optimization import fuse

    if model.training:
        raise ValueError(
            "fold_batchnorm needs a model in eval mode: training batch norm uses batch statistics"
        )
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model
    try:
        return fuse(model, inplace=False)
    except (torch.fx.proxy.TraceError, TypeError, NotImplementedError):
        return model


def is_conv_net(model: nn.Module) -> bool:
    """Whether the model has 2-d convolutions (and so profits from channels_last)."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def prepare_inference(
    model: nn.Module,
    device: torch.device,
    options: InferenceOptions = InferenceOptions(),
    family: str | None = None,
) -> tuple[nn.Module, str]:
    """The model as the inference path runs it (eval mode, folded, channels_last, compiled as `options`
    say) and the precision chosen for it; the original model is left as it was."""
    model = model.eval().to(device)
    precision = pick_precision(options.precision, device, family)
    if options.fuse:
        model = fold_batchnorm(model)
    if options.channels_last and is_conv_net(model):
        model = model.to(memory_format=torch.channels_last)
    if options.compile:
        # Freezing turns the weights into constants, so Inductor can fold and pre-pack them for oneDNN.
        model = torch.compile(model, options={"freezing": True})
    return model, precision


def evaluate(
    path: str | Path,
    data: str | None = None,
    data_dir: str | None = None,
    device: str = "auto",
    batch_size: int = 512,
    options: InferenceOptions = InferenceOptions(),
    flip_tta: bool = False,
) -> dict[str, Any]:
    """Test-set metrics (loss, top-1/top-5, per-class accuracy with the class names, confusion matrix)
    of a saved model on `data` (default: the dataset it was trained on, from the folder its run recorded
    unless `data_dir` says otherwise), through the inference path `options` describe; `flip_tta`
    averages each image's logits with its mirror image's."""
    dev = pick_device(device)
    model = load_model(path, dev)
    meta: ModelMeta = model.meta  # type: ignore[assignment]
    name = data or meta.dataset or "digits"
    if data_dir is None and name == meta.dataset:
        data_dir = recorded_data_dir(path)
    if data is None and name.startswith("imagefolder:"):
        raise CheckpointError(
            f"{path} was trained on {name[:300]}; resnets does not scan a folder a file names. Evaluate on "
            f"it with --data {name[:300]} (or data='...' in Python)"
        )
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
    net, precision = prepare_inference(model, dev, options, get_spec(meta.model).family)
    normalize = Normalize(meta.mean, meta.std, options.channels_last and is_conv_net(model)).to(dev)
    metrics = evaluate_batches(
        net, batches, normalize, meta.num_classes, dev, precision, per_class=True, flip_tta=flip_tta
    )
    views = {"test_time_augmentation": "flip"} if flip_tta else {}
    # The loss is summed in float32: 6 significant digits are what it holds (accuracies are exact ratios).
    metrics["loss"] = float(f"{metrics['loss']:.6g}")
    return {
        "model": meta.model,
        "dataset": name,
        "precision": precision,
        **views,
        **metrics,
        "classes": list(splits.classes),
    }


@dataclass
class Prediction:
    """Top-k classes of one image."""

    file: str
    top: list[tuple[str, float]]  # (class name, probability), most likely first


# A few images take milliseconds, so predict defaults to exact fp32 probabilities; the folded batch
# norms change them only by rounding (~1e-6).
PREDICT_OPTIONS = InferenceOptions(precision="fp32")


@torch.inference_mode()
def predict(
    path: str | Path,
    images: Sequence[str | Path],
    top_k: int = 5,
    options: InferenceOptions = PREDICT_OPTIONS,
    device: str = "cpu",
) -> list[Prediction]:
    """Classify image files with the preprocessing stored beside the weights: converted to the model's
    channels, resized to its input size, normalised with its training statistics. An exported .onnx file
    runs on ONNX Runtime (see resnets.deploy.export.predict_onnx; `options` and `device` do not apply)."""
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if Path(path).suffix.lower() == ".onnx":  # an exported model: ONNX Runtime on the CPU, in fp32
        from resnets.deploy.export import predict_onnx

        return predict_onnx(path, images, top_k)
    dev = pick_device(device)
    model = load_model(path, dev)
    meta: ModelMeta = model.meta  # type: ignore[assignment]
    net, precision = prepare_inference(model, dev, options, get_spec(meta.model).family)
    c, h, w = meta.input_size
    batch = torch.stack([load_image_tensor(Path(f), c, (h, w)) for f in images]).to(dev)
    normalize = Normalize(meta.mean, meta.std, options.channels_last and is_conv_net(model)).to(dev)
    with autocast(dev, precision):
        logits = net(normalize(batch))
    probs = logits.float().softmax(dim=1)
    k = min(top_k, meta.num_classes)
    values, indices = probs.topk(k, dim=1)
    return [
        Prediction(
            str(f), [(meta.classes[i], float(p)) for p, i in zip(v.tolist(), ix.tolist(), strict=True)]
        )
        for f, v, ix in zip(images, values, indices, strict=True)
    ]
