"""Feature extraction, timm's way: `features_only=True`, `feature_info`, `forward_intermediates`; and
torchvision's `create_feature_extractor` on every registered model.

Expected values come from outside resnets: timm's published feature_info for ResNet-50 and DenseNet-121
(channels and reductions), the shapes He et al. §4.2 gives for the CIFAR nets (16/32/64 maps on 32/16/8
pixels), and the maps torchvision's fx-based extractor takes from the same modules.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

import resnets
from resnets.errors import ConfigError
from resnets.registry import get_spec
from test_expect import SLOW, fixed_input, params, reference_model

CONV_MODELS = [n for n in resnets.list_models() if get_spec(n).family != "mlp"]


@pytest.mark.parametrize(
    ("name", "channels", "reductions"),
    [
        # timm resnet50.feature_info / densenet121.feature_info (ImageNet stems)
        ("resnet50", [64, 256, 512, 1024, 2048], [2, 4, 8, 16, 32]),
        ("resnet18", [64, 64, 128, 256, 512], [2, 4, 8, 16, 32]),
        ("densenet121", [64, 256, 512, 1024, 1024], [2, 4, 8, 16, 32]),
        # He et al. 2016 §4.2: a 16-filter 3×3 stem, then maps of 32, 16, 8 pixels with 16, 32, 64 filters
        ("resnet20", [16, 16, 32, 64], [1, 1, 2, 4]),
        ("plain56", [16, 16, 32, 64], [1, 1, 2, 4]),
        # Huang et al. Table 2 / §3: DenseNet-BC-100 (k=12) blocks end at 24+16·12 → 108 → 54+192 → …
        ("densenet_bc100_k12", [24, 216, 300, 342], [1, 1, 2, 4]),
    ],
)
def test_feature_info_matches_published_channels_and_reductions(
    name: str, channels: list[int], reductions: list[int]
) -> None:
    net = resnets.create_model(name, features_only=True)
    assert net.feature_info.channels() == channels
    assert net.feature_info.reduction() == reductions


@pytest.mark.parametrize("name", params(CONV_MODELS, SLOW))
def test_every_stage_map_has_its_declared_shape_and_the_last_is_forward_features(name: str) -> None:
    model = reference_model(name)
    x = fixed_input(name, batch=2)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        features = model.forward_features(x)
    assert len(maps) == len(model.feature_info)
    for fmap, info in zip(maps, model.feature_info, strict=True):
        assert fmap.shape == (
            2,
            info["num_chs"],
            x.shape[2] // info["reduction"],
            x.shape[3] // info["reduction"],
        )
    torch.testing.assert_close(final, features, rtol=0, atol=0)
    torch.testing.assert_close(maps[-1], features, rtol=0, atol=0)


@pytest.mark.parametrize(
    "name", ["resnet20", "preact_resnet110", "resnet18", "densenet40_k12", "densenet121"]
)
def test_stage_maps_equal_torchvisions_fx_extractor_on_the_same_modules(name: str) -> None:
    """torchvision traces the model's own forward and taps the named modules: an independent path to
    the same maps (the last stage's module is the final activation, as forward_features ends)."""
    model = reference_model(name)
    x = fixed_input(name, batch=2)
    _, eval_nodes = get_graph_node_names(model)
    nodes = {}
    for i, info in enumerate(model.feature_info):
        module = str(info["module"])
        # the last node whose name starts with the module's: its output is the module's output
        nodes[[n for n in eval_nodes if n == module or n.startswith(module + ".")][-1]] = str(i)
    extractor = create_feature_extractor(model, return_nodes=nodes)
    with torch.no_grad():
        reference = extractor(x)
        maps = model.forward_intermediates(x, intermediates_only=True)
    assert len(reference) == len(maps)
    for i, fmap in enumerate(maps):
        torch.testing.assert_close(fmap, reference[str(i)], rtol=0, atol=0)


def test_out_indices_pick_stages_as_timm_does() -> None:
    torch.manual_seed(0)
    net = resnets.create_model("resnet20", features_only=True, out_indices=(1, -1))
    assert net.out_indices == (1, 3)
    maps = net.eval()(torch.randn(2, 3, 32, 32))
    assert [tuple(m.shape) for m in maps] == [(2, 16, 32, 32), (2, 64, 8, 8)]
    assert net.feature_info.module_name() == ["layer1", "layer3"]
    model = resnets.create_model("resnet20")
    assert len(model.forward_intermediates(torch.randn(1, 3, 32, 32), indices=2)[1]) == 2  # the last two
    for bad in [(4,), (-5,), (1, 1), ()]:
        with pytest.raises(ConfigError, match=r"stage|indices"):
            resnets.create_model("resnet20", features_only=True, out_indices=bad)


def test_stop_early_runs_no_stage_after_the_last_wanted() -> None:
    model = resnets.create_model("resnet20").eval()
    ran: list[str] = []
    for name in ("layer1", "layer2", "layer3"):
        getattr(model, name).register_forward_hook(lambda m, i, o, name=name: ran.append(name))
    model.forward_intermediates(torch.randn(1, 3, 32, 32), indices=[1], intermediates_only=True)
    assert ran == ["layer1"]


def test_the_feature_net_has_no_classifier_and_keeps_the_body_weights() -> None:
    torch.manual_seed(0)
    model = resnets.create_model("resnet20")
    body = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}
    net = resnets.create_model("resnet20", features_only=True)  # a fresh model: only the keys compare
    assert not any(isinstance(m, nn.Linear) for m in net.modules())
    assert {k.removeprefix("model.") for k in net.state_dict()} == set(body)


def test_fully_connected_nets_say_they_have_no_feature_maps() -> None:
    with pytest.raises(ConfigError, match=r"activations\(x\)"):
        resnets.create_model("plain_mlp", features_only=True)
    with pytest.raises(ConfigError, match="no feature stages"):
        resnets.create_model("skipnet").forward_intermediates(torch.randn(1, 1, 28, 28))


@pytest.mark.parametrize("name", params(resnets.list_models(), SLOW))
def test_torchvision_create_feature_extractor_works_on_every_model(name: str) -> None:
    model = reference_model(name)
    x = fixed_input(name, batch=2)
    _, eval_nodes = get_graph_node_names(model)
    extractor = create_feature_extractor(model, return_nodes={eval_nodes[-1]: "out"})
    with torch.no_grad():
        torch.testing.assert_close(extractor(x)["out"], model(x), rtol=0, atol=0)
