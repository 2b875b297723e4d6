"""The inference path: folded batch norms compute the same function; eval and predict honour the levers."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import resnets
from resnets.cli import main
from resnets.deploy.inference import InferenceOptions, fold_batchnorm, predict, prepare_inference
from resnets.registry import get_spec


def _batch_norms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _randomise_statistics(model: nn.Module) -> None:
    """Batch norms with scales, shifts and running statistics far from their initial 1 and 0."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)
                m.running_mean.normal_(0.0, 0.2)
                m.running_var.uniform_(0.5, 2.0)


# Only a batch norm right after a convolution folds. Post-activation nets have nothing else, so none is
# left. A pre-activation bottleneck block keeps bn1 (before its first conv) and folds the other two:
# preact_resnet110 (basic blocks) keeps 54 bn1 + the final norm = 55. DenseNet layers are BN-ReLU-conv,
# so densenet40_k12 keeps all 39; densenet121 folds its stem norm and each layer's norm2 (after the 1×1
# bottleneck conv): 121 − 1 − 58 = 62.
@pytest.mark.parametrize(
    ("name", "left"),
    [
        ("resnet20", 0),
        ("plain20", 0),
        ("highway20", 0),
        ("resnet18", 0),
        ("resnext50_32x4d", 0),
        ("preact_resnet110", 55),
        ("densenet40_k12", 39),
        ("densenet121", 62),
    ],
)
def test_folding_batch_norm_keeps_the_function_in_float64(name: str, left: int) -> None:
    model = resnets.create_model(name)
    _randomise_statistics(model)
    model = model.double().eval()
    c, h, _ = get_spec(name).input_size
    x = torch.randn(2, c, min(h, 64), min(h, 64), dtype=torch.float64)
    with torch.no_grad():
        expected = model(x)
        folded = fold_batchnorm(model)
        got = folded(x)
        again = model(x)
    assert _batch_norms(folded) == left
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(again, expected, rtol=0, atol=0)  # the original is untouched


def test_folding_needs_eval_mode_and_leaves_nets_without_batch_norm() -> None:
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(resnets.create_model("resnet20"))
    mlp = resnets.create_model("highway_mlp").eval()
    assert fold_batchnorm(mlp) is mlp


def test_prepare_inference_picks_precision_and_memory_format() -> None:
    cpu = torch.device("cpu")
    net, precision = prepare_inference(
        resnets.create_model("resnet20"), cpu, InferenceOptions(precision="fp32")
    )
    assert precision == "fp32" and not net.training and _batch_norms(net) == 0
    conv = next(m for m in net.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    _, precision = prepare_inference(
        resnets.create_model("highway_mlp"), cpu, InferenceOptions(), family="mlp"
    )
    assert precision == "fp32"  # auto keeps fully connected nets in fp32 on the CPU


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> tuple:
    run = tmp_path_factory.mktemp("inference") / "run"
    result = resnets.train({"run": {"epochs": 1, "max_steps": 6, "out": str(run), "quiet": True}})
    return run, result


def test_eval_fused_and_unfused_agree_in_fp32(digits_run) -> None:
    run, _ = digits_run
    plain = resnets.evaluate(run, options=InferenceOptions(precision="fp32", fuse=False, channels_last=False))
    fused = resnets.evaluate(run, options=InferenceOptions(precision="fp32"))
    assert plain["precision"] == fused["precision"] == "fp32"
    assert fused["loss"] == pytest.approx(plain["loss"], rel=1e-5)
    assert fused["accuracy"] == pytest.approx(plain["accuracy"], abs=1 / plain["count"])
    np.testing.assert_allclose(fused["confusion_matrix"], plain["confusion_matrix"], atol=1)


def test_predict_fused_matches_unfused_and_cli_flags(digits_run, tmp_path, capsys) -> None:
    run, _ = digits_run
    image = tmp_path / "digit.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8), dtype=np.uint8)).save(image)
    a = predict(run, [image], top_k=3)[0]
    b = predict(run, [image], top_k=3, options=InferenceOptions(precision="fp32", fuse=False))[0]
    assert [name for name, _ in a.top] == [name for name, _ in b.top]
    np.testing.assert_allclose([p for _, p in a.top], [p for _, p in b.top], rtol=1e-5)
    assert main(["eval", str(run), "--precision", "fp32", "--no-fuse", "--no-channels-last"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[: out.rindex("}") + 1])["precision"] == "fp32"


@pytest.mark.slow
def test_compiled_frozen_inference_matches_eager() -> None:
    model = resnets.create_model("resnet20")
    _randomise_statistics(model)
    model.eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.inference_mode():
        expected = model(x)
        net, _ = prepare_inference(
            model, torch.device("cpu"), InferenceOptions(precision="fp32", compile=True)
        )
        got = net(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
