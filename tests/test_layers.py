"""Norms and activations by name (get_norm_layer, get_act_layer) and their threading through every model."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import resnets
from resnets.deploy.inference import load_model
from resnets.errors import ConfigError
from resnets.io.weights import ModelMeta, save_weights
from resnets.layers import ACT_LAYERS, NORM_LAYERS, get_act_layer, get_norm_layer, groupnorm_groups
from resnets.models.skipnet import SkipNet, uniform_layers


def _types(model: nn.Module) -> set[type]:
    return {type(m) for m in model.modules()}


@pytest.mark.parametrize("name", ["batchnorm", "bn", "BatchNorm", " BN "])
def test_batchnorm_names_give_the_torch_class_itself(name: str) -> None:
    assert get_norm_layer(name) is nn.BatchNorm2d
    assert get_norm_layer(name, spatial=False) is nn.BatchNorm1d


@pytest.mark.parametrize(
    ("channels", "groups"),
    [
        (64, 32),
        (256, 32),
        (2048, 32),
        (32, 16),
        (16, 8),
        (12, 6),
        (24, 12),
        (48, 24),
        (168, 28),
        (7, 1),
        (1, 1),
    ],
)
def test_groupnorm_takes_32_groups_or_fewer_when_the_channels_need(channels: int, groups: int) -> None:
    norm = get_norm_layer("groupnorm")(channels)
    assert isinstance(norm, nn.GroupNorm) and (norm.num_groups, norm.num_channels) == (groups, channels)
    assert get_norm_layer("gn")(channels).num_groups == groups == groupnorm_groups(channels)


def test_groupnorm_groups_divide_the_channels_and_keep_two_per_group() -> None:
    for c in range(1, 600):
        g = groupnorm_groups(c)
        assert c % g == 0 and 1 <= g <= 32 and (c // g >= 2 or c == 1), c
        # The largest such divisor: no valid count between g and the limit.
        assert not any(c % h == 0 for h in range(g + 1, min(32, c // 2) + 1)), c


def test_layernorm_of_a_feature_map_normalises_over_channels_and_space() -> None:
    x = torch.randn(3, 6, 5, 4, dtype=torch.float64)
    norm = get_norm_layer("layernorm")(6).double()
    torch.testing.assert_close(norm(x), F.layer_norm(x, x.shape[1:]))
    vec = get_norm_layer("ln", spatial=False)(6)
    assert isinstance(vec, nn.LayerNorm) and vec.normalized_shape == (6,)


def test_identity_norms_and_callables_pass_through() -> None:
    for spec in ("identity", "none", None):
        assert isinstance(get_norm_layer(spec)(8), nn.Identity)
        assert isinstance(get_act_layer(spec)(), nn.Identity)

    def my_norm(c: int) -> nn.Module:
        return nn.GroupNorm(2, c)

    assert get_norm_layer(my_norm) is my_norm
    assert get_act_layer(nn.Mish) is nn.Mish


@pytest.mark.parametrize(
    ("get", "names", "what"),
    [(get_norm_layer, NORM_LAYERS, "norm_layer"), (get_act_layer, ACT_LAYERS, "act_layer")],
)
def test_an_unknown_name_lists_the_names_that_exist(get, names: tuple[str, ...], what: str) -> None:
    with pytest.raises(ConfigError) as err:
        get("batchnrom" if what == "norm_layer" else "rleu")
    msg = str(err.value)
    assert what in msg and all(n in msg for n in names) and "callable" in msg
    assert ("'batchnorm'" if what == "norm_layer" else "'relu'") in msg.split("did you mean")[1]
    with pytest.raises(ConfigError, match=f"{what} must be a name"):
        get(3)


def test_activation_names_compute_their_functions() -> None:
    x = torch.linspace(-4, 4, 101, dtype=torch.float64)
    expected = {
        "relu": x.clamp(min=0),
        "gelu": 0.5 * x * (1 + torch.erf(x / math.sqrt(2))),
        "silu": x / (1 + torch.exp(-x)),
        "elu": torch.where(x > 0, x, torch.exp(x) - 1),
        "leaky_relu": torch.where(x > 0, x, 0.01 * x),
        "tanh": (torch.exp(2 * x) - 1) / (torch.exp(2 * x) + 1),
        "sigmoid": 1 / (1 + torch.exp(-x)),
        "identity": x,
    }
    assert set(expected) == set(ACT_LAYERS)
    for name, want in expected.items():
        torch.testing.assert_close(get_act_layer(name)()(x.clone()), want, msg=name)


def test_inplace_is_asked_for_and_only_where_an_activation_has_it() -> None:
    assert get_act_layer("relu", inplace=True)().inplace and not get_act_layer("relu")().inplace
    assert get_act_layer("SiLU", inplace=True)().inplace
    assert isinstance(get_act_layer("gelu", inplace=True)(), nn.GELU)  # GELU cannot work in place


def test_default_models_keep_batchnorm_and_the_in_place_relus() -> None:
    model = resnets.create_model("resnet20")
    assert model.relu.inplace and model.layer1[0].relu.inplace
    pre = resnets.create_model("preact_resnet110")
    assert not pre.layer1[0].relu.inplace and pre.final_norm[1].inplace  # the pre-activation feeds two paths
    dense = resnets.create_model("densenet40_k12")
    layer = dense.features.denseblock1.denselayer1
    assert layer.relu1.inplace and dense.features.transition1.relu.inplace and not dense.act.inplace
    for m in (model, pre, dense):
        assert nn.BatchNorm2d in _types(m) and nn.GroupNorm not in _types(m)


def test_resnet20_with_groupnorm_has_no_batchnorm_and_trains_a_step() -> None:
    bn = resnets.create_model("resnet20")
    gn = resnets.create_model("resnet20", norm_layer="groupnorm")
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in gn.modules())
    norms = [m for m in gn.modules() if isinstance(m, nn.GroupNorm)]
    assert len(norms) == sum(isinstance(m, nn.BatchNorm2d) for m in bn.modules()) == 19
    assert {(m.num_channels, m.num_groups) for m in norms} == {(16, 8), (32, 16), (64, 32)}
    assert not any("running" in k for k in gn.state_dict())
    # Same parameters as the batch-norm net (a scale and a shift per channel), none of its buffers.
    assert {k: v.shape for k, v in gn.named_parameters()} == {k: v.shape for k, v in bn.named_parameters()}
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    opt = torch.optim.SGD(gn.parameters(), lr=0.05)
    before = F.cross_entropy(gn(x), y)
    before.backward()
    opt.step()
    with torch.no_grad():
        after = F.cross_entropy(gn(x), y)
    assert torch.isfinite(after) and after < before


def _zero_pad(h: torch.Tensor, out_ch: int) -> torch.Tensor:
    """Option A computed from its definition: every other pixel, new channels zero on both sides."""
    h = h[:, :, ::2, ::2]
    extra = out_ch - h.shape[1]
    z = h.new_zeros(h.shape[0], extra // 2, *h.shape[2:])
    return torch.cat([z, h, h.new_zeros(h.shape[0], extra - extra // 2, *h.shape[2:])], 1)


def _cifar_forward_by_hand(model: nn.Module, x: torch.Tensor, g) -> torch.Tensor:
    """A post-activation CIFAR ResNet in eval mode from its parameters, with activation g."""

    def bn(m: nn.BatchNorm2d, h: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(h, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)

    h = g(bn(model.bn1, F.conv2d(x, model.conv1.weight, padding=1)))
    for block in model.blocks():
        s = block.conv1.stride[0]
        out = g(bn(block.bn1, F.conv2d(h, block.conv1.weight, stride=s, padding=1)))
        out = bn(block.bn2, F.conv2d(out, block.conv2.weight, padding=1))
        h = g(out + (h if s == 1 else _zero_pad(h, out.shape[1])))
    return F.linear(h.mean(dim=(2, 3)), model.fc.weight, model.fc.bias)


def test_a_silu_resnet_differs_from_relu_and_matches_a_forward_by_hand() -> None:
    torch.manual_seed(0)
    relu = resnets.create_model("resnet20").double().eval()
    torch.manual_seed(0)
    silu = resnets.create_model("resnet20", act_layer="silu").double().eval()
    assert nn.ReLU not in _types(silu) and nn.SiLU in _types(silu)
    torch.testing.assert_close(dict(silu.state_dict()), dict(relu.state_dict()), rtol=0, atol=0)
    for m in silu.modules():  # non-trivial statistics, so that every norm matters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.bias.data.uniform_(-0.5, 0.5)
    relu.load_state_dict(silu.state_dict())
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        got = silu(x)
        torch.testing.assert_close(got, _cifar_forward_by_hand(silu, x, lambda t: t * torch.sigmoid(t)))
        torch.testing.assert_close(relu(x), _cifar_forward_by_hand(relu, x, torch.relu))
        assert (got - relu(x)).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "preact_resnet164", "highway20", "wrn28_10"])
def test_every_norm_and_activation_of_a_resnet_is_the_chosen_one(name: str) -> None:
    with torch.device("meta"):
        model = resnets.create_model(name, norm_layer="gn", act_layer="gelu")
    types = _types(model)
    assert nn.GroupNorm in types and nn.GELU in types
    assert not types & {nn.BatchNorm2d, nn.ReLU}


def test_densenet_takes_norm_and_activation_by_name() -> None:
    model = resnets.create_model("densenet_bc100_k12", norm_layer="groupnorm", act_layer="elu")
    types = _types(model)
    assert nn.GroupNorm in types and nn.ELU in types and not types & {nn.BatchNorm2d, nn.ReLU}
    norms = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    assert all(m.num_channels % m.num_groups == 0 for m in norms)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    with torch.device("meta"):
        tv = resnets.create_model("densenet121")
        gn = resnets.create_model("densenet121", norm_layer="groupnorm")
    keys = {k for k in tv.state_dict() if "running" not in k and "num_batches" not in k}
    assert set(gn.state_dict()) == keys


def test_skipnet_layernorm_and_silu_follow_the_documented_equation() -> None:
    net = SkipNet(
        uniform_layers(4, 6, "identity"),
        in_chans=1,
        input_size=(2, 3),
        norm_layer="layernorm",
        act_layer="silu",
    ).double()
    assert [type(layer.norm) for layer in net.layers] == [nn.LayerNorm] * 4
    assert net.activation == "silu"
    x = torch.randn(5, 1, 2, 3, dtype=torch.float64)
    acts = [x.flatten(1)]
    for l, layer in enumerate(net.layers, start=1):
        # a^l = g(N(W a^(l-1) + b) + a^(l-2)), the skip from l-2 for l >= 3
        z = F.layer_norm(acts[-1] @ layer.linear.weight.T + layer.linear.bias, (6,))
        z = z + (acts[l - 2] if l >= 3 else 0)
        acts.append(z * torch.sigmoid(z))
    torch.testing.assert_close(net.activations(x), acts)
    assert "layers.0.norm.weight" in net.state_dict()
    assert not any("norm" in k for k in resnets.create_model("residual_mlp").state_dict())


def test_skipnet_activation_is_the_older_name_of_act_layer() -> None:
    layers = uniform_layers(3, 4)
    assert SkipNet(layers, activation="tanh").activation == "tanh"
    assert isinstance(SkipNet(layers, act_layer="none").layers[0].act, nn.Identity)
    with pytest.raises(ConfigError, match="not both"):
        SkipNet(layers, act_layer="silu", activation="tanh")
    with pytest.raises(ValueError, match="unknown act_layer 'swish'"):
        SkipNet(layers, act_layer="swish")


def test_skipnet_init_gain_for_any_activation_is_he_et_al_s() -> None:
    # The gain of an activation PyTorch does not know, 1/√E[g(z)²], is √2 for ReLU as calculate_gain's:
    # ReLU given as a callable (no name) must initialise exactly as ReLU by name.
    layers = uniform_layers(3, 16, "identity")
    torch.manual_seed(0)
    by_name = SkipNet(layers, act_layer="relu")
    torch.manual_seed(0)
    by_callable = SkipNet(layers, act_layer=nn.ReLU)
    assert by_callable.activation is None
    for a, b in zip(by_name.parameters(), by_callable.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=0)
    # SiLU: E[silu(z)²] by Monte Carlo sets the std of W.
    torch.manual_seed(0)
    net = SkipNet(uniform_layers(1, 4000), in_chans=1, input_size=(50, 50), act_layer="silu")
    z = torch.randn(2_000_000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    gain = float((F.silu(z) ** 2).mean()) ** -0.5
    assert float(net.layers[0].linear.weight.detach().std()) == pytest.approx(gain / 50, rel=5e-3)


def test_a_groupnorm_model_round_trips_through_its_weights_file(tmp_path) -> None:
    model = resnets.create_model("resnet20", norm_layer="groupnorm", act_layer="silu").eval()
    meta = ModelMeta(
        model="resnet20",
        num_classes=10,
        in_chans=3,
        input_size=[3, 32, 32],
        mean=[0.5] * 3,
        std=[0.25] * 3,
        classes=[str(i) for i in range(10)],
        model_kwargs={"norm_layer": "groupnorm", "act_layer": "silu"},
    )
    save_weights(tmp_path / "model.safetensors", model.state_dict(), meta)
    loaded = load_model(tmp_path)
    assert (
        nn.GroupNorm in _types(loaded) and nn.SiLU in _types(loaded) and nn.BatchNorm2d not in _types(loaded)
    )
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_a_config_picks_norm_and_activation_through_model_kwargs(tmp_path) -> None:
    from resnets.train.config import resolve_config

    f = tmp_path / "c.yaml"
    f.write_text("model: {name: plain20, kwargs: {norm_layer: groupnorm, act_layer: leaky_relu}}\n")
    cfg = resolve_config(files=[f], assignments=["model.kwargs.act_layer=silu"])
    assert cfg.model.kwargs == {"norm_layer": "groupnorm", "act_layer": "silu"}
    model = resnets.create_model(cfg.model.name, **cfg.model.kwargs)
    assert nn.GroupNorm in _types(model) and nn.SiLU in _types(model)
    with pytest.raises(ConfigError) as err:
        resolve_config(assignments=["model.kwargs.norm_layer=groupnrom"])
    assert "unknown norm_layer 'groupnrom'" in str(err.value) and "did you mean 'groupnorm'" in str(err.value)
