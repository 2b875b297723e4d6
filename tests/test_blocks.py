"""Skip semantics of the convolutional blocks and the shortcut options."""

import pytest
import torch
import torch.nn.functional as F
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


# skip_only(x): the block with its branch deleted (Veit et al. 2016's lesion), for every block kind.
# Shapes: (input channels per `planes`·expansion, planes, stride, shortcut option).
SHAPES = [(1, 8, 1, "B"), (1, 16, 2, "A"), (1, 16, 2, "B")]


def _randomise_norms(block: nn.Module) -> None:
    """Running statistics and affine values away from their init, so that every norm matters."""
    for m in block.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)


def _delete_branch(block: nn.Module) -> None:
    """Make F(x) = 0 from inside the branch: its last norm outputs 0 (scale and shift zeroed), or for a
    pre-activation block, whose branch ends in a conv, that conv's weight is zero."""
    if block.preact:
        nn.init.zeros_(block.conv3.weight if hasattr(block, "conv3") else block.conv2.weight)
        return
    last = block.bn3 if hasattr(block, "bn3") else block.bn2
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)


def _shaped_block(cls: type, skip: str, shape: tuple) -> nn.Module:
    mult, planes, stride, option = shape
    block = cls(8 * cls.expansion * mult, planes, stride, skip=skip, shortcut=option, gate_bias=-0.5)
    return block.double().eval()


@pytest.mark.parametrize("cls", BLOCKS)
@pytest.mark.parametrize("skip", ["identity", "projection", "gated"])
@pytest.mark.parametrize("shape", SHAPES, ids=["same", "optionA", "optionB"])
def test_skip_only_is_the_block_with_a_branch_that_outputs_zero(cls: type, skip: str, shape: tuple) -> None:
    torch.manual_seed(0)
    block = _shaped_block(cls, skip, shape)
    _randomise_norms(block)
    x = torch.randn(2, block.conv1.in_channels, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        assert block.branch(x).abs().max() > 0.1
        lesioned = block.skip_only(x)
        _delete_branch(block)
        assert block.branch(x).abs().max() == 0
        torch.testing.assert_close(lesioned, block(x), rtol=1e-12, atol=1e-12)
    assert lesioned.shape == block(x).shape


def _bn(m: nn.BatchNorm2d, h: torch.Tensor) -> torch.Tensor:
    return F.batch_norm(h, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)


def _zero_pad(h: torch.Tensor, out_ch: int, stride: int) -> torch.Tensor:
    h = h[:, :, ::stride, ::stride]
    extra = out_ch - h.shape[1]
    out = h.new_zeros(h.shape[0], out_ch, *h.shape[2:])
    out[:, extra // 2 : extra // 2 + h.shape[1]] = h
    return out


def _skip_by_hand(block: nn.Module, skip: str, shape: tuple, x: torch.Tensor) -> torch.Tensor:
    """S(x), (1 − T)·S(x) with a gate, then ReLU for a post-activation block, from the definitions."""
    _, _, stride, option = shape
    out_ch = shape[1] * block.expansion
    pre = torch.relu(_bn(block.bn1, x)) if block.preact else x
    learned = skip == "projection" or (option == "B" and (stride, out_ch) != (1, x.shape[1]))
    if learned:
        # A pre-activation block's projection reads the pre-activated input and has no norm of its own.
        s = F.conv2d(pre if block.preact else x, block.downsample[0].weight, stride=stride)
        s = s if block.preact else _bn(block.downsample[1], s)
    elif (stride, out_ch) == (1, x.shape[1]):
        s = x
    else:
        s = _zero_pad(x, out_ch, stride)
    if skip == "gated":
        gate = torch.sigmoid(F.conv2d(pre, block.gate.proj.weight, block.gate.proj.bias, stride=stride))
        s = (1 - gate) * s
    return s if block.preact else torch.relu(s)


@pytest.mark.parametrize("cls", BLOCKS)
@pytest.mark.parametrize("skip", ["identity", "projection", "gated"])
@pytest.mark.parametrize("shape", SHAPES, ids=["same", "optionA", "optionB"])
def test_skip_only_matches_the_skip_path_computed_by_hand(cls: type, skip: str, shape: tuple) -> None:
    torch.manual_seed(0)
    block = _shaped_block(cls, skip, shape)
    _randomise_norms(block)
    x = torch.randn(2, block.conv1.in_channels, 7, 7, dtype=torch.float64)  # odd: the strides must agree
    before = x.clone()
    with torch.no_grad():
        got = block.skip_only(x)
        torch.testing.assert_close(got, _skip_by_hand(block, skip, shape, x), rtol=1e-12, atol=1e-12)
        assert got.shape == block(x).shape
    assert torch.equal(x, before)  # an in-place activation must not reach the input through S(x) = x


@pytest.mark.parametrize("cls", BLOCKS)
@pytest.mark.parametrize("shape", SHAPES, ids=["same", "optionA", "optionB"])
def test_a_deleted_plain_block_passes_its_input_on(cls: type, shape: tuple) -> None:
    # A plain block has no path around it: deleted, it is removed from the net (Veit et al. 2016's
    # plain-net comparison), x passing on as it is, subsampled and zero-padded where the shape changes.
    block = _shaped_block(cls, "none", shape)
    x = torch.randn(2, block.conv1.in_channels, 7, 7, dtype=torch.float64)  # negative values stay
    with torch.no_grad():
        got = block.skip_only(x)
        assert got.shape == block(x).shape
    _, planes, stride, _ = shape
    expected = x if stride == 1 else _zero_pad(x, planes * cls.expansion, stride)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("cls", BLOCKS)
def test_forward_is_the_merge_of_branch_and_skip(cls: type) -> None:
    block = _block(cls, "identity").double().eval()
    _randomise_norms(block)
    x = torch.randn(2, block.conv1.in_channels, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        merged = block.branch(x) + x
        torch.testing.assert_close(block(x), merged if cls.preact else torch.relu(merged), rtol=0, atol=0)


def test_zero_init_last_without_a_norm_scale_zeroes_the_last_conv() -> None:
    block = BasicBlock(8, 8, norm_layer="identity")
    assert isinstance(block.bn2, nn.Identity)
    block.zero_init_last()
    x = torch.randn(2, 8, 5, 5).relu()
    assert torch.equal(block(x), x)
