"""The interface every resnets model shares (as timm's): features, head, a replaceable classifier."""

from __future__ import annotations

import torch
from torch import nn


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
