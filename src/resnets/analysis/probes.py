"""Measurements inside a network: per-layer gradient norms, how the input gradients of nearby inputs
correlate (shattered gradients), what each skip block's branch and skip path carry, highway gate
values, lesions (a block replaced by its skip path at test time) and reorderings (blocks swapped).

Each probe works on any model built from `resnets.blocks` (conv nets) or `SkipNet` (fully connected),
so the plain, residual and highway twins are measured by the same code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from resnets.blocks import SkipBlock
from resnets.layers import Gate


def skip_blocks(model: nn.Module) -> list[tuple[str, SkipBlock]]:
    """The model's blocks in forward order (residual, plain or highway alike), with their names."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, SkipBlock)]


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The weights of the main path in depth order: the stem, every conv of every branch (or every
    layer's W^(l-1,l) in a SkipNet) and the classifier; shortcut projections and gates excluded."""
    return [
        (f"{name}.weight", m.weight)
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d | nn.Linear) and not _OFF_MAIN_PATH.intersection(name.split("."))
    ]


_OFF_MAIN_PATH = {"downsample", "gate", "projections"}


def gradient_norms(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """‖∂L/∂W‖ for every main-path weight (see `weight_layers`) after one forward and backward pass of
    the cross-entropy on a batch, in training mode (batch statistics), in float32."""
    was_training = model.training
    model.train()
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(images), labels).backward()
    norms = [float(w.grad.norm()) if w.grad is not None else 0.0 for _, w in weight_layers(model)]
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return norms


@dataclass
class BranchStats:
    """Running sums per block: mean per-sample ‖F(x)‖ and ‖S(x)‖ and the mean gate value T(x)."""

    names: list[str]
    branch: list[float] = field(default_factory=list)
    skip: list[float | None] = field(default_factory=list)
    gate: list[float | None] = field(default_factory=list)
    _sums: dict[int, list[torch.Tensor]] = field(default_factory=dict)
    _count: dict[int, int] = field(default_factory=dict)

    def ratios(self) -> list[float | None]:
        """‖F(x)‖ / ‖S(x)‖ per block (None for a plain block, which has no skip path)."""
        return [None if s is None else b / max(s, 1e-12) for b, s in zip(self.branch, self.skip, strict=True)]

    def _add(self, index: int, branch: torch.Tensor, carry: torch.Tensor | None, gate: torch.Tensor | None):
        def per_sample(t: torch.Tensor) -> torch.Tensor:
            return t.detach().float().flatten(1).norm(dim=1).sum()

        zero = branch.new_zeros((), dtype=torch.float32)
        values = [
            per_sample(branch),
            per_sample(carry) if carry is not None else zero - 1,
            gate.detach().float().mean(dim=tuple(range(1, gate.ndim))).sum()
            if gate is not None
            else zero - 1,
        ]
        if index in self._sums:
            self._sums[index] = [a + b for a, b in zip(self._sums[index], values, strict=True)]
        else:
            self._sums[index] = values
        self._count[index] = self._count.get(index, 0) + len(branch)

    def _finish(self) -> None:
        self.branch, self.skip, self.gate = [], [], []
        for i in range(len(self.names)):
            n = max(1, self._count.get(i, 0))
            b, s, g = (float(v) / n for v in self._sums.get(i, [torch.zeros(())] * 3))
            self.branch.append(b)
            self.skip.append(None if s < 0 else s)
            self.gate.append(None if g < 0 else g)


@contextlib.contextmanager
def record_branches(model: nn.Module) -> Iterator[BranchStats]:
    """Within the block, every forward pass adds each block's ‖F(x)‖, ‖S(x)‖ and mean T(x) to the
    returned stats (averaged over samples when the block exits; one host sync, at the end)."""
    blocks = skip_blocks(model)
    stats = BranchStats([name for name, _ in blocks])
    index = {id(b): i for i, (_, b) in enumerate(blocks)}

    def probe(block: SkipBlock, branch: torch.Tensor, carry: torch.Tensor | None, gate: torch.Tensor | None):
        stats._add(index[id(block)], branch, carry, gate)

    for _, block in blocks:
        block.probe = probe
    try:
        yield stats
    finally:
        for _, block in blocks:
            del block.probe  # back to the class default, None
        stats._finish()


