"""Shared building pieces: convolutions, norms, activations, shortcuts and gates.

Blocks and networks build from these; nothing here knows about a particular architecture.
"""

from __future__ import annotations

import difflib
import enum
import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from resnets.errors import ConfigError


class SkipKind(str, enum.Enum):
    """What connects a block's input to its output: the one vocabulary of blocks, SkipNet and the
    registry (DESIGN.md "The skip, as one idea"). A `str` enum, so `SkipKind.IDENTITY == "identity"`."""

    NONE = "none"  # S(a) = 0: a plain network
    IDENTITY = "identity"  # S(a) = a (zero-padded or projected where the shape changes): ResNet
    PROJECTION = "projection"  # S(a) = W a, a learned matrix always: the seed's W^(l-2,l)
    GATED = "gated"  # T·F(a) + (1 − T)·a: Highway networks, He et al. 2016b's "exclusive gating"
    DENSE = "dense"  # several earlier layers, concatenated: DenseNet
    # The other shortcuts He et al. 2016b, Table 1 / Fig. 2 compare (conv blocks only):
    SCALED = "scaled"  # λ·F(a) + λ·a, λ = 0.5: "constant scaling"
    SHORTCUT_GATED = "shortcut_gated"  # F(a) + (1 − T)·a: "shortcut-only gating"
    DROPOUT = "dropout"  # F(a) + dropout(a), p = 0.5: "dropout shortcut"

    def __str__(self) -> str:
        return self.value


SKIP_KINDS: tuple[str, ...] = tuple(k.value for k in SkipKind)
"""Every kind of skip the library builds, as strings (the names configs and metadata use)."""

NormLayer = Callable[[int], nn.Module]
"""Builds a norm for a number of channels (features), e.g. `nn.BatchNorm2d`."""
ActLayer = Callable[[], nn.Module]
"""Builds an activation module, e.g. `nn.ReLU`."""

NORM_LAYERS: tuple[str, ...] = ("batchnorm", "groupnorm", "layernorm", "identity")
"""The norms `get_norm_layer` knows by name (configs' `model.kwargs.norm_layer`)."""
_NORM_ALIASES = {"bn": "batchnorm", "gn": "groupnorm", "ln": "layernorm", "none": "identity"}

ACT_LAYERS: tuple[str, ...] = ("relu", "gelu", "silu", "elu", "leaky_relu", "tanh", "sigmoid", "identity")
"""The activations `get_act_layer` knows by name (configs' `model.kwargs.act_layer`)."""
_ACT_ALIASES = {"none": "identity"}
# Activations that can overwrite their input; the others have no `inplace` argument.
_INPLACE_ACTS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "silu": nn.SiLU,  # Hendrycks & Gimpel 2016 (SiLU), Ramachandran et al. 2017 (Swish)
    "elu": nn.ELU,  # Clevert et al. 2016, alpha = 1
    "leaky_relu": nn.LeakyReLU,  # Maas et al. 2013, slope 0.01 for x < 0
}
_OTHER_ACTS: dict[str, type[nn.Module]] = {
    "gelu": nn.GELU,  # Hendrycks & Gimpel 2016, the exact (erf) form
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}

GROUPNORM_MAX_GROUPS = 32
"""Wu & He 2018 ("Group Normalization") use G = 32 groups by default."""

DEFAULT_GATE_BIAS = -3.0
"""Transform-gate bias at init. Srivastava et al. 2015 (§2.2, "Training Very Deep Networks") start
highway nets biased towards carrying the input (negative b_T, e.g. -1 or -3), so that a deep net
begins as a shallow one; He et al. 2016b (Table 1) used -6 for their gated ResNets."""


def _canonical(value: str, names: tuple[str, ...], aliases: dict[str, str], what: str) -> str:
    """The canonical spelling of a name ('BN', 'Group-Norm' …), or a ConfigError listing the names."""
    key = value.strip().lower().replace("-", "_")
    key = aliases.get(key, key)
    if key in names:
        return key
    spelled = []
    for name in names:
        short = [a for a, c in aliases.items() if c == name]
        spelled.append(f"{name} ({', '.join(short)})" if short else name)
    close = difflib.get_close_matches(key, [*names, *aliases], n=1)
    hint = f" (did you mean {aliases.get(close[0], close[0])!r}?)" if close else ""
    raise ConfigError(
        f"unknown {what} {value!r}: choose one of {', '.join(spelled)}, or pass a callable{hint}"
    )


