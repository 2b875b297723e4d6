"""ImageNet ResNets, ResNeXt and wide ResNets whose state_dicts are torchvision's, plus plain twins.

`create_model("resnet50").load_state_dict(torchvision.models.resnet50().state_dict())` works
strictly, and the other way round, and both compute the same function.
"""

from __future__ import annotations

from typing import Any

from resnets.blocks import BasicBlock, Bottleneck, SkipBlock
from resnets.models.resnet import ResNet
from resnets.papers import HE2016, XIE2017, ZAGORUYKO2016
from resnets.registry import register_model

IMAGENET_WIDTHS = (64, 128, 256, 512)

# He et al. 2016, Table 1: blocks per stage for each depth.
_LAYOUTS: dict[int, tuple[type[SkipBlock], tuple[int, ...]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


def imagenet_resnet(
    depth: int, *, num_classes: int = 1000, in_chans: int = 3, skip: str = "identity", **kwargs: object
) -> ResNet:
    """He et al. 2016 Table 1 ResNet-`depth` (option B shortcuts, stride on the 3×3 as torchvision)."""
    if depth not in _LAYOUTS:
        raise ValueError(f"ImageNet ResNet depth must be one of {sorted(_LAYOUTS)}, got {depth}")
    block, layers = _LAYOUTS[depth]
    return ResNet(
        block,
        layers,
        IMAGENET_WIDTHS,
        stem="imagenet",
        num_classes=num_classes,
        in_chans=in_chans,
        skip=skip,
        **kwargs,
    )


def _imagenet_resnet(
    depth: int, skip: str, num_classes: int, in_chans: int, kwargs: dict[str, Any]
) -> ResNet:
    kwargs.setdefault("skip", skip)
    return imagenet_resnet(depth, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model(skip="identity", depth=18, paper=HE2016, family="imagenet")
def resnet18(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """ResNet-18 for ImageNet, He et al. 2016, arXiv:1512.03385, Table 1 (torchvision's state_dict):
    11,689,512 parameters."""
    return _imagenet_resnet(18, "identity", num_classes, in_chans, kwargs)


@register_model(skip="identity", depth=34, paper=HE2016, family="imagenet")
def resnet34(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """ResNet-34 for ImageNet, He et al. 2016, arXiv:1512.03385, Table 1 (torchvision's state_dict):
    21,797,672 parameters."""
    return _imagenet_resnet(34, "identity", num_classes, in_chans, kwargs)


@register_model(skip="identity", depth=50, paper=HE2016, family="imagenet")
def resnet50(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """ResNet-50 for ImageNet, He et al. 2016, arXiv:1512.03385, Table 1 (torchvision's state_dict):
    25,557,032 parameters."""
    return _imagenet_resnet(50, "identity", num_classes, in_chans, kwargs)


@register_model(skip="identity", depth=101, paper=HE2016, family="imagenet")
def resnet101(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """ResNet-101 for ImageNet, He et al. 2016, arXiv:1512.03385, Table 1 (torchvision's state_dict):
    44,549,160 parameters."""
    return _imagenet_resnet(101, "identity", num_classes, in_chans, kwargs)


@register_model(skip="identity", depth=152, paper=HE2016, family="imagenet")
def resnet152(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """ResNet-152 for ImageNet, He et al. 2016, arXiv:1512.03385, Table 1 (torchvision's state_dict):
    60,192,808 parameters."""
    return _imagenet_resnet(152, "identity", num_classes, in_chans, kwargs)


@register_model(skip="none", depth=18, paper=HE2016, family="imagenet")
def plain18(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """Plain-18 for ImageNet, He et al. 2016, arXiv:1512.03385, Table 2 (ResNet-18 without its
    skips): 11,515,688 parameters."""
    return _imagenet_resnet(18, "none", num_classes, in_chans, kwargs)


@register_model(skip="none", depth=34, paper=HE2016, family="imagenet")
def plain34(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """Plain-34 for ImageNet, He et al. 2016, arXiv:1512.03385, Table 2 (ResNet-34 without its
    skips): 21,623,848 parameters."""
    return _imagenet_resnet(34, "none", num_classes, in_chans, kwargs)


@register_model(skip="identity", depth=50, paper=XIE2017, family="imagenet")
def resnext50_32x4d(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """ResNeXt-50 (32×4d) for ImageNet, Xie et al. 2017, arXiv:1611.05431 (torchvision's state_dict):
    25,028,904 parameters."""
    kwargs.setdefault("groups", 32)
    kwargs.setdefault("width_per_group", 4)
    return _imagenet_resnet(50, "identity", num_classes, in_chans, kwargs)


@register_model(skip="identity", depth=50, paper=ZAGORUYKO2016, family="imagenet")
def wide_resnet50_2(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """Wide ResNet-50-2 for ImageNet, Zagoruyko & Komodakis 2016, arXiv:1605.07146 (torchvision's
    state_dict): 68,883,240 parameters."""
    kwargs.setdefault("width_per_group", 128)
    return _imagenet_resnet(50, "identity", num_classes, in_chans, kwargs)
