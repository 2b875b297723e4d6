"""Loss-landscape tools against their definitions (Li et al. 2018) and independent computations."""

import numpy as np
import pytest
import torch
from torch import nn

import resnets
from resnets.analysis.landscape import (
    PointLog,
    filter_normalized_direction,
    fingerprint,
    hessian_extremes,
    interpolation,
    lanczos_ritz_values,
    mean_loss,
    moved,
    nonconvex_fraction,
    surface,
)


def test_each_filter_of_the_direction_has_the_norm_of_the_weights_filter() -> None:
    torch.manual_seed(0)
    model = resnets.create_model("resnet20")
    direction = filter_normalized_direction(model, seed=1)
    for (name, p), d in zip(model.named_parameters(), direction, strict=True):
        if p.dim() <= 1:  # biases and batch-norm weights: no direction (Li et al.'s ignore_biasbn)
            assert torch.count_nonzero(d) == 0, name
            continue
        for j in range(p.shape[0]):  # one filter per output channel / unit
            assert float(d[j].norm()) == pytest.approx(float(p[j].detach().norm()), rel=1e-5), name
    again = filter_normalized_direction(model, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(direction, again, strict=True))  # seeded


def _softmax_model() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Linear(5, 3).double()
    return model, torch.randn(7, 5, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2, 0])


def test_surface_is_the_loss_at_the_moved_weights_and_they_are_restored() -> None:
    model, x, y = _softmax_model()
    w0, b0 = model.weight.detach().clone(), model.bias.detach().clone()
    d1, d2 = filter_normalized_direction(model, 1), filter_normalized_direction(model, 2)
    coords = [-1.0, 0.0, 0.5]
    grid = surface(model, x, y, [d1, d2], coords)

    def loss(w: np.ndarray) -> float:  # the mean cross-entropy written out in NumPy float64
        z = x.numpy() @ w.T + b0.numpy()
        z = z - z.max(1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), y.numpy()]))

    for i, a in enumerate(coords):
        for j, b in enumerate(coords):
            w = w0.numpy() + a * d1[0].numpy() + b * d2[0].numpy()  # the bias has no direction
            assert grid[i, j] == pytest.approx(loss(w), abs=1e-12)
    assert torch.equal(model.weight, w0) and torch.equal(model.bias, b0)
    line = surface(model, x, y, [d1], coords)
    assert line[1] == pytest.approx(mean_loss(model, x, y)) and line[0] == pytest.approx(grid[0, 1])
    with pytest.raises(RuntimeError), moved(model, [d1], [1.0]):
        raise RuntimeError("inside")
    assert torch.equal(model.weight, w0)  # restored even when the block raises


def test_nonconvex_fraction_of_a_bowl_a_saddle_and_a_ripple() -> None:
    c = np.linspace(-1, 1, 21)
    a, b = np.meshgrid(c, c, indexing="ij")
    spacing = c[1] - c[0]
    assert nonconvex_fraction(a**2 + b**2, spacing) == 0.0
    assert nonconvex_fraction(a**2 - b**2, spacing) == 1.0  # negative curvature along b everywhere
    ripple = nonconvex_fraction(np.cos(3 * np.pi * a), spacing)  # concave where cos(3πa) > 0
    assert 0.4 < ripple < 0.6


def test_hessian_extremes_match_the_exact_hessian_of_a_tiny_net() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 3)).double()
    x, y = torch.randn(16, 4, dtype=torch.float64), torch.randint(0, 3, (16,))
    params = list(model.parameters())
    shapes = [p.shape for p in params]
    flat = torch.cat([p.detach().flatten() for p in params])

    def loss_of(theta: torch.Tensor) -> torch.Tensor:  # the same net, written as a function of θ
        chunks, k = [], 0
        for s in shapes:
            n = int(np.prod(s))
            chunks.append(theta[k : k + n].view(s))
            k += n
        w1, b1, w2, b2 = chunks
        return nn.functional.cross_entropy(torch.tanh(x @ w1.T + b1) @ w2.T + b2, y)

    exact = np.linalg.eigvalsh(torch.autograd.functional.hessian(loss_of, flat).numpy())
    top, bottom = hessian_extremes(model, x, y, iters=40)  # 27 parameters: Lanczos ends exact
    assert top == pytest.approx(exact.max(), rel=1e-8)
    assert bottom == pytest.approx(exact.min(), rel=1e-6, abs=1e-9)


