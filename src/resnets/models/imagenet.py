"""ImageNet ResNets, ResNeXt and wide ResNets whose state_dicts are torchvision's, plus plain twins.

`create_model("resnet50").load_state_dict(torchvision.models.resnet50().state_dict())` works
strictly, and the other way round, and both compute the same function.
"""

from __future__ import annotations

from functools import partial

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


for _d in (18, 34, 50, 101, 152):
    register_model(
        f"resnet{_d}",
        partial(imagenet_resnet, _d),
        skip="identity",
        depth=_d,
        paper=HE2016,
        family="imagenet",
    )
for _d in (18, 34):  # Table 2's plain baselines
    register_model(
        f"plain{_d}",
        partial(imagenet_resnet, _d, skip="none"),
        skip="none",
        depth=_d,
        paper=HE2016,
        family="imagenet",
    )
register_model(
    "resnext50_32x4d",
    partial(imagenet_resnet, 50, groups=32, width_per_group=4),
    skip="identity",
    depth=50,
    paper=XIE2017,
    family="imagenet",
)
register_model(
    "wide_resnet50_2",
    partial(imagenet_resnet, 50, width_per_group=128),
    skip="identity",
    depth=50,
    paper=ZAGORUYKO2016,
    family="imagenet",
)
