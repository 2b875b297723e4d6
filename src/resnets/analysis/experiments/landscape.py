"""landscape (Li, Xu, Taylor, Studer & Goldstein 2018): the training loss around a trained residual net
and its plain twin, along filter-normalised random directions in 1-D and 2-D and on the straight line
between two solutions (or from an initialisation to the solution), with three numbers a verdict can be
checked on: the loss rise inside the basin (at the farthest step where both nets' losses
stay below chance), the fraction of the 2-D slice that is locally non-convex, and |λ_min / λ_max| of
the Hessian at the minimum.

Li et al.'s claim (Fig. 5, Table 1): without skips the surface turns chaotic and non-convex as depth
grows; with skips it stays smooth and nearly convex. Their CIFAR-10 test errors without → with skips:
ResNet-20 8.18 → 7.37, ResNet-56 13.31 → 5.89, ResNet-110 16.44 → 5.79.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from resnets.analysis.experiments.common import Settings, dataset_splits
from resnets.analysis.experiments.registry import experiment
from resnets.analysis.experiments.twins import Twins, trained_twins
from resnets.analysis.landscape import (
    PointLog,
    filter_normalized_direction,
    fingerprint,
    hessian_extremes,
    interpolation,
    nonconvex_fraction,
    surface,
)
from resnets.analysis.plots import figure, save_figure
from resnets.analysis.report import Report, change_beyond_spread, environment, markdown_table, pm

NETS = {"residual": "resnet{d}", "plain": "plain{d}"}
PAPER_ERROR = {20: (8.18, 7.37), 56: (13.31, 5.89), 110: (16.44, 5.79)}  # Li et al.: (no skips, skips)
QUICK = {
    "images": 1000,
    "line": 21,
    "grid": 17,
    "directions": 3,
    "hessian_images": 500,
    "iters": 40,
    "alphas": 13,
}
FULL = {
    "images": 5000,
    "line": 51,
    "grid": 51,
    "directions": 5,
    "hessian_images": 5000,
    "iters": 100,
    "alphas": 31,
}
ALPHAS = (-0.25, 1.25)  # the interpolation line, a little past both ends (Li et al.'s Fig. 2 go to ±0.5)
SPAN = 1.0  # the slices cover −1 … 1 filter norms along each direction, as Li et al.'s plots do


def measure_net(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, sizes: dict, log: PointLog | None = None
) -> dict:
    """The 1-D slices (one per direction), the 2-D slice (first two directions) and the Hessian
    extremes of one net at its trained weights, each loss read from or written to `log`."""
    line = np.linspace(-SPAN, SPAN, sizes["line"])
    plane = np.linspace(-SPAN, SPAN, sizes["grid"])
    directions = [filter_normalized_direction(model, seed) for seed in range(sizes["directions"])]
    slices = [surface(model, x, y, [d], line, log, f"slice{k}").tolist() for k, d in enumerate(directions)]
    grid = surface(model, x, y, directions[:2], plane, log, "plane")
    n = sizes["hessian_images"]

    def extremes() -> list[float]:
        return list(hessian_extremes(model, x[:n], y[:n], iters=sizes["iters"]))

    top, bottom = extremes() if log is None else log.get_or_compute("hessian", extremes)
    centre = slices[0][len(line) // 2]
    return {
        "loss": centre,
        "line": line.tolist(),
        "slices": slices,
        "plane": plane.tolist(),
        "grid": grid.tolist(),
        # Per direction: the mean loss one filter norm away on either side, above the minimum.
        "rise": [(s[0] + s[-1]) / 2 - centre for s in slices],
        "nonconvex": nonconvex_fraction(grid, plane[1] - plane[0], tol=1e-3),
        "lambda_max": top,
        "lambda_min": bottom,
        "ratio": abs(bottom / top) if top else float("nan"),
    }


@experiment("landscape", "the loss around trained residual and plain nets (Li et al. 2018)")
def run(settings: Settings) -> Report:
    """Slice the training loss around the twins at each depth, compare how smooth and convex it is, and
    with several depths how that changes as the nets get deeper (Li et al.'s claim)."""
    data = settings.data or "cifar10"
    depths = sorted(settings.depths or ([20] if settings.quick else [20, 56, 110]))
    sizes = QUICK if settings.quick else FULL
    seeds = settings.seeds or [0]
    splits = dataset_splits(data, settings.data_dir)
    pick = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(0))[: sizes["images"]]
    images, labels = splits.train.images[pick.sort().values], splits.train.labels[pick.sort().values]
    results, sources, notes, runs = {}, {}, [], []
    for depth in depths:
        twins = trained_twins(
            settings, NETS, depth, data, seeds, "fast-cifar", settings.pick("budget", 30, 30)
        )
        results[str(depth)] = measure_depth(
            settings, twins, depth, images, labels, splits.num_classes, sizes, seeds
        )
        sources[str(depth)], runs = twins.source, [*runs, *twins.runs]
        notes.append(twins.note())
    names = " and ".join(f"resnet{d}/plain{d}" for d in depths)
    verdicts = [landscape_verdict(results[str(d)]["residual"], results[str(d)]["plain"], d) for d in depths]
    if len(depths) > 1:
        verdicts.append(depth_trend(results, depths))
    out = Path(settings.out)
    basins = {d: results[str(d)]["residual"]["basin"] for d in depths}
    first = results[str(depths[0])]["residual"]["interpolation"]["from"]
    return Report(
        name="landscape",
        title=f"The loss landscape of {names} (Li et al. 2018)",
        command=settings.command,
        settings={"data": data, "depths": depths, "sources": sources, **sizes, "span": SPAN},
        results=results,
        table=markdown_table(
            [
                "net",
                "test error (%)",
                "Li et al. test error (%)",
                "loss at the minimum",
                "loss rise in the basin (at t filter norms)",
                "loss rise at 1 filter norm",
                "non-convex share of the 2-D slice",
                "λ_max",
                "λ_min",
                "|λ_min/λ_max|",
                "barrier on the line",
            ],
            [table_row(NETS[k].format(d=d), results[str(d)][k], d, k) for d in depths for k in NETS],
        ),
        verdict=" ".join(verdicts),
        figures=[
            plot_slices(out, results, depths),
            plot_planes(out, results, depths),
            plot_interpolation(out, results, depths),
            plot_surfaces(out, results, depths),
        ],
        notes=[
            *notes,
            f"Loss: mean cross-entropy on {sizes['images']:,} training images (a seeded random choice, no "
            "augmentation), in eval mode (batch-norm running statistics as trained), fp32. Directions: "
            f"{sizes['directions']} seeded filter-normalised Gaussians (biases and batch-norm parameters "
            "not moved), the 2-D slice spanned by the first two. A rise at distance t is the mean of the "
            "losses at −t and +t filter norms minus the loss at the minimum, mean ± std over the directions. "
            "The verdict's rise is at the farthest step t of the 1-D slices where every slice of both nets "
            f"of a depth is still below the chance loss ln {splits.num_classes} = "
            f"{math.log(splits.num_classes):.2f} (here "
            + ", ".join(f"t = {t:g} at depth {d}" for d, t in basins.items())
            + "): farther out a net is broken rather than moved around its minimum, and its loss measures "
            "how confidently wrong it is (at 1 filter norm Li et al.'s plots reach losses of 5–10 with or "
            "without skips).",
            "Non-convex share: interior points of the 2-D slice whose finite-difference 2×2 Hessian has an "
            f"eigenvalue below −0.001. λ_max, λ_min: the extreme Ritz values of {sizes['iters']} Lanczos "
            "steps (Hessian-vector products, fully re-orthogonalised) on the loss of the first "
            f"{sizes['hessian_images']:,} images; Li et al. "
            "map |λ_min/λ_max| across their plots, we give it at the minimum.",
            f"The line: the loss at (1 − α)·θ_start + α·θ_minimum for α from {ALPHAS[0]:g} to {ALPHAS[1]:g}, "
            f"θ_start being {first} (Goodfellow, Vinyals & Saxe 2015 "
            "drew the same line from the initialisation; Li et al. §3 between two solutions, which "
            "`--budget B --seeds 0,1` gives by training two nets per kind). Batch-norm statistics are "
            "re-estimated on the same images at each point, not interpolated. Its barrier is the largest "
            "excess of the loss over the straight chord between α = 0 and α = 1 (0: no bump on the way).",
        ],
        environment=environment(settings.torch_device, runs or None),
    )


