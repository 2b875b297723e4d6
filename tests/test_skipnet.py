"""The seed's general form: wiring, every skip kind, and clear errors."""

import pytest
import torch

import resnets
from resnets.models.skipnet import LayerSpec, Skip, SkipNet, uniform_layers


def _net(layers: list, **kw: object) -> SkipNet:
    return SkipNet(layers, in_chans=1, input_size=(3, 3), **kw)


def test_identity_skip_on_mismatched_widths_names_the_layer_and_widths() -> None:
    with pytest.raises(ValueError) as err:
        _net([LayerSpec(8), LayerSpec(8), LayerSpec(6, (Skip(1, "identity"),))])
    msg = str(err.value)
    assert "layer 3" in msg and "layer 1" in msg and "8 units" in msg and "has 6" in msg
    assert "projection" in msg  # says what to do instead


def test_skip_sources_must_lie_below_the_layer() -> None:
    with pytest.raises(ValueError, match="must come from a layer below"):
        _net([LayerSpec(4), LayerSpec(4, (Skip(2, "identity"),))])
    with pytest.raises(ValueError, match="must come from a layer below"):
        _net([LayerSpec(4), LayerSpec(4, (Skip(-1, "identity"),))])


def test_gated_skip_must_be_alone_and_kinds_are_checked() -> None:
    with pytest.raises(ValueError, match="only skip"):
        _net([LayerSpec(4), LayerSpec(4), LayerSpec(4, (Skip(2, "gated"), Skip(1, "identity")))])
    with pytest.raises(ValueError, match="skip kind must be one of"):
        Skip(1, "residual")
    with pytest.raises(ValueError, match="duplicates the layer's own weight matrix"):
        _net([LayerSpec(4), LayerSpec(4, (Skip(1, "dense"),))])


def test_identity_skip_adds_its_source_inside_the_nonlinearity() -> None:
    # a^3 = g(W a^2 + b + a^1): with W = 0 and b = 0, a^3 = ReLU(a^1) = a^1.
    net = _net([LayerSpec(5), LayerSpec(5), LayerSpec(5, (Skip(1, "identity"),))])
    with torch.no_grad():
        net.layers[2].linear.weight.zero_()
        acts = net.activations(torch.randn(4, 9))
    assert torch.equal(acts[3], acts[1])
    # Identity skips are fixed: the net has exactly the parameters of its plain twin.
    plain = _net([LayerSpec(5), LayerSpec(5), LayerSpec(5)])
    assert {k: v.shape for k, v in net.state_dict().items()} == {
        k: v.shape for k, v in plain.state_dict().items()
    }


def test_projection_and_dense_skips_have_their_matrices() -> None:
    proj = _net([LayerSpec(4), LayerSpec(5), LayerSpec(6, (Skip(1, "projection"), Skip(0, "projection")))])
    assert proj.layers[2].projections["1"].weight.shape == (6, 4)
    assert proj.layers[2].projections["0"].weight.shape == (6, 9)
    dense = _net([LayerSpec(4), LayerSpec(5), LayerSpec(6, (Skip(1, "dense"), Skip(0, "dense")))])
    assert dense.layers[2].linear.weight.shape == (6, 5 + 4 + 9)


def test_gated_layer_with_closed_gate_carries_its_input() -> None:
    net = resnets.create_model("highway_mlp", gate_bias=-60.0, depth=6)
    acts = net.activations(torch.rand(3, 1, 28, 28))
    for l in range(2, 7):
        torch.testing.assert_close(acts[l], acts[1], rtol=0, atol=1e-12)


def test_uniform_layers_wiring() -> None:
    seed = uniform_layers(5, 8, "identity", span=2)
    assert [s.skips for s in seed] == [(), (), (Skip(1),), (Skip(2),), (Skip(3),)]
    highway = uniform_layers(3, 8, "gated")
    assert [s.skips for s in highway] == [(), (Skip(1, "gated"),), (Skip(2, "gated"),)]
    dense = uniform_layers(3, 8, "dense")
    assert dense[2].skips == (Skip(0, "dense"), Skip(1, "dense"))
    assert all(not s.skips for s in uniform_layers(4, 8, "none"))


