"""CIFAR networks: He et al. 2016 §4.2 (6n+2 layers) with every skip kind, pre-activation and wide ResNets.

The residual, plain and highway nets of one depth share every layer but the skip, so an experiment
that compares them compares only the skip.
"""

from __future__ import annotations

from functools import partial

from resnets.blocks import BasicBlock, PreActBasicBlock, PreActBottleneck
from resnets.models.resnet import ResNet
from resnets.papers import HE2016, HE2016B, HIGHWAY_CIFAR, ZAGORUYKO2016
from resnets.registry import register_model

CIFAR_WIDTHS = (16, 32, 64)


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
    1×1 projection where the width changes, stride on the first 1×1 as in the authors' code) for
    depth 164 and 1001, basic ones (6n+2) otherwise."""
    if bottleneck is None:
        bottleneck = (depth - 2) % 9 == 0 and depth >= 164
    if bottleneck:
        n = _blocks_per_stage(depth, 3)
        kwargs.setdefault("shortcut", "B")
        kwargs.setdefault("block_kwargs", {"stride_in_1x1": True})
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


# The residual, plain and highway twins: one builder, three skips (He et al. 2016, §4.2 and Fig. 6).
for _prefix, _skip, _paper, _depths in (
    ("resnet", "identity", HE2016, (20, 32, 44, 56, 110, 1202)),
    ("plain", "none", HE2016, (20, 32, 44, 56, 110)),
    ("highway", "gated", HIGHWAY_CIFAR, (20, 32, 44, 56, 110)),
):
    for _d in _depths:
        register_model(
            f"{_prefix}{_d}",
            partial(cifar_resnet, _d, skip=_skip),
            skip=_skip,
            depth=_d,
            paper=_paper,
            family="cifar",
        )
for _d in (110, 164, 1001):
    register_model(
        f"preact_resnet{_d}",
        partial(cifar_preact_resnet, _d),
        skip="identity",
        depth=_d,
        paper=HE2016B,
        family="cifar",
    )
register_model(
    "wrn28_10", partial(wide_resnet, 28, 10), skip="identity", depth=28, paper=ZAGORUYKO2016, family="cifar"
)