def _check_spec(value: object, names: tuple[str, ...], what: str) -> None:
    if not (value is None or isinstance(value, str) or callable(value)):
        raise ConfigError(f"{what} must be a name ({', '.join(names)}) or a callable, got {value!r:.80}")


def groupnorm_groups(channels: int, max_groups: int = GROUPNORM_MAX_GROUPS) -> int:
    """The number of groups `get_norm_layer("groupnorm")` gives `channels`: the largest divisor of
    `channels` that is at most `max_groups` and leaves at least 2 channels per group (1 for 1 channel)."""
    # Wu & He 2018 use 32 groups, also on ResNet-50's 64-channel stage (2 channels per group), and
    # find one channel per group (GroupNorm as InstanceNorm) clearly the worst in their Table 3; CIFAR
    # nets have 16 or 32 channels and DenseNets 12·k, which 32 groups do not divide, so take fewer,
    # keeping >= 2 channels per group. A prime count falls back to 1 group, i.e. layer norm.
    limit = max(1, min(max_groups, channels // 2))
    return next(g for g in range(limit, 0, -1) if channels % g == 0)


def _group_norm(num_channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(groupnorm_groups(num_channels), num_channels)


def _layer_norm_2d(num_channels: int) -> nn.GroupNorm:
    # Layer norm of a feature map normalises each sample over all of (C, H, W) (Ba et al. 2016,
    # every unit of the layer), which is GroupNorm with one group (Wu & He 2018, §3.1).
    return nn.GroupNorm(1, num_channels)


def get_norm_layer(norm: str | NormLayer | None, *, spatial: bool = True) -> NormLayer:
    """The norm builder for a name (see NORM_LAYERS; None: identity) or a callable (returned as is),
    for feature maps (N, C, H, W), or for vectors (N, C) if `spatial=False`; ConfigError if unknown."""
    _check_spec(norm, NORM_LAYERS, "norm_layer")
    if norm is None:
        return nn.Identity  # nn.Identity(channels) ignores its argument
    if not isinstance(norm, str):
        return norm
    name = _canonical(norm, NORM_LAYERS, _NORM_ALIASES, "norm_layer")
    if name == "batchnorm":  # the class itself, so isinstance checks and SyncBatchNorm conversion see it
        return nn.BatchNorm2d if spatial else nn.BatchNorm1d
    if name == "groupnorm":
        return _group_norm
    if name == "layernorm":
        return _layer_norm_2d if spatial else nn.LayerNorm
    return nn.Identity


def canonical_act_name(act: str | ActLayer | None) -> str | None:
    """The name in ACT_LAYERS that `act` spells ('none' → 'identity'); None for a callable."""
    _check_spec(act, ACT_LAYERS, "act_layer")
    if act is None:
        return "identity"
    return _canonical(act, ACT_LAYERS, _ACT_ALIASES, "act_layer") if isinstance(act, str) else None


def get_act_layer(act: str | ActLayer | None, *, inplace: bool = False) -> ActLayer:
    """The activation builder for a name (see ACT_LAYERS; None: identity) or a callable (returned as
    is); `inplace` makes named activations that can work in place do so. ConfigError if unknown."""
    name = canonical_act_name(act)
    if name is None:
        return act  # type: ignore[return-value]  # a callable, checked by canonical_act_name
    if name in _INPLACE_ACTS:
        return functools.partial(_INPLACE_ACTS[name], inplace=inplace)
    return _OTHER_ACTS[name]


def conv3x3(in_ch: int, out_ch: int, stride: int = 1, groups: int = 1, dilation: int = 1) -> nn.Conv2d:
    """3×3 convolution with 'same' padding and no bias (a norm layer follows)."""
    return nn.Conv2d(
        in_ch, out_ch, 3, stride=stride, padding=dilation, groups=groups, bias=False, dilation=dilation
    )


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    """1×1 convolution with no bias (a norm layer follows)."""
    return nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)


def check_skip(skip: str, allowed: tuple[str, ...] = SKIP_KINDS) -> str:
    """Return `skip` if it is one of `allowed`, else raise a ValueError that lists them."""
    if skip not in allowed:
        raise ValueError(f"skip must be one of {allowed}, got {skip!r}")
    return str(skip)


class ZeroPadShortcut(nn.Module):
    """He et al. 2016, §3.3 option A: identity shortcut that subsamples by `stride` and zero-pads the
    new channels. Parameter-free, so plain and residual twins have exactly the same parameters."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        if out_ch < in_ch:
            raise ValueError(f"option A shortcut cannot reduce channels ({in_ch} -> {out_ch}); use option B")
        self.stride = stride
        self.extra = out_ch - in_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra:
            # Pad the channel dimension: F.pad pads the last dims first, so (W, W, H, H, C, C).
            half = self.extra // 2
            x = F.pad(x, (0, 0, 0, 0, half, self.extra - half))
        return x

    def extra_repr(self) -> str:
        return f"stride={self.stride}, extra_channels={self.extra}"


def projection_shortcut(
    in_ch: int, out_ch: int, stride: int, norm_layer: NormLayer | None = nn.BatchNorm2d
) -> nn.Sequential:
    """He et al. 2016, §3.3 option B/C: a learned 1×1 projection W_s x (the seed's W^(l-2,l)),
    followed by a norm. The Sequential's indices give torchvision's `downsample.0/1` keys."""
    layers: list[nn.Module] = [conv1x1(in_ch, out_ch, stride)]
    if norm_layer is not None:
        layers.append(norm_layer(out_ch))
    return nn.Sequential(*layers)


def make_shortcut(
    skip: str,
    in_ch: int,
    out_ch: int,
    stride: int,
    option: str = "B",
    norm_layer: NormLayer | None = nn.BatchNorm2d,
) -> nn.Module | None:
    """The path around a block for a skip kind; `None` for `skip="none"`.

    `identity` is the bare input where shapes match, else option A (zero-pad) or B (projection);
    `projection` always learns a 1×1 map; `gated`, `scaled`, `shortcut_gated` and `dropout` carry the
    identity path (the gate, the scale and the dropout are applied at the block's merge).
    """
    check_skip(skip, ("none", "identity", "projection", "gated", "scaled", "shortcut_gated", "dropout"))
    if skip == "none":
        return None
    if skip == "projection":
        return projection_shortcut(in_ch, out_ch, stride, norm_layer)
    if in_ch == out_ch and stride == 1:
        return nn.Identity()
    if option == "A":
        return ZeroPadShortcut(in_ch, out_ch, stride)
    if option == "B":
        return projection_shortcut(in_ch, out_ch, stride, norm_layer)
    raise ValueError(f"shortcut option must be 'A' (zero-pad) or 'B' (projection), got {option!r}")


class Gate(nn.Module):
    """Highway transform gate T(x) = σ(W_T x + b_T) (Srivastava et al. 2015, eq. 3), as a 1×1 conv for
    feature maps or a linear map for vectors. A negative b_T at init makes the block carry its input."""

    def __init__(
        self, in_ch: int, out_ch: int, stride: int = 1, bias: float = DEFAULT_GATE_BIAS, conv: bool = True
    ) -> None:
        super().__init__()
        self.proj: nn.Module
        if conv:
            self.proj = nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=True)
        else:
            self.proj = nn.Linear(in_ch, out_ch)
        self.init_bias = bias
        nn.init.constant_(self.proj.bias, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.proj(x))


def highway_combine(transform: torch.Tensor, carry: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """y = T·H + (1 − T)·C, written as C + T·(H − C) to save one multiply and one temporary."""
    return torch.lerp(carry, transform, gate)


def init_he(module: nn.Module) -> None:
    """He et al. 2015 initialisation for convs (fan_out, as torchvision), unit-scale norms.

    Gate biases are then set back to their (negative) init value; linear layers keep PyTorch's
    default, as in torchvision."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for m in module.modules():
        if isinstance(m, Gate) and m.proj.bias is not None:
            nn.init.constant_(m.proj.bias, m.init_bias)
