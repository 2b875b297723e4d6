"""The loss around a trained net (Li, Xu, Taylor, Studer & Goldstein 2018, "Visualizing the Loss
Landscape of Neural Nets"): filter-normalised random directions, the loss along them in 1-D and 2-D,
how convex the surface is there, and the extreme eigenvalues of the Hessian at the minimum.

Li et al. §4: a random Gaussian direction d has the scale of the weights taken out of it filter by
filter, d_(i,j) ← d_(i,j) / ‖d_(i,j)‖ · ‖θ_(i,j)‖ for filter j of layer i, so that a step of 1 moves
each filter by its own norm and nets of any scale are comparable; biases and batch-norm parameters get
no direction ("ignore_biasbn"), and batch-norm running statistics stay as trained (the net is
evaluated in eval mode). A 2-D slice is L(θ + a·d1 + b·d2); `nonconvex_fraction` reads its local
curvature, `hessian_extremes` the whole Hessian's (their §6: |λ_min/λ_max| maps non-convexity).
`interpolation` is the other classic picture (Goodfellow, Vinyals & Saxe 2015; Li et al. §3): the loss
on the straight line between two sets of weights. `PointLog` keeps every loss as it is computed, so an
interrupted slice resumes at the point where it stopped.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

Direction = list[torch.Tensor]  # one tensor per parameter of the model, in `model.parameters()` order


def filter_normalized_direction(model: nn.Module, seed: int) -> Direction:
    """A random direction with each filter's norm equal to the weights' filter norm (dim ≥ 2: one
    filter per output unit); zero for biases and normalisation parameters (dim ≤ 1)."""
    g = torch.Generator().manual_seed(seed)
    direction = []
    for p in model.parameters():
        w = p.detach()
        if w.dim() <= 1:
            direction.append(torch.zeros_like(w))
            continue
        d = torch.randn(w.shape, generator=g, dtype=torch.float64).to(w)
        d_norm = d.flatten(1).norm(dim=1).clamp_min(1e-12)
        w_norm = w.flatten(1).norm(dim=1)
        direction.append(d * (w_norm / d_norm).view(-1, *([1] * (w.dim() - 1))))
    return direction


@contextlib.contextmanager
def moved(model: nn.Module, directions: Sequence[Direction], steps: Sequence[float]) -> Iterator[None]:
    """Within the block the weights are θ + Σ_k steps[k]·directions[k]; θ is restored exactly after."""
    params = list(model.parameters())
    saved = [p.detach().clone() for p in params]
    try:
        with torch.no_grad():
            for i, p in enumerate(params):
                p.add_(sum(s * d[i] for s, d in zip(steps, directions, strict=True)))
        yield
    finally:
        with torch.no_grad():
            for p, w in zip(params, saved, strict=True):
                p.copy_(w)


def mean_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 500) -> float:
    """Mean cross-entropy of `model` in eval mode on `x`, `y` (batched, float32, no gradients)."""
    was_training = model.training
    model.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(y), batch):
            total += float(F.cross_entropy(model(x[i : i + batch]), y[i : i + batch], reduction="sum"))
    model.train(was_training)
    return total / len(y)


class PointLog:
    """Losses already computed, one JSON line each (`{"key": ..., "value": ...}`) after a header line
    with the fingerprint of what they were computed from; a run that stops resumes point by point.

    A file whose fingerprint differs (other weights, images or grid) is moved aside to `*.previous`,
    never overwritten; a torn last line (a crash mid-write) is ignored. JSON only: nothing is unpickled.
    """

    def __init__(self, path: Path, fingerprint: str, resume: bool = True) -> None:
        self.path, self.fingerprint = Path(path), fingerprint
        self.values: dict[str, object] = {}
        if self.path.exists():
            lines = self.path.read_text(encoding="utf-8").splitlines()
            header = _json_or_none(lines[0]) if lines else None
            if resume and isinstance(header, dict) and header.get("fingerprint") == fingerprint:
                for line in lines[1:]:
                    entry = _json_or_none(line)
                    if isinstance(entry, dict) and isinstance(entry.get("key"), str) and "value" in entry:
                        self.values[entry["key"]] = entry["value"]
                self._rewrite()  # drops a torn last line, so the next append starts on a fresh line
                return
            os.replace(self.path, self.path.with_name(self.path.name + ".previous"))
        self._rewrite()

    def _rewrite(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps({"fingerprint": self.fingerprint}) + "\n")
            f.writelines(json.dumps({"key": k, "value": v}) + "\n" for k, v in self.values.items())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def __len__(self) -> int:
        return len(self.values)

    def get_or_compute(self, key: str, compute):
        """The value logged under `key`, else `compute()`, logged (flushed to disk) before it returns."""
        if key not in self.values:
            self.values[key] = compute()
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"key": key, "value": self.values[key]}) + "\n")
                f.flush()
                os.fsync(f.fileno())
        return self.values[key]


def _json_or_none(line: str):
    try:
        return json.loads(line)
    except ValueError:
        return None


def fingerprint(model: nn.Module, x: torch.Tensor, y: torch.Tensor, extra: Mapping) -> str:
    """A SHA-256 of the weights (state_dict), the images, the labels and `extra` (the grid): equal
    fingerprints mean the logged losses are those this evaluation would compute."""
    h = hashlib.sha256(json.dumps(extra, sort_keys=True, default=str).encode())
    for name, t in [*model.state_dict().items(), ("x", x), ("y", y)]:
        h.update(name.encode())
        h.update(t.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def surface(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    directions: Sequence[Direction],
    coords: Sequence[float],
    log: PointLog | None = None,
    label: str = "",
) -> np.ndarray:
    """The loss on the grid `coords` along one direction (1-D array) or two (2-D array, [i, j] =
    L(θ + coords[i]·d1 + coords[j]·d2)); with a `log`, each point is read from or written to it under
    `label` and its coordinates."""

    def loss_at(*steps: float) -> float:
        def compute() -> float:
            with moved(model, directions, steps):
                return mean_loss(model, x, y)

        if log is None:
            return compute()
        return float(log.get_or_compute(f"{label}@" + ",".join(f"{s:.9g}" for s in steps), compute))

    if len(directions) == 1:
        return np.array([loss_at(a) for a in coords])
    return np.array([[loss_at(a, b) for b in coords] for a in coords])


def interpolation(
    model: nn.Module,
    start: Mapping[str, torch.Tensor],
    end: Mapping[str, torch.Tensor],
    alphas: Sequence[float],
    x: torch.Tensor,
    y: torch.Tensor,
    log: PointLog | None = None,
    label: str = "",
) -> np.ndarray:
    """The loss at (1 − α)·start + α·end for each α (state_dicts of `model`'s architecture; `model`
    itself is not changed). Batch-norm running statistics are not interpolated but re-estimated on `x`
    at every point (Garipov et al. 2018 do the same on their curves): interpolated statistics describe
    neither net, and at α = 0 or 1 the re-estimate is that net's own statistics on these images."""
    net = copy.deepcopy(model)
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def compute(a: float) -> float:
        mixed = {k: (1 - a) * v + a * end[k] if v.is_floating_point() else v for k, v in start.items()}
        net.load_state_dict(mixed)
        if norms:
            for m in norms:
                m.reset_running_stats()
                m.momentum = None  # a cumulative average over the batches below
            net.train()
            with torch.no_grad():
                for i in range(0, len(y), 500):
                    net(x[i : i + 500])
        return mean_loss(net, x, y)

    if log is None:
        return np.array([compute(a) for a in alphas])
    return np.array([float(log.get_or_compute(f"{label}@{a:.9g}", lambda a=a: compute(a))) for a in alphas])


