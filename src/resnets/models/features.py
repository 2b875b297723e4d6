"""Feature extraction as timm does it: `create_model(name, features_only=True, out_indices=...)` returns
a net whose forward gives the feature maps of the chosen stages, described by its `feature_info`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from resnets.errors import ConfigError
from resnets.models.base import ClassifierNet, take_indices


class FeatureInfo(list):
    """The chosen stages' dicts (num_chs, reduction, module) with timm's accessors."""

    def channels(self) -> list[int]:
        """Channels of each returned feature map."""
        return [int(d["num_chs"]) for d in self]

    def reduction(self) -> list[int]:
        """How many input pixels per feature-map pixel (per side), for each returned map."""
        return [int(d["reduction"]) for d in self]

    def module_name(self) -> list[str]:
        """The submodule of the original model whose output each map is."""
        return [str(d["module"]) for d in self]


class FeatureListNet(nn.Module):
    """A conv net whose `forward(x)` returns the chosen stages' feature maps, in order. Its classifier is
    removed and the stages after the last chosen one are never run; the net is `self.model`, so its
    state_dict keys are the original model's under "model."."""

    def __init__(self, model: nn.Module, out_indices: int | Sequence[int] | None = None) -> None:
        super().__init__()
        if not isinstance(model, ClassifierNet) or not model.feature_info:
            raise ConfigError(
                f"features_only needs a conv net with feature stages; {type(model).__name__} has none "
                "(a fully connected net's a^l are model.activations(x))"
            )
        self.out_indices = tuple(take_indices(len(model.feature_info), out_indices))
        self.feature_info = FeatureInfo(dict(model.feature_info[i]) for i in self.out_indices)
        model.reset_classifier(0)
        self.model = model

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model.forward_intermediates(x, self.out_indices, intermediates_only=True)  # type: ignore[return-value]
