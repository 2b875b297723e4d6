"""Parameter and FLOP counts against the papers and torchvision's published figures."""

import pytest
import torch
import torchvision
from torch import nn

import resnets
from resnets.info import count_params

# He et al. 2016 Table 6 (0.27M … 19.4M); the exact values are those of option A nets with 10 classes.
EXACT_CIFAR = {
    "resnet20": 269_722,
    "resnet32": 464_154,
    "resnet44": 658_586,
    "resnet56": 853_018,
    "resnet110": 1_727_962,
    "resnet1202": 19_421_274,
    # Option A shortcuts have no parameters, so each plain twin has exactly the same count.
    "plain20": 269_722,
    "plain32": 464_154,
    "plain44": 658_586,
    "plain56": 853_018,
    "plain110": 1_727_962,
}
# torchvision's counts (the issue lists them; each is checked against torchvision itself below too).
EXACT_IMAGENET = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "resnext50_32x4d": 25_028_904,
    "wide_resnet50_2": 68_883_240,
    "densenet121": 7_978_856,
    "densenet161": 28_681_000,
    "densenet169": 14_149_480,
    "densenet201": 20_013_928,
}
# Papers' rounded counts in millions: (value, number of decimals printed in the paper).
ROUNDED = {
    "preact_resnet164": (1.7, 1),  # He et al. 2016b, Table 3
    "wrn28_10": (36.5, 1),  # Zagoruyko & Komodakis 2016, Table 5
    "densenet40_k12": (1.0, 1),  # Huang et al. 2017, Table 2
    "densenet_bc100_k12": (0.8, 1),
    "densenet_bc190_k40": (25.6, 1),
}


def _params(name: str) -> int:
    with torch.device("meta"):
        return count_params(resnets.create_model(name))


@pytest.mark.parametrize(("name", "expected"), sorted({**EXACT_CIFAR, **EXACT_IMAGENET}.items()))
def test_exact_parameter_counts(name: str, expected: int) -> None:
    assert _params(name) == expected


@pytest.mark.parametrize("name", sorted(EXACT_IMAGENET))
def test_counts_equal_torchvision(name: str) -> None:
    with torch.device("meta"):
        tv = getattr(torchvision.models, name)()
    assert _params(name) == sum(p.numel() for p in tv.parameters())


@pytest.mark.parametrize(("name", "paper"), sorted(ROUNDED.items()))
def test_counts_within_the_papers_rounding(name: str, paper: tuple[float, int]) -> None:
    value, decimals = paper
    assert round(_params(name) / 1e6, decimals) == value


def test_preact_resnet1001_matches_the_paper_without_norm_parameters() -> None:
    # He et al. 2016b report 10.2M for ResNet-1001; with batch-norm scales and shifts we count 10.33M,
    # and without them 10.18M: the paper's figure counts conv and fc weights only.
    with torch.device("meta"):
        model = resnets.create_model("preact_resnet1001")
    total = count_params(model)
    norm = sum(p.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters())
    assert round(total / 1e6, 1) == 10.3
    assert round((total - norm) / 1e6, 1) == 10.2


def test_highway_adds_only_gate_parameters() -> None:
    # Each gated block adds a 1×1 conv (with bias) from its input to its output width.
    plain, highway = _params("plain20"), _params("highway20")
    gates = 3 * (16 * 16 + 16) + (16 * 32 + 32) + 2 * (32 * 32 + 32) + (32 * 64 + 64) + 2 * (64 * 64 + 64)
    assert highway - plain == gates


@pytest.mark.parametrize(
    ("name", "mflops"),
    [
        ("resnet20", 81.1),  # 40.55M multiply-adds per 32×32 image (He et al.'s option A net)
        ("resnet56", 251.0),
        ("resnet50", 8180.0),  # torchvision's ResNet50_Weights: 4.09 G multiply-adds at 224×224
    ],
)
def test_counted_flops_match_anchors(name: str, mflops: float) -> None:
    # Both entry points against the published figures, not against each other.
    size = resnets.registry.get_spec(name).input_size
    assert resnets.count_flops(resnets.create_model(name), size) / 1e6 == pytest.approx(mflops, rel=2e-3)
    assert resnets.model_info(name).flops / 1e6 == pytest.approx(mflops, rel=2e-3)


def test_flops_of_a_linear_layer_are_two_per_multiply_add() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    assert resnets.count_flops(model, (3, 2, 2)) == 2 * 12 * 5


def cifar_option_a_params(n: int, widths: tuple[int, int, int], classes: int = 10) -> int:
    """Count by hand: 3×3 stem + BN, 2n 3×3 convs + BN per stage (the first takes the previous width),
    option A shortcuts (no parameters), fc."""
    w0 = widths[0]
    total = 27 * w0 + 2 * w0
    previous = w0
    for w in widths:
        total += 9 * previous * w + 9 * w * w + 4 * w  # the first block's two convs and BNs
        total += (n - 1) * (18 * w * w + 4 * w)
        previous = w
    return total + widths[-1] * classes + classes


@pytest.mark.parametrize("name,n", [("resnet20", 3), ("plain56", 9)])
@pytest.mark.parametrize("widths", [(16, 32, 64), (8, 16, 32)])
def test_cifar_widths_give_the_hand_counted_parameters(
    name: str, n: int, widths: tuple[int, int, int]
) -> None:
    model = resnets.create_model(name, widths=widths)
    assert count_params(model) == cifar_option_a_params(n, widths)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
