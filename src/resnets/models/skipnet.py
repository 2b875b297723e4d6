"""The seed's general form: a fully connected network with any set of skips, of any kind.

Layer l (1 ≤ l ≤ L) computes, from the activations a^0 (the input) … a^(l-1) of the layers below it,

    Z^l = W^(l-1,l) a^(l-1) + b^l + Σ_{k ∈ K(l)} S^(l-k,l)(a^(l-k)),    a^l = g(Z^l)

where each skip S names its source layer l-k and its kind:

    identity    S(a) = a                       fixed, not learned; widths must match (ResNet)
    projection  S(a) = W^(l-k,l) a             a learned matrix on the skip
    dense       [a^(l-1); a^(l-k); …] feeds one merged matrix [W^(l-1,l) W^(l-k,l) …] (DenseNet)
    gated       a^l = T ⊙ g(Z^l) + (1 − T) ⊙ a^(l-k),  T = σ(W_T a^(l-1) + b_T)  (Highway)

and a linear head maps a^L to class scores. A layer with no skips is a plain layer. A dense skip
and a projection skip compute the same function; the dense form is the seed's remark that the
matrices "can be merged and learned in the same step", one matrix on the stacked activations.

g is `act_layer` (ReLU by default). With a `norm_layer` (none by default; "layernorm", "batchnorm"…)
a norm N takes the layer's own term before the skips are added, a^l = g(N(W^(l-1,l) a^(l-1) + b^l) + Σ S),
where a post-activation ResNet block puts its batch norm (after the conv, before the sum; He et al. 2016).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from math import prod, sqrt
from typing import Any

import torch
import torch.fx
from torch import nn

from resnets.errors import ConfigError
from resnets.layers import (
    DEFAULT_GATE_BIAS,
    ActLayer,
    Gate,
    NormLayer,
    canonical_act_name,
    get_act_layer,
    get_norm_layer,
    highway_combine,
)
from resnets.models.base import ClassifierNet
from resnets.papers import DENSE_MLP, SEED, SRIVASTAVA2015
from resnets.registry import register_model

MLP_SKIPS = ("identity", "projection", "dense", "gated")
# Activations whose He-init gain PyTorch knows (torch.nn.init.calculate_gain), under its names.
_KNOWN_GAINS = {
    "relu": "relu",
    "leaky_relu": "leaky_relu",
    "tanh": "tanh",
    "sigmoid": "sigmoid",
    "identity": "linear",
}


@dataclass(frozen=True)
class Skip:
    """A skip into a layer from the output of layer `source` (0 is the network input a^0)."""

    source: int
    kind: str = "identity"

    def __post_init__(self) -> None:
        if self.kind not in MLP_SKIPS:
            raise ValueError(f"skip kind must be one of {MLP_SKIPS}, got {self.kind!r}")


@dataclass(frozen=True)
class LayerSpec:
    """One layer: its width, the skips that feed it (no skips: a plain layer, the kind "none") and its
    activation g (None: the net's `act_layer`; "identity" makes a linear layer)."""

    width: int
    skips: tuple[Skip, ...] = field(default_factory=tuple)
    act: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.width, bool) or not isinstance(self.width, int) or self.width < 1:
            raise ValueError(f"a layer's width must be a positive integer, got {self.width!r}")

    @classmethod
    def coerce(cls, value: LayerSpec | int | Mapping[str, object]) -> LayerSpec:
        """Accept a LayerSpec, a bare width, or a mapping such as
        {"width": 64, "skips": [[1, "identity"]], "act": "identity"} (the form a config file gives)."""
        if isinstance(value, LayerSpec):
            return value
        if isinstance(value, int):
            return cls(value)
        if isinstance(value, Mapping):
            skips = tuple(
                s if isinstance(s, Skip) else Skip(**s) if isinstance(s, Mapping) else Skip(*s)
                for s in value.get("skips", ())  # type: ignore[union-attr]
            )
            act = value.get("act")
            return cls(int(value["width"]), skips, None if act is None else str(act))  # type: ignore[arg-type]
        raise TypeError(f"a layer must be a LayerSpec, an int width or a mapping, got {value!r}")


MAX_DENSE_SKIPS = 500_000  # depth 1,000: counted before any is built, so a depth from a file costs nothing


