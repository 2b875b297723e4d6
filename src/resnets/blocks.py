"""Convolutional residual blocks, each with a choice of skip.

Every block computes a branch F(x) and merges it with its skip path S(x) according to `skip`:

    none        y = F(x)                        plain network (no path around the block)
    identity    y = F(x) + x                    ResNet (x zero-padded (A) or projected (B) on a shape change)
    projection  y = F(x) + W_s x                the seed's learned skip matrix W^(l-2,l), always
    gated       y = T(x)·F(x) + (1 − T(x))·x    highway / "exclusive gating" (He et al. 2016b, Fig. 2c)
    scaled      y = λ·F(x) + λ·x, λ = 0.5       "constant scaling" (He et al. 2016b, Fig. 2b)
    shortcut_gated  y = F(x) + (1 − T(x))·x     "shortcut-only gating" (Fig. 2d)
    dropout     y = F(x) + dropout(x), p = 0.5  "dropout shortcut" (Fig. 2f; the 1×1 conv of Fig. 2e is
                                                `projection`)

Without normalisation (`norm_layer="identity"`), `residual_scale` keeps a deep BasicBlock net trainable:

    skipinit    y = g(α·F(x) + S(x)), α = 0 at init           De & Smith 2020 (SkipInit)
    rezero      y = α·F(x) + S(x),    α = 0, no activation    Bachlechner et al. 2020, eq. 3 (ReZero)
    fixup       y = g(s·F'(x) + b + S(x + a)), zero last conv  Zhang et al. 2019 (Fixup): scalar biases
                before each conv and activation, a scalar multiplier s, scaled init (`fixup_init`)

Post-activation blocks (He et al. 2016) apply ReLU after the merge; pre-activation blocks
(He et al. 2016b) apply BN-ReLU before each conv and leave the sum untouched. The norm and the
activation are `norm_layer` and `act_layer`, by name or as callables (resnets.layers.get_norm_layer,
get_act_layer); batch norm and ReLU by default. Module names follow torchvision (`conv1`, `bn1`, ...,
`relu`, `downsample`) whichever norm and activation they hold, so that state_dicts load into each other.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from resnets.layers import (
    DEFAULT_GATE_BIAS,
    ActLayer,
    Gate,
    NormLayer,
    ZeroPadShortcut,
    check_skip,
    conv1x1,
    conv3x3,
    get_act_layer,
    get_norm_layer,
    highway_combine,
    make_shortcut,
)

BLOCK_SKIPS = ("none", "identity", "projection", "gated", "scaled", "shortcut_gated", "dropout")
SHORTCUT_SCALE = 0.5  # He et al. 2016b, Table 1: λ = 0.5 on both paths (the only scaling that trained)
SHORTCUT_DROPOUT = 0.5  # ibid.: dropout ratio 0.5 on the shortcut
RESIDUAL_SCALES = ("none", "skipinit", "rezero", "fixup")


class SkipBlock(nn.Module):
    """Base class holding the skip path (`downsample`) and highway gate shared by every block.

    Every block is y = post(merge(branch(x), S(x))): `branch` computes F(x) alone, `skip_only` the
    block with F deleted, and `post` is the activation `relu` for post-activation blocks, nothing for
    pre-activation ones."""

    expansion = 1
    preact = False  # pre-activation blocks need a final BN-ReLU after the last stage

    downsample: nn.Module | None
    gate: Gate | None
    bn1: nn.Module
    relu: nn.Module
    # Set by resnets.analysis.probes to observe the branch F(x), the skip path S(x) and the gate T(x)
    # at the merge; None (the class default) costs one attribute lookup per block.
    probe: Callable[[SkipBlock, torch.Tensor, torch.Tensor | None, torch.Tensor | None], None] | None = None

    def _build_skip(
        self,
        skip: str,
        in_ch: int,
        out_ch: int,
        stride: int,
        shortcut: str,
        norm_layer: NormLayer | None,
        gate_bias: float,
    ) -> None:
        self.skip = check_skip(skip, BLOCK_SKIPS)
        self.downsample = make_shortcut(skip, in_ch, out_ch, stride, shortcut, norm_layer)
        self.gate = Gate(in_ch, out_ch, stride, gate_bias) if skip in ("gated", "shortcut_gated") else None
        if skip == "dropout":
            self.shortcut_drop = nn.Dropout(SHORTCUT_DROPOUT)
        # Pre-activation blocks feed a learned shortcut the pre-activated input; identity carries x.
        # (Post-activation blocks ignore this.)
        self.shortcut_reads_preact = self.downsample is not None and any(
            True for _ in self.downsample.parameters()
        )
        self.io_shape = (in_ch, out_ch, stride)  # channels in and out, and stride: for skip_only

    def _merge(
        self, branch: torch.Tensor, x: torch.Tensor, gate_input: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Combine the branch F(x) with the skip path of `x`; the gate reads `gate_input` (default x)."""
        carry = None if self.downsample is None else self.downsample(x)
        gate = None if self.gate is None else self.gate(x if gate_input is None else gate_input)
        if self.probe is not None:
            self.probe(self, branch, carry, gate)
        if carry is None:
            return branch
        if self.skip == "scaled":
            return SHORTCUT_SCALE * (branch + carry)
        if self.skip == "dropout":
            return branch + self.shortcut_drop(carry)
        if gate is None:
            return branch + carry
        if self.skip == "shortcut_gated":
            return branch + (1 - gate) * carry
        return highway_combine(branch, carry, gate)

    def _skip_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the skip path and the gate read: x in a post-activation block; in a pre-activation block
        the pre-activated input for a learned shortcut and for the gate (computed only if one reads it)."""
        if not self.preact or not (self.shortcut_reads_preact or self.gate is not None):
            return x, x
        pre = self.relu(self.bn1(x))
        return (pre if self.shortcut_reads_preact else x), pre

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch F(x) alone, before the merge (and before a post-activation)."""
        raise NotImplementedError

    def skip_only(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output with its branch deleted, F(x) = 0 in its own merge (the lesion of Veit et al.
        2016): g(S(x)) post-activation, S(x) pre-activation, with the gate (1 − T(x))·S(x); a plain block,
        having no path around it, is removed: x passes on (subsampled and zero-padded, option A)."""
        if self.downsample is None:
            # Veit et al. 2016 compare deleting a layer of a plain net (VGG), where the layer's input
            # goes straight to the next layer; the merge of a plain block would pass on g(0) instead.
            in_ch, out_ch, stride = self.io_shape
            return x if (in_ch, stride) == (out_ch, 1) else ZeroPadShortcut(in_ch, out_ch, stride)(x)
        carry_in, gate_in = self._skip_inputs(x)
        carry = self.downsample(carry_in)
        if self.skip == "scaled":
            carry = SHORTCUT_SCALE * carry
        elif self.skip == "dropout":
            carry = self.shortcut_drop(carry)
        if self.gate is not None:
            # Highway merge T·F + (1 − T)·S with F = 0. (Srivastava et al. 2015's lesion instead closes
            # the gate, T = 0, which passes S(x) alone.)
            carry = (1 - self.gate(gate_in)) * carry
        elif not self.preact:
            carry = carry.clone()  # the post-activation may work in place, and S(x) may be x itself
        return carry if self.preact else self.relu(carry)

    def zero_init_last(self) -> None:
        """Zero the last scale of the branch so F(x) = 0 and the block starts as its skip path
        (Goyal et al. 2017, "Accurate, Large Minibatch SGD", §5.1)."""
        raise NotImplementedError

    @staticmethod
    def _zero_scale(norm: nn.Module, conv: nn.Conv2d) -> None:
        """Zero the norm's scale, or the conv's weight where the norm has none (norm_layer="identity")."""
        weight = getattr(norm, "weight", None)
        nn.init.zeros_(weight if isinstance(weight, torch.Tensor) else conv.weight)


class BasicBlock(SkipBlock):
    """Two 3×3 convs (He et al. 2016, Fig. 2 left / Fig. 5 left):
    y = ReLU(merge(BN(conv(ReLU(BN(conv x)))), x)), BN and ReLU being `norm_layer` and `act_layer`."""

    def __init__(
        self,
        in_ch: int,
        planes: int,
        stride: int = 1,
        skip: str = "identity",
        shortcut: str = "B",
        groups: int = 1,
        base_width: int = 64,
        norm_layer: str | NormLayer = "batchnorm",
        gate_bias: float = DEFAULT_GATE_BIAS,
        drop_rate: float = 0.0,
        act_layer: str | ActLayer = "relu",
        residual_scale: str = "none",
    ) -> None:
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock supports only groups=1 and base_width=64 (as torchvision)")
        if residual_scale not in RESIDUAL_SCALES:
            raise ValueError(f"residual_scale must be one of {RESIDUAL_SCALES}, got {residual_scale!r}")
        if residual_scale != "none" and skip not in ("identity", "projection"):
            raise ValueError(
                f"residual_scale={residual_scale!r} scales a residual sum's branch: skip={skip!r} has no sum"
            )
        norm = get_norm_layer(norm_layer)
        self.conv1 = conv3x3(in_ch, planes, stride)
        self.bn1 = norm(planes)
        # In place, as torchvision: it overwrites a norm's output or the merge's sum, never x.
        self.relu = get_act_layer(act_layer, inplace=True)()
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm(planes)
        self._build_skip(skip, in_ch, planes, stride, shortcut, norm, gate_bias)
        self.residual_scale = residual_scale
        if residual_scale in ("skipinit", "rezero"):
            self.alpha = nn.Parameter(torch.zeros(1))  # the block starts as its skip path
        if residual_scale == "fixup":
            self.scale = nn.Parameter(torch.ones(1))
            for name in ("bias1a", "bias1b", "bias2a", "bias2b"):
                self.register_parameter(name, nn.Parameter(torch.zeros(1)))

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        if self.residual_scale == "fixup":  # Zhang et al. 2019, Fig. 1 (right): biases around each layer
            out = self.relu(self.bn1(self.conv1(x + self.bias1a)) + self.bias1b)
            return self.bn2(self.conv2(self.drop(out) + self.bias2a)) * self.scale + self.bias2b
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(self.drop(out)))
        return out * self.alpha if self.residual_scale in ("skipinit", "rezero") else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.residual_scale == "fixup":  # the shortcut reads x + a, as the branch does
            return self.relu(self._merge(self.branch(x), x + self.bias1a))
        merged = self._merge(self.branch(x), x)
        return merged if self.residual_scale == "rezero" else self.relu(merged)

    def skip_only(self, x: torch.Tensor) -> torch.Tensor:
        if self.residual_scale == "rezero":  # no activation after the sum
            return self.downsample(x)  # type: ignore[misc]
        if self.residual_scale == "fixup":
            return self.relu(self.downsample(x + self.bias1a))  # type: ignore[misc]
        return super().skip_only(x)

    def zero_init_last(self) -> None:
        self._zero_scale(self.bn2, self.conv2)


class Bottleneck(SkipBlock):
    """1×1 reduce, 3×3, 1×1 expand ×4 (He et al. 2016, Fig. 5 right). The stride sits on the 3×3 conv
    as in torchvision ("ResNet V1.5"), or on the first 1×1 as in the original Caffe and Torch code
    (`stride_in_1x1=True`); `groups`/`base_width` give ResNeXt and wide ResNets."""

    expansion = 4

    def __init__(
        self,
        in_ch: int,
        planes: int,
        stride: int = 1,
        skip: str = "identity",
        shortcut: str = "B",
        groups: int = 1,
        base_width: int = 64,
        norm_layer: str | NormLayer = "batchnorm",
        gate_bias: float = DEFAULT_GATE_BIAS,
        drop_rate: float = 0.0,
        stride_in_1x1: bool = False,
        act_layer: str | ActLayer = "relu",
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        out_ch = planes * self.expansion
        norm = get_norm_layer(norm_layer)
        self.conv1 = conv1x1(in_ch, width, s1)
        self.bn1 = norm(width)
        self.conv2 = conv3x3(width, width, s3, groups)
        self.bn2 = norm(width)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.conv3 = conv1x1(width, out_ch)
        self.bn3 = norm(out_ch)
        self.relu = get_act_layer(act_layer, inplace=True)()  # as in BasicBlock
        self._build_skip(skip, in_ch, out_ch, stride, shortcut, norm, gate_bias)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(self.drop(out)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self._merge(self.branch(x), x))

    def zero_init_last(self) -> None:
        self._zero_scale(self.bn3, self.conv3)


class PreActBasicBlock(SkipBlock):
    """Pre-activation basic block (He et al. 2016b, Fig. 1b): y = merge(conv(ReLU(BN(conv(ReLU(BN x)))))).

    A learned shortcut and the gate read the pre-activated input, as in the paper's code and in
    wide ResNets (Zagoruyko & Komodakis 2016); a parameter-free shortcut carries x itself."""

    preact = True

    def __init__(
        self,
        in_ch: int,
        planes: int,
        stride: int = 1,
        skip: str = "identity",
        shortcut: str = "B",
        groups: int = 1,
        base_width: int = 64,
        norm_layer: str | NormLayer = "batchnorm",
        gate_bias: float = DEFAULT_GATE_BIAS,
        drop_rate: float = 0.0,
        act_layer: str | ActLayer = "relu",
    ) -> None:
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("PreActBasicBlock supports only groups=1 and base_width=64")
        norm = get_norm_layer(norm_layer)
        self.bn1 = norm(in_ch)
        self.relu = get_act_layer(act_layer, inplace=False)()  # the pre-activation may also feed the shortcut
        self.conv1 = conv3x3(in_ch, planes, stride)
        self.bn2 = norm(planes)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.conv2 = conv3x3(planes, planes)
        # A learned shortcut is a bare 1×1 conv: its input has already been through bn1.
        self._build_skip(skip, in_ch, planes, stride, shortcut, None, gate_bias)

    def _branch_from(self, pre: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.drop(self.relu(self.bn2(self.conv1(pre)))))

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self._branch_from(self.relu(self.bn1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu(self.bn1(x))
        return self._merge(self._branch_from(pre), pre if self.shortcut_reads_preact else x, gate_input=pre)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv2.weight)


class PreActBottleneck(SkipBlock):
    """Pre-activation bottleneck (He et al. 2016b, used for ResNet-164 and ResNet-1001). The authors'
    code (KaimingHe/resnet-1k-layers, resnet-pre-act.lua) strides the first 1×1 conv:
    `stride_in_1x1=True`; the default strides the 3×3 as torchvision does."""

    expansion = 4
    preact = True

    def __init__(
        self,
        in_ch: int,
        planes: int,
        stride: int = 1,
        skip: str = "identity",
        shortcut: str = "B",
        groups: int = 1,
        base_width: int = 64,
        norm_layer: str | NormLayer = "batchnorm",
        gate_bias: float = DEFAULT_GATE_BIAS,
        drop_rate: float = 0.0,
        stride_in_1x1: bool = False,
        act_layer: str | ActLayer = "relu",
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        out_ch = planes * self.expansion
        norm = get_norm_layer(norm_layer)
        self.bn1 = norm(in_ch)
        self.relu = get_act_layer(act_layer, inplace=False)()  # as in PreActBasicBlock
        self.conv1 = conv1x1(in_ch, width, s1)
        self.bn2 = norm(width)
        self.conv2 = conv3x3(width, width, s3, groups)
        self.bn3 = norm(width)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.conv3 = conv1x1(width, out_ch)
        self._build_skip(skip, in_ch, out_ch, stride, shortcut, None, gate_bias)

    def _branch_from(self, pre: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.relu(self.bn2(self.conv1(pre))))
        return self.conv3(self.drop(self.relu(self.bn3(out))))

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self._branch_from(self.relu(self.bn1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu(self.bn1(x))
        return self._merge(self._branch_from(pre), pre if self.shortcut_reads_preact else x, gate_input=pre)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv3.weight)
