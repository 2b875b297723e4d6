"""Recorded outputs of every registered model (torchvision's test/expect idea).

Each model is built from seed 0, its batch-norm statistics are taken from one fixed calibration batch
(a freshly initialised residual net in eval mode multiplies its activations at every block: ResNet-1202
gives NaN, DenseNet-BC-190 ~1e11, which would pin nothing), and its logits for a fixed input are
compared with tests/expect/<name>.json.

The forward runs in float64. In float32 the deep nets at initialisation are chaotic: the same plain110
on 1 thread without oneDNN differs from 2 threads with it by 11% of the logits' scale (ResNet-152 0.1%,
PreAct-1001 0.2%), so a float32 recording would pin the machine as much as the model. In float64 the
same change is below 1e-9, and the tolerance below can be tight. A change to initialisation, wiring,
layer order or a default moves them. If the change is meant, record them again and review the diff:

    .venv/bin/pytest tests/test_expect.py --regen-expect
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import resnets
from resnets.registry import get_spec

EXPECT = Path(__file__).resolve().parent / "expect"
BATCH = 2
IMAGENET_SIZE = (3, 64, 64)  # every ImageNet-family model accepts it (stride 32 leaves 2×2 maps)
FULL_LIMIT = 2 * 1000  # up to this many logits are stored in full, more to 10 significant digits
REGEN_HINT = "if the change is meant, run `.venv/bin/pytest tests/test_expect.py --regen-expect` and review"

# More than ~1 s each on 2 CPU cores (build, calibration and forward; see --durations).
SLOW = {"resnet1202", "preact_resnet1001", "wrn28_10", "wide_resnet50_2", "densenet_bc190_k40"}


def params(names: list[str], slow: set[str]) -> list:
    return [pytest.param(n, marks=pytest.mark.slow) if n in slow else n for n in names]


def input_shape(name: str) -> tuple[int, ...]:
    spec = get_spec(name)
    return (BATCH, *(IMAGENET_SIZE if spec.family == "imagenet" else spec.input_size))


def fixed_input(name: str, seed: int = 0, batch: int = BATCH) -> torch.Tensor:
    shape = (batch, *input_shape(name)[1:])
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def reference_model(name: str) -> nn.Module:
    """`name` built from seed 0, in float64 and eval mode, with the batch-norm statistics of one fixed
    batch of 4."""
    torch.manual_seed(0)
    model = resnets.create_model(name).double()
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average: after one batch, exactly that batch's statistics
    if norms:
        model.train()
        with torch.no_grad():
            model(fixed_input(name, seed=1, batch=4))
    return model.eval()


def logits(model: nn.Module, name: str) -> torch.Tensor:
    with torch.no_grad():
        return model(fixed_input(name))


def _record(path: Path, name: str, out: torch.Tensor) -> None:
    values = out.tolist()
    if out.numel() > FULL_LIMIT:
        values = [[float(f"{v:.10g}") for v in row] for row in values]
    record = {
        "model": name,
        "input_shape": list(input_shape(name)),
        "input": "torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)",
        "dtype": "float64",
        "batch_norm": "statistics of one batch of 4 from seed 1, as reference_model() in test_expect.py",
        "torch": torch.__version__,
        "logits": values,
    }
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(record) + "\n")


@pytest.mark.parametrize("name", params(resnets.list_models(), SLOW))
def test_outputs_match_the_recorded_ones(name: str, regen_expect: bool) -> None:
    out = logits(reference_model(name), name)
    assert torch.isfinite(out).all(), f"{name} gives non-finite logits"
    path = EXPECT / f"{name}.json"
    if regen_expect:
        _record(path, name, out)
        return
    if not path.exists():
        pytest.fail(f"no recorded outputs for {name} at {path}: {REGEN_HINT}")
    record = json.loads(path.read_text())
    assert record["input_shape"] == list(input_shape(name)), f"input shape changed; {REGEN_HINT}"
    expected = torch.tensor(record["logits"], dtype=torch.float64)
    scale = max(1.0, expected.abs().max().item())
    torch.testing.assert_close(
        out,
        expected,
        rtol=1e-7,
        atol=1e-7 * scale,
        msg=lambda m: (
            f"{name}: outputs differ from {path.name} (recorded with torch {record['torch']}).\n"
            f"{m}\n{REGEN_HINT}"
        ),
    )


def test_every_recording_belongs_to_a_registered_model() -> None:
    stale = sorted({p.stem for p in EXPECT.glob("*.json")} - set(resnets.list_models()))
    assert stale == [], f"recordings for unregistered models {stale}: delete them from {EXPECT}"
