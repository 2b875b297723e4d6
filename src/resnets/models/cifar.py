"""CIFAR networks: He et al. 2016 §4.2 (6n+2 layers) with every skip kind, pre-activation and wide ResNets.

The residual, plain and highway nets of one depth share every layer but the skip, so an experiment
that compares them compares only the skip.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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
    depth: int,
    *,
    num_classes: int = 10,
    in_chans: int = 3,
    skip: str = "identity",
    widths: Sequence[int] = CIFAR_WIDTHS,
    **kwargs: object,
) -> ResNet:
    """He et al. 2016 §4.2: 3×3 stem with 16 filters, 3 stages of n basic blocks on 32/16/8 maps with
    16/32/64 filters, option A shortcuts (parameter-free), global pool, fc: 6n+2 layers. `widths`
    changes the three stages' filters (the stem takes the first), e.g. (8, 16, 32) for a narrow twin."""
    n = _blocks_per_stage(depth, 2)
    kwargs.setdefault("shortcut", "A")
    return ResNet(
        BasicBlock,
        [n] * 3,
        tuple(widths),
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


def _cifar_resnet(depth: int, skip: str, num_classes: int, in_chans: int, kwargs: dict[str, Any]) -> ResNet:
    """The residual, plain and highway twins: one builder, three skips (He et al. 2016, §4.2, Fig. 6)."""
    kwargs.setdefault("skip", skip)
    return cifar_resnet(depth, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model(skip="identity", depth=20, paper=HE2016, family="cifar")
def resnet20(num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """ResNet-20 for CIFAR-10, He et al. 2016, arXiv:1512.03385, §4.2: 269,722 parameters."""
    return _cifar_resnet(20, "identity", num_classes, in_chans, kwargs)


@register_model(skip="identity", depth=32, paper=HE2016, family="cifar")
def resnet32(num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """ResNet-32 for CIFAR-10, He et al. 2016, arXiv:1512.03385, §4.2: 464,154 parameters."""
    return _cifar_resnet(32, "identity", num_classes, in_chans, kwargs)


@register_model(skip="identity", depth=44, paper=HE2016, family="cifar")
def resnet44(num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """ResNet-44 for CIFAR-10, He et al. 2016, arXiv:1512.03385, §4.2: 658,586 parameters."""
    return _cifar_resnet(44, "identity", num_classes, in_chans, kwargs)


@register_model(skip="identity", depth=56, paper=HE2016, family="cifar")
def resnet56(num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """ResNet-56 for CIFAR-10, He et al. 2016, arXiv:1512.03385, §4.2: 853,018 parameters."""
    return _cifar_resnet(56, "identity", num_classes, in_chans, kwargs)


@register_model(skip="identity", depth=110, paper=HE2016, family="cifar")
def resnet110(num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """ResNet-110 for CIFAR-10, He et al. 2016, arXiv:1512.03385, §4.2: 1,727,962 parameters."""
    return _cifar_resnet(110, "identity", num_classes, in_chans, kwargs)


@register_model(skip="identity", depth=1202, paper=HE2016, family="cifar")
def resnet1202(num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """ResNet-1202 for CIFAR-10, He et al. 2016, arXiv:1512.03385, §4.2: 19,421,274 parameters."""
    return _cifar_resnet(1202, "identity", num_classes, in_chans, kwargs)


@register_model(skip="none", depth=20, paper=HE2016, family="cifar")
def plain20(num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """Plain-20 for CIFAR-10 (ResNet-20 without its skips), He et al. 2016, arXiv:1512.03385, §4.2:
    269,722 parameters."""
    return _cifar_resnet(20, "none", num_classes, in_chans, kwargs)


@register_model(skip="none", depth=32, paper=HE2016, family="cifar")
def plain32(num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """Plain-32 for CIFAR-10 (ResNet-32 without its skips), He et al. 2016, arXiv:1512.03385, §4.2:
    464,154 parameters."""
    return _cifar_resnet(32, "none", num_classes, in_chans, kwargs)


@register_model(skip="none", depth=44, paper=HE2016, family="cifar")
def plain44(num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """Plain-44 for CIFAR-10 (ResNet-44 without its skips), He et al. 2016, arXiv:1512.03385, §4.2:
    658,586 parameters."""
    return _cifar_resnet(44, "none", num_classes, in_chans, kwargs)


@register_model(skip="none", depth=56, paper=HE2016, family="cifar")
def plain56(num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """Plain-56 for CIFAR-10 (ResNet-56 without its skips), He et al. 2016, arXiv:1512.03385, §4.2:
    853,018 parameters."""
    return _cifar_resnet(56, "none", num_classes, in_chans, kwargs)


@register_model(skip="none", depth=110, paper=HE2016, family="cifar")
def plain110(num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """Plain-110 for CIFAR-10 (ResNet-110 without its skips), He et al. 2016, arXiv:1512.03385, §4.2:
    1,727,962 parameters."""
    return _cifar_resnet(110, "none", num_classes, in_chans, kwargs)


@register_model(skip="gated", depth=20, paper=HIGHWAY_CIFAR, family="cifar")
def highway20(num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """Highway-20 for CIFAR-10: Srivastava et al. 2015 gates (arXiv:1507.06228) on He et al. 2016's
    ResNet-20 body (arXiv:1512.03385): 283,626 parameters."""
    return _cifar_resnet(20, "gated", num_classes, in_chans, kwargs)


@register_model(skip="gated", depth=32, paper=HIGHWAY_CIFAR, family="cifar")
def highway32(num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """Highway-32 for CIFAR-10: Srivastava et al. 2015 gates (arXiv:1507.06228) on He et al. 2016's
    ResNet-32 body (arXiv:1512.03385): 489,034 parameters."""
    return _cifar_resnet(32, "gated", num_classes, in_chans, kwargs)


@register_model(skip="gated", depth=44, paper=HIGHWAY_CIFAR, family="cifar")
def highway44(num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """Highway-44 for CIFAR-10: Srivastava et al. 2015 gates (arXiv:1507.06228) on He et al. 2016's
    ResNet-44 body (arXiv:1512.03385): 694,442 parameters."""
    return _cifar_resnet(44, "gated", num_classes, in_chans, kwargs)


@register_model(skip="gated", depth=56, paper=HIGHWAY_CIFAR, family="cifar")
def highway56(num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """Highway-56 for CIFAR-10: Srivastava et al. 2015 gates (arXiv:1507.06228) on He et al. 2016's
    ResNet-56 body (arXiv:1512.03385): 899,850 parameters."""
    return _cifar_resnet(56, "gated", num_classes, in_chans, kwargs)


@register_model(skip="gated", depth=110, paper=HIGHWAY_CIFAR, family="cifar")
def highway110(num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """Highway-110 for CIFAR-10: Srivastava et al. 2015 gates (arXiv:1507.06228) on He et al. 2016's
    ResNet-110 body (arXiv:1512.03385): 1,824,186 parameters."""
    return _cifar_resnet(110, "gated", num_classes, in_chans, kwargs)


@register_model(skip="identity", depth=110, paper=HE2016B, family="cifar")
def preact_resnet110(num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """Pre-activation ResNet-110 (basic units) for CIFAR-10, He et al. 2016b, arXiv:1603.05027:
    1,727,962 parameters."""
    return cifar_preact_resnet(110, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model(skip="identity", depth=164, paper=HE2016B, family="cifar")
def preact_resnet164(num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """Pre-activation ResNet-164 (bottleneck units) for CIFAR-10, He et al. 2016b, arXiv:1603.05027:
    1,703,258 parameters."""
    return cifar_preact_resnet(164, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model(skip="identity", depth=1001, paper=HE2016B, family="cifar")
def preact_resnet1001(num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """Pre-activation ResNet-1001 (bottleneck units) for CIFAR-10, He et al. 2016b, arXiv:1603.05027:
    10,327,706 parameters."""
    return cifar_preact_resnet(1001, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model(skip="identity", depth=28, paper=ZAGORUYKO2016, family="cifar")
def wrn28_10(num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """WRN-28-10 for CIFAR-10, Zagoruyko & Komodakis 2016, arXiv:1605.07146: 36,479,194 parameters."""
    return wide_resnet(28, 10, num_classes=num_classes, in_chans=in_chans, **kwargs)
