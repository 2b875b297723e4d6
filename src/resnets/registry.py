"""Registries: one style for every named thing (models, recipes, datasets, experiments).

`Registry` is a read-only mapping of names to entries in registration order; entries are added by
decorator, an unknown name raises with the closest names, and `names(pattern)` filters by a glob, as in
timm's registry. The model registry is one instance: `register_model` records a builder together with
the facts `resnets models` reports (paper, skip kind, depth, default input size), `create_model` builds
by name and `list_models` lists names.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from torch import nn

from resnets.errors import ConfigError, UnknownModelError
from resnets.layers import SKIP_KINDS

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Named entries of one kind (`kind` names it in errors), in registration order."""

    def __init__(self, kind: str, error: type[Exception] = ConfigError, listing: str = "") -> None:
        self.kind, self.error, self.listing = kind, error, listing
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Record `entry` under `name`; a name already taken raises (two entries would shadow)."""
        if name in self._entries:
            raise ValueError(f"a {self.kind} named {name!r} is already registered; pick another name")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of `add`: `@RECIPES.register("quick")` above a function records it as is."""
        return lambda entry: self.add(name, entry)

    def get(self, name: str, default: Any = None) -> T:  # type: ignore[override]
        """The entry under `name`; an unknown name raises `error` naming the closest ones."""
        try:
            return self._entries[name]
        except KeyError:
            pass
        close = (
            difflib.get_close_matches(name[:200], self._entries, n=5, cutoff=0.5)
            if isinstance(name, str)
            else []
        )
        hint = f" Did you mean: {', '.join(close)}?" if close else f" Choose one of: {', '.join(self)}."
        shown = repr(name) if len(repr(name)) <= 80 else repr(name)[:80] + "…"  # a name may be megabytes
        raise self.error(f"unknown {self.kind} {shown}.{hint}{self.listing}") from None

    def names(self, pattern: str | None = None) -> list[str]:
        """Names in registration order, filtered by a shell-style glob such as 'resnet*'."""
        return [n for n in self._entries if not pattern or fnmatch.fnmatchcase(n, pattern)]

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries


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


MODELS: Registry[ModelSpec] = Registry(
    "model", UnknownModelError, " `resnets models` (or resnets.list_models()) lists them all."
)

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
    default_size, default_classes = FAMILY_DEFAULTS.get(family, (input_size, num_classes))
    MODELS.add(
        name,
        ModelSpec(
            name,
            builder,
            skip,
            depth,
            paper,
            input_size or default_size,
            default_classes if num_classes is None else num_classes,
            family,
        ),
    )
    return builder


def get_spec(name: str) -> ModelSpec:
    """Return the registry entry for `name`; unknown names raise with the closest matches."""
    return MODELS.get(name)


def list_models(pattern: str | None = None) -> list[str]:
    """Names of all registered models in registration order, filtered by a glob such as 'resnet*'."""
    return MODELS.names(pattern)


def build_model(
    name: str, num_classes: int | None = None, in_chans: int | None = None, **overrides: object
) -> nn.Module:
    """Call the builder registered as `name`; class count and input channels default to its dataset's.
    `resnets.create_model` adds shipped weights and feature extraction on top."""
    spec = get_spec(name)
    return spec.builder(
        num_classes=spec.num_classes if num_classes is None else num_classes,
        in_chans=spec.input_size[0] if in_chans is None else in_chans,
        **overrides,
    )