def test_layers_from_plain_data_for_config_files() -> None:
    net = _net(
        [4, {"width": 4}, {"width": 4, "skips": [[1, "identity"]]}, {"width": 4, "skips": [{"source": 2}]}]
    )
    assert net.specs[2].skips == (Skip(1, "identity"),) and net.specs[3].skips == (Skip(2, "identity"),)
    assert net.skip == "identity"


def test_default_skipnet_is_the_seeds_equation() -> None:
    net = resnets.create_model("skipnet")
    assert [s.skips for s in net.specs[2:]] == [(Skip(l - 2),) for l in range(3, 7)]
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_srivastava_widths() -> None:
    # Srivastava et al. 2015 §4.1: 50 units per highway layer, 71 per plain layer.
    assert {l.width for l in resnets.create_model("highway_mlp").specs} == {50}
    assert {l.width for l in resnets.create_model("plain_mlp").specs} == {71}
    for depth in (10, 20, 50, 100):
        net = resnets.create_model("highway_mlp", depth=depth)
        assert len(net.layers) == depth and net.layers[-1].gate is not None


def test_wrong_input_size_is_explained() -> None:
    net = resnets.create_model("skipnet")
    with pytest.raises(ValueError, match="expects 784 input features"):
        net(torch.rand(2, 3, 32, 32))


def test_bad_widths_and_conflicting_options_are_explained() -> None:
    with pytest.raises(ValueError, match="positive integer"):
        LayerSpec(0)
    with pytest.raises(ValueError, match="positive integer"):
        LayerSpec(True)
    with pytest.raises(ValueError, match="give either layers or skip"):
        resnets.create_model("skipnet", layers=[4, 4], skip="gated")
    with pytest.raises(ValueError, match=">= 2 for projection"):
        uniform_layers(4, 8, "projection", span=1)


def test_scale_branches_keeps_a_deep_unnormalised_residual_stack_finite_at_init() -> None:
    # He init alone: every identity sum adds the branch's variance, so 98 sums explode the output;
    # scaled by 1/√n (n summing layers) it stays of order one. Plain layers keep the He std.
    x = torch.rand(64, 1, 28, 28)
    torch.manual_seed(0)
    he = resnets.create_model("residual_mlp", depth=100)
    torch.manual_seed(0)
    scaled = resnets.create_model("residual_mlp", depth=100, scale_branches=True)
    with torch.no_grad():
        assert he(x).std() > 1e6
        assert scaled(x).std() < 10
    summing = [layer for layer in scaled.layers if layer.identity_sources]
    assert len(summing) == 98  # layers 3…100 each sum a^(l-2)
    he_std = (2 / 64) ** 0.5  # gain √2 for ReLU, fan-in 64
    pooled = torch.cat([layer.linear.weight.flatten() for layer in summing])
    assert pooled.std().item() == pytest.approx(he_std / 98**0.5, rel=0.02)
    assert scaled.layers[1].linear.weight.std().item() == pytest.approx(he_std, rel=0.05)


def test_a_layer_may_be_linear_and_the_next_matrix_gets_a_linear_gain() -> None:
    # a^1 = relu(W1 a^0 + b1); a^2 = W2 a^1 + b2 (linear); a^3 = relu(W3 a^2 + b3 + a^1): one identity
    # skip over a linear layer, the seed's "the intermediate layers are all linear".
    torch.manual_seed(0)
    spec = [{"width": 256}, {"width": 256, "act": "identity"}, {"width": 256, "skips": [[1, "identity"]]}]
    net = resnets.create_model("skipnet", layers=spec, in_chans=1, input_size=(4, 4)).double()
    x = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    lin = [layer.linear for layer in net.layers]
    a1 = torch.relu(lin[0](x.flatten(1)))
    a2 = lin[1](a1)
    a3 = torch.relu(lin[2](a2) + a1)
    torch.testing.assert_close(net.activations(x)[3], a3, rtol=1e-12, atol=1e-12)
    # He init: the matrix after a ReLU layer has std √2/√fan_in, after a linear layer 1/√fan_in.
    assert float(lin[1].weight.detach().std()) == pytest.approx(2**0.5 / 256**0.5, rel=0.02)
    assert float(lin[2].weight.detach().std()) == pytest.approx(1 / 256**0.5, rel=0.02)
    assert net.specs[1].act == "identity" and net.specs[2].act is None