def nonconvex_fraction(grid: np.ndarray, spacing: float, tol: float = 0.0) -> float:
    """The fraction of interior grid points where the surface's finite-difference 2×2 Hessian has an
    eigenvalue below −`tol`: 0 on a convex bowl, large on a chaotic surface."""
    f = grid
    fxx = (f[2:, 1:-1] - 2 * f[1:-1, 1:-1] + f[:-2, 1:-1]) / spacing**2
    fyy = (f[1:-1, 2:] - 2 * f[1:-1, 1:-1] + f[1:-1, :-2]) / spacing**2
    fxy = (f[2:, 2:] - f[2:, :-2] - f[:-2, 2:] + f[:-2, :-2]) / (4 * spacing**2)
    # The smaller eigenvalue of [[fxx, fxy], [fxy, fyy]].
    smallest = (fxx + fyy) / 2 - np.sqrt(((fxx - fyy) / 2) ** 2 + fxy**2)
    return float((smallest < -tol).mean())


def hessian_vector_product(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, vector: Direction, batch: int = 500
) -> Direction:
    """H·v of the mean cross-entropy over `x` (eval mode) with respect to the parameters, by
    differentiating the gradient's inner product with v (Pearlmutter 1994), batched."""
    params = [p for p in model.parameters()]
    was_training = model.training
    model.eval()
    out = [torch.zeros_like(p) for p in params]
    for i in range(0, len(y), batch):
        loss = F.cross_entropy(model(x[i : i + batch]), y[i : i + batch], reduction="sum") / len(y)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        dot = sum((g * v).sum() for g, v in zip(grads, vector, strict=True))
        for acc, hv in zip(out, torch.autograd.grad(dot, params), strict=True):
            acc.add_(hv.detach())
    model.train(was_training)
    return out


