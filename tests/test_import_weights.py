"""Importing torchvision/timm state_dicts: same function as the source model, clear reports, no unpickling."""

import pickle
import re

import pytest
import torch
import torchvision
from torch import nn

import resnets
import resnets.deploy.convert
from formats import safetensors_bytes, torch_file_with_pickle
from resnets.cli import main
from resnets.deploy.convert import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    import_state_dict,
    import_weights_file,
    load_state_dict_file,
    normalize_state_dict,
)
from resnets.errors import CheckpointError, ConfigError, UnknownModelError
from resnets.io.weights import CONVERT_HINT, load_weights


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


def test_nested_wrapper_prefixes_are_stripped_in_one_pass() -> None:
    theirs = _torchvision("resnet18")
    wrapped = {"module._orig_mod.module." + k: v for k, v in theirs.state_dict().items()}
    ours, report = import_state_dict(wrapped, "resnet18")
    assert report.complete and any("'_orig_mod.'" in c for c in report.conversions)
    _assert_same_function(ours, theirs)
    # Issue 13: one key with 300,000 nested prefixes (a 2 MB file) hung when each prefix copied the key
    # again (quadratic: ~300 GB of copying); one pass strips them all.
    sd, notes = normalize_state_dict({"module." * 300_000 + "fc.weight": torch.zeros(3)})
    assert (
        list(sd) == ["fc.weight"] and "stripped the 'module.' prefix from every key (300,000 times)" in notes
    )
    # Only whole prefixes that every key has are stripped.
    sd, notes = normalize_state_dict({"module.x": torch.zeros(1), "modulex": torch.zeros(1)})
    assert sorted(sd) == ["module.x", "modulex"] and not any("stripped" in n for n in notes)
    sd, _ = normalize_state_dict({"module._orig_mod.a": torch.zeros(1), "module.b": torch.zeros(1)})
    assert sorted(sd) == ["_orig_mod.a", "b"]


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
        assert "unsupported global io.open" in str(err.value)  # refused for the payload, nothing else
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


def _record_builds(monkeypatch) -> list[str]:
    """The devices create_model builds on during the test ("meta" costs no memory)."""
    devices: list[str] = []
    real = resnets.deploy.convert.create_model

    def recording(*args, **kwargs):
        devices.append(torch.get_default_device().type)
        return real(*args, **kwargs)

    monkeypatch.setattr(resnets.deploy.convert, "create_model", recording)
    return devices


@pytest.mark.parametrize(
    ("shape", "data"),
    [
        ([10**7, 0], b""),  # ~80 bytes that would make a Linear(512, 10^7) of 20 GB
        ([100_001, 1], bytes(4 * 100_001)),  # non-empty, but more classes than any dataset resnets reads
    ],
)
def test_the_class_count_taken_from_the_file_is_bounded(tmp_path, monkeypatch, shape, data) -> None:
    path = tmp_path / "tiny.safetensors"
    path.write_bytes(
        safetensors_bytes(
            {"fc.weight": {"dtype": "F32", "shape": shape, "data_offsets": [0, len(data)]}}, data
        )
    )
    devices = _record_builds(monkeypatch)
    out = tmp_path / "out.safetensors"
    with pytest.raises(CheckpointError) as err:
        import_weights_file(path, "resnet18", out)
    msg = str(err.value)
    assert msg.startswith(
        f"{path}: the classifier fc.weight has shape {shape}: not a classifier of 1…100,000"
    )
    assert "--num-classes" in msg and set(devices) <= {"meta"} and not out.exists()


def test_a_mismatched_file_is_refused_before_the_model_is_materialised(monkeypatch) -> None:
    # 50,000 classes is within bounds, but the file holds nothing else of a resnet18: refused while the
    # model exists on the meta device only (materialised, its classifier alone would take 100 MB).
    devices = _record_builds(monkeypatch)
    with pytest.raises(CheckpointError, match=r"(?s)does not match resnet18:.*missing from the file") as err:
        import_state_dict({"fc.weight": torch.zeros(50_000, 1)}, "resnet18")
    assert "fc.weight: file [50000, 1], model [50000, 512]" in str(err.value)
    assert devices and set(devices) == {"meta"}
    with pytest.raises(ConfigError, match="num_classes must be an integer in 1…100,000, got 10000000"):
        import_state_dict({}, "resnet18", num_classes=10**7)
    assert set(devices) == {"meta"}


@pytest.mark.parametrize(
    ("state_dict", "listed"),
    [
        ({0: torch.zeros(1)}, "0"),
        ({"module.conv1.weight": torch.zeros(1), 1: torch.zeros(1)}, "1"),  # was AttributeError (startswith)
        ({"state_dict": {(1, 2): torch.zeros(1)}}, r"\(1, 2\)"),
    ],
)
def test_state_dicts_with_keys_that_are_not_strings_name_the_file(tmp_path, state_dict, listed) -> None:
    path = tmp_path / "odd.pth"
    torch.save(state_dict, path)
    with pytest.raises(
        CheckpointError, match=rf"odd\.pth: the state_dict has keys that are not strings: {listed}"
    ):
        import_weights_file(path, "resnet18", tmp_path / "out.safetensors")


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch warns about pickle protocol 4
@pytest.mark.parametrize(
    ("pickled", "reason"),
    [
        # An unfilled memo slot: torch.load raised a bare KeyError, which escaped.
        (b"\x80\x02}h\x05s.", r"\(KeyError: 5\)"),
        # An opcode torch's unpickler lacks: its error advised loading with weights_only=False.
        (pickle.dumps({"a": 1}, protocol=4), r"\(Unsupported operand 149\)"),
    ],
)
def test_torch_load_failures_are_checkpoint_errors_without_torchs_advice(tmp_path, pickled, reason) -> None:
    path = tmp_path / "odd.pth"
    path.write_bytes(torch_file_with_pickle(pickled))
    with pytest.raises(CheckpointError, match=reason) as err:
        load_state_dict_file(path)
    own = str(err.value).replace(CONVERT_HINT, "")  # the conversion recipe mentions weights_only=True
    assert own.startswith(str(path)) and "weights_only" in own  # says it was read with weights_only=True
    assert not any(
        s in own.lower() for s in ("set to `false`", "weights_only=false", "trusted source", "add_safe")
    )
