"""Importing torchvision/timm state_dicts: same function as the source model, clear reports, no unpickling."""

import pickle
import re

import pytest
import torch
import torchvision
from torch import nn

import resnets
from resnets.cli import main
from resnets.convert import IMAGENET_MEAN, IMAGENET_STD, import_state_dict, import_weights_file
from resnets.errors import CheckpointError, UnknownModelError
from resnets.train.checkpoint import CONVERT_HINT, load_weights


def _randomise_norms(model: nn.Module) -> None:
    """Batch-norm statistics and affine parameters far from their initial values, so any mix-up shows."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                m.weight.copy_(0.4 + 0.5 * torch.rand(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))


def _torchvision(name: str, **kwargs) -> nn.Module:
    model = getattr(torchvision.models, name)(weights=None, **kwargs).eval()
    _randomise_norms(model)
    return model


def _assert_same_function(ours: nn.Module, theirs: nn.Module) -> None:
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = theirs.eval()(x)
        got = ours.eval()(x)
    assert expected.abs().max() > 1e-3  # a real signal, not a pair of zeros
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["resnet18", "densenet121"])
@pytest.mark.parametrize("prefix", ["", "module."])
def test_torchvision_state_dict_imports_with_the_same_outputs(name: str, prefix: str) -> None:
    theirs = _torchvision(name)
    sd = {prefix + k: v for k, v in theirs.state_dict().items()}
    ours, report = import_state_dict(sd, name)
    assert report.complete and report.loaded == len(sd) and report.num_classes == 1000
    assert any("'module.'" in c for c in report.conversions) == bool(prefix)
    _assert_same_function(ours, theirs)


def test_old_style_densenet_keys_convert() -> None:
    theirs = _torchvision("densenet121")
    # torchvision < 0.3 keys, without the num_batches_tracked counters that BatchNorm gained later.
    old = {
        re.sub(r"(denselayer\d+\.)(norm|conv)([12])\.", r"\1\2.\3.", k): v
        for k, v in theirs.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    renamed = sum(".norm.1." in k or ".conv.1." in k or ".norm.2." in k or ".conv.2." in k for k in old)
    assert renamed == 58 * 10  # 58 dense layers: two norms (4 tensors each) and two convs
    ours, report = import_state_dict(old, "densenet121")
    assert report.complete
    assert any(f"renamed {renamed} old-style DenseNet keys" in c for c in report.conversions)
    assert len(report.filled) == sum(isinstance(m, nn.BatchNorm2d) for m in theirs.modules())
    _assert_same_function(ours, theirs)


def test_missing_and_unexpected_keys_are_listed_and_allow_partial_loads_the_rest() -> None:
    theirs = _torchvision("resnet18")
    sd = theirs.state_dict()
    del sd["layer2.0.conv1.weight"]
    sd["layer5.0.conv1.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError) as err:
        import_state_dict(sd, "resnet18")
    message = str(err.value)
    assert "layer2.0.conv1.weight" in message and "layer5.0.conv1.weight" in message
    assert "missing" in message and "unexpected" in message and "--allow-partial" in message

    ours, report = import_state_dict(sd, "resnet18", allow_partial=True)
    assert report.missing == ["layer2.0.conv1.weight"] and report.unexpected == ["layer5.0.conv1.weight"]
    loaded = ours.state_dict()
    assert torch.equal(loaded["layer3.1.bn2.running_var"], sd["layer3.1.bn2.running_var"])
    assert not torch.equal(loaded["layer2.0.conv1.weight"], theirs.state_dict()["layer2.0.conv1.weight"])


def test_classifier_size_follows_the_file_unless_told_otherwise() -> None:
    theirs = _torchvision("resnet18", num_classes=7)
    ours, report = import_state_dict(theirs.state_dict(), "resnet18")
    assert report.num_classes == 7 and ours.fc.out_features == 7
    _assert_same_function(ours, theirs)
    with pytest.raises(CheckpointError, match=r"fc\.weight: file \[7, 512\], model \[10, 512\]"):
        import_state_dict(theirs.state_dict(), "resnet18", num_classes=10)


def test_weights_file_imports_through_the_cli_and_loads_as_a_resnets_model(tmp_path, capsys) -> None:
    theirs = _torchvision("resnet18")
    source = tmp_path / "resnet18.pth"
    # A DDP training checkpoint: the state_dict under "state_dict", beside plain data torch.load accepts.
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in theirs.state_dict().items()}}, source)
    out = tmp_path / "imported.safetensors"
    assert main(["import-weights", str(source), "--model", "resnet18", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "loaded 122 tensors" in printed and "'state_dict'" in printed and "'module.'" in printed
    model = resnets.load_model(out)
    meta = model.meta
    assert (meta.model, meta.num_classes, meta.input_size) == ("resnet18", 1000, [3, 224, 224])
    assert meta.mean == IMAGENET_MEAN and meta.std == IMAGENET_STD
    assert meta.classes[:2] == ["class0", "class1"] and len(meta.classes) == 1000
    _assert_same_function(model, theirs)

    # A safetensors input, with class names and a partial head left for fine-tuning.
    from safetensors.torch import save_file

    st = tmp_path / "in.safetensors"
    save_file({k: v.contiguous() for k, v in theirs.state_dict().items()}, str(st))
    out2 = tmp_path / "three.safetensors"
    report = import_weights_file(st, "resnet18", out2, classes=["a", "b", "c"], allow_partial=True)
    assert {k for k, _, _ in report.mismatched} == {"fc.weight", "fc.bias"}
    weights, meta2 = load_weights(out2)
    assert meta2.classes == ["a", "b", "c"] and weights["fc.weight"].shape == (3, 512)
    assert torch.equal(weights["layer4.1.conv2.weight"], theirs.state_dict()["layer4.1.conv2.weight"])


class _Payload:
    """Unpickling this creates `marker`: what a malicious checkpoint would do, harmlessly."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_a_pickle_with_code_is_refused_without_running_it(tmp_path, writer: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    if writer == "torch.save":
        torch.save({"fc.weight": torch.zeros(2, 2), "payload": _Payload(str(marker))}, path)
    else:  # a tensor would be refused first (plain pickle stores it as a global call): the payload alone
        with open(path, "wb") as f:
            pickle.dump({"payload": _Payload(str(marker))}, f, protocol=2)
    with pytest.raises(CheckpointError) as err:
        import_weights_file(path, "resnet18", tmp_path / "out.safetensors")
    if writer == "torch.save":
        assert "weights_only=True" in str(err.value) and CONVERT_HINT in str(err.value)
        assert "refers to io.open" in str(err.value)  # refused for the payload, not for something else
    else:  # a bare pickle stream is refused before torch.load is called at all
        assert "not a zip archive as torch.save writes" in str(err.value)
    assert not marker.exists()
    assert not (tmp_path / "out.safetensors").exists()
    # The payload is live: full unpickling (what resnets never does) would have run it.
    if writer == "torch.save":
        torch.load(path, weights_only=False)
    else:
        with open(path, "rb") as f:
            pickle.load(f)
    assert marker.exists()


def test_non_tensor_entries_and_unknown_models_are_refused(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="not tensors: epoch"):
        import_state_dict({"epoch": 3, "fc.weight": torch.zeros(1)}, "resnet18")
    with pytest.raises(UnknownModelError, match="resnet18"):
        import_weights_file(tmp_path / "missing.pth", "resnet81", tmp_path / "out.safetensors")
    with pytest.raises(CheckpointError, match="does not exist"):
        import_weights_file(tmp_path / "missing.pth", "resnet18", tmp_path / "out.safetensors")
