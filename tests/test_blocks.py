"""Skip semantics of the convolutional blocks and the shortcut options."""

import pytest
import torch
from torch import nn

import resnets
from resnets.blocks import BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck
from resnets.layers import ZeroPadShortcut, make_shortcut

BLOCKS = [BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck]


def _block(cls: type, skip: str, **kw: object) -> nn.Module:
    planes = 8
    return cls(planes * cls.expansion, planes, skip=skip, **kw)


def _input(block: nn.Module, post_relu: bool) -> torch.Tensor:
    x = torch.randn(2, block.conv1.in_channels, 6, 6)
    return x.relu() if post_relu else x


@pytest.mark.parametrize("cls", BLOCKS)
@pytest.mark.parametrize("train", [True, False])
def test_zero_initialised_residual_block_is_the_identity(cls: type, train: bool) -> None:
    block = _block(cls, "identity")
    block.zero_init_last()
    block.train(train)
    # A post-activation block applies ReLU after the sum, so it is the identity on post-ReLU inputs.
    x = _input(block, post_relu=not cls.preact)
    assert torch.equal(block(x), x)


@pytest.mark.parametrize("cls", BLOCKS)
def test_plain_block_has_no_path_around_it(cls: type) -> None:
    plain, residual = _block(cls, "none"), _block(cls, "identity")
    for block in (plain, residual):
        for m in block.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.zeros_(m.weight)
    x = _input(plain, post_relu=True) + 0.5
    assert plain.downsample is None
    assert torch.equal(plain(x), torch.zeros_like(x))
    assert torch.equal(residual(x), x)  # the same zeroed convs with a skip pass x through


@pytest.mark.parametrize("cls", BLOCKS)
def test_highway_gate_with_strongly_negative_bias_carries_the_input(cls: type) -> None:
    block = _block(cls, "gated", gate_bias=-60.0)
    x = _input(block, post_relu=True)
    torch.testing.assert_close(block(x), x, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cls", BLOCKS)
def test_open_highway_gate_is_the_plain_block(cls: type) -> None:
    gated, plain = _block(cls, "gated", gate_bias=60.0), _block(cls, "none")
    plain.load_state_dict(gated.state_dict(), strict=False)
    gated.eval(), plain.eval()
    x = _input(gated, post_relu=True)
    torch.testing.assert_close(gated(x), plain(x), rtol=0, atol=1e-6)


def test_gate_bias_survives_network_initialisation() -> None:
    model = resnets.create_model("highway20", gate_bias=-5.0)
    biases = torch.cat([b.gate.proj.bias for b in model.blocks()])
    assert biases.numel() > 0 and torch.all(biases == -5.0)


def test_option_a_subsamples_and_zero_pads_channels() -> None:
    x = torch.randn(2, 16, 8, 8)
    out = ZeroPadShortcut(16, 32, stride=2)(x)
    expected = torch.zeros(2, 32, 4, 4)
    expected[:, 8:24] = x[:, :, 0::2, 0::2]
    assert torch.equal(out, expected)
    assert not list(ZeroPadShortcut(16, 32, 2).parameters())


def test_option_b_projects_only_where_the_shape_changes() -> None:
    assert isinstance(make_shortcut("identity", 16, 16, 1, "B"), nn.Identity)
    proj = make_shortcut("identity", 16, 32, 2, "B")
    assert [type(m) for m in proj] == [nn.Conv2d, nn.BatchNorm2d]
    assert proj[0].stride == (2, 2) and proj[0].kernel_size == (1, 1)


def test_projection_skip_always_learns_a_matrix() -> None:
    block = BasicBlock(16, 16, skip="projection")
    assert isinstance(block.downsample[0], nn.Conv2d)
    assert "downsample.0.weight" in block.state_dict()


def test_option_a_cannot_shrink_and_bad_options_are_named() -> None:
    with pytest.raises(ValueError, match="cannot reduce channels"):
        ZeroPadShortcut(32, 16, 1)
    with pytest.raises(ValueError, match="option must be 'A'"):
        make_shortcut("identity", 16, 32, 2, "C")
    with pytest.raises(ValueError, match="skip must be one of"):
        BasicBlock(16, 16, skip="dense")


def test_plain_and_residual_twins_share_every_parameter() -> None:
    # DESIGN.md: resnet56 and plain56 differ only in the skip (option A shortcuts have no weights).
    res, plain = resnets.create_model("resnet56"), resnets.create_model("plain56")
    assert {k: v.shape for k, v in res.state_dict().items()} == {
        k: v.shape for k, v in plain.state_dict().items()
    }


def test_zero_init_last_flag_makes_every_stride1_block_an_identity() -> None:
    model = resnets.create_model("resnet20", zero_init_last=True).eval()
    block = model.layer2[1]
    x = torch.randn(2, 32, 16, 16).relu()
    assert torch.equal(block(x), x)


def test_preact_cifar_bottlenecks_stride_the_first_1x1_as_the_authors_code() -> None:
    # KaimingHe/resnet-1k-layers (resnet-pre-act.lua) strides the first 1×1 conv of a bottleneck;
    # torchvision's ImageNet nets ("V1.5") stride the 3×3.
    block = resnets.create_model("preact_resnet164").layer2[0]
    assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)
    tv_block = resnets.create_model("resnet50").layer2[0]
    assert tv_block.conv1.stride == (1, 1) and tv_block.conv2.stride == (2, 2)
    x = torch.randn(2, 64, 32, 32)
    assert block(x).shape == (2, 128, 16, 16)
