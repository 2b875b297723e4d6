"""Probes inside networks: gradient norms per layer, branch/skip norms, gates, lesions, reordering."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import resnets
from resnets.analysis.probes import (
    gradient_correlation,
    gradient_norms,
    lesioned,
    record_branches,
    record_gates,
    reordered,
    skip_blocks,
    swappable_pairs,
    weight_layers,
)
from resnets.layers import ZeroPadShortcut


@pytest.mark.parametrize(("name", "layers"), [("resnet20", 20), ("plain56", 56), ("highway20", 20)])
def test_main_path_weight_layers_are_the_papers_depth(name: str, layers: int) -> None:
    # He et al. count the stem conv, two convs per block and the classifier: 6n + 2.
    found = weight_layers(resnets.create_model(name))
    assert len(found) == layers
    assert found[0][0] == "conv1.weight" and found[-1][0] == "fc.weight"


def test_fully_connected_weight_layers_are_the_hidden_layers_and_the_head() -> None:
    found = weight_layers(resnets.create_model("highway_mlp", depth=7))
    assert len(found) == 8 and all("gate" not in name for name, _ in found)


def test_gradient_norms_match_autograd_computed_by_hand() -> None:
    model = resnets.create_model("resnet20")
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    norms = gradient_norms(model, x, y)
    model.train()
    F.cross_entropy(model(x), y).backward()
    expected = [
        model.conv1.weight.grad.norm(),
        model.layer3[2].conv2.weight.grad.norm(),
        model.fc.weight.grad.norm(),
    ]
    names = [n for n, _ in weight_layers(model)]
    got = [norms[names.index(n)] for n in ("conv1.weight", "layer3.2.conv2.weight", "fc.weight")]
    torch.testing.assert_close(torch.tensor(got), torch.stack(expected))


def test_branch_norms_match_the_block_computed_by_hand() -> None:
    model = resnets.create_model("resnet20").eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad(), record_branches(model) as stats:
        model(x)
    block = model.layer1[0]
    with torch.no_grad():
        h = model.relu(model.bn1(model.conv1(x)))  # the stem's output, the first block's input
        branch = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(h)))))
    expected_branch = branch.flatten(1).norm(dim=1).mean()
    expected_skip = h.flatten(1).norm(dim=1).mean()
    assert stats.branch[0] == pytest.approx(float(expected_branch), rel=1e-5)
    assert stats.skip[0] == pytest.approx(float(expected_skip), rel=1e-5)
    assert stats.ratios()[0] == pytest.approx(float(expected_branch / expected_skip), rel=1e-5)
    assert len(stats.names) == 9 and all(g is None for g in stats.gate)
    assert block.probe is None  # the probe is removed on exit


def test_plain_blocks_have_no_skip_and_highway_gates_start_closed() -> None:
    plain_model = resnets.create_model("plain20").eval()
    with torch.no_grad(), record_branches(plain_model) as plain:
        plain_model(torch.randn(2, 3, 32, 32))
    assert plain.ratios() == [None] * 9 and plain.branch[0] > 0
    model = resnets.create_model("highway20").eval()
    with torch.no_grad(), record_branches(model) as stats, record_gates(model) as gates:
        model(torch.randn(4, 3, 32, 32))
    # Gate bias −3 at init: T = σ(W x − 3) ≈ σ(−3) = 0.047 when W x is small.
    assert all(0.01 < g < 0.15 for g in stats.gate) and len(gates) == 9
    assert gates == pytest.approx(stats.gate, rel=1e-5)


def test_lesion_of_a_zero_branch_changes_nothing_and_restores_on_exit() -> None:
    model = resnets.create_model("resnet20", zero_init_last=True).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        intact = model(x)
        with lesioned(model, range(9)):
            deleted = model(x)
    torch.testing.assert_close(deleted, intact, rtol=0, atol=0)  # F(x) = 0: the block is its skip
    model = resnets.create_model("resnet20").eval()
    with torch.no_grad():
        before = model(x)
        with lesioned(model, [4]):
            changed = model(x)
        after = model(x)
    assert not torch.allclose(changed, before) and torch.equal(after, before)
    with pytest.raises(IndexError, match="9 blocks"), lesioned(model, [9]):
        pass


def test_a_fully_lesioned_plain_net_is_stem_identities_pool_and_classifier() -> None:
    model = resnets.create_model("plain20").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        with lesioned(model, range(len(skip_blocks(model)))):
            got = model(x)
        h = model.relu(model.bn1(model.conv1(x)))
        h = ZeroPadShortcut(32, 64, 2)(ZeroPadShortcut(16, 32, 2)(h))
        expected = model.fc(h.mean(dim=(2, 3)))
    torch.testing.assert_close(got, expected)


def _forward_replacing(model, x: torch.Tensor, k: int, deleted) -> torch.Tensor:
    """The CIFAR ResNet's forward pass, written out, with block k replaced by `deleted(block, h)`."""
    h = model.conv1(x)
    if model.bn1 is not None:
        h = model.relu(model.bn1(h))
    for i, block in enumerate(model.blocks()):
        h = deleted(block, h) if i == k else block(h)
    if model.final_norm is not None:
        h = model.final_norm(h)
    return model.fc(h.mean(dim=(2, 3)))


