"""Every registered model, parametrised over list_models(): a new model is tested automatically."""

import pytest
import torch
from torch import nn

import resnets
from resnets.registry import get_spec

ALL = resnets.list_models()
HEAVY = {
    "resnet1202",
    "preact_resnet1001",
    "wrn28_10",
    "densenet_bc190_k40",
    "wide_resnet50_2",
    "resnet152",
    "densenet161",
}


def _small_input(name: str, in_chans: int | None = None, batch: int = 2) -> torch.Tensor:
    spec = get_spec(name)
    c, h, w = spec.input_size
    if spec.family == "imagenet":
        h = w = 64  # five stride-2 stages leave 2×2 maps: enough for batch norm in train mode
    return torch.randn(batch, in_chans or c, h, w)


def _calibrate_norms(model: nn.Module, x: torch.Tensor) -> None:
    """Give batch norms the running statistics of `x` (one cumulative-average pass), as training
    would; with the init values (mean 0, var 1) a 1,000-layer residual stack overflows in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        model(x)
    for m in norms:
        m.momentum = 0.1


def _marks(name: str) -> list:
    return [pytest.mark.slow] if name in HEAVY else []


@pytest.mark.parametrize("name", [pytest.param(n, marks=_marks(n)) for n in ALL])
def test_forward_backward_train_and_eval(name: str) -> None:
    model = resnets.create_model(name, num_classes=7)
    x = _small_input(name)
    out = model(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.logsumexp(1).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without a gradient: {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    _calibrate_norms(model, x)
    model.eval()
    with torch.no_grad():
        out_eval = model(x)
    assert out_eval.shape == (2, 7) and torch.isfinite(out_eval).all()


@pytest.mark.parametrize("name", [pytest.param(n, marks=_marks(n)) for n in ALL])
def test_grayscale_input_and_shared_interface(name: str) -> None:
    model = resnets.create_model(name, num_classes=5, in_chans=1)
    assert (model.num_classes, model.in_chans) == (5, 1)
    x = _small_input(name, in_chans=1)
    _calibrate_norms(model, x)
    model.eval()
    with torch.no_grad():
        feats = model.forward_features(x)
        pooled = model.forward_head(feats, pre_logits=True)
        logits = model.forward_head(feats)
        assert pooled.shape == (2, model.num_features)
        assert torch.isfinite(logits).all() and logits.shape == (2, 5)
        assert torch.equal(logits, model(x))
        model.reset_classifier(3)
        assert model(x).shape == (2, 3) and model.num_classes == 3
        model.reset_classifier(0)
        assert model(x).shape == (2, model.num_features)


def _counted_depth(name: str) -> int:
    """Depth as each paper counts it, from the built modules.

    He et al. and Huang et al.: weighted layers on the main path (convs and fc, not shortcut
    projections or gates). Zagoruyko & Komodakis: every conv, shortcut 1×1s included, no fc
    (WRN-28 = 1 + 24 + 3). Srivastava et al.: hidden layers of a fully connected net."""
    with torch.device("meta"):
        model = resnets.create_model(name)
    if get_spec(name).family == "mlp":
        return len(model.layers)
    if name.startswith("wrn"):
        return sum(1 for m in model.modules() if isinstance(m, nn.Conv2d))
    return sum(
        1
        for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d | nn.Linear) and "downsample" not in n and "gate" not in n
    )


@pytest.mark.parametrize("name", ALL)
def test_registered_depth_is_the_papers_count(name: str) -> None:
    assert _counted_depth(name) == get_spec(name).depth


@pytest.mark.parametrize("name", [*resnets.list_models("*mlp"), "skipnet"])
def test_mlp_depth_option(name: str) -> None:
    assert len(resnets.create_model(name, depth=20).layers) == 20


def test_reset_classifier_keeps_dtype_and_device() -> None:
    model = resnets.create_model("resnet20", num_classes=0).double()
    model.reset_classifier(5)
    assert model.fc.weight.dtype == torch.float64
    assert model(torch.randn(2, 3, 32, 32, dtype=torch.float64)).shape == (2, 5)


def test_flops_are_twice_the_multiply_adds_in_any_dtype_and_keep_training_mode() -> None:
    # Counted by hand: a 3x3 conv 3->8 on 32x32 does 8*32*32 outputs of 3*3*3 multiply-adds, the linear
    # layer 10 outputs of 8*32*32; a multiply-add is 2 FLOPs (FlopCounterMode's convention).
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 32 * 32, 10)
    ).double()
    expected = 2 * (8 * 32 * 32 * 3 * 3 * 3) + 2 * (8 * 32 * 32 * 10)
    assert resnets.count_flops(model, (3, 32, 32)) == expected
    assert model.training
    assert resnets.count_flops(nn.Flatten(), (3, 4, 4)) == 0
