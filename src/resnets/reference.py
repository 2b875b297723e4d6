"""The seed's forward and backward propagation, written out in NumPy float64.

This is the independent check of everything else: no autograd, no torch, only the equations, and it
imports nothing of resnets (`resnets.analysis.experiments.skipnet_adapter` converts SkipNet weights).
Activations are rows (a batch of N row vectors), matrices are (out, in) as in torch.

Forward, for l = 1 … L (the seed's general form, every learned skip its own matrix):

    Z^l = Σ_{s ∈ M(l)} W^(s,l) a^s + b^l + Σ_{s ∈ I(l)} a^s          M(l) ∋ l-1: learned; I(l): identity
    a^l = g(Z^l)                                                       (plain / residual / learned / dense)
    a^l = T ⊙ g(Z^l) + (1 − T) ⊙ a^c,  T = σ(W_T a^(l-1) + b_T)        (gated, carrying a^c)

with logits = W_out a^L + b_out and the mean softmax cross-entropy as the loss.

Backward (the seed's rules): ∂L/∂a^s collects every path out of layer s, i.e. every later layer l
that reads a^s, through its matrix (W^(s,l)ᵀ δ^l), its identity skip (δ^l), or its carry
((1 − T) ⊙ ∂L/∂a^l); then δ^l = ∂L/∂a^l ⊙ g'(Z^l), and each learned matrix moves by
Δw^(s,l) = −η a^s·δ^l (ΔW = −η δᵀ a over the batch). Identity skips have no weights and do not move.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

Array = np.ndarray


def _act(name: str, z: Array) -> Array:
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "tanh":
        return np.tanh(z)
    if name == "sigmoid":
        return _sigmoid(z)
    if name == "identity":
        return z
    raise ValueError(f"unknown activation {name!r}")


def _act_grad(name: str, z: Array) -> Array:
    """g'(Z) elementwise."""
    if name == "relu":
        return (z > 0).astype(z.dtype)
    if name == "tanh":
        return 1.0 - np.tanh(z) ** 2
    if name == "sigmoid":
        s = _sigmoid(z)
        return s * (1.0 - s)
    if name == "identity":
        return np.ones_like(z)
    raise ValueError(f"unknown activation {name!r}")


def _sigmoid(z: Array) -> Array:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free logistic


@dataclass
class RefLayer:
    """Layer l: learned matrices W^(s,l) by source s (always including l-1), b^l, identity sources,
    and for a highway layer the gate (W_T, b_T) and the carried source."""

    weights: dict[int, Array]
    bias: Array
    identity: list[int] = field(default_factory=list)
    gate_weight: Array | None = None
    gate_bias: Array | None = None
    carry: int | None = None