def _dot(a: Direction, b: Direction) -> float:
    return float(sum((u * v).sum() for u, v in zip(a, b, strict=True)))


def lanczos_ritz_values(matvec, like: Direction, iters: int, seed: int = 0) -> np.ndarray:
    """The Ritz values of the symmetric operator `matvec` after `iters` Lanczos steps from a seeded
    random start, with full re-orthogonalisation: its extreme values approach both ends of the spectrum
    together, far sooner than power iteration reaches the far end (whose rate is 1 − |λ_min|/λ_max
    when |λ_min| ≪ λ_max, as at a minimum)."""
    g = torch.Generator().manual_seed(seed)
    v = [torch.randn(p.shape, generator=g, dtype=torch.float64).to(p) for p in like]
    norm = _dot(v, v) ** 0.5
    basis, alphas, betas = [[t / norm for t in v]], [], []
    for _ in range(min(iters, sum(p.numel() for p in like))):
        w = matvec(basis[-1])
        alphas.append(_dot(w, basis[-1]))
        for _ in range(2):  # Gram-Schmidt twice: rounding would otherwise bring back converged vectors
            for b in basis:
                c = _dot(w, b)
                w = [t - c * u for t, u in zip(w, b, strict=True)]
        beta = _dot(w, w) ** 0.5
        if beta <= 1e-10 * max(abs(a) for a in alphas):  # an invariant subspace: T is exact
            break
        betas.append(beta)
        basis.append([t / beta for t in w])
    k = len(alphas)
    tridiagonal = np.diag(alphas) + np.diag(betas[: k - 1], 1) + np.diag(betas[: k - 1], -1)
    return np.linalg.eigvalsh(tridiagonal)


def hessian_extremes(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, iters: int = 20, seed: int = 0
) -> tuple[float, float]:
    """(λ_max, λ_min) of the loss Hessian at the current weights: the extreme Ritz values of `iters`
    Lanczos steps on Hessian-vector products (Li et al. 2018, §6, map the same two extremes)."""
    like = [p.detach() for p in model.parameters()]
    ritz = lanczos_ritz_values(lambda v: hessian_vector_product(model, x, y, v), like, iters, seed)
    return float(ritz[-1]), float(ritz[0])