def test_lanczos_finds_a_small_negative_eigenvalue_that_power_iteration_misses() -> None:
    # At a minimum the spectrum is one large λ_max, a bulk near 0 and a small negative tail: the shape
    # that left power iteration on H − λ_max·I at λ_min ≈ 0 (|λ_min/λ_max| printed as 0.0000); on this
    # matrix 30 + 30 power steps give λ_min ≈ +0.14, the wrong sign.
    rng = np.random.default_rng(0)
    spectrum = np.concatenate([[10.0, -0.05], rng.uniform(0.0, 0.5, 198)])
    q, _ = np.linalg.qr(rng.standard_normal((200, 200)))
    matrix = torch.from_numpy(q @ np.diag(spectrum) @ q.T)
    ritz = lanczos_ritz_values(lambda v: [matrix @ v[0]], [matrix[0]], iters=60)
    assert ritz[-1] == pytest.approx(10.0, rel=1e-9)
    assert ritz[0] == pytest.approx(-0.05, rel=1e-3)


def _cross_entropy(z: np.ndarray, y: np.ndarray) -> float:
    z = z - z.max(1, keepdims=True)
    return float(np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), y]))


def test_interpolation_is_the_loss_of_the_mixed_weights() -> None:
    model, x, y = _softmax_model()
    start = {k: torch.randn_like(v) for k, v in model.state_dict().items()}
    end = {k: v.clone() for k, v in model.state_dict().items()}
    alphas = [-0.5, 0.0, 0.25, 1.0, 1.5]
    losses = interpolation(model, start, end, alphas, x, y)
    for a, got in zip(alphas, losses, strict=True):
        w = (1 - a) * start["weight"].numpy() + a * end["weight"].numpy()
        b = (1 - a) * start["bias"].numpy() + a * end["bias"].numpy()
        assert got == pytest.approx(_cross_entropy(x.numpy() @ w.T + b, y.numpy()), abs=1e-12)
    assert torch.equal(model.weight, end["weight"])  # the model itself is not moved


def test_interpolation_re_estimates_batch_norm_statistics_at_each_point() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)).double()
    x, y = torch.randn(9, 4, dtype=torch.float64), torch.tensor([0, 1, 2] * 3)

    def solution() -> dict:
        state = {
            k: torch.randn_like(v) if v.is_floating_point() else v for k, v in model.state_dict().items()
        }
        state["1.running_mean"] += 100.0  # statistics that would wreck the loss if they were used
        state["1.running_var"] = state["1.running_var"].abs() + 50.0
        return state

    start, end = solution(), solution()
    (got,) = interpolation(model, start, end, [0.3], x, y)
    mix = {
        k: 0.7 * start[k].numpy() + 0.3 * end[k].numpy() for k in ("0.weight", "0.bias", "1.weight", "1.bias")
    }
    z = x.numpy() @ mix["0.weight"].T + mix["0.bias"]
    # One batch: the running mean is the batch mean, the running variance the unbiased batch variance.
    z = (z - z.mean(0)) / np.sqrt(z.var(0, ddof=1) + 1e-5) * mix["1.weight"] + mix["1.bias"]
    assert got == pytest.approx(_cross_entropy(z, y.numpy()), abs=1e-9)


def test_point_log_resumes_point_by_point_and_keeps_what_does_not_match(tmp_path) -> None:
    model, x, y = _softmax_model()
    d1, d2 = filter_normalized_direction(model, 1), filter_normalized_direction(model, 2)
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    path = tmp_path / "points.jsonl"
    coords = [-1.0, 0.0, 1.0]
    first = surface(model, x, y, [d1, d2], coords, PointLog(path, "A"), "plane")
    assert len(calls) == 9
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"key": "plane@9,9", "val')  # a crash in the middle of a write
    calls.clear()
    log = PointLog(path, "A")
    assert len(log) == 9
    again = surface(model, x, y, [d1, d2], coords, log, "plane")
    assert calls == [] and np.array_equal(first, again)  # every point read back, none recomputed
    surface(model, x, y, [d1], [0.5], log, "line")  # appends after the torn line was dropped
    assert len(calls) == 1 and len(PointLog(path, "A")) == 10
    other = PointLog(path, "B")  # other weights or images: start afresh, the old file kept aside
    assert len(other) == 0 and len(PointLog(path.with_name("points.jsonl.previous"), "A")) == 10
    assert len(PointLog(path, "B", resume=False)) == 0


def test_fingerprint_follows_the_weights_the_images_and_the_grid() -> None:
    model, x, y = _softmax_model()
    base = fingerprint(model, x, y, {"grid": 5})
    assert fingerprint(model, x.clone(), y, {"grid": 5}) == base
    assert fingerprint(model, x, y, {"grid": 7}) != base
    assert fingerprint(model, x[:, [1, 0, 2, 3, 4]], y, {"grid": 5}) != base
    with torch.no_grad():
        model.bias[0] += 1e-9
    assert fingerprint(model, x, y, {"grid": 5}) != base
