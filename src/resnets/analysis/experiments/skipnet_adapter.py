"""SkipNet weights to and from the NumPy reference (resnets.reference), for the backprop experiment and
its tests: the reference itself knows nothing of resnets' models."""

from __future__ import annotations

import numpy as np

from resnets.models.skipnet import LayerSpec, SkipNet
from resnets.reference import Array, RefLayer, RefNet

# Conversion to and from SkipNet parameters.
# The wiring is read from the layer specs the net was built from (not from the built modules), so a
# mistake in how SkipNet wires its layers shows up as a disagreement with the reference.


def _sources(spec: LayerSpec, kind: str) -> list[int]:
    return [s.source for s in spec.skips if s.kind == kind]


def from_skipnet(model: SkipNet) -> RefNet:
    """A RefNet with the weights of a SkipNet, the merged (dense) matrix split into the seed's
    separate W^(l-k,l): columns [a^(l-1); dense sources in the order the spec lists them]."""
    state = {k: v.detach().cpu().double().numpy().copy() for k, v in model.state_dict().items()}
    widths = [model.in_features] + [spec.width for spec in model.specs]
    layers = []
    for l, spec in enumerate(model.specs, start=1):
        p = f"layers.{l - 1}."
        sources = [l - 1, *_sources(spec, "dense")]
        blocks = np.split(state[p + "linear.weight"], np.cumsum([widths[s] for s in sources])[:-1], axis=1)
        weights = dict(zip(sources, blocks, strict=True))
        for s in _sources(spec, "projection"):
            weights[s] = state[f"{p}projections.{s}.weight"]
        carry = _sources(spec, "gated")
        layers.append(
            RefLayer(
                weights=weights,
                bias=state[p + "linear.bias"],
                identity=_sources(spec, "identity"),
                gate_weight=state[p + "gate.proj.weight"] if carry else None,
                gate_bias=state[p + "gate.proj.bias"] if carry else None,
                carry=carry[0] if carry else None,
            )
        )
    return RefNet(layers, state["head.weight"], state["head.bias"], model.activation)


def to_skipnet_state(ref: RefNet, model: SkipNet) -> dict[str, Array]:
    """The RefNet's weights under the SkipNet's state_dict names (dense matrices merged back)."""
    out: dict[str, Array] = {"head.weight": ref.head_weight, "head.bias": ref.head_bias}
    for l, (rl, spec) in enumerate(zip(ref.layers, model.specs, strict=True), start=1):
        p = f"layers.{l - 1}."
        merged = [rl.weights[s] for s in [l - 1, *_sources(spec, "dense")]]
        out[p + "linear.weight"] = np.concatenate(merged, axis=1)
        out[p + "linear.bias"] = rl.bias
        for s in _sources(spec, "projection"):
            out[f"{p}projections.{s}.weight"] = rl.weights[s]
        if rl.carry is not None:
            out[p + "gate.proj.weight"] = rl.gate_weight
            out[p + "gate.proj.bias"] = rl.gate_bias
    return out
