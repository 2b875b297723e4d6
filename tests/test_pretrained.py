"""Weights by name: create_model(weights=..., pretrained=True), the shipped-weights table (each file's
SHA-256, metadata and a recorded output), torch.hub through hubconf.py, and the CLI's weights names."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest
import torch

import resnets
import resnets.weights as shipped
from resnets.cli import main
from resnets.errors import CheckpointError, ConfigError
from resnets.io.weights import ModelMeta, load_weights, save_weights

REPO = Path(__file__).resolve().parents[1]
CIFAR_MEAN, CIFAR_STD = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]


def _weights_file(path: Path, name: str = "resnet20", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = resnets.create_model(name).eval()
    meta = ModelMeta(
        name, 10, 3, [3, 32, 32], CIFAR_MEAN, CIFAR_STD, [f"c{i}" for i in range(10)], dataset="cifar10"
    )
    save_weights(path, model.state_dict(), meta)
    return model


@pytest.fixture
def fake_entry(tmp_path, monkeypatch) -> tuple[shipped.PretrainedWeights, torch.nn.Module]:
    """A shipped-weights entry for a file written here, as the package's table would hold it."""
    model = _weights_file(tmp_path / "resnet20_cifar10.safetensors")
    digest = hashlib.sha256((tmp_path / "resnet20_cifar10.safetensors").read_bytes()).hexdigest()
    entry = shipped.PretrainedWeights(
        model="resnet20",
        tag="cifar10",
        file="resnet20_cifar10.safetensors",
        sha256=digest,
        dataset="cifar10",
        recipe="fast-cifar",
        seed=0,
        commit="0" * 7,
        test_accuracy=0.1,
        val_split=5000,
        recipe_mean=0.1,
        recipe_std=0.0,
        recipe_seeds=1,
        machine="test",
        wall_minutes=0.0,
        command="made by a test",
    )
    monkeypatch.setattr(shipped, "HERE", tmp_path)
    monkeypatch.setattr(shipped, "WEIGHTS", (entry,))
    return entry, model


def test_weights_file_loads_exactly_and_a_new_class_count_gets_a_fresh_head(tmp_path) -> None:
    original = _weights_file(tmp_path / "w.safetensors")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    loaded = resnets.create_model("resnet20", weights=tmp_path / "w.safetensors").eval()
    torch.testing.assert_close(loaded(x), original(x), rtol=0, atol=0)
    tuned = resnets.create_model("resnet20", num_classes=3, weights=str(tmp_path / "w.safetensors")).eval()
    assert tuned.fc.out_features == 3
    torch.testing.assert_close(tuned.forward_features(x), original.forward_features(x), rtol=0, atol=0)


def test_weights_refuse_another_model_other_channels_and_architecture_overrides(tmp_path) -> None:
    _weights_file(tmp_path / "w.safetensors")
    with pytest.raises(ConfigError, match="holds a resnet20, not a plain20"):
        resnets.create_model("plain20", weights=tmp_path / "w.safetensors")
    with pytest.raises(ConfigError, match="3-channel"):
        resnets.create_model("resnet20", in_chans=1, weights=tmp_path / "w.safetensors")
    with pytest.raises(ConfigError, match="change the architecture"):
        resnets.create_model("resnet20", weights=tmp_path / "w.safetensors", skip="none")


def test_pretrained_without_shipped_weights_says_which_have_them(monkeypatch) -> None:
    monkeypatch.setattr(shipped, "WEIGHTS", ())
    with pytest.raises(ConfigError, match="no shipped weights"):
        resnets.create_model("resnet110", pretrained=True)
    with pytest.raises(ConfigError, match="resnets ships: none yet"):
        resnets.create_model("resnet110", weights="cifar10")


def test_shipped_weights_load_by_tag_name_and_pretrained(fake_entry) -> None:
    _, original = fake_entry
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    for kwargs in ({"pretrained": True}, {"weights": "cifar10"}, {"weights": "resnet20.cifar10"}):
        model = resnets.create_model("resnet20", **kwargs).eval()
        torch.testing.assert_close(model(x), original(x), rtol=0, atol=0)
        assert model.meta.mean == CIFAR_MEAN
    with pytest.raises(ConfigError, match="are for resnet20, not resnet56"):
        resnets.create_model("resnet56", weights="resnet20.cifar10")
    assert resnets.model_info("resnet20").weights == ("cifar10",)


