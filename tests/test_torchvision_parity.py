"""ImageNet models are torchvision's: same state_dict keys and shapes, both ways, same function."""

import pytest
import torch
import torchvision
from torch import nn

import resnets

NAMES = [
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "wide_resnet50_2",
    "densenet121",
    "densenet161",
    "densenet169",
    "densenet201",
]
SLOW = {"resnet152", "wide_resnet50_2", "densenet161", "densenet201", "resnet101"}


def _randomise_norms(model: nn.Module) -> None:
    """Non-trivial batch-norm statistics and affine parameters, so a mix-up of any two norms shows."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
            m.running_var.copy_(0.5 + torch.rand(n, generator=g))
            with torch.no_grad():
                m.weight.copy_(0.4 + 0.5 * torch.rand(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=[pytest.mark.slow] if n in SLOW else []) for n in NAMES]
)
def test_state_dicts_interchange_and_outputs_match(name: str) -> None:
    ours = resnets.create_model(name).eval()
    theirs = getattr(torchvision.models, name)().eval()
    _randomise_norms(theirs)

    ours_sd, theirs_sd = ours.state_dict(), theirs.state_dict()
    assert list(ours_sd) == list(theirs_sd)
    assert all(ours_sd[k].shape == v.shape for k, v in theirs_sd.items())

    ours.load_state_dict(theirs.state_dict(), strict=True)  # torchvision -> resnets
    back = getattr(torchvision.models, name)().eval()
    back.load_state_dict(ours.state_dict(), strict=True)  # resnets -> torchvision

    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = theirs(x)
        assert torch.isfinite(expected).all() and expected.abs().max() > 1e-3
        assert (ours(x) - expected).abs().max() < 1e-5
        assert (back(x) - expected).abs().max() < 1e-5


def test_plain18_is_resnet18_without_projection_shortcuts() -> None:
    # He et al. 2016 Table 2's plain-18 has the same layers as ResNet-18 minus the shortcuts.
    plain_keys = set(resnets.create_model("plain18").state_dict())
    res_keys = set(resnets.create_model("resnet18").state_dict())
    assert plain_keys < res_keys
    assert all("downsample" in k for k in res_keys - plain_keys)