def measure_depth(
    settings: Settings,
    twins: Twins,
    depth: int,
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    sizes: dict,
    seeds: list[int],
) -> dict:
    """Both nets of one depth: slices, Hessian extremes and the line to the minimum, each loss logged to
    OUT/points-NET.jsonl as it is computed (with --reuse-runs a stopped run resumes there), and the rise
    inside the basin both nets share."""
    alphas = np.linspace(*ALPHAS, sizes["alphas"])
    results = {}
    for kind, (net, *others) in twins.nets.items():
        model = net.model.float()
        name = NETS[kind].format(d=depth)
        x = net.normalize(images).to(next(model.parameters()).device)
        y = labels.to(x.device)
        grid = {**sizes, "span": SPAN, "alphas": list(ALPHAS), "seeds": seeds}
        log = PointLog(
            Path(settings.out) / f"points-{name}.jsonl", fingerprint(model, x, y, grid), settings.reuse_runs
        )
        results[kind] = measure_net(model, x, y, sizes, log)
        results[kind]["test_accuracy"] = net.test_accuracy
        start, start_label = line_start(name, model, others, num_classes, images.shape[1])
        losses = interpolation(model, start, model.state_dict(), alphas, x, y, log, "interpolation")
        results[kind]["interpolation"] = {
            "from": start_label,
            "alphas": alphas.tolist(),
            "losses": losses.tolist(),
            "barrier": barrier(alphas, losses),
        }
    basin = basin_distance(
        results["residual"]["line"], [r["slices"] for r in results.values()], math.log(num_classes)
    )
    for r in results.values():
        r["basin"], r["basin_rise"] = basin, rise_at(r["line"], r["slices"], basin)
    return results


