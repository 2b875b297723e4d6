"""CIFAR networks: He et al. 2016 §4.2 (6n+2 layers) with every skip kind, pre-activation and wide ResNets.

The residual, plain and highway nets of one depth share every layer but the skip, so an experiment
that compares them compares only the skip.
"""

from __future__ import annotations

from functools import partial

from torch import nn

from resnets.blocks import BasicBlock, PreActBasicBlock, PreActBottleneck
from resnets.models.resnet import ResNet
from resnets.registry import register_model

HE2016 = "He et al. 2016, arXiv:1512.03385"
HE2016B = "He et al. 2016b, arXiv:1603.05027"
HIGHWAY = "Srivastava et al. 2015 gates, He et al. 2016 body"
WRN = "Zagoruyko & Komodakis 2016, arXiv:1605.07146"
CIFAR_WIDTHS = (16, 32, 64)
_CIFAR = {"input_size": (3, 32, 32), "num_classes": 10, "family": "cifar"}


def _blocks_per_stage(depth: int, layers_per_block: int) -> int:
    """He et al.'s depth = 3 stages × n blocks × layers per block + stem + classifier."""
    n, rem = divmod(depth - 2, 3 * layers_per_block)
    if rem or n < 1:
        raise ValueError(
            f"depth {depth} is not {3 * layers_per_block}n+2 for a CIFAR net with "
            f"{layers_per_block}-layer blocks"
        )
    return n


def cifar_resnet(
    depth: int, *, num_classes: int = 10, in_chans: int = 3, skip: str = "identity", **kwargs: object
) -> ResNet:
    """He et al. 2016 §4.2: 3×3 stem with 16 filters, 3 stages of n basic blocks on 32/16/8 maps with
    16/32/64 filters, option A shortcuts (parameter-free), global pool, fc: 6n+2 layers."""
    n = _blocks_per_stage(depth, 2)
    kwargs.setdefault("shortcut", "A")
    return ResNet(
        BasicBlock,
        [n] * 3,
        CIFAR_WIDTHS,
        stem="cifar",
        num_classes=num_classes,
        in_chans=in_chans,
        skip=skip,
        **kwargs,
    )


def cifar_preact_resnet(
    depth: int,
    *,
    num_classes: int = 10,
    in_chans: int = 3,
    bottleneck: bool | None = None,
    **kwargs: object,
) -> ResNet:
    """He et al. 2016b: pre-activation units; bottleneck units (9n+2 layers, outputs 64/128/256,
    1×1 projection where the width changes) for depth 164 and 1001, basic ones (6n+2) otherwise."""
    if bottleneck is None:
        bottleneck = (depth - 2) % 9 == 0 and depth >= 164
    if bottleneck:
        n = _blocks_per_stage(depth, 3)
        kwargs.setdefault("shortcut", "B")
        return ResNet(
            PreActBottleneck,
            [n] * 3,
            CIFAR_WIDTHS,
            stem="cifar",
            num_classes=num_classes,
            in_chans=in_chans,
            **kwargs,
        )
    n = _blocks_per_stage(depth, 2)
    kwargs.setdefault("shortcut", "A")
    return ResNet(
        PreActBasicBlock,
        [n] * 3,
        CIFAR_WIDTHS,
        stem="cifar",
        num_classes=num_classes,
        in_chans=in_chans,
        **kwargs,
    )


def wide_resnet(
    depth: int,
    widen: int,
    *,
    num_classes: int = 10,
    in_chans: int = 3,
    drop_rate: float = 0.0,
    **kwargs: object,
) -> ResNet:
    """WRN-depth-k (Zagoruyko & Komodakis 2016): pre-activation basic blocks, widths 16k/32k/64k,
    a 16-filter stem, 1×1 projections where the shape changes; depth = 6n+4. Dropout between convs
    is `drop_rate` (the paper's 0.3 variant)."""
    n, rem = divmod(depth - 4, 6)
    if rem or n < 1:
        raise ValueError(f"wide ResNet depth must be 6n+4, got {depth}")
    kwargs.setdefault("shortcut", "B")
    return ResNet(
        PreActBasicBlock,
        [n] * 3,
        [w * widen for w in CIFAR_WIDTHS],
        stem="cifar",
        stem_width=16,
        num_classes=num_classes,
        in_chans=in_chans,
        drop_rate=drop_rate,
        **kwargs,
    )


def _register(name: str, builder: partial[nn.Module], *, skip: str, depth: int, paper: str) -> None:
    builder.__doc__ = f"{name}: {paper}."
    register_model(name, skip=skip, depth=depth, paper=paper, **_CIFAR)(builder)


for _d in (20, 32, 44, 56, 110, 1202):
    _register(f"resnet{_d}", partial(cifar_resnet, _d), skip="identity", depth=_d, paper=HE2016)
for _d in (20, 32, 44, 56, 110):
    _register(f"plain{_d}", partial(cifar_resnet, _d, skip="none"), skip="none", depth=_d, paper=HE2016)
for _d in (20, 32, 44, 56, 110):
    _register(f"highway{_d}", partial(cifar_resnet, _d, skip="gated"), skip="gated", depth=_d, paper=HIGHWAY)
for _d in (110, 164, 1001):
    _register(
        f"preact_resnet{_d}", partial(cifar_preact_resnet, _d), skip="identity", depth=_d, paper=HE2016B
    )
_register("wrn28_10", partial(wide_resnet, 28, 10), skip="identity", depth=28, paper=WRN)
