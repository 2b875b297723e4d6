"""Residual nets without normalisation: SkipInit, ReZero and Fixup against their papers' definitions,
each block's output written out by hand with torch.nn.functional."""

import math

import pytest
import torch
import torch.nn.functional as F

import resnets
from resnets.blocks import BasicBlock


def _block(kind: str) -> BasicBlock:
    torch.manual_seed(0)
    block = BasicBlock(4, 4, norm_layer="identity", shortcut="A", residual_scale=kind).double().eval()
    with torch.no_grad():  # move every scalar off its init, so each one is seen in the output
        for name, p in block.named_parameters():
            if p.numel() == 1:
                p.fill_(
                    {"alpha": 0.7, "scale": 1.3, "bias1a": 0.1, "bias1b": -0.2, "bias2a": 0.3}.get(name, -0.4)
                )
    return block


def _conv(x: torch.Tensor, conv: torch.nn.Conv2d) -> torch.Tensor:
    return F.conv2d(x, conv.weight, padding=1)


@pytest.mark.parametrize("kind", ["skipinit", "rezero", "fixup"])
def test_each_residual_scale_computes_its_papers_block(kind: str) -> None:
    block = _block(kind)
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    c1, c2 = block.conv1, block.conv2
    if kind == "skipinit":  # De & Smith 2020: a scalar at the end of the branch, the block's ReLU kept
        expected = F.relu(0.7 * _conv(F.relu(_conv(x, c1)), c2) + x)
    elif kind == "rezero":  # Bachlechner et al. 2020, eq. 3: x + α·F(x), nothing after the sum
        expected = x + 0.7 * _conv(F.relu(_conv(x, c1)), c2)
    else:  # Zhang et al. 2019, Fig. 1: a bias before each conv and activation, a multiplier, then ReLU
        a = x + 0.1
        branch = _conv(F.relu(_conv(a, c1) - 0.2) + 0.3, c2) * 1.3 - 0.4
        expected = F.relu(branch + a)
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected, rtol=1e-12, atol=1e-12)


def test_skipinit_and_rezero_blocks_start_as_their_skip_path() -> None:
    x = torch.randn(2, 3, 32, 32)
    for kind in ("skipinit", "rezero"):
        model = resnets.create_model("resnet20", norm_layer="identity", residual_scale=kind).eval()
        h = F.relu(model.conv1(x))  # the CIFAR stem, with no norm
        for block in model.blocks():
            out = block(h)
            assert torch.equal(out, block.downsample(h))  # α = 0: F(x) contributes nothing
            h = out
        assert all(float(b.alpha.detach()) == 0.0 for b in model.blocks())


def test_fixup_initialisation_follows_the_formula() -> None:
    torch.manual_seed(0)
    model = resnets.create_model("resnet56", norm_layer="identity", residual_scale="fixup")
    blocks = model.blocks()
    factor = len(blocks) ** -0.5  # L^(−1/(2m−2)) with m = 2 layers per branch, L = 27 branches
    assert len(blocks) == 27
    for b in blocks:
        he_std = math.sqrt(2 / (b.conv1.out_channels * 9))  # He init, fan_out, as torchvision
        assert float(b.conv1.weight.detach().std()) == pytest.approx(he_std * factor, rel=0.1)
        assert torch.count_nonzero(b.conv2.weight) == 0
        assert float(b.scale.detach()) == 1 and all(
            float(getattr(b, n).detach()) == 0 for n in ("bias1a", "bias1b", "bias2a", "bias2b")
        )
    assert torch.count_nonzero(model.fc.weight) == 0 and torch.count_nonzero(model.fc.bias) == 0
    assert torch.equal(model(torch.randn(2, 3, 32, 32)), torch.zeros(2, 10))  # a zero classifier


def test_bad_combinations_are_refused_and_state_dicts_round_trip() -> None:
    with pytest.raises(ValueError, match='use it with norm_layer="identity"'):
        resnets.create_model("resnet20", residual_scale="fixup")
    with pytest.raises(ValueError, match="skip='none' has no sum"):
        resnets.create_model("plain20", norm_layer="identity", residual_scale="rezero")
    with pytest.raises(ValueError, match="residual_scale must be one of"):
        resnets.create_model("resnet20", residual_scale="rezeroo")
    plain_keys = set(resnets.create_model("resnet20").state_dict())
    model = resnets.create_model("resnet20", norm_layer="identity", residual_scale="rezero")
    extra = set(model.state_dict()) - plain_keys
    assert extra == {f"layer{s}.{i}.alpha" for s in (1, 2, 3) for i in range(3)}
    with torch.no_grad():
        for b in model.blocks():
            b.alpha.fill_(0.5)
    again = resnets.create_model("resnet20", norm_layer="identity", residual_scale="rezero")
    again.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(again.eval()(x), model.eval()(x), rtol=0, atol=0)


# He et al. 2016b, Fig. 2: each kind of shortcut on a 2-conv block, written out by hand.
def _shortcut_block(skip: str) -> BasicBlock:
    torch.manual_seed(0)
    return BasicBlock(4, 4, skip=skip, norm_layer="identity", shortcut="A", gate_bias=-1.0).double()


@pytest.mark.parametrize("skip", ["scaled", "gated", "shortcut_gated", "dropout", "projection"])
def test_each_shortcut_kind_of_he2016b_computes_its_figure(skip: str) -> None:
    block = _shortcut_block(skip).eval()
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    f = _conv(F.relu(_conv(x, block.conv1)), block.conv2)  # the branch F(x)
    if block.gate is not None:
        t = torch.sigmoid(F.conv2d(x, block.gate.proj.weight, block.gate.proj.bias))
    expected = {
        "scaled": lambda: F.relu(0.5 * f + 0.5 * x),  # Fig. 2b, λ = 0.5 on both
        "gated": lambda: F.relu(t * f + (1 - t) * x),  # Fig. 2c, exclusive gating
        "shortcut_gated": lambda: F.relu(f + (1 - t) * x),  # Fig. 2d
        "dropout": lambda: F.relu(f + x),  # Fig. 2f, at test time dropout passes x
        "projection": lambda: F.relu(f + F.conv2d(x, block.downsample[0].weight)),  # Fig. 2e, 1×1 conv
    }[skip]()
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected, rtol=1e-12, atol=1e-12)


def test_the_dropout_shortcut_drops_half_of_the_shortcut_while_training() -> None:
    block = _shortcut_block("dropout").train()
    x = torch.rand(2, 4, 6, 6, dtype=torch.float64) + 0.1
    with torch.no_grad():
        f = _conv(F.relu(_conv(x, block.conv1)), block.conv2)
        torch.manual_seed(7)
        got = block(x)
        torch.manual_seed(7)
        dropped = F.dropout(x, 0.5, training=True)  # the same draw: zero or 2x, p = 0.5
    torch.testing.assert_close(got, F.relu(f + dropped), rtol=1e-12, atol=1e-12)
    assert 0.3 < float((dropped == 0).double().mean()) < 0.7
