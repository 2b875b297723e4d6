"""The interface every resnets model shares (as timm's): features, head, a replaceable classifier, and
for conv nets the feature maps of each stage (`feature_info`, `forward_intermediates`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from resnets.errors import ConfigError


def take_indices(num_stages: int, indices: int | Sequence[int] | None) -> list[int]:
    """Stage indices as timm reads them: None all, an int n the last n, a sequence those (negative from
    the end); sorted, each checked against the model's `num_stages`."""
    if indices is None:
        return list(range(num_stages))
    if isinstance(indices, int):
        if not 1 <= indices <= num_stages:
            raise ConfigError(f"take the last 1…{num_stages} stages, not {indices}")
        return list(range(num_stages - indices, num_stages))
    picked = []
    for i in indices:
        if not -num_stages <= int(i) < num_stages:
            raise ConfigError(
                f"out index {i} is out of range: this model has {num_stages} feature stages "
                f"(0…{num_stages - 1}, or negative from the end)"
            )
        picked.append(int(i) % num_stages)
    if not picked or len(set(picked)) != len(picked):
        raise ConfigError(f"out indices must name distinct stages, got {tuple(indices)}")
    return sorted(picked)


class ClassifierNet(nn.Module):
    """Base class: `forward(x) = forward_head(forward_features(x))`, plus `reset_classifier`.

    Subclasses set `num_classes`, `in_chans`, `num_features` and build their last layer with
    `self._make_classifier()` under the attribute named by `classifier_name`.
    """

    classifier_name = "fc"
    # Whether forward_features returns feature maps to pool. A class attribute rather than a test of
    # x.dim(), so that torch.fx can trace the model (resnets.deploy.inference.fold_batchnorm).
    spatial_features = True
    num_classes: int
    in_chans: int
    num_features: int
    # One dict per feature stage, timm's keys: num_chs, reduction (input side / map side), module (the
    # submodule whose output it is). Empty for nets without feature maps (the fully connected ones).
    feature_info: Sequence[dict[str, object]] = ()

    def forward_stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Run feature stage `index` on the previous stage's output (the image for stage 0)."""
        raise self._no_stages()

    def _no_stages(self) -> ConfigError:
        return ConfigError(
            f"{type(self).__name__} has no feature stages (feature maps exist in conv nets only); "
            "a fully connected net's a^l are model.activations(x)"
        )

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        stop_early: bool = False,
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """The feature maps of the stages in `indices` (timm's reading of indices), and unless
        `intermediates_only` the final features; the last stage's output is forward_features(x)."""
        if not self.feature_info:
            raise self._no_stages()
        picked = take_indices(len(self.feature_info), indices)
        last = picked[-1] if (stop_early or intermediates_only) else len(self.feature_info) - 1
        maps = []
        for i in range(last + 1):
            x = self.forward_stage(i, x)
            if i in picked:
                maps.append(x)
        return maps if intermediates_only else (x, maps)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Everything before pooling and the classifier."""
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool (if spatial) and classify features; `pre_logits=True` stops before the classifier."""
        if self.spatial_features:
            x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return x if pre_logits else getattr(self, self.classifier_name)(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def _make_classifier(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def get_classifier(self) -> nn.Module:
        """The final classification layer."""
        return getattr(self, self.classifier_name)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a freshly initialised one for `num_classes` (0: no classifier)."""
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        self.num_classes = num_classes
        like = next((p for p in self.parameters() if p.is_floating_point()), None)
        new = self._make_classifier(num_classes)
        if like is not None:
            new = new.to(device=like.device, dtype=like.dtype)
        setattr(self, self.classifier_name, new)
