"""DenseNets (Huang et al. 2017): the skip kind "dense", every layer reads all earlier ones in its block.

Layer l of a dense block computes x_l = H_l([x_0, x_1, …, x_{l-1}]) on the channel-concatenation of
every earlier output (Huang et al. eq. 2), so each block adds `growth_rate` channels per layer.
ImageNet models have torchvision's state_dict keys (`features.denseblock1.denselayer1.norm1`, …).
Every "BN-ReLU" is `norm_layer` and `act_layer` (names or callables, resnets.layers.get_norm_layer and
get_act_layer): batch norm and ReLU by default.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from torch import nn

from resnets.layers import ActLayer, NormLayer, conv1x1, conv3x3, get_act_layer, get_norm_layer, init_he
from resnets.models.base import ClassifierNet
from resnets.papers import HUANG2017
from resnets.registry import register_model


class DenseLayer(nn.Module):
    """H_l: BN-ReLU-Conv(3×3), or with a bottleneck (DenseNet-B)
    BN-ReLU-Conv(1×1, bn_size·k)-BN-ReLU-Conv(3×3).

    `memory_efficient` recomputes the concatenation and the first BN-ReLU-conv during backward
    (Pleiss et al. 2017) instead of storing them: same outputs, gradients and batch-norm statistics
    (the recomputation leaves the running statistics alone), memory linear in depth.
    """

    def __init__(
        self,
        in_ch: int,
        growth_rate: int,
        bn_size: int | None,
        drop_rate: float = 0.0,
        memory_efficient: bool = False,
        norm_layer: str | NormLayer = "batchnorm",
        act_layer: str | ActLayer = "relu",
    ) -> None:
        super().__init__()
        first_out = bn_size * growth_rate if bn_size else growth_rate
        norm = get_norm_layer(norm_layer)
        act = get_act_layer(act_layer, inplace=True)  # on a norm's output, never the shared inputs
        self.norm1 = norm(in_ch)
        self.relu1 = act()
        self.conv1 = conv1x1(in_ch, first_out) if bn_size else conv3x3(in_ch, first_out)
        self.bottleneck = bool(bn_size)
        if self.bottleneck:
            self.norm2 = norm(first_out)
            self.relu2 = act()
            self.conv2 = conv3x3(first_out, growth_rate)
        self.drop_rate = drop_rate
        self.memory_efficient = memory_efficient

    def _first(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.relu1(self.norm1(torch.cat(inputs, 1))))

    @contextlib.contextmanager
    def _frozen_norm_stats(self) -> Iterator[None]:
        """Undo the running-statistics update that recomputing norm1 in train mode would make twice."""
        saved = [b.clone() for b in self.norm1.buffers()]
        try:
            yield
        finally:
            with torch.no_grad():
                for buf, old in zip(self.norm1.buffers(), saved, strict=True):
                    buf.copy_(old)

    def forward(self, inputs: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        if isinstance(inputs, torch.Tensor):
            inputs = [inputs]
        if self.memory_efficient and torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
            out = cp.checkpoint(
                self._first,
                *inputs,
                use_reentrant=False,
                context_fn=lambda: (contextlib.nullcontext(), self._frozen_norm_stats()),
            )
        else:
            out = self._first(*inputs)
        if self.bottleneck:
            out = self.conv2(self.relu2(self.norm2(out)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return out


class DenseBlock(nn.ModuleDict):
    """`num_layers` dense layers; returns the concatenation of its input and every layer's output."""

    def __init__(
        self,
        num_layers: int,
        in_ch: int,
        growth_rate: int,
        bn_size: int | None,
        drop_rate: float = 0.0,
        memory_efficient: bool = False,
        norm_layer: str | NormLayer = "batchnorm",
        act_layer: str | ActLayer = "relu",
    ) -> None:
        super().__init__()
        for i in range(num_layers):
            layer = DenseLayer(
                in_ch + i * growth_rate,
                growth_rate,
                bn_size,
                drop_rate,
                memory_efficient,
                norm_layer,
                act_layer,
            )
            self.add_module(f"denselayer{i + 1}", layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """Between blocks: BN-ReLU-Conv(1×1) to ⌊θ·m⌋ channels (θ the compression), 2×2 average pool."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        norm_layer: str | NormLayer = "batchnorm",
        act_layer: str | ActLayer = "relu",
    ) -> None:
        super().__init__()
        self.norm = get_norm_layer(norm_layer)(in_ch)
        self.relu = get_act_layer(act_layer, inplace=True)()
        self.conv = conv1x1(in_ch, out_ch)
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)


class DenseNet(ClassifierNet):
    """A stem, dense blocks separated by transitions, BN-ReLU, global pool, linear classifier."""

    classifier_name = "classifier"

    def __init__(
        self,
        block_config: Sequence[int],
        growth_rate: int,
        num_init_features: int,
        *,
        bn_size: int | None = 4,
        compression: float = 0.5,
        stem: str = "imagenet",
        drop_rate: float = 0.0,
        num_classes: int = 1000,
        in_chans: int = 3,
        memory_efficient: bool = False,
        norm_layer: str | NormLayer = "batchnorm",
        act_layer: str | ActLayer = "relu",
    ) -> None:
        super().__init__()
        norm = get_norm_layer(norm_layer)
        if not 0 < compression <= 1:
            raise ValueError(f"compression must be in (0, 1], got {compression}")
        self.num_classes, self.in_chans, self.skip = num_classes, in_chans, "dense"
        self.growth_rate = growth_rate
        if stem == "imagenet":  # Huang et al. Table 1: 7×7/2 conv, BN-ReLU, 3×3/2 max-pool
            stem_layers = [
                ("conv0", nn.Conv2d(in_chans, num_init_features, 7, stride=2, padding=3, bias=False)),
                ("norm0", norm(num_init_features)),
                ("relu0", get_act_layer(act_layer, inplace=True)()),
                ("pool0", nn.MaxPool2d(3, stride=2, padding=1)),
            ]
        elif stem == "cifar":  # §3: one 3×3 conv; each dense layer starts with its own BN-ReLU
            stem_layers = [("conv0", conv3x3(in_chans, num_init_features))]
        else:
            raise ValueError(f"stem must be 'imagenet' or 'cifar', got {stem!r}")
        self.features = nn.Sequential(OrderedDict(stem_layers))

        channels, block_channels = num_init_features, []
        for i, num_layers in enumerate(block_config):
            self.features.add_module(
                f"denseblock{i + 1}",
                DenseBlock(
                    num_layers, channels, growth_rate, bn_size, drop_rate, memory_efficient, norm, act_layer
                ),
            )
            channels += num_layers * growth_rate
            block_channels.append(channels)
            if i != len(block_config) - 1:
                out = int(channels * compression)
                self.features.add_module(f"transition{i + 1}", Transition(channels, out, norm, act_layer))
                channels = out
        self.features.add_module(f"norm{len(block_config) + 1}", norm(channels))
        # The activation of the final BN-ReLU (Huang et al. Table 1), after the last norm.
        self.act = get_act_layer(act_layer)()
        self.num_features = channels
        self.classifier = self._make_classifier(num_classes)
        self._stage_modules, self.feature_info = self._feature_stages(stem, num_init_features, block_channels)
        init_he(self)

    def _feature_stages(
        self, stem: str, stem_width: int, block_channels: list[int]
    ) -> tuple[list[list[str]], list[dict[str, object]]]:
        # The stem's output (before the ImageNet max-pool), then each dense block's, entered through the
        # max-pool or transition before it (each transition pools by 2); the last stage ends with the
        # final BN-ReLU, so its output is forward_features'.
        names = list(self.features._modules)
        first = names.index("denseblock1")
        pool = names[first - 1 : first] if stem == "imagenet" else []
        groups, current = [names[: first - len(pool)]], list(pool)
        for name in names[first:]:
            current.append(name)
            if name.startswith("denseblock"):
                groups.append(current)
                current = []
        groups[-1].extend(current)  # the final norm
        reduction = 2 if stem == "imagenet" else 1
        info: list[dict[str, object]] = [
            {"num_chs": stem_width, "reduction": reduction, "module": f"features.{groups[0][-1]}"}
        ]
        reduction *= 2 if pool else 1
        for i, channels in enumerate(block_channels):
            reduction *= 2 if i > 0 else 1
            info.append(
                {"num_chs": channels, "reduction": reduction, "module": f"features.denseblock{i + 1}"}
            )
        info[-1]["module"] = "act"
        return groups, info

    def forward_stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        for name in self._stage_modules[index]:
            x = self.features._modules[name](x)
        return self.act(x) if index == len(self._stage_modules) - 1 else x

    def set_memory_efficient(self, enabled: bool = True) -> None:
        """Turn gradient checkpointing of the dense layers on or off."""
        for m in self.modules():
            if isinstance(m, DenseLayer):
                m.memory_efficient = enabled

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.features(x))


def cifar_densenet(
    depth: int, growth_rate: int, *, bc: bool, num_classes: int = 10, in_chans: int = 3, **kwargs: object
) -> DenseNet:
    """Huang et al. §3 CIFAR DenseNet: 3 blocks on 32/16/8 maps. Plain: (L−4)/3 layers per block and a
    16-channel stem; BC: (L−4)/6 bottleneck layers (4k wide) per block, compression 0.5, 2k stem."""
    per_block, rem = divmod(depth - 4, 6 if bc else 3)
    if rem or per_block < 1:
        raise ValueError(f"DenseNet{'-BC' if bc else ''} depth must be {6 if bc else 3}n+4, got {depth}")
    return DenseNet(
        [per_block] * 3,
        growth_rate,
        2 * growth_rate if bc else 16,
        bn_size=4 if bc else None,
        compression=0.5 if bc else 1.0,
        stem="cifar",
        num_classes=num_classes,
        in_chans=in_chans,
        **kwargs,
    )


# Huang et al. Table 1 (torchvision's configurations): growth rate, blocks, stem width.
_IMAGENET_CONFIGS = {
    121: (32, (6, 12, 24, 16), 64),
    161: (48, (6, 12, 36, 24), 96),
    169: (32, (6, 12, 32, 32), 64),
    201: (32, (6, 12, 48, 32), 64),
}


def imagenet_densenet(
    depth: int, *, num_classes: int = 1000, in_chans: int = 3, **kwargs: object
) -> DenseNet:
    """DenseNet-BC-`depth` for ImageNet (Huang et al. Table 1), torchvision-compatible."""
    if depth not in _IMAGENET_CONFIGS:
        raise ValueError(f"ImageNet DenseNet depth must be one of {sorted(_IMAGENET_CONFIGS)}, got {depth}")
    growth, blocks, init = _IMAGENET_CONFIGS[depth]
    return DenseNet(blocks, growth, init, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model(skip="dense", depth=40, paper=HUANG2017, family="cifar")
def densenet40_k12(num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> DenseNet:
    """DenseNet (L=40, k=12) for CIFAR-10, Huang et al. 2017, arXiv:1608.06993: 1,019,722 parameters."""
    return cifar_densenet(40, 12, bc=False, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model(skip="dense", depth=100, paper=HUANG2017, family="cifar")
def densenet_bc100_k12(num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> DenseNet:
    """DenseNet-BC (L=100, k=12) for CIFAR-10, Huang et al. 2017, arXiv:1608.06993: 769,162 parameters."""
    return cifar_densenet(100, 12, bc=True, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model(skip="dense", depth=190, paper=HUANG2017, family="cifar")
def densenet_bc190_k40(num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> DenseNet:
    """DenseNet-BC (L=190, k=40) for CIFAR-10, Huang et al. 2017, arXiv:1608.06993: 25,624,430 parameters."""
    return cifar_densenet(190, 40, bc=True, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model(skip="dense", depth=121, paper=HUANG2017, family="imagenet")
def densenet121(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> DenseNet:
    """DenseNet-BC-121 for ImageNet, Huang et al. 2017, arXiv:1608.06993 (torchvision's state_dict):
    7,978,856 parameters."""
    return imagenet_densenet(121, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model(skip="dense", depth=161, paper=HUANG2017, family="imagenet")
def densenet161(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> DenseNet:
    """DenseNet-BC-161 for ImageNet, Huang et al. 2017, arXiv:1608.06993 (torchvision's state_dict):
    28,681,000 parameters."""
    return imagenet_densenet(161, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model(skip="dense", depth=169, paper=HUANG2017, family="imagenet")
def densenet169(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> DenseNet:
    """DenseNet-BC-169 for ImageNet, Huang et al. 2017, arXiv:1608.06993 (torchvision's state_dict):
    14,149,480 parameters."""
    return imagenet_densenet(169, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model(skip="dense", depth=201, paper=HUANG2017, family="imagenet")
def densenet201(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> DenseNet:
    """DenseNet-BC-201 for ImageNet, Huang et al. 2017, arXiv:1608.06993 (torchvision's state_dict):
    20,013,928 parameters."""
    return imagenet_densenet(201, num_classes=num_classes, in_chans=in_chans, **kwargs)
