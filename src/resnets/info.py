"""Facts about a registered model, counted rather than quoted: parameters and forward FLOPs."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cache

import torch
from torch.utils.flop_counter import FlopCounterMode

from resnets.models.factory import create_model
from resnets.registry import get_spec
from resnets.weights import weights_for


@dataclass(frozen=True)
class ModelInfo:
    """One row of `resnets models`."""

    name: str
    params: int  # trainable parameters at the model's default class count
    flops: int  # forward FLOPs for one image at `input_size` (a multiply-add counts as 2)
    input_size: tuple[int, int, int]
    depth: int
    skip: str
    family: str
    paper: str
    weights: tuple[str, ...] = ()  # tags of shipped weights ("cifar10"): create_model(name, weights=tag)

    def as_dict(self) -> dict[str, object]:
        """Plain-data form for JSON."""
        return asdict(self)


def count_params(model: torch.nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_flops(model: torch.nn.Module, input_size: tuple[int, ...]) -> int:
    """Forward FLOPs of one sample, counted by PyTorch's FlopCounterMode: convolutions and matrix
    products only (norms, activations, additions and pooling are not counted, as in the papers)."""
    like = next((p for p in model.parameters() if p.is_floating_point()), None)
    x = torch.zeros(
        (1, *input_size),
        device=like.device if like is not None else "cpu",
        dtype=like.dtype if like is not None else torch.float32,
    )
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


@cache
def model_info(name: str) -> ModelInfo:
    """Parameters and FLOPs of a registered model at its default size, counted on the meta device
    (no memory is allocated, so even the largest model is counted in a moment)."""
    spec = get_spec(name)
    with torch.device("meta"):
        model = create_model(name)
    return ModelInfo(
        name=name,
        params=count_params(model),
        flops=count_flops(model, spec.input_size),
        input_size=spec.input_size,
        depth=spec.depth,
        skip=spec.skip,
        family=spec.family,
        paper=spec.paper,
        weights=tuple(w.tag for w in weights_for(name)),
    )