def depth_trend(results: dict, depths: Sequence[int]) -> str:
    """One sentence on Li et al.'s claim itself: from the shallowest to the deepest depth, on how many of
    the three measures the plain net's surface grows rougher relative to the residual net's."""
    lo, hi = results[str(depths[0])], results[str(depths[-1])]
    measures = {
        "rise in the basin": lambda r: statistics.fmean(r["basin_rise"]),
        "non-convex share": lambda r: r["nonconvex"],
        "|λ_min/λ_max|": lambda r: r["ratio"],
    }
    said, grows = [], 0
    for label, value in measures.items():
        gap_lo = value(lo["plain"]) - value(lo["residual"])
        gap_hi = value(hi["plain"]) - value(hi["residual"])
        grows += gap_hi > gap_lo
        said.append(
            f"{label} plain {value(lo['plain']):.3g} → {value(hi['plain']):.3g}, "
            f"residual {value(lo['residual']):.3g} → {value(hi['residual']):.3g}"
        )
    head = f"From depth {depths[0]} to {depths[-1]} ({'; '.join(said)}) "
    if grows == 3:
        return (
            head
            + "the plain net's surface grows rougher than the residual net's on all 3 measures, as Li et al. "
            "found."
        )
    return (
        head + f"the plain net's surface grows rougher than the residual net's on {grows} of the 3 measures."
    )


def table_row(name: str, r: dict, depth: int, kind: str) -> list[str]:
    """One net's row: its error beside the paper's, and the landscape's three numbers."""
    paper = PAPER_ERROR.get(depth)
    return [
        name,
        "–" if r.get("test_accuracy") is None else f"{100 * (1 - r['test_accuracy']):.2f}",
        "–" if paper is None else f"{paper[1 if kind == 'residual' else 0]:.2f}",
        f"{r['loss']:.4f}",
        f"{pm(r['basin_rise'], digits=3)} (t = {r['basin']:g})",
        pm(r["rise"], digits=3),
        f"{r['nonconvex']:.3f}",
        f"{r['lambda_max']:.2f}",
        f"{r['lambda_min']:.3f}",
        f"{r['ratio']:.4f}",
        f"{r['interpolation']['barrier']:.3f}" if "interpolation" in r else "–",
    ]


