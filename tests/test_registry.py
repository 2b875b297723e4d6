"""The registry: unique names, helpful errors, patterns, and the names DESIGN.md promises."""

import re

import pytest
import torch
from torch import nn

import resnets
import resnets.models
from resnets import registry
from resnets.errors import ConfigError
from resnets.info import count_params
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
    everything = resnets.list_models()
    plain = resnets.list_models("plain*")
    assert plain == [n for n in everything if n.startswith("plain")]  # filtered, order kept
    assert {"plain20", "plain18", "plain_mlp"} <= set(plain)
    assert set(resnets.list_models("*56")) == {"resnet56", "plain56", "highway56"}
    assert resnets.list_models("no-such-*") == []


def test_create_model_defaults_come_from_the_spec() -> None:
    spec = get_spec("resnet18")
    model = resnets.create_model("resnet18")
    assert (model.num_classes, model.in_chans) == (spec.num_classes, spec.input_size[0]) == (1000, 3)
    assert resnets.create_model("resnet20", num_classes=100).fc.out_features == 100


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by the test are forgotten afterwards."""
    monkeypatch.setattr(registry.MODELS, "_entries", dict(registry.MODELS._entries))


@pytest.mark.usefixtures("scratch_registry")
def test_decorator_registers_under_the_function_name() -> None:
    def build(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
        return nn.Linear(in_chans, num_classes)

    decorated = register_model(skip="none", depth=1, paper="x", family="cifar")(build)
    assert decorated is build and get_spec("build").builder is build
    assert resnets.create_model("build").out_features == 10
    named = register_model("other_name", skip="none", depth=1, paper="x", family="cifar")(build)
    assert named is build and get_spec("other_name").builder is build
    with pytest.raises(ValueError, match="already registered"):
        register_model(skip="none", depth=1, paper="x", family="cifar")(build)
    with pytest.raises(ValueError, match="skip must be one of"):
        register_model(skip="residual", depth=1, paper="x", family="cifar")(lambda **kw: nn.Identity())


def test_every_model_is_a_public_builder_whose_docstring_states_its_parameter_count() -> None:
    for name in resnets.list_models():
        builder = getattr(resnets.models, name)
        assert builder is get_spec(name).builder and builder.__name__ == name
        assert name in resnets.models.__all__
        doc = builder.__doc__ or ""
        stated = re.findall(r"(\d{1,3}(?:,\d{3})*)\s+parameters", doc)
        assert len(stated) == 1, f"{name}: the docstring should state its parameter count once: {doc!r}"
        cited = re.findall(r"arXiv:\d{4}\.\d{5}", get_spec(name).paper)
        assert all(paper in doc for paper in cited), f"{name}: the docstring should cite {cited}"
        with torch.device("meta"):  # shapes only: even the largest model builds in a moment
            model = resnets.create_model(name)
        assert int(stated[0].replace(",", "")) == count_params(model), name


def test_a_registry_refuses_a_second_entry_under_one_name_and_suggests_close_names() -> None:
    reg: registry.Registry[int] = registry.Registry("recipe")
    reg.register("he2016-cifar")(1)
    reg.add("quick", 2)
    assert list(reg) == ["he2016-cifar", "quick"] and reg.names("he*") == ["he2016-cifar"]
    with pytest.raises(ValueError, match="already registered"):
        reg.add("quick", 3)
    with pytest.raises(ConfigError, match=r"unknown recipe 'he2016_cifar'\. Did you mean: he2016-cifar\?"):
        reg["he2016_cifar"]
    with pytest.raises(ConfigError, match="Choose one of: he2016-cifar, quick"):
        reg.get("zzz")