@contextlib.contextmanager
def record_gates(model: nn.Module) -> Iterator[list[float]]:
    """Mean transform-gate value T(x) of every highway gate (conv blocks and SkipNet layers alike) over
    the forward passes made within the block, in forward order; filled in when the block exits."""
    gates = [m for m in model.modules() if isinstance(m, Gate)]
    sums: list[list[torch.Tensor]] = [[] for _ in gates]
    hooks = [
        g.register_forward_hook(lambda _m, _i, out, k=k: sums[k].append(out.detach().float().mean()))
        for k, g in enumerate(gates)
    ]
    means: list[float] = []
    try:
        yield means
    finally:
        for h in hooks:
            h.remove()
        means.extend(float(torch.stack(s).mean()) if s else float("nan") for s in sums)


@contextlib.contextmanager
def lesioned(model: nn.Module, indices: Sequence[int]) -> Iterator[None]:
    """Within the block, the blocks at `indices` (see `skip_blocks`) pass on what they compute with their
    branch deleted, `SkipBlock.skip_only` (Veit et al. 2016): their skip path, or a plain block's input."""
    blocks = skip_blocks(model)
    bad = [i for i in indices if not 0 <= i < len(blocks)]
    if bad:
        raise IndexError(f"block indices {bad} out of range: the model has {len(blocks)} blocks")
    hooks = [
        blocks[i][1].register_forward_hook(lambda m, inputs, _out: m.skip_only(inputs[0])) for i in indices
    ]
    try:
        yield
    finally:
        for h in hooks:
            h.remove()


def block_shapes(model: nn.Module, sample: torch.Tensor) -> list[tuple[torch.Size, torch.Size]]:
    """(input shape, output shape) of every block (see `skip_blocks`) on one forward pass of `sample`."""
    blocks = skip_blocks(model)
    shapes: list[tuple[torch.Size, torch.Size] | None] = [None] * len(blocks)

    def keep(k: int):
        def hook(_m: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            shapes[k] = (inputs[0].shape, out.shape)

        return hook

    hooks = [b.register_forward_hook(keep(k)) for k, (_, b) in enumerate(blocks)]
    try:
        with torch.no_grad():
            model(sample)
    finally:
        for h in hooks:
            h.remove()
    return [s for s in shapes if s is not None]


def swappable_pairs(model: nn.Module, sample: torch.Tensor) -> list[tuple[int, int]]:
    """Pairs of blocks (i < j) that can trade places: each maps its input shape to itself and both see
    the same shape (Veit et al. 2016, §4.3: blocks "with compatible dimensionality")."""
    shapes = block_shapes(model, sample)
    same = [i for i, (a, b) in enumerate(shapes) if a == b]
    return [(i, j) for n, i in enumerate(same) for j in same[n + 1 :] if shapes[i] == shapes[j]]


@contextlib.contextmanager
def reordered(model: nn.Module, swaps: Sequence[tuple[int, int]]) -> Iterator[None]:
    """Within the block, the blocks run in another order: each (i, j) in `swaps` exchanges the blocks at
    positions i and j (see `skip_blocks`), one swap after the other (Veit et al. 2016's reordering)."""
    blocks = skip_blocks(model)
    bad = [p for p in swaps for i in p if not 0 <= i < len(blocks)]
    if bad:
        raise IndexError(f"block pairs {bad} out of range: the model has {len(blocks)} blocks")
    order = [b for _, b in blocks]
    for i, j in swaps:
        order[i], order[j] = order[j], order[i]

    def place(modules: Sequence[nn.Module]) -> None:
        for (name, _), module in zip(blocks, modules, strict=True):
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent), attr, module)

    place(order)
    try:
        yield
    finally:
        place([b for _, b in blocks])


def gradient_correlation(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float, seed: int = 0
) -> list[float]:
    """Per image, the correlation (Pearson, over the input's entries) of the input gradients ∂ℓ/∂x of
    its cross-entropy at x and at a nearby x + eps·ξ, ξ ~ N(0, 1): Balduzzi et al. 2017's measure of
    shattered gradients (plain nets' gradients decorrelate with depth far faster than residual nets').
    In training mode (batch statistics), as `gradient_norms`; the model's own gradients are cleared."""
    was_training = model.training
    model.train()
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed), dtype=images.dtype)
    grads = []
    for x in (images, images + eps * noise.to(images.device)):
        x = x.detach().clone().requires_grad_(True)
        # The sum: row i of ∂/∂x is image i's own ℓ_i, plus what reaches it through the batch statistics.
        F.cross_entropy(model(x), labels, reduction="sum").backward()
        grads.append(x.grad.flatten(1))
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    a, b = (g - g.mean(dim=1, keepdim=True) for g in grads)
    return F.cosine_similarity(a, b, dim=1).tolist()
