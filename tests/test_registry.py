"""The registry: unique names, helpful errors, patterns, and the names DESIGN.md promises."""

import pytest
from torch import nn

import resnets
from resnets.registry import get_spec, register_model

# DESIGN.md, "Names users will rely on".
PROMISED = (
    [f"resnet{d}" for d in (20, 32, 44, 56, 110, 1202)]
    + [f"plain{d}" for d in (20, 32, 44, 56, 110)]
    + [f"highway{d}" for d in (20, 32, 44, 56, 110)]
    + [
        "preact_resnet110",
        "preact_resnet164",
        "preact_resnet1001",
        "wrn28_10",
        "densenet40_k12",
        "densenet_bc100_k12",
        "densenet_bc190_k40",
    ]
    + [f"resnet{d}" for d in (18, 34, 50, 101, 152)]
    + ["resnext50_32x4d", "wide_resnet50_2", "densenet121", "densenet161", "densenet169", "densenet201"]
    + ["skipnet", "highway_mlp", "plain_mlp"]
)


def test_every_promised_name_is_registered() -> None:
    missing = sorted(set(PROMISED) - set(resnets.list_models()))
    assert not missing


def test_duplicate_name_raises() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_model(
            "resnet20", lambda **kw: nn.Identity(), skip="identity", depth=20, paper="x", family="cifar"
        )


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(KeyError) as err:
        resnets.create_model("resnet5")
    message = str(err.value)
    assert "unknown model 'resnet5'" in message
    assert "resnet56" in message and "resnet50" in message


def test_unknown_skip_kind_rejected_at_registration() -> None:
    with pytest.raises(ValueError, match="skip must be one of"):
        register_model(
            "x_unused", lambda **kw: nn.Identity(), skip="residual", depth=1, paper="x", family="cifar"
        )
    assert "x_unused" not in resnets.list_models()


def test_family_defaults_and_custom_families() -> None:
    assert get_spec("resnet56").input_size == (3, 32, 32) and get_spec("resnet56").num_classes == 10
    assert get_spec("densenet121").input_size == (3, 224, 224) and get_spec("highway_mlp").input_size == (
        1,
        28,
        28,
    )
    with pytest.raises(ValueError, match="needs input_size and num_classes"):
        register_model(
            "x_unused2", lambda **kw: nn.Identity(), skip="none", depth=1, paper="x", family="audio"
        )


def test_pattern_filters_with_glob() -> None:
    assert resnets.list_models("plain*") == [
        "plain20",
        "plain32",
        "plain44",
        "plain56",
        "plain110",
        "plain18",
        "plain34",
        "plain_mlp",
    ]
    assert resnets.list_models("*56") == ["resnet56", "plain56", "highway56"]
    assert resnets.list_models("no-such-*") == []


def test_create_model_defaults_come_from_the_spec() -> None:
    spec = get_spec("resnet18")
    model = resnets.create_model("resnet18")
    assert (model.num_classes, model.in_chans) == (spec.num_classes, spec.input_size[0]) == (1000, 3)
    assert resnets.create_model("resnet20", num_classes=100).fc.out_features == 100
