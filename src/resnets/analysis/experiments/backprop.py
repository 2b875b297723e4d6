"""backprop: the seed's back-propagation rules, written out in NumPy float64 (`resnets.reference`),
against PyTorch's autograd on trained `skipnet`s: one with the seed's identity skips, one with every
kind of skip (identity, learned projection, dense, highway gate).

For every learned matrix W^(s,l) the rules give ∂L/∂W^(s,l) = δ^lᵀ a^s with δ^l = ∂L/∂a^l ⊙ g'(Z^l),
where ∂L/∂a^s collects every path out of layer s (weights, identity skips, highway carries).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F

from resnets.analysis.experiments.common import Settings, probe_batch
from resnets.analysis.experiments.registry import experiment
from resnets.analysis.experiments.skipnet_adapter import from_skipnet
from resnets.analysis.experiments.sweep import Net, Sweep
from resnets.analysis.report import Report, environment, markdown_table
from resnets.reference import max_relative_error

# A net with every kind of skip: a^3 carries a^1; a^4 has a learned W^(2,4); a^5 reads [a^4; a^3; a^2]
# through one merged matrix (dense); a^6 is a highway layer carrying a^5.
MIXED_LAYERS = [
    {"width": 48},
    {"width": 48},
    {"width": 48, "skips": [[1, "identity"]]},
    {"width": 32, "skips": [[2, "projection"]]},
    {"width": 32, "skips": [[3, "dense"], [2, "dense"]]},
    {"width": 32, "skips": [[4, "gated"]]},
]
NETS = {"seed identity skips": {}, "every skip kind": {"layers": MIXED_LAYERS}}
TOLERANCE = 1e-10


def autograd_gradients(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """∂L/∂(every parameter) by autograd in float64, renamed and split as the reference names them."""
    net = copy.deepcopy(model).double()
    net.zero_grad()
    F.cross_entropy(net(x.double()), y).backward()
    # Load the gradients in place of the weights: from_skipnet then splits merged matrices the same way.
    grads = copy.deepcopy(net)
    grads.load_state_dict({n: p.grad for n, p in net.named_parameters()}, strict=True)
    return from_skipnet(grads).parameters()


def reference_gradients(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """∂L/∂(every parameter) by the seed's rules (`resnets.reference`, NumPy float64)."""
    return from_skipnet(model).gradients(x.flatten(1).double().numpy(), y.numpy())


def kind_of(key: str, model: torch.nn.Module) -> str:
    """What a reference parameter key is: the layer's own W^(l-1,l), a skip matrix, a gate, a bias."""
    if key.startswith("head"):
        return "classifier"
    layer, name = key.split(".", 1)
    l = int(layer)
    if name.startswith("W"):
        source = int(name[1:])
        if source == l - 1:
            return f"W^({source},{l}) own"
        kind = next(s.kind for s in model.specs[l - 1].skips if s.source == source)
        return f"W^({source},{l}) {kind} skip"
    return {"b": f"b^{l}", "gate_weight": f"W_T^{l} gate", "gate_bias": f"b_T^{l} gate"}[name]


@experiment("backprop", "the seed's back-propagation rules against autograd on a trained skipnet")
def run(settings: Settings) -> Report:
    """Train each net briefly, then compare the reference gradients with autograd's, one by one."""
    data = settings.data or ("digits" if settings.quick else "mnist")
    epochs = settings.pick("budget", 2, 10)
    seed = (settings.seeds or [0])[0]
    sweep = Sweep(
        settings,
        [Net(label, "skipnet", overrides={"model": {"kwargs": kwargs}}) for label, kwargs in NETS.items()],
        [seed],
        recipe="quick",
        data=data,
        epochs=epochs,
        overrides={"run": {"precision": "fp32"}},  # the reference computes in float64: no bf16 rounding
        run_name="{key}",
    )
    x, y = probe_batch(data, settings.data_dir, 64, seed=seed)
    rows, results = [], {}
    for label, (trained,) in sweep.train_all().items():
        model = trained.result.model.cpu().eval()
        errors = max_relative_error(autograd_gradients(model, x, y), reference_gradients(model, x, y))
        results[label] = {"errors": errors, "test_accuracy": trained.result.summary["test_accuracy"]}
        rows += [[label, key, kind_of(key, model), f"{err:.1e}"] for key, err in errors.items()]
    worst = max(max(r["errors"].values()) for r in results.values())
    agree = worst < TOLERANCE
    verdict = (
        f"The seed's update rules agree with autograd on every parameter of both trained nets: the largest "
        f"relative difference is {worst:.1e} (float64), below {TOLERANCE:.0e}."
        if agree
        else f"The seed's rules and autograd disagree: the largest relative difference is {worst:.1e}."
    )
    return Report(
        name="backprop",
        title="The seed's back-propagation rules against autograd",
        command=settings.command,
        settings={"data": data, "epochs": epochs, "seed": seed, "nets": list(NETS), "batch": 64},
        results={"max_relative_error": worst, "agree": agree, "nets": results},
        table=markdown_table(["net", "parameter", "what", "max relative difference"], rows, "llll"),
        verdict=verdict,
        environment=environment(settings.torch_device, sweep.runs),
        notes=[
            "Gradients of the mean cross-entropy on 64 training images, in float64, after training the "
            "net for the stated epochs with the `quick` recipe (the same training code as every run).",
            "Identity skips have no weights; their rule (δ passes down unchanged) is checked through "
            "the gradients of every matrix below them.",
        ],
    )
