"""skipnet under autograd against the seed's equations in NumPy float64 (resnets.reference)."""

import numpy as np
import pytest
import torch

from resnets import reference as R
from resnets.analysis.experiments import skipnet_adapter as A
from resnets.models.skipnet import LayerSpec, Skip, SkipNet, uniform_layers

KINDS = ["none", "identity", "projection", "dense", "gated"]


def _mixed_layers() -> list[LayerSpec]:
    """Every kind at once, with widths that change, 7 layers."""
    return [
        LayerSpec(6),
        LayerSpec(6),
        LayerSpec(5, (Skip(1, "projection"),)),
        LayerSpec(6, (Skip(2, "identity"), Skip(0, "dense"))),
        LayerSpec(6, (Skip(4, "gated"),)),
        LayerSpec(4, (Skip(3, "dense"), Skip(1, "projection"))),
        LayerSpec(6, (Skip(4, "identity"),)),
    ]


def _make(kind: str, activation: str = "relu") -> SkipNet:
    layers = _mixed_layers() if kind == "mixed" else uniform_layers(6, 7, kind, span=2)
    torch.manual_seed(1)
    net = SkipNet(layers, num_classes=4, in_chans=1, input_size=(2, 3), activation=activation, gate_bias=-0.5)
    with torch.no_grad():  # non-zero biases so that every parameter's update is exercised
        for name, p in net.named_parameters():
            if name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return net.double()


def _batch(net: SkipNet) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return torch.randn(10, net.in_features, generator=g, dtype=torch.float64), torch.randint(
        0, 4, (10,), generator=g
    )


def _torch_sgd_step(net: SkipNet, x: torch.Tensor, y: torch.Tensor, lr: float) -> dict[str, np.ndarray]:
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    opt.zero_grad()
    torch.nn.functional.cross_entropy(net(x), y).backward()
    opt.step()
    return {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("kind", [*KINDS, "mixed"])
def test_forward_activations_and_loss_match(kind: str, activation: str) -> None:
    net = _make(kind, activation)
    x, y = _batch(net)
    ref = A.from_skipnet(net)
    cache = ref.forward(x.numpy())
    for a_torch, a_ref in zip(net.activations(x), cache["a"], strict=True):
        np.testing.assert_allclose(a_torch.detach().numpy(), a_ref, rtol=1e-12, atol=1e-13)
    loss = torch.nn.functional.cross_entropy(net(x), y).item()
    assert loss == pytest.approx(ref.loss(x.numpy(), y.numpy()), rel=1e-12)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("kind", [*KINDS, "mixed"])
def test_one_sgd_step_matches_the_seeds_update_rules(kind: str, activation: str) -> None:
    net = _make(kind, activation)
    x, y = _batch(net)
    lr = 0.5
    ref = A.from_skipnet(net)
    before = {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}

    after_torch = _torch_sgd_step(net, x, y, lr)
    after_ref = A.to_skipnet_state(ref.sgd_step(x.numpy(), y.numpy(), lr), net)

    assert max(R.max_relative_error(after_torch, after_ref).values()) < 1e-10
    # The updates themselves (far smaller than the weights) agree to the same precision.
    upd_torch = {k: after_torch[k] - before[k] for k in before}
    upd_ref = {k: after_ref[k] - before[k] for k in before}
    assert all(np.abs(u).max() > 0 for u in upd_ref.values()), "every learned parameter must move"
    assert max(R.max_relative_error(upd_torch, upd_ref).values()) < 1e-10


def test_reference_weights_loaded_into_skipnet_give_the_same_activations() -> None:
    net = _make("mixed", "tanh")
    ref = A.from_skipnet(net)
    rng = np.random.default_rng(3)
    for arr in ref.parameters().values():  # new weights, made on the reference side
        arr[...] = rng.normal(size=arr.shape) * 0.4
    fresh = _make("mixed", "tanh")
    fresh.load_state_dict(
        {k: torch.from_numpy(v) for k, v in A.to_skipnet_state(ref, fresh).items()}, strict=True
    )
    x, _ = _batch(fresh)
    for a_torch, a_ref in zip(fresh.activations(x), ref.forward(x.numpy())["a"], strict=True):
        np.testing.assert_allclose(a_torch.detach().numpy(), a_ref, rtol=1e-12, atol=1e-13)


def test_reference_gradients_match_central_differences() -> None:
    # The reference is checked against arithmetic alone, independently of autograd.
    net = _make("mixed", "tanh")
    x, y = (t.numpy() for t in _batch(net))
    ref = A.from_skipnet(net)
    grads = ref.gradients(x, y)
    params = ref.parameters()
    rng = np.random.default_rng(0)
    eps = 1e-6
    for name, value in params.items():
        idx = tuple(rng.integers(0, s) for s in value.shape)
        old = value[idx]
        value[idx] = old + eps
        up = ref.loss(x, y)
        value[idx] = old - eps
        down = ref.loss(x, y)
        value[idx] = old
        assert grads[name][idx] == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-9), name


def test_merged_matrix_learns_the_same_step() -> None:
    """The seed: W^(l-1,l) and W^(l-2,l) "can be merged and learned in the same step". A projection
    skip (two matrices) and a dense skip (one matrix [W^(l-1,l) W^(l-2,l)] on [a^(l-1); a^(l-2)])
    start equal and stay equal after one SGD step."""

    def build(kind: str) -> SkipNet:
        layers = [LayerSpec(5), LayerSpec(5)] + [LayerSpec(5, (Skip(l - 2, kind),)) for l in range(3, 7)]
        return SkipNet(layers, num_classes=3, in_chans=1, input_size=(2, 2)).double()

    separate, merged = build("projection"), build("dense")
    with torch.no_grad():
        for l in range(6):
            sep = separate.layers[l]
            w = [sep.linear.weight, *(p.weight for p in sep.projections.values())]
            merged.layers[l].linear.weight.copy_(torch.cat(w, dim=1))
            merged.layers[l].linear.bias.copy_(sep.linear.bias)
        merged.head.load_state_dict(separate.head.state_dict())
    x = torch.randn(8, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (8,))
    torch.testing.assert_close(separate(x), merged(x), rtol=1e-14, atol=1e-14)

    ref = A.from_skipnet(merged)  # the reference splits the merged matrix into the seed's W^(l-k,l)
    new_sep, new_merged = _torch_sgd_step(separate, x, y, 0.3), _torch_sgd_step(merged, x, y, 0.3)
    for l in range(2, 6):
        stacked = np.concatenate(
            [new_sep[f"layers.{l}.linear.weight"], new_sep[f"layers.{l}.projections.{l - 1}.weight"]], 1
        )
        np.testing.assert_allclose(new_merged[f"layers.{l}.linear.weight"], stacked, rtol=1e-12, atol=1e-15)
    # The reference, which updates each matrix by its own rule Δw^(l-k,l) = −η a^(l-k)·δ^l, agrees.
    ref_state = A.to_skipnet_state(ref.sgd_step(x.numpy(), y.numpy(), 0.3), merged)
    assert max(R.max_relative_error(new_merged, ref_state).values()) < 1e-10
