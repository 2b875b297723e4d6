"""Export to ONNX / TorchScript / torch.export: parity with the eager model, metadata, predict on ONNX."""

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import resnets
from resnets import export as export_module
from resnets.cli import main
from resnets.deploy.export import ExportError, export_model
from resnets.deploy.inference import InferenceOptions, predict
from resnets.errors import CheckpointError, ConfigError
from resnets.io.weights import ModelMeta, save_weights

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

MEAN, STD = [0.45, 0.5, 0.55], [0.2, 0.25, 0.3]
CLASSES = [f"digit-{i}" for i in range(10)]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    """A resnet20 with batch norms far from their initial state, saved as resnets saves a trained model."""
    torch.manual_seed(0)
    model = resnets.create_model("resnet20").eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)
                m.running_mean.normal_(0.0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    meta = ModelMeta("resnet20", 10, 3, [3, 32, 32], MEAN, STD, CLASSES, dataset="cifar10")
    path = tmp_path_factory.mktemp("export") / "run" / "model.safetensors"
    save_weights(path, model.state_dict(), meta)
    return path


@pytest.fixture(scope="module")
def onnx_file(model_file: Path) -> Path:
    return export_model(model_file.parent, "onnx").path


def _eager(model_file: Path, x: torch.Tensor) -> np.ndarray:
    model = resnets.load_model(model_file)  # unfused, fp32: the reference every format is held to
    with torch.no_grad():
        return model(x).numpy()


def _images(folder: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    rgb, grey = folder / "rgb.png", folder / "grey.png"
    Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(rgb)  # resized to 32x32
    Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8), mode="L").save(grey)  # made RGB
    return [rgb, grey]


@pytest.mark.slow
def test_onnx_export_matches_eager_with_metadata_and_a_dynamic_batch(model_file, onnx_file) -> None:
    assert onnx_file == model_file.with_name("model.onnx")
    proto = onnx.load(str(onnx_file))
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["model"] == "resnet20" and props["layout"] == "NCHW" and props["colour"] == "RGB"
    assert json.loads(props["input_size"]) == [3, 32, 32]
    assert json.loads(props["mean"]) == MEAN and json.loads(props["std"]) == STD
    assert json.loads(props["classes"]) == CLASSES
    assert json.loads(props["resnets_meta"])["dataset"] == "cifar10"
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 32, 32]
    # No batch norm is left: folded by resnets (and the exporter's optimizer would fold conv→BN pairs too).
    assert not any(n.op_type == "BatchNormalization" for n in proto.graph.node)
    assert sum(n.op_type == "Conv" for n in proto.graph.node) == 19

    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    for n in (1, 5):  # 5: a batch size neither the export nor its own parity check used
        x = torch.randn(n, 3, 32, 32)
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        expected = _eager(model_file, x)
        assert np.abs(expected).max() > 0.1
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


