"""DenseNet structure: k channels per layer, transitions, memory-efficient mode."""

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


def _paper_channels(init: int, per_block: int, k: int, blocks: int, theta: float) -> int:
    """Huang et al. §3: a block adds per_block·k channels; a transition keeps ⌊θ·m⌋."""
    channels = init
    for i in range(blocks):
        channels += per_block * k
        if i < blocks - 1:
            channels = int(channels * theta)
    return channels


def test_cifar_densenet_widths_follow_the_paper() -> None:
    assert resnets.create_model("densenet40_k12").num_features == _paper_channels(16, 12, 12, 3, 1.0) == 448
    assert (
        resnets.create_model("densenet_bc100_k12").num_features == _paper_channels(24, 16, 12, 3, 0.5) == 342
    )
    assert resnets.create_model("densenet121").num_features == 1024


def test_bc_layers_are_bottlenecks_of_width_4k() -> None:
    model = resnets.create_model("densenet_bc100_k12")
    layer = model.features.denseblock1.denselayer1
    assert layer.conv1.kernel_size == (1, 1) and layer.conv1.out_channels == 4 * 12
    assert layer.conv2.out_channels == 12
    plain = resnets.create_model("densenet40_k12").features.denseblock1.denselayer1
    assert plain.conv1.kernel_size == (3, 3) and not hasattr(plain, "conv2")


def test_memory_efficient_mode_gives_identical_outputs_and_gradients() -> None:
    torch.manual_seed(0)
    model = DenseNet((3, 3), growth_rate=6, num_init_features=8, stem="cifar", num_classes=4)
    x = torch.randn(4, 3, 16, 16)
    results = []
    for efficient in (False, True):
        model.set_memory_efficient(efficient)
        model.zero_grad()
        out = model(x)
        out.square().sum().backward()
        results.append((out.detach(), [p.grad.clone() for p in model.parameters()]))
    (out_a, grads_a), (out_b, grads_b) = results
    torch.testing.assert_close(out_a, out_b, rtol=0, atol=0)
    for ga, gb in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(ga, gb, rtol=1e-6, atol=1e-7)


def test_imagenet_densenet_memory_efficient_flag() -> None:
    model = resnets.create_model("densenet121", memory_efficient=True)
    assert model.features.denseblock1.denselayer1.memory_efficient
