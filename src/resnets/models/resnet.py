"""The residual network body shared by the CIFAR and ImageNet families.

One class builds He et al.'s CIFAR nets (3×3 stem, 3 stages, option A), the ImageNet nets
(7×7 stem + max-pool, 4 stages, option B), their plain and highway twins, pre-activation nets,
ResNeXt and wide ResNets: they differ only in the stem, the block and the skip. Attribute names
are torchvision's (`conv1`, `bn1`, `layer1`…, `fc`), so ImageNet state_dicts interchange. The norm
and activation are chosen by `norm_layer` and `act_layer` (a name such as "groupnorm" or "silu", or a
callable; resnets.layers.get_norm_layer, get_act_layer): batch norm and ReLU by default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from resnets.blocks import SkipBlock
from resnets.layers import DEFAULT_GATE_BIAS, ActLayer, NormLayer, get_act_layer, get_norm_layer, init_he
from resnets.models.base import ClassifierNet

STEMS = ("cifar", "imagenet")


def fixup_init(net: ResNet) -> None:
    """Fixup's initialisation (Zhang et al. 2019, §3, steps 1-3) on top of He init: the last conv of each
    of the L residual branches zero, the other (m = 2) scaled by L^(−1/(2m−2)) = L^(−1/2), the classifier
    zero. (Fixup's scalar bias before the classifier is left out: the classifier has its own bias.)"""
    blocks = net.blocks()
    factor = len(blocks) ** (-1 / (2 * 2 - 2))
    with torch.no_grad():
        for b in blocks:
            b.conv1.weight.mul_(factor)
            nn.init.zeros_(b.conv2.weight)
        if isinstance(net.fc, nn.Linear):
            nn.init.zeros_(net.fc.weight)
            nn.init.zeros_(net.fc.bias)


class ResNet(ClassifierNet):
    """A stem, stages of `block`s (the first of each stage but the first strides by 2), pool, fc."""

    def __init__(
        self,
        block: type[SkipBlock],
        layers: Sequence[int],
        widths: Sequence[int],
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        stem: str = "imagenet",
        stem_width: int | None = None,
        skip: str = "identity",
        shortcut: str = "B",
        groups: int = 1,
        width_per_group: int = 64,
        norm_layer: str | NormLayer = "batchnorm",
        act_layer: str | ActLayer = "relu",
        gate_bias: float = DEFAULT_GATE_BIAS,
        drop_rate: float = 0.0,
        zero_init_last: bool = False,
        residual_scale: str = "none",
        block_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
        if len(layers) != len(widths):
            raise ValueError(f"layers {tuple(layers)} and widths {tuple(widths)} must have the same length")
        self.num_classes, self.in_chans, self.skip = num_classes, in_chans, skip
        stem_width = stem_width or widths[0]
        norm = get_norm_layer(norm_layer)
        act = get_act_layer(act_layer, inplace=True)  # in place on a norm's output, as torchvision

        if stem == "imagenet":  # He et al. 2016, Table 1: 7×7/2 conv, 3×3/2 max-pool
            self.conv1 = nn.Conv2d(in_chans, stem_width, 7, stride=2, padding=3, bias=False)
        else:  # §4.2: a single 3×3 conv with 16 filters
            self.conv1 = nn.Conv2d(in_chans, stem_width, 3, stride=1, padding=1, bias=False)
        # Pre-activation nets normalise at the start of every block, so the CIFAR stem is a bare conv
        # and a final BN-ReLU follows the last block (He et al. 2016b, §3.2 and Fig. 1b); the
        # ImageNet stem keeps its BN-ReLU before the max-pool.
        self.bn1 = None if block.preact and stem == "cifar" else norm(stem_width)
        self.relu = act()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if stem == "imagenet" else nn.Identity()

        if residual_scale != "none":  # only BasicBlock has the option: other blocks refuse the keyword
            block_kwargs = {**(block_kwargs or {}), "residual_scale": residual_scale}
        if residual_scale == "fixup" and norm_layer != "identity":
            raise ValueError(
                'residual_scale="fixup" replaces normalisation: use it with norm_layer="identity"'
            )
        in_ch = stem_width
        for i, (n_blocks, planes) in enumerate(zip(layers, widths, strict=True)):
            stage = []
            for j in range(n_blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                stage.append(
                    block(
                        in_ch,
                        planes,
                        stride,
                        skip=skip,
                        shortcut=shortcut,
                        groups=groups,
                        base_width=width_per_group,
                        norm_layer=norm,
                        act_layer=act_layer,  # each block decides whether its activation works in place
                        gate_bias=gate_bias,
                        drop_rate=drop_rate,
                        **(block_kwargs or {}),
                    )
                )
                in_ch = planes * block.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
        self.num_stages = len(layers)
        self.num_features = in_ch
        self.final_norm = nn.Sequential(norm(in_ch), act()) if block.preact else None
        self.fc = self._make_classifier(num_classes)
        self.feature_info = self._feature_info(stem, stem_width, [w * block.expansion for w in widths])

        init_he(self)
        if zero_init_last:
            for b in self.blocks():
                b.zero_init_last()
        if residual_scale == "fixup":
            fixup_init(self)

    def _feature_info(self, stem: str, stem_width: int, widths: list[int]) -> list[dict[str, object]]:
        # The stem's output (before the ImageNet max-pool, as timm's `act1`), then each stage's; every
        # stage but the first halves the map. The last stage ends with a pre-activation net's final norm.
        reduction = 2 if stem == "imagenet" else 1
        info: list[dict[str, object]] = [
            {
                "num_chs": stem_width,
                "reduction": reduction,
                "module": "relu" if self.bn1 is not None else "conv1",
            }
        ]
        reduction *= 2 if stem == "imagenet" else 1
        for i, width in enumerate(widths):
            reduction *= 2 if i > 0 else 1
            info.append({"num_chs": width, "reduction": reduction, "module": f"layer{i + 1}"})
        if self.final_norm is not None:
            info[-1]["module"] = "final_norm"
        return info

    def forward_stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        if index == 0:
            x = self.conv1(x)
            return x if self.bn1 is None else self.relu(self.bn1(x))
        if index == 1:
            x = self.maxpool(x)
        x = getattr(self, f"layer{index}")(x)
        if index == self.num_stages and self.final_norm is not None:
            x = self.final_norm(x)
        return x

    def stages(self) -> list[nn.Sequential]:
        """The stages `layer1`, `layer2`, … in order."""
        return [getattr(self, f"layer{i + 1}") for i in range(self.num_stages)]

    def blocks(self) -> list[SkipBlock]:
        """Every residual block in forward order."""
        return [b for s in self.stages() for b in s]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        if self.bn1 is not None:
            x = self.relu(self.bn1(x))
        x = self.maxpool(x)
        for stage in self.stages():
            x = stage(x)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return x