@dataclass
class RefNet:
    """A fully connected net with skips, evaluated and differentiated by hand."""

    layers: list[RefLayer]
    head_weight: Array
    head_bias: Array
    activation: str = "relu"

    def forward(self, x: Array) -> dict[str, list[Array]]:
        """Forward pass; returns every a^l, Z^l, and for gated layers g(Z^l) and T."""
        acts, zs, hs, ts = [np.asarray(x, dtype=np.float64)], [], [], []
        for l, layer in enumerate(self.layers, start=1):
            z = layer.bias + sum(acts[s] @ w.T for s, w in layer.weights.items())
            z = z + sum((acts[s] for s in layer.identity), np.zeros_like(z))
            h = _act(self.activation, z)
            if layer.carry is None:
                t, a = None, h
            else:
                t = _sigmoid(acts[l - 1] @ layer.gate_weight.T + layer.gate_bias)
                a = t * h + (1.0 - t) * acts[layer.carry]
            zs.append(z)
            hs.append(h)
            ts.append(t)
            acts.append(a)
        logits = acts[-1] @ self.head_weight.T + self.head_bias
        return {"a": acts, "z": zs, "h": hs, "t": ts, "logits": [logits]}

    def loss(self, x: Array, y: Array) -> float:
        """Mean softmax cross-entropy of integer labels `y`."""
        logits = self.forward(x)["logits"][0]
        return float(np.mean(_logsumexp(logits) - logits[np.arange(len(y)), y]))

    def gradients(self, x: Array, y: Array) -> dict[str, Array]:
        """∂L/∂(every learned parameter) by the seed's backward rules, keyed as in `parameters()`."""
        cache = self.forward(x)
        acts, zs, hs, ts = cache["a"], cache["z"], cache["h"], cache["t"]
        logits = cache["logits"][0]
        n = len(y)
        probs = np.exp(logits - _logsumexp(logits)[:, None])
        delta_out = probs
        delta_out[np.arange(n), y] -= 1.0
        delta_out /= n  # ∂L/∂logits for the mean loss

        grads: dict[str, Array] = {"head.weight": delta_out.T @ acts[-1], "head.bias": delta_out.sum(0)}
        # ∂L/∂a^s, filled in by every later layer that reads a^s (all paths), top-down.
        d_act = [np.zeros_like(a) for a in acts]
        d_act[-1] += delta_out @ self.head_weight
        for l in range(len(self.layers), 0, -1):
            layer = self.layers[l - 1]
            da = d_act[l]
            if layer.carry is None:
                delta = da * _act_grad(self.activation, zs[l - 1])
            else:
                t, h, c = ts[l - 1], hs[l - 1], acts[layer.carry]
                delta = da * t * _act_grad(self.activation, zs[l - 1])  # through the transform H
                delta_t = da * (h - c) * t * (1.0 - t)  # through the gate T
                d_act[layer.carry] += da * (1.0 - t)  # through the carry
                d_act[l - 1] += delta_t @ layer.gate_weight
                grads[f"{l}.gate_weight"] = delta_t.T @ acts[l - 1]
                grads[f"{l}.gate_bias"] = delta_t.sum(0)
            for s, w in layer.weights.items():
                grads[f"{l}.W{s}"] = delta.T @ acts[s]  # Δw^(s,l) = −η a^s·δ^l
                d_act[s] += delta @ w
            for s in layer.identity:  # a fixed skip passes δ^l down unchanged
                d_act[s] += delta
            grads[f"{l}.b"] = delta.sum(0)
        return grads

    def parameters(self) -> dict[str, Array]:
        """Every learned array by name: '{l}.W{s}' is W^(s,l), '{l}.b' is b^l, plus gates and head."""
        params: dict[str, Array] = {"head.weight": self.head_weight, "head.bias": self.head_bias}
        for l, layer in enumerate(self.layers, start=1):
            for s, w in layer.weights.items():
                params[f"{l}.W{s}"] = w
            params[f"{l}.b"] = layer.bias
            if layer.carry is not None:
                params[f"{l}.gate_weight"] = layer.gate_weight
                params[f"{l}.gate_bias"] = layer.gate_bias
        return params

    def sgd_step(self, x: Array, y: Array, lr: float) -> RefNet:
        """A new net after one plain SGD step w ← w − η ∂L/∂w on the batch (x, y)."""
        grads = self.gradients(x, y)
        new_layers = []
        for l, layer in enumerate(self.layers, start=1):
            new_layers.append(
                replace(
                    layer,
                    weights={s: w - lr * grads[f"{l}.W{s}"] for s, w in layer.weights.items()},
                    bias=layer.bias - lr * grads[f"{l}.b"],
                    identity=list(layer.identity),
                    gate_weight=None
                    if layer.carry is None
                    else layer.gate_weight - lr * grads[f"{l}.gate_weight"],
                    gate_bias=None if layer.carry is None else layer.gate_bias - lr * grads[f"{l}.gate_bias"],
                )
            )
        return RefNet(
            new_layers,
            self.head_weight - lr * grads["head.weight"],
            self.head_bias - lr * grads["head.bias"],
            self.activation,
        )


def _logsumexp(z: Array) -> Array:
    m = z.max(axis=1)
    return m + np.log(np.exp(z - m[:, None]).sum(axis=1))


def max_relative_error(a: Mapping[str, Array], b: Mapping[str, Array]) -> dict[str, float]:
    """Per-key max |a − b| / max(|b|, tiny): how far two sets of parameters are apart."""
    if set(a) != set(b):
        raise KeyError(f"keys differ: {sorted(set(a) ^ set(b))}")
    return {k: float(np.max(np.abs(a[k] - b[k])) / max(float(np.max(np.abs(b[k]))), 1e-300)) for k in a}
