"""Every conv model traces with torch.fx, so batch-norm folding for inference really happens.

`fold_batchnorm` returns the model unchanged when fx cannot trace it, silently: a model that stops
tracing would keep working, only slower. These tests fail instead.
"""

from __future__ import annotations

import pytest
import torch
from torch import fx, nn

import resnets
from resnets.registry import get_spec
from test_expect import SLOW, fixed_input, params, reference_model

try:
    from resnets.deploy.inference import fold_batchnorm
except ImportError:  # before the move to resnets.deploy
    from resnets.inference import fold_batchnorm

CONV_MODELS = [n for n in resnets.list_models() if get_spec(n).family != "mlp"]
# Conv nets whose every batch norm directly follows a convolution: folding removes all of them.
POST_ACTIVATION = {n for n in CONV_MODELS if not n.startswith(("preact_", "densenet", "wrn"))}


def _norms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def _conv_then_norm(gm: fx.GraphModule) -> list[str]:
    """Batch norms in the graph whose input is the output of a convolution."""
    modules = dict(gm.named_modules())
    found = []
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(modules[node.target], nn.BatchNorm2d):
            source = node.args[0]
            if source.op == "call_module" and isinstance(modules[source.target], nn.Conv2d):
                found.append(f"{source.target} -> {node.target}")
    return found


def test_the_conv_models_are_the_registered_models_with_conv_layers() -> None:
    with torch.device("meta"):
        has_conv = [
            n
            for n in resnets.list_models()
            if any(isinstance(m, nn.Conv2d) for m in resnets.create_model(n).modules())
        ]
    assert has_conv == CONV_MODELS


@pytest.mark.parametrize("name", params(CONV_MODELS, SLOW))
def test_traces_and_folds_every_conv_batch_norm_pair_without_changing_outputs(name: str) -> None:
    model = reference_model(name)  # float64, eval, batch-norm statistics of a real batch
    gm = fx.symbolic_trace(model)
    # DenseNet-40 (no bottleneck) has only norm → ReLU → conv layers and a stem without a norm.
    assert bool(_conv_then_norm(gm)) == (name != "densenet40_k12")
    before = _norms(model)
    folded = fold_batchnorm(model)
    assert isinstance(folded, fx.GraphModule), f"{name}: fold_batchnorm fell back to the unfolded model"
    assert _conv_then_norm(folded) == []
    left = _norms(folded)
    if name in POST_ACTIVATION:
        assert left == 0
    elif name != "densenet40_k12":  # the norms that follow an addition, a concatenation or a pool stay
        assert 0 < left < before
    x = fixed_input(name)
    with torch.no_grad():
        expected, out = model(x), folded(x)
    scale = max(1.0, expected.abs().max().item())
    # float64: folding changes only rounding, ~1e-12 here; in float32 deep nets amplify it to 1e-1.
    torch.testing.assert_close(out, expected, rtol=1e-7, atol=1e-7 * scale)
    assert _norms(model) == before  # the original keeps its norms (the fold works on a copy)