def _max_dense_depth() -> int:
    return int((1 + math.isqrt(1 + 8 * MAX_DENSE_SKIPS)) // 2)


def uniform_layers(depth: int, width: int, skip: str = "none", span: int = 2) -> list[LayerSpec]:
    """`depth` layers of `width` units wired by one rule.

    none: plain; identity/projection: layer l gets a skip from l-span (for l-span ≥ 1, the seed's
    a^l = g(Z^l + a^(l-2)) with span 2); gated: every layer after the first carries a^(l-1)
    (Srivastava et al.: a plain first layer sets the width); dense: every earlier layer feeds l.
    """
    if depth < 1 or width < 1:
        raise ValueError(f"depth and width must be positive, got depth={depth}, width={width}")
    if skip not in ("none", *MLP_SKIPS):
        raise ValueError(f"skip must be one of {('none', *MLP_SKIPS)}, got {skip!r}")
    if span < 1 or (skip == "projection" and span < 2):
        raise ValueError(
            f"span must be >= 1 (>= 2 for projection skips: a learned skip from l-1 would be the layer's "
            f"own matrix W^(l-1,l)), got {span}"
        )
    dense_skips = depth * (depth - 1) // 2  # layer l is fed by the l-1 layers below it (input included)
    if skip == "dense" and dense_skips > MAX_DENSE_SKIPS:
        raise ValueError(
            f"a dense net of depth {depth:,} has {dense_skips:,} dense skips (they grow as depth²/2); at "
            f"most {MAX_DENSE_SKIPS:,} are built (depth {_max_dense_depth():,})"
        )
    layers = []
    for l in range(1, depth + 1):
        if skip in ("identity", "projection"):
            skips = (Skip(l - span, skip),) if l - span >= 1 else ()
        elif skip == "gated":
            skips = (Skip(l - 1, "gated"),) if l >= 2 else ()
        elif skip == "dense":
            skips = tuple(Skip(s, "dense") for s in range(l - 1))
        else:
            skips = ()
        layers.append(LayerSpec(width, skips))
    return layers


class SkipLayer(nn.Module):
    """Layer l of a SkipNet; `forward` takes the list [a^0, …, a^(l-1)] and returns a^l."""

    def __init__(
        self,
        index: int,
        widths_below: Sequence[int],
        spec: LayerSpec,
        act_layer: str | ActLayer,
        gate_bias: float,
        norm_layer: str | NormLayer | None = None,
    ) -> None:
        super().__init__()
        self.index, self.width = index, spec.width
        width = spec.width
        by_kind: dict[str, list[int]] = {k: [] for k in MLP_SKIPS}
        seen: set[int] = set()
        for s in spec.skips:
            if not 0 <= s.source < index:
                raise ValueError(
                    f"layer {index}: a skip must come from a layer below it (0…{index - 1}), "
                    f"got source {s.source}"
                )
            if s.source in seen:
                raise ValueError(f"layer {index}: two skips from layer {s.source}")
            seen.add(s.source)
            if s.kind in ("projection", "dense") and s.source == index - 1:
                raise ValueError(
                    f"layer {index}: a {s.kind} skip from layer {index - 1} duplicates the "
                    f"layer's own weight matrix W^({index - 1},{index}); skip from lower layers"
                )
            if s.kind in ("identity", "gated") and widths_below[s.source] != width:
                raise ValueError(
                    f"layer {index}: an {s.kind} skip from layer {s.source} needs equal widths, but "
                    f"a^{s.source} has {widths_below[s.source]} units and a^{index} has {width}; "
                    f"use kind='projection' for a learned W^({s.source},{index})"
                )
            by_kind[s.kind].append(s.source)
        if by_kind["gated"] and len(spec.skips) > 1:
            raise ValueError(f"layer {index}: a gated (highway) skip must be the layer's only skip")

        self.identity_sources = by_kind["identity"]
        self.dense_sources = by_kind["dense"]
        self.carry_source = by_kind["gated"][0] if by_kind["gated"] else None
        # W^(l-1,l) and b^l, merged with the dense matrices W^(l-k,l) (columns: a^(l-1), then dense sources).
        fan_in = widths_below[index - 1] + sum(widths_below[s] for s in self.dense_sources)
        self.linear = nn.Linear(fan_in, width)
        # No module at all without a norm, so the default net is exactly the seed's.
        self.norm = None if norm_layer is None else get_norm_layer(norm_layer, spatial=False)(width)
        self.projections = nn.ModuleDict(
            {str(s): nn.Linear(widths_below[s], width, bias=False) for s in by_kind["projection"]}
        )
        self.gate = (
            Gate(widths_below[index - 1], width, bias=gate_bias, conv=False)
            if self.carry_source is not None
            else None
        )
        self.act = get_act_layer(act_layer)()

    def forward(self, acts: Sequence[torch.Tensor]) -> torch.Tensor:
        below = acts[-1]
        if self.dense_sources:
            z = self.linear(torch.cat([below, *(acts[s] for s in self.dense_sources)], dim=1))
        else:
            z = self.linear(below)
        if self.norm is not None:
            z = self.norm(z)
        for source, proj in self.projections.items():
            z = z + proj(acts[int(source)])
        for source in self.identity_sources:
            z = z + acts[source]
        h = self.act(z)
        if self.gate is None:
            return h
        return highway_combine(h, acts[self.carry_source], self.gate(below))


class SkipNet(ClassifierNet):
    """A fully connected network with arbitrary skips (see the module docstring); flattens its input.
    `scale_branches` starts the matrix of every layer that sums identity skips 1/√n smaller (n such
    layers), so a deep un-normalised residual stack does not explode at init. `activation` is the older
    name of `act_layer`, still accepted; `self.activation` is the activation's name (None for a callable)."""

    spatial_features = False  # a^L is a vector

    classifier_name = "head"

    def __init__(
        self,
        layers: Iterable[LayerSpec | int | Mapping[str, object]],
        *,
        num_classes: int = 10,
        in_chans: int = 1,
        input_size: Sequence[int] = (28, 28),
        act_layer: str | ActLayer = "relu",
        norm_layer: str | NormLayer | None = None,
        gate_bias: float = DEFAULT_GATE_BIAS,
        scale_branches: bool = False,
        activation: str | None = None,
    ) -> None:
        super().__init__()
        if activation is not None:
            if act_layer not in ("relu", activation):
                raise ConfigError(
                    f"give act_layer ({act_layer!r}) or its older name activation ({activation!r}), not both"
                )
            act_layer = activation
        name = canonical_act_name(act_layer)  # a ConfigError listing the names for an unknown one
        specs = [LayerSpec.coerce(v) for v in layers]
        if not specs:
            raise ValueError("a SkipNet needs at least one layer")
        self.num_classes, self.in_chans, self.input_size = num_classes, in_chans, tuple(input_size)
        self.in_features = in_chans * prod(self.input_size)
        self.activation = name
        self.specs = specs
        widths = [self.in_features]
        blocks = []
        for l, spec in enumerate(specs, start=1):
            act = act_layer if spec.act is None else spec.act
            blocks.append(SkipLayer(l, widths, spec, act, gate_bias, norm_layer))
            widths.append(spec.width)
        self.widths = widths  # widths[l] is the width of a^l
        self.layers = nn.ModuleList(blocks)
        self.num_features = widths[-1]
        self.head = self._make_classifier(num_classes)
        self._init_weights(gate_bias, scale_branches)

    def _gain(self, layer: int = 1) -> float:
        """He et al. 2015's gain for the activation g that made layer `layer`'s input (the net's own g
        for the first layer, whose input is the data): PyTorch's where it has one, else 1/√E[g(z)²] for
        z ~ N(0, 1), the factor that keeps E[a²] = Var(z) through W (√2 for ReLU, as calculate_gain)."""
        below = self.specs[layer - 2].act if layer >= 2 else None
        name = self.activation if below is None else canonical_act_name(below)
        if name in _KNOWN_GAINS:
            return nn.init.calculate_gain(_KNOWN_GAINS[name])
        z = torch.linspace(-12.0, 12.0, 24_001, dtype=torch.float64, device="cpu")
        with torch.no_grad():
            g = self.layers[max(layer - 2, 0)].act(z.clone())  # a clone: g may work in place
        second_moment = torch.trapezoid(g**2 * torch.exp(-(z**2) / 2), z) / sqrt(2 * torch.pi)
        return float(second_moment) ** -0.5

    @property
    def skip(self) -> str:
        """The network's skip kind if all layers agree, else 'mixed'."""
        kinds = {s.kind for spec in self.specs for s in spec.skips} or {"none"}
        return kinds.pop() if len(kinds) == 1 else "mixed"

    def _init_weights(self, gate_bias: float, scale_branches: bool) -> None:
        # He et al. 2015: N(0, gain²/fan_in) keeps activation variance across layers (gain √2 for
        # ReLU); biases start at zero and gate biases negative, so highway layers start carrying.
        # Without normalisation every identity sum a^l = g(W a^(l-1) + a^(l-k)) adds the branch's variance
        # to the skip's, so the variance grows geometrically with depth (residual_mlp of 100 layers: output
        # std 1.7e12 at init). Scaling the matrix of each of the n summing layers by 1/√n keeps the growth
        # bounded (cf. Hanin & Rolnick 2018 on scaled residual modules; Fixup, Zhang et al. 2019). A
        # projection skip W^(l-k,l) a^(l-k) sums the same way; with `scale_branches` it starts with gain 1,
        # carrying its source's variance as an identity skip would (He init's gain would double it).
        summing = sum(1 for layer in self.layers if layer.identity_sources or layer.projections)
        branch = 1 / summing**0.5 if scale_branches and summing else 1.0
        for l, layer in enumerate(self.layers, start=1):
            gain = self._gain(l)
            sums = bool(layer.identity_sources or layer.projections)
            for lin in [layer.linear, *layer.projections.values()]:
                own = lin is layer.linear
                scale = branch if sums and own else 1.0
                std = scale * (gain if own or not scale_branches else 1.0) / lin.in_features**0.5
                nn.init.normal_(lin.weight, 0.0, std)
                if lin.bias is not None:
                    nn.init.zeros_(lin.bias)
            if layer.gate is not None:
                nn.init.constant_(layer.gate.proj.bias, gate_bias)

    def activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[a^0, a^1, …, a^L] for a batch."""
        acts = [flatten_input(x, self.in_features, self.in_chans, self.input_size)]
        for layer in self.layers:
            acts.append(layer(acts))
        return acts

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.activations(x)[-1]


def flatten_input(
    x: torch.Tensor, in_features: int, in_chans: int, input_size: tuple[int, ...]
) -> torch.Tensor:
    """a^0: the batch flattened to vectors, with a clear error when its size is not the net's."""
    x = x.reshape(x.shape[0], -1)
    if x.shape[1] != in_features:
        raise ValueError(
            f"SkipNet expects {in_features} input features (in_chans={in_chans} × "
            f"input_size={input_size}), got {x.shape[1]}; pass in_chans/input_size to match"
        )
    return x


# A leaf for torch.fx: the size check is control flow on a traced shape, so tracing records the call
# instead of entering it; torchvision's create_feature_extractor then works on every SkipNet.
torch.fx.wrap("flatten_input")


@register_model(skip="identity", depth=6, paper=SEED, family="mlp")
def skipnet(
    *,
    num_classes: int = 10,
    in_chans: int = 1,
    layers: Iterable[LayerSpec | int | Mapping[str, object]] | None = None,
    depth: int | None = None,
    width: int | None = None,
    skip: str | None = None,
    span: int | None = None,
    **kwargs: object,
) -> SkipNet:
    """The general form. Give `layers` explicitly, or `depth`/`width`/`skip`/`span` for a uniform net;
    the default is the seed's a^l = g(Z^l + a^(l-2)) with 6 layers of 64 units on MNIST-sized input:
    71,690 parameters."""
    uniform = {"depth": depth, "width": width, "skip": skip, "span": span}
    if layers is not None:
        given = [k for k, v in uniform.items() if v is not None]
        if given:
            raise ValueError(f"give either layers or {', '.join(given)}, not both")
        specs = list(layers)
    else:
        specs = uniform_layers(depth or 6, width or 64, skip or "identity", span or 2)
    return SkipNet(specs, num_classes=num_classes, in_chans=in_chans, **kwargs)  # type: ignore[arg-type]


def _uniform_mlp(
    skip: str, width: int, depth: int, num_classes: int, in_chans: int, kwargs: dict[str, Any]
) -> SkipNet:
    # Srivastava et al. 2015, §4.1: thin MNIST nets, 50 units per highway layer, 71 per plain layer
    # (similar parameter counts).
    for key, value in (("skip", skip), ("width", width), ("depth", depth)):
        kwargs.setdefault(key, value)
    return skipnet(num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model(skip="none", depth=10, paper=SRIVASTAVA2015, family="mlp")
def plain_mlp(num_classes: int = 10, in_chans: int = 1, **kwargs: Any) -> SkipNet:
    """Plain MLP, 10 layers of 71 units on MNIST (Srivastava et al. 2015, arXiv:1507.06228, §4.1's
    baseline): 102,463 parameters; other depths via depth=."""
    return _uniform_mlp("none", 71, 10, num_classes, in_chans, kwargs)


@register_model(skip="gated", depth=10, paper=SRIVASTAVA2015, family="mlp")
def highway_mlp(num_classes: int = 10, in_chans: int = 1, **kwargs: Any) -> SkipNet:
    """Highway MLP, 10 layers of 50 units on MNIST (Srivastava et al. 2015, arXiv:1507.06228, §4.1):
    85,660 parameters; other depths via depth=."""
    return _uniform_mlp("gated", 50, 10, num_classes, in_chans, kwargs)


@register_model(skip="identity", depth=10, paper=SEED, family="mlp")
def residual_mlp(num_classes: int = 10, in_chans: int = 1, **kwargs: Any) -> SkipNet:
    """Residual MLP, 10 layers of 64 units on MNIST (the seed's a^l = g(Z^l + a^(l-2))): 88,330
    parameters; other depths via depth=."""
    return _uniform_mlp("identity", 64, 10, num_classes, in_chans, kwargs)


@register_model(skip="dense", depth=6, paper=DENSE_MLP, family="mlp")
def dense_mlp(num_classes: int = 10, in_chans: int = 1, **kwargs: Any) -> SkipNet:
    """Dense MLP, 6 layers of 32 units on MNIST (Huang et al. 2017 wiring, fully connected): 166,410
    parameters; other depths via depth=."""
    return _uniform_mlp("dense", 32, 6, num_classes, in_chans, kwargs)
