"""`create_model`, the public way to build a model: the registry's builder, plus shipped weights
(`weights=`, `pretrained=True`) and feature extraction (`features_only=True`), as timm's create_model;
and `model_from_file`, the one safe path from a weights file to a model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from resnets.errors import CheckpointError, ConfigError
from resnets.io.weights import ModelMeta, check_meta, load_weights
from resnets.models.features import FeatureListNet
from resnets.registry import build_model, get_spec
from resnets.weights import find_weights, weights_for


def create_model(
    name: str,
    num_classes: int | None = None,
    in_chans: int | None = None,
    *,
    weights: str | Path | None = None,
    pretrained: bool = False,
    features_only: bool = False,
    out_indices: int | Sequence[int] | None = None,
    **overrides: object,
) -> nn.Module:
    """Build the model registered as `name` (class count and input channels default to its dataset's).

    `weights` loads shipped weights by tag ("cifar10") or name ("resnet20.cifar10"), or a resnets
    .safetensors file; `pretrained=True` is the model's default shipped weights. With weights, a
    different `num_classes` gets a fresh classifier (for fine-tuning). `features_only=True` returns a
    FeatureListNet giving the maps of the stages in `out_indices` (timm's reading; default all).
    """
    if pretrained and weights is None:
        shipped = weights_for(get_spec(name).name)
        if not shipped:
            raise ConfigError(
                f"{name} has no shipped weights; `resnets models --pretrained` lists those that do"
            )
        weights = shipped[0].name
    if weights is None:
        model = build_model(name, num_classes, in_chans, **overrides)
    else:
        model = _with_weights(name, weights, num_classes, in_chans, overrides)
    return FeatureListNet(model, out_indices) if features_only else model


def weights_file(name: str, weights: str | Path) -> Path:
    """The file `weights` names for model `name`: a path as given, or shipped weights by tag or name."""
    file = Path(weights)
    if isinstance(weights, Path) or file.suffix == ".safetensors" or file.exists():
        return file
    return find_weights(name, str(weights)).path()


def weights_meta(name: str, weights: str | Path) -> ModelMeta:
    """What the weights file `weights` (see weights_file) says about its model, checked; a
    CheckpointError when the file has no resnets metadata or holds another model."""
    file = weights_file(name, weights)
    _, meta = load_weights(file)
    if meta is None:
        raise CheckpointError(f"{file} has no resnets metadata: it cannot say which model it fits")
    try:
        check_meta(meta)
    except ValueError as err:
        raise CheckpointError(f"{file}: its resnets metadata is out of range ({err})") from None
    _check_model(file, meta, name)
    return meta


def _check_model(file: Path, meta: ModelMeta, name: str) -> None:
    if meta.model != name:
        raise ConfigError(
            f"{file} holds a {meta.model}, not a {name}: create_model({meta.model!r}, weights=...)"
        )


def _with_weights(
    name: str, weights: str | Path, num_classes: int | None, in_chans: int | None, overrides: dict
) -> nn.Module:
    file = weights_file(name, weights)
    model = model_from_file(file)
    meta = model.meta
    if meta.model != name:
        raise ConfigError(
            f"{file} holds a {meta.model}, not a {name}: create_model({meta.model!r}, weights=...)"
        )
    if in_chans is not None and in_chans != meta.in_chans:
        raise ConfigError(
            f"{file} was trained on {meta.in_chans}-channel images; in_chans={in_chans} cannot load it"
        )
    changed = {k: v for k, v in overrides.items() if meta.model_kwargs.get(k, _UNSET) != v}
    if changed:
        raise ConfigError(
            f"{file} was trained as {meta.model}({meta.model_kwargs or ''}); the overrides {changed} change "
            "the architecture its weights fit: drop them, or train without weights"
        )
    if num_classes is not None and num_classes != meta.num_classes:
        model.reset_classifier(num_classes)  # a new head for a new task; the body keeps its weights
    return model.train()


_UNSET = object()


def model_from_file(path: str | Path) -> nn.Module:
    """Rebuild a model from a resnets weights file and load its weights strictly, on the CPU in train
    mode; the model carries its metadata as `model.meta` (a ModelMeta). Every value the file chooses is
    checked before anything is built from it."""
    file = Path(path)
    weights, meta = load_weights(file)
    if meta is None:
        raise CheckpointError(
            f"{file} has no resnets metadata (model name, classes, normalisation); load it into "
            "resnets.create_model(...) yourself with model.load_state_dict(safetensors.torch.load_file(path))"
        )
    try:
        check_meta(meta)  # sizes the model, the input and the class list before anything is built from them
    except ValueError as err:
        raise CheckpointError(
            f"{file}: its resnets metadata is out of range ({err}); the file is damaged or was not written "
            "by resnets. Load its tensors with safetensors.torch.load_file and build the model yourself"
        ) from None
    # The cost of building is the metadata's to choose (a 460-byte file may ask for 10,000 layers):
    # every weighted layer the depth counts has a tensor in the file, so the file's size bounds it.
    depth = meta.model_kwargs.get("depth")
    if isinstance(depth, int) and depth > len(weights):
        raise CheckpointError(
            f"{file}: its metadata describes a {meta.model} of depth {depth:,}, but the file holds only "
            f"{len(weights):,} tensors (each weighted layer has at least one); the file is damaged or crafted"
        )
    kwargs = dict(meta.model_kwargs)
    if "input_size" in kwargs:
        kwargs["input_size"] = tuple(kwargs["input_size"])
    # Build on the meta device first: the metadata is the file author's word, and a model it describes
    # must match the file's tensors before any memory is allocated for it.
    try:
        with torch.device("meta"):
            model = build_model(meta.model, num_classes=meta.num_classes, in_chans=meta.in_chans, **kwargs)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:  # RuntimeError: size arithmetic
        raise CheckpointError(f"{file}: its metadata does not describe a buildable model ({err})") from None
    except MemoryError:
        raise CheckpointError(
            f"{file}: building the {meta.model} its metadata describes ran out of memory; the file is "
            "damaged or crafted"
        ) from None
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
    return model