def test_a_damaged_shipped_file_is_refused_by_its_hash(fake_entry) -> None:
    entry, _ = fake_entry
    path = shipped.HERE / entry.file
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit of one weight: safetensors would load it without complaint
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"SHA-256.*reinstall"):
        resnets.create_model("resnet20", pretrained=True)


def test_cli_eval_predict_and_models_take_a_weights_name(fake_entry, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["models", "--pretrained"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[1].split()[0] == "resnet20" and "cifar10" in out[1]
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "red.png")
    assert main(["predict", "resnet20.cifar10", str(tmp_path / "red.png"), "--top-k", "1"]) == 0
    assert capsys.readouterr().out.splitlines()[1].strip().endswith(tuple(f"c{i}" for i in range(10)))


def test_torch_hub_load_gives_create_models_outputs(fake_entry, monkeypatch) -> None:
    monkeypatch.setitem(os.environ, "TORCH_HOME", str(shipped.HERE / "hub"))
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    hub_model = torch.hub.load(str(REPO), "resnet20", source="local", pretrained=True, trust_repo=True)
    torch.testing.assert_close(
        hub_model.eval()(x), resnets.create_model("resnet20", pretrained=True).eval()(x)
    )
    features = torch.hub.load(str(REPO), "resnet56", source="local", features_only=True, out_indices=(-1,))
    assert features.feature_info.channels() == [64]
    sys.modules.pop("hubconf", None)


@pytest.mark.parametrize("entry", shipped.WEIGHTS, ids=lambda e: e.name)
def test_each_shipped_file_matches_its_entry(entry: shipped.PretrainedWeights) -> None:
    """The real table: hash, metadata (model, CIFAR-10 classes and statistics) and the recorded output
    of a fixed input (tests/expect/weights/NAME.json, logits written when the file was added), so a
    retrained file cannot slip in unnoticed."""
    _, meta = load_weights(entry.path())
    assert meta is not None and meta.model == entry.model and meta.dataset == entry.dataset
    assert meta.input_size == list(entry.input_size)
    assert meta.mean == pytest.approx(list(entry.mean), abs=5e-4)
    assert meta.std == pytest.approx(list(entry.std), abs=5e-4)
    model = resnets.create_model(entry.model, weights=entry.name).eval()
    x = torch.randn(4, *entry.input_size, generator=torch.Generator().manual_seed(0))
    record = json.loads((REPO / "tests" / "expect" / "weights" / f"{entry.name}.json").read_text())
    expected = torch.tensor(record["logits"], dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-4)


def test_cli_eval_and_export_of_shipped_weights_write_to_the_working_directory(
    fake_entry, tmp_path, monkeypatch, capsys
) -> None:
    """The installed package is not the user's to write in: results land in the working directory."""
    from formats import write_cifar10

    write_cifar10(tmp_path / "data", "bin", per_file=4)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    before = sorted(p.name for p in shipped.HERE.iterdir())
    assert main(["eval", "resnet20.cifar10", "--data", "cifar10", "--data-dir", str(tmp_path / "data")]) == 0
    saved = json.loads((work / "resnet20.cifar10_eval_cifar10.json").read_text())
    assert saved["count"] == 4
    assert main(["export", "resnet20.cifar10", "--format", "torchscript"]) == 0
    assert (work / "resnet20.cifar10.torchscript.pt").is_file()
    assert sorted(p.name for p in shipped.HERE.iterdir()) == before
    capsys.readouterr()


DATA = REPO.parent / "shared" / "data"


@pytest.mark.slow
@pytest.mark.parametrize("entry", shipped.WEIGHTS, ids=lambda e: e.name)
def test_each_shipped_file_reaches_its_recorded_test_accuracy(entry: shipped.PretrainedWeights) -> None:
    """`resnets eval` on the official test set (where ../shared/data holds it), as the entry says; the
    tolerance covers another CPU's bf16 or fp32 kernels (a few images of 10,000)."""
    if not (DATA / "cifar-10-batches-bin").is_dir():
        pytest.skip(f"the official CIFAR-10 files are not at {DATA}")
    metrics = resnets.evaluate(entry.name, data_dir=str(DATA))
    assert metrics["count"] == 10_000
    assert metrics["accuracy"] == pytest.approx(entry.test_accuracy, abs=0.002)


def test_features_of_shipped_weights_are_the_pretrained_bodys(fake_entry) -> None:
    _, original = fake_entry
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    net = resnets.create_model("resnet20", pretrained=True, features_only=True, out_indices=(-1,)).eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x)[0], original.forward_features(x), rtol=0, atol=0)