def line_start(
    name: str, model: torch.nn.Module, others: list, num_classes: int, in_chans: int
) -> tuple[dict, str]:
    """Where the interpolation line starts: a second trained solution of the same net where the twins
    have one (another seed), else a He initialisation of the net (seed 0), with a label for the report."""
    if others:
        return others[0].model.float().state_dict(), f"a second solution ({others[0].label})"
    from resnets.models.factory import create_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        init = create_model(name, num_classes, in_chans).to(next(model.parameters()).device).float()
    return init.state_dict(), f"a fresh initialisation of {name} (seed 0)"


def barrier(alphas: Sequence[float], losses: Sequence[float]) -> float:
    """The largest excess of the loss over the chord between α = 0 and α = 1, over 0 ≤ α ≤ 1 (the
    endpoints must lie on `alphas`): 0 where the line has no bump above the chord."""
    a, v = np.asarray(alphas, dtype=float), np.asarray(losses, dtype=float)
    i0, i1 = int(np.argmin(np.abs(a))), int(np.argmin(np.abs(a - 1)))
    inner = slice(i0, i1 + 1)
    chord = (1 - a[inner]) * v[i0] + a[inner] * v[i1]
    return float(max(0.0, (v[inner] - chord).max()))


def landscape_verdict(residual: dict, plain: dict, depth: int) -> str:
    """One sentence: on how many of the three measures the plain net's surface is rougher (the rise
    inside the basin beyond the spread over directions), with the numbers, against Li et al.'s claim."""
    steeper = change_beyond_spread(residual["basin_rise"], plain["basin_rise"]) > 0
    rougher = plain["nonconvex"] > residual["nonconvex"]
    less_convex = plain["ratio"] > residual["ratio"]
    count = sum([steeper, rougher, less_convex])
    p_rise, r_rise = statistics.fmean(plain["basin_rise"]), statistics.fmean(residual["basin_rise"])
    said = (
        f"Around the trained minimum, plain{depth}'s loss rises {p_rise:.3f} at {plain['basin']:g} filter "
        "norms (the farthest step where both nets stay below the chance loss) against "
        f"resnet{depth}'s {r_rise:.3f}{' (beyond the spread over directions)' if steeper else ''}, "
        f"{plain['nonconvex']:.1%} of its 2-D slice is locally non-convex against "
        f"{residual['nonconvex']:.1%}, and |λ_min/λ_max| is {plain['ratio']:.4f} against "
        f"{residual['ratio']:.4f}: "
    )
    if count == 3:
        return said + "the surface without skips is steeper and less convex, as Li et al. found."
    if count == 0:
        return (
            said
            + f"the plain net's surface is not rougher at depth {depth} (Li et al. see it grow with depth)."
        )
    return said + f"the plain net's surface is rougher on {count} of the 3 measures."


def basin_distance(
    line: Sequence[float], slices: Sequence[Sequence[Sequence[float]]], chance: float
) -> float:
    """The farthest step t of a symmetric line at which every net's every 1-D slice is below `chance` at
    both −t and +t, walking out from the minimum (at least the first step, so that a rise exists)."""
    middle = len(line) // 2
    inside = line[middle + 1]
    for i in range(1, middle + 1):
        if any(s[middle - i] >= chance or s[middle + i] >= chance for net in slices for s in net):
            break
        inside = line[middle + i]
    return round(float(inside), 9)  # linspace steps carry float noise (0.40000000000000013)


def rise_at(line: Sequence[float], slices: Sequence[Sequence[float]], t: float) -> list[float]:
    """Per slice: the mean of the losses at −t and +t minus the loss at the minimum (t on the line)."""
    middle = len(line) // 2
    i = min(range(len(line)), key=lambda j: abs(line[j] - t))
    return [(s[i] + s[2 * middle - i]) / 2 - s[middle] for s in slices]


