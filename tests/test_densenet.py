"""DenseNet structure: k channels per layer, transitions, memory-efficient mode."""

import copy

import pytest
import torch

import resnets
from resnets.models.densenet import DenseBlock, DenseNet


def test_dense_block_adds_growth_rate_channels_per_layer_and_keeps_its_input() -> None:
    block = DenseBlock(num_layers=4, in_ch=10, growth_rate=6, bn_size=4)
    x = torch.randn(2, 10, 5, 5)
    out = block(x)
    assert out.shape == (2, 10 + 4 * 6, 5, 5)
    assert torch.equal(out[:, :10], x)  # the dense skip: every earlier output is passed on unchanged
    widths = [layer.norm1.num_features for layer in block.values()]
    assert widths == [10, 16, 22, 28]


def test_densenet_widths_follow_the_paper() -> None:
    # Huang et al. 2017: a block adds (layers per block)·k channels, a BC transition halves them.
    # DenseNet-40, k=12: 16 + 3·12·12 = 448 (no compression); DenseNet-BC-100, k=12: 342;
    # ImageNet (Table 1, k=32 / 48 for 161): final features 1024, 2208, 1664, 1920.
    with torch.device("meta"):
        widths = {n: resnets.create_model(n).num_features for n in PAPER_WIDTHS}
    assert widths == PAPER_WIDTHS


PAPER_WIDTHS = {
    "densenet40_k12": 448,
    "densenet_bc100_k12": 342,
    "densenet121": 1024,
    "densenet161": 2208,
    "densenet169": 1664,
    "densenet201": 1920,
}


def test_bc_layers_are_bottlenecks_of_width_4k() -> None:
    model = resnets.create_model("densenet_bc100_k12")
    layer = model.features.denseblock1.denselayer1
    assert layer.conv1.kernel_size == (1, 1) and layer.conv1.out_channels == 4 * 12
    assert layer.conv2.out_channels == 12
    plain = resnets.create_model("densenet40_k12").features.denseblock1.denselayer1
    assert plain.conv1.kernel_size == (3, 3) and not hasattr(plain, "conv2")


def test_memory_efficient_mode_gives_identical_outputs_gradients_and_statistics() -> None:
    torch.manual_seed(0)
    reference = DenseNet((3, 3), growth_rate=6, num_init_features=8, stem="cifar", num_classes=4)
    efficient = copy.deepcopy(reference)
    efficient.set_memory_efficient(True)
    x = torch.randn(4, 3, 16, 16)
    outs, grads = [], []
    for model in (reference, efficient):
        out = model(x)
        out.square().sum().backward()
        outs.append(out.detach())
        grads.append([p.grad for p in model.parameters()])
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    for ga, gb in zip(*grads, strict=True):
        torch.testing.assert_close(ga, gb, rtol=1e-6, atol=1e-7)
    # The recomputation in backward must not update batch-norm running statistics a second time.
    for (name, a), (_, b) in zip(reference.state_dict().items(), efficient.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    reference.eval(), efficient.eval()
    with torch.no_grad():
        assert torch.equal(reference(x), efficient(x))


def test_dense_layer_accepts_a_tensor_like_torchvision() -> None:
    layer = DenseBlock(1, 5, 3, bn_size=4)["denselayer1"]
    assert layer(torch.randn(2, 5, 4, 4)).shape == (2, 3, 4, 4)


def test_imagenet_densenet_memory_efficient_flag() -> None:
    model = resnets.create_model("densenet121", memory_efficient=True)
    assert model.features.denseblock1.denselayer1.memory_efficient


def test_unknown_imagenet_depth_is_a_clear_error() -> None:
    from resnets.models.densenet import imagenet_densenet

    with pytest.raises(ValueError, match="must be one of"):
        imagenet_densenet(100)
