"""The model registry: every named architecture, how to build it, and what it is.

`register_model` records a builder under a unique name together with the facts `resnets models`
reports (paper, skip kind, depth, default input size). `create_model` builds by name and
`list_models` lists names, optionally filtered by a shell-style pattern, as in timm's registry.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from resnets.errors import UnknownModelError
from resnets.layers import SKIP_KINDS


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about one named model besides how to build it."""

    name: str
    builder: Callable[..., nn.Module]
    skip: str  # one of SKIP_KINDS: what connects a block's input to its output
    depth: int  # weighted layers on the main path, as the paper counts them
    paper: str  # short citation of the paper that defines the architecture
    input_size: tuple[int, int, int]  # (channels, height, width) it was designed for
    num_classes: int  # classes of the dataset it was designed for
    family: str  # "cifar", "imagenet" or "mlp"


_REGISTRY: dict[str, ModelSpec] = {}

# The dataset each family was designed for: (input channels, height, width) and number of classes.
FAMILY_DEFAULTS: dict[str, tuple[tuple[int, int, int], int]] = {
    "cifar": ((3, 32, 32), 10),
    "imagenet": ((3, 224, 224), 1000),
    "mlp": ((1, 28, 28), 10),  # MNIST, as Srivastava et al. 2015
}


def register_model(
    name: str | Callable[..., nn.Module] | None = None,
    builder: Callable[..., nn.Module] | None = None,
    *,
    skip: str,
    depth: int,
    paper: str,
    family: str,
    input_size: tuple[int, int, int] | None = None,
    num_classes: int | None = None,
) -> Callable[..., Any]:
    """Register `builder(num_classes=..., in_chans=..., **kw)` under `name`; input size and class
    count default to the family's dataset. Returns the builder.

    Also a decorator, as in torchvision and timm: `@register_model(skip=..., depth=..., paper=...,
    family=...)` above `def resnet56(...)` registers the function under its own name (or under
    `name` if given) and returns it unchanged.
    """
    facts = {
        "skip": skip,
        "depth": depth,
        "paper": paper,
        "family": family,
        "input_size": input_size,
        "num_classes": num_classes,
    }
    if callable(name):  # register_model(fn, skip=...): the builder alone, named after itself
        name, builder = None, name
    if builder is not None:
        return _register(name or builder.__name__, builder, **facts)  # type: ignore[arg-type]

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        return _register(name or fn.__name__, fn, **facts)  # type: ignore[arg-type]

    return decorator


def _register(
    name: str,
    builder: Callable[..., nn.Module],
    *,
    skip: str,
    depth: int,
    paper: str,
    family: str,
    input_size: tuple[int, int, int] | None,
    num_classes: int | None,
) -> Callable[..., nn.Module]:
    if skip not in SKIP_KINDS:
        raise ValueError(f"register_model({name!r}): skip must be one of {SKIP_KINDS}, got {skip!r}")
    if family not in FAMILY_DEFAULTS and (input_size is None or num_classes is None):
        raise ValueError(f"register_model({name!r}): family {family!r} needs input_size and num_classes")
    if name in _REGISTRY:
        raise ValueError(f"a model named {name!r} is already registered; pick another name")
    default_size, default_classes = FAMILY_DEFAULTS.get(family, (input_size, num_classes))
    _REGISTRY[name] = ModelSpec(
        name,
        builder,
        skip,
        depth,
        paper,
        input_size or default_size,
        default_classes if num_classes is None else num_classes,
        family,
    )
    return builder


def get_spec(name: str) -> ModelSpec:
    """Return the registry entry for `name`; unknown names raise with the closest matches."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownModelError(
            f"unknown model {name!r}.{hint} `resnets models` (or resnets.list_models()) lists them all."
        ) from None


def list_models(pattern: str | None = None) -> list[str]:
    """Names of all registered models in registration order, filtered by a glob such as 'resnet*'."""
    names = list(_REGISTRY)
    if pattern:
        names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    return names


def create_model(
    name: str, num_classes: int | None = None, in_chans: int | None = None, **overrides: object
) -> nn.Module:
    """Build the model registered as `name`; class count and input channels default to its dataset's."""
    spec = get_spec(name)
    return spec.builder(
        num_classes=spec.num_classes if num_classes is None else num_classes,
        in_chans=spec.input_size[0] if in_chans is None else in_chans,
        **overrides,
    )