def plot_slices(out: Path, results: dict, depths: Sequence[int]) -> str:
    """1-D slices: loss against the step along each direction, residual and plain side by side, a row
    per depth."""
    fig, axes = figure(2, len(depths))
    for row, depth in zip(axes, depths, strict=True):
        for ax, kind in zip(row, NETS, strict=True):
            r = results[str(depth)][kind]
            for k, s in enumerate(r["slices"]):
                ax.plot(r["line"], s, lw=1, label=f"direction {k + 1}")
            if "basin" in r:  # the distance the verdict's rise is read at
                ax.axvspan(-r["basin"], r["basin"], color="0.9", zorder=0, label="basin (below chance)")
            ax.set(title=NETS[kind].format(d=depth), xlabel="step (filter norms)", ylabel="training loss")
            ax.set_yscale("log")
            ax.legend(fontsize=7)
    return save_figure(fig, out, "landscape_1d.png")


def plot_planes(out: Path, results: dict, depths: Sequence[int]) -> str:
    """2-D slices as contour plots on the same levels, plain | residual, a row per depth (Li et al.'s
    Fig. 5)."""
    fig, axes = figure(2, len(depths), size=(5.0, 4.5))
    grids = {(d, k): np.array(results[str(d)][k]["grid"]) for d in depths for k in NETS}
    low = min(g.min() for g in grids.values())
    levels = np.geomspace(max(low, 1e-4), max(g.max() for g in grids.values()), 25)
    for row, depth in zip(axes, depths, strict=True):
        for ax, kind in zip(row, ("plain", "residual"), strict=True):
            c = np.array(results[str(depth)][kind]["plane"])
            ax.contour(c, c, grids[depth, kind].T, levels=levels, linewidths=0.8)
            ax.set(
                title=NETS[kind].format(d=depth), xlabel="direction 1", ylabel="direction 2", aspect="equal"
            )
    return save_figure(fig, out, "landscape_2d.png")


def plot_interpolation(out: Path, results: dict, depths: Sequence[int]) -> str:
    """The loss along the straight line to the minimum, both nets of a depth on one axis (log scale)."""
    fig, axes = figure(len(depths), 1, size=(5.0, 3.5))
    for ax, depth in zip(axes[0], depths, strict=True):
        second = results[str(depth)]["residual"]["interpolation"]["from"].startswith("a second")
        start = "second solution" if second else "initialisation"
        for kind in NETS:
            line = results[str(depth)][kind]["interpolation"]
            ax.plot(line["alphas"], line["losses"], marker=".", label=NETS[kind].format(d=depth))
        ax.axvline(0, color="0.7", lw=0.8)
        ax.axvline(1, color="0.7", lw=0.8)
        ax.set(title=f"the straight line from {start} (α = 0)\nto the minimum (α = 1)", xlabel="α")
        ax.set(ylabel="training loss", yscale="log")
        ax.legend(fontsize=7)
    return save_figure(fig, out, "landscape_line.png")


def plot_surfaces(out: Path, results: dict, depths: Sequence[int]) -> str:
    """The 2-D slices as 3-D surfaces of log10 loss on one z scale, plain | residual, a row per depth
    (Li et al.'s Fig. 1)."""
    fig, axes = figure(2, len(depths), size=(5.0, 4.5))
    grids = {
        (d, k): np.log10(np.maximum(np.array(results[str(d)][k]["grid"]), 1e-6)) for d in depths for k in NETS
    }
    low, high = min(g.min() for g in grids.values()), max(g.max() for g in grids.values())
    for i, depth in enumerate(depths):
        for j, kind in enumerate(("plain", "residual")):
            axes[i][j].remove()
            ax = fig.add_subplot(len(depths), 2, 2 * i + j + 1, projection="3d")
            c = np.array(results[str(depth)][kind]["plane"])
            a, b = np.meshgrid(c, c, indexing="ij")
            ax.plot_surface(a, b, grids[depth, kind], cmap="viridis", vmin=low, vmax=high, linewidth=0)
            ax.set(
                title=NETS[kind].format(d=depth), xlabel="direction 1", ylabel="direction 2", zlim=(low, high)
            )
            ax.set_zlabel("log10 training loss")
    return save_figure(fig, out, "landscape_3d.png")