@pytest.mark.parametrize("k", [1, 3])  # within a stage, and the first block of stage 2 (stride 2)
def test_a_lesioned_highway_block_keeps_its_carry_gate(k: int) -> None:
    # Deleting the branch H of y = ReLU(T·H + (1 − T)·S) leaves ReLU((1 − T)·S).
    model = resnets.create_model("highway20").double().eval()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        with lesioned(model, [k]):
            got = model(x)
        expected = _forward_replacing(model, x, k, lambda b, h: torch.relu((1 - b.gate(h)) * b.downsample(h)))
        assert not torch.allclose(got, model(x))
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("k", [1, 3])
def test_a_lesioned_preact_block_with_projections_passes_its_projected_preactivation(k: int) -> None:
    # He et al. 2016b: a pre-activation block's 1×1 projection reads BN-ReLU(x); no ReLU after the merge.
    from resnets.models.cifar import cifar_preact_resnet

    model = cifar_preact_resnet(20, shortcut="B").double().eval()

    def by_hand(block, h):
        if isinstance(block.downsample, torch.nn.Identity):
            return h
        return block.downsample[0](torch.relu(block.bn1(h)))

    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad(), lesioned(model, [k]):
        got = model(x)
    with torch.no_grad():
        torch.testing.assert_close(got, _forward_replacing(model, x, k, by_hand), rtol=1e-10, atol=1e-10)


def test_swappable_pairs_are_the_same_shape_blocks_of_a_stage() -> None:
    # resnet20: three stages of three blocks; the first block of stages 2 and 3 halves the map and
    # doubles the width, so it trades places with nothing (He et al. 2016, §4.2).
    x = torch.zeros(1, 3, 32, 32)
    expected = [(0, 1), (0, 2), (1, 2), (4, 5), (7, 8)]
    assert swappable_pairs(resnets.create_model("resnet20"), x) == expected
    assert swappable_pairs(resnets.create_model("plain20"), x) == expected
    assert len(swappable_pairs(resnets.create_model("resnet56"), x)) == 36 + 28 + 28  # C(9,2) + 2 C(8,2)


def test_reordering_runs_the_blocks_in_the_swapped_order_and_restores_on_exit() -> None:
    torch.manual_seed(0)
    model = resnets.create_model("resnet20").double().eval()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    # The same net rebuilt with its blocks physically in the order (2, 0, 1) in stage 1 and (8, 7) in stage 3.
    rebuilt = copy.deepcopy(model)
    b = [m for _, m in skip_blocks(rebuilt)]
    rebuilt.layer1 = torch.nn.Sequential(b[2], b[0], b[1])
    rebuilt.layer3 = torch.nn.Sequential(b[6], b[8], b[7])
    with torch.no_grad():
        before = model(x)
        with reordered(model, [(0, 2), (1, 2), (7, 8)]):  # (0,1,2) → (2,1,0) → (2,0,1)
            swapped = model(x)
        after = model(x)
        expected = rebuilt(x)
    torch.testing.assert_close(swapped, expected, rtol=0, atol=0)
    assert not torch.allclose(swapped, before) and torch.equal(after, before)
    assert [n for n, _ in skip_blocks(model)] == [n for n, _ in skip_blocks(rebuilt)]
    with pytest.raises(IndexError, match="9 blocks"), reordered(model, [(0, 9)]):
        pass


def test_gradient_correlation_of_a_linear_softmax_model_matches_its_closed_form() -> None:
    # ℓ = CE(W x + b, y) has ∂ℓ/∂x = Wᵀ(softmax(W x + b) − onehot(y)): computed here in NumPy float64.
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5)).double()
    x, y = torch.randn(4, 3, 2, 2, dtype=torch.float64), torch.tensor([0, 1, 2, 4])
    eps = 0.7
    got = gradient_correlation(model, x, y, eps, seed=3)
    w, b = model[1].weight.detach().numpy(), model[1].bias.detach().numpy()
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)

    def grad(inputs: np.ndarray) -> np.ndarray:
        z = inputs.reshape(4, -1) @ w.T + b
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        return (p - np.eye(5)[y.numpy()]) @ w

    ga, gb = grad(x.numpy()), grad((x + eps * noise).numpy())
    expected = [np.corrcoef(ga[i], gb[i])[0, 1] for i in range(4)]
    assert got == pytest.approx(expected, abs=1e-12)
    assert gradient_correlation(model, x, y, 0.0) == pytest.approx([1.0] * 4, abs=1e-12)


def test_plain_gradients_shatter_with_depth_and_residual_ones_do_not() -> None:
    # Balduzzi et al. 2017, Fig. 1 and §3: at init, the input gradients of a deep plain net at nearby
    # inputs are nearly uncorrelated (white noise), those of its residual twin stay correlated.
    torch.manual_seed(0)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    torch.manual_seed(1)
    plain = float(np.mean(gradient_correlation(resnets.create_model("plain56"), x, y, 0.01, seed=5)))
    torch.manual_seed(1)
    residual = float(np.mean(gradient_correlation(resnets.create_model("resnet56"), x, y, 0.01, seed=5)))
    assert abs(plain) < 0.2 and residual > 0.5