@pytest.mark.slow
def test_cli_export_onnx_unfused_prints_the_parity_diff(model_file, tmp_path, capsys) -> None:
    out = tmp_path / "unfused.onnx"
    assert main(["export", str(model_file), "--format", "onnx", "--no-fuse", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "batch norms kept" in printed
    diff = float(re.search(r"max \|diff\| (\S+)", printed).group(1))
    assert 0 <= diff < 1e-4
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = torch.randn(2, 3, 32, 32)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, _eager(model_file, x), rtol=0, atol=1e-4)

    # An opset the exporter cannot convert down to is refused, not silently replaced by another one.
    old = tmp_path / "old.onnx"
    assert main(["export", str(model_file), "--format", "onnx", "--opset", "13", "--out", str(old)]) == 2
    assert "could not write opset 13" in capsys.readouterr().err and not old.exists()


@pytest.mark.parametrize("format", ["torchscript", "exported-program"])
def test_torch_formats_round_trip_weights_and_metadata(model_file, tmp_path, format: str) -> None:
    out = tmp_path / ("model.torchscript.pt" if format == "torchscript" else "model.pt2")
    result = export_model(model_file, format, out)
    assert result.path == out and out.is_file() and result.fused
    assert 0 <= result.max_abs_diff < 1e-4 and result.batch_sizes == (1, 3)
    extra = {"resnets.json": ""}
    if format == "torchscript":
        with pytest.warns(FutureWarning):  # PyTorch deprecates TorchScript; loading it still works
            run = torch.jit.load(str(out), _extra_files=extra)
    else:
        run = torch.export.load(str(out), extra_files=extra).module()
    metadata = json.loads(extra["resnets.json"])
    assert metadata["model"] == "resnet20" and json.loads(metadata["classes"]) == CLASSES
    assert "[0, 1]" in metadata["preprocessing"] and metadata["layout"] == "NCHW"
    assert json.loads(metadata["mean"]) == MEAN and json.loads(metadata["std"]) == STD
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        got = run(x).numpy()
    np.testing.assert_allclose(got, _eager(model_file, x), rtol=0, atol=1e-4)


def test_export_refuses_a_file_that_does_not_match(model_file, tmp_path, monkeypatch) -> None:
    out = tmp_path / "model.torchscript.pt"
    out.write_bytes(b"the previous export")
    real = export_module._LOADERS["torchscript"]

    def off_by_a_little(path):
        run, metadata = real(path)
        return (lambda x: run(x) + 0.01), metadata

    monkeypatch.setitem(export_module._LOADERS, "torchscript", off_by_a_little)
    with pytest.raises(ExportError, match=r"differs from the PyTorch fp32 model by up to 0\.01"):
        export_model(model_file, "torchscript", out)
    assert out.read_bytes() == b"the previous export"  # not replaced
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary left behind


def test_export_rejects_bad_arguments_and_reports_exporter_failures(
    model_file, tmp_path, monkeypatch
) -> None:
    with pytest.raises(ConfigError, match="onnx, torchscript, exported-program"):
        export_model(model_file, "tflite")
    with pytest.raises(ConfigError, match="ONNX only"):
        export_model(model_file, "torchscript", opset=17)
    with pytest.raises(ConfigError, match=r"\.pt2"):
        export_model(model_file, "exported-program", tmp_path / "model.ep")
    with pytest.raises(CheckpointError, match="does not exist"):
        export_model(tmp_path / "nothing.safetensors", "onnx")

    def unsupported(*args):
        raise RuntimeError("unsupported operator aten::frobnicate\n(long traceback)")

    monkeypatch.setitem(export_module._WRITERS, "torchscript", unsupported)
    out = tmp_path / "model.torchscript.pt"
    with pytest.raises(
        ExportError, match=r"exporter failed on resnet20: unsupported operator aten::frobnicate\."
    ):
        export_model(model_file, "torchscript", out)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_predict_on_onnx_matches_predict_on_the_weights(model_file, onnx_file, tmp_path, capsys) -> None:
    images = _images(tmp_path)
    exact = InferenceOptions(precision="fp32", fuse=False, channels_last=False)
    want = predict(model_file, images, top_k=4, options=exact)
    got = predict(onnx_file, images, top_k=4)
    for g, w in zip(got, want, strict=True):
        assert g.file == w.file
        assert [c for c, _ in g.top] == [c for c, _ in w.top]
        np.testing.assert_allclose([p for _, p in g.top], [p for _, p in w.top], rtol=0, atol=1e-4)
    assert main(["predict", str(onnx_file), str(images[0]), "--top-k", "2"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == str(images[0]) and printed[1].endswith(want[0].top[0][0])


@pytest.mark.slow
def test_predict_explains_a_corrupt_or_foreign_onnx_file(onnx_file, tmp_path, capsys) -> None:
    image = _images(tmp_path)[0]
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(onnx_file.read_bytes()[: onnx_file.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"not a valid ONNX model.*export it again"):
        predict(broken, [image])
    assert main(["predict", str(broken), str(image)]) == 2
    assert "error:" in capsys.readouterr().err

    foreign = tmp_path / "foreign.onnx"
    proto = onnx.load(str(onnx_file))
    del proto.metadata_props[:]
    onnx.save(proto, str(foreign))
    with pytest.raises(CheckpointError, match="no resnets preprocessing metadata"):
        predict(foreign, [image])


_GOOD = ModelMeta("resnet20", 10, 3, [3, 32, 32], MEAN, STD, CLASSES)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("{not json", "Expecting property name"),
        ("[" * 100_000, "maximum recursion depth"),  # RecursionError before: escaped as a raw exception
        (json.dumps([1, 2]), "expected a JSON object"),
        (
            json.dumps({**json.loads(_GOOD.to_json()), "input_size": [3, 32]}),
            r"input_size must be \[in_chans",
        ),
        (json.dumps({**json.loads(_GOOD.to_json()), "classes": ["a"]}), "1 class names for 10 classes"),
        (json.dumps({**json.loads(_GOOD.to_json()), "std": [0.2, 0.2]}), "std needs 3 values"),
        (json.dumps({**json.loads(_GOOD.to_json()), "num_classes": "10"}), "num_classes must be int"),
        (json.dumps({"model": "resnet20"}), "missing 6 required positional arguments"),
    ],
)
def test_onnx_metadata_is_checked_as_a_weights_files_metadata(tmp_path, raw, reason) -> None:
    path = tmp_path / "model.onnx"
    with pytest.raises(CheckpointError, match=reason) as err:
        export_module._meta_from_metadata({"resnets_meta": raw}, path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: unreadable resnets metadata") and "export the model again" in msg
    assert export_module._meta_from_metadata({"resnets_meta": _GOOD.to_json()}, path) == _GOOD


def _altered(onnx_file: Path, path: Path, declared: int, extra_node: Any = None) -> Path:
    """The exported graph with its scores doubled ([N, 20]) and declared as [batch, `declared`]."""
    proto = onnx.load(str(onnx_file))
    logits = proto.graph.output[0].name
    proto.graph.node.append(onnx.helper.make_node("Concat", [logits, logits], ["wide"], axis=1))
    if extra_node is not None:
        proto.graph.node.append(extra_node)
    del proto.graph.output[:]
    proto.graph.output.append(
        onnx.helper.make_tensor_value_info("wide", onnx.TensorProto.FLOAT, ["batch", declared])
    )
    onnx.save(proto, str(path))
    return path


def test_predict_checks_an_onnx_graph_before_and_after_running_it(onnx_file, tmp_path, capsys) -> None:
    # Issue 13: outputs of the wrong shape ended in IndexError tracebacks, ORT errors were not wrapped.
    image = _images(tmp_path)[0]
    declared = _altered(onnx_file, tmp_path / "declared.onnx", 20)
    with pytest.raises(
        CheckpointError, match=r"declares outputs \[\['batch', 20\]\].*\[batch, 10\] class scores"
    ):
        predict(declared, [image])
    lying = _altered(onnx_file, tmp_path / "lying.onnx", 10)  # says 10, computes 20: ORT infers the 20
    with pytest.raises(CheckpointError, match=r"declares outputs \[\['batch', 20\]\]"):
        predict(lying, [image])
    bomb = onnx.helper.make_node("ConstantOfShape", ["batch_shape"], ["zeros"])
    proto = onnx.load(str(onnx_file))
    proto.graph.initializer.append(onnx.numpy_helper.from_array(np.array([2**20], np.int64), "batch_shape"))
    proto.graph.node.append(bomb)
    onnx.save(proto, str(tmp_path / "bomb.onnx"))
    with pytest.raises(CheckpointError, match="uses ConstantOfShape, which a resnets export never writes"):
        predict(tmp_path / "bomb.onnx", [image])
    assert main(["predict", str(lying), str(image)]) == 2
    assert "Traceback" not in capsys.readouterr().err
