"""gradients (vanishing gradients): ‖∂L/∂W‖ of every main-path layer, at initialisation and after k
training steps, for plain, residual and highway nets: convolutional nets of 20…110 layers on CIFAR-10
and fully connected nets of 10…100 layers on MNIST (Srivastava et al. 2015's setting).

A skip gives the gradient a path around every layer (∂a^l/∂a^(l-2) contains the identity), so the
norms should stay within a small range across depth; without skips they shrink (or, with batch norm,
can grow) geometrically towards the input. The table gives first-layer / last-layer norm per net and the
spread max/min over all layers.

Balduzzi et al. 2017 ("The shattered gradients problem") add a measure the norms miss: how the input
gradients at two nearby inputs correlate. In a deep plain net they decorrelate towards white noise
(exponentially in depth, their §3), in a residual net slowly; it needs no training, so it is measured at
initialisation over every depth (20…110 conv, the fc depths) for each kind.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import torch

from resnets.analysis.experiments.common import LINEAR_WARMUP, Settings, mlp_kwargs, probe_batch, seeds_for
from resnets.analysis.experiments.registry import experiment
from resnets.analysis.experiments.sweep import Net, Sweep, grid
from resnets.analysis.plots import figure, plot_curve, save_figure
from resnets.analysis.probes import gradient_correlation, gradient_norms
from resnets.analysis.report import (
    Report,
    change_beyond_spread,
    environment,
    markdown_table,
    mean_curve,
    mean_profile,
    pm,
)
from resnets.models.factory import create_model

CONV = {"plain": "plain{d}", "residual": "resnet{d}", "highway": "highway{d}"}
MLP = {"plain": "plain_mlp", "residual": "residual_mlp", "highway": "highway_mlp"}
COLORS = {"plain": "tab:red", "residual": "tab:blue", "highway": "tab:green"}


def first_last_ratio(norms: list[float]) -> float:
    """‖∂L/∂W‖ of the first layer over that of the last: < 1 when gradients vanish towards the input."""
    return norms[0] / max(norms[-1], 1e-30)


def spread(norms: list[float]) -> float:
    """max / min of the per-layer norms: 1 when every layer gets gradients of the same size."""
    if any(math.isnan(n) for n in norms):
        return math.nan
    positive = [n for n in norms if n > 0]
    return max(positive) / min(positive) if positive else math.inf


def wider(plain: list[float], residual: list[float]) -> bool:
    """Whether the plain net's log10 spreads (one per seed) exceed the residual net's by more than the
    seed-to-seed spread; False when either run diverged (NaN)."""
    return change_beyond_spread(residual, plain) > 0


def gradients_verdict(
    comparisons: dict[tuple[str, str], tuple[list[float], list[float]]], depths: dict[str, int], steps: int
) -> str:
    """One sentence: in how many (family, init/trained) comparisons of the deepest nets the plain net's
    per-layer gradient norms span more orders of magnitude than the residual net's, with the numbers."""
    when_words = {"init": "at init", "trained": f"after {steps} steps"}
    findings = []
    for family, depth in depths.items():
        parts = []
        for when in ("init", "trained"):
            plain, residual = comparisons[(family, when)]
            p, r = statistics.fmean(plain), statistics.fmean(residual)
            parts.append(f"10^{p:.1f} vs 10^{r:.1f} {when_words[when]}")
        findings.append(f"{family} depth {depth}, plain vs residual: " + ", ".join(parts))
    wins = sum(wider(*c) for c in comparisons.values())
    said = (
        "Across the layers of the deepest nets the plain net's gradient norms span more orders of magnitude "
        f"than its residual twin's, beyond the seed spread, in {wins} of {len(comparisons)} comparisons ("
        + "; ".join(findings)
        + ")"
    )
    if wins == len(comparisons):
        return said + ": the skips keep every layer's gradient within a narrower range."
    return (
        said
        + ": elsewhere the two are within the seed spread or the residual net's is wider (see the table)."
    )


def net_kwargs(family: str, kind: str, depth: int) -> dict:
    """Model kwargs: none for conv nets; depth (and gate bias) for fc nets, and for residual fc nets
    scaled branches (un-normalised identity sums explode at init without them, see skipnet.py)."""
    if family == "conv":
        return {}
    kwargs = mlp_kwargs(kind, depth)
    if kind == "residual":
        kwargs["scale_branches"] = True
    return kwargs


def sweep_for(settings: Settings, family: str, depths: list[int], seeds: list[int], steps: int) -> Sweep:
    """Conv nets with he2016-cifar and its warm-up on CIFAR-10, fc nets with highway-mnist on MNIST,
    each for exactly `steps` steps; a run may diverge (that is a result for a deep plain net)."""
    conv = family == "conv"
    return Sweep(
        settings,
        grid(CONV if conv else MLP, depths, lambda k, d: {"model": {"kwargs": net_kwargs(family, k, d)}}),
        seeds,
        recipe="he2016-cifar" if conv else "highway-mnist",
        data=(settings.data or "cifar10") if conv else "mnist",
        steps=steps,
        overrides=LINEAR_WARMUP if conv else {},
        may_diverge=True,
        run_name=family + "-{key}-s{seed}",
    )


def measure(settings: Settings, sweep: Sweep, family: str, net: Net, seed: int) -> dict[str, list[float]]:
    """Per-layer gradient norms of one net at init (built with the run's seed) and after its run."""
    x, y = probe_batch(sweep.data, settings.data_dir, 128, seed=seed)
    model = build_at_init(family, net.kind, net.depth, seed, x)
    at_init = gradient_norms(model, x, y)
    trained = sweep.train(net, seed)
    if trained.diverged:  # the loss became NaN: there are no gradients to measure
        return {"init": at_init, "trained": [math.nan] * len(at_init), "diverged": True}
    after = gradient_norms(trained.result.model.cpu().float(), x, y)
    return {"init": at_init, "trained": after, "diverged": False}


SHATTER_EPS = 0.01  # the nearby input: x + 0.01 ξ, 1% of the normalised images' std
SHATTER_DEPTHS = {"conv": [20, 32, 44, 56, 110]}
SHATTER_IMAGES = 64


def build_at_init(family: str, kind: str, depth: int, seed: int, x: torch.Tensor) -> torch.nn.Module:
    """The (family, kind, depth) net as its run starts: built under the run's seed."""
    name = (CONV if family == "conv" else MLP)[kind].format(d=depth)
    mlp_args = {"input_size": tuple(x.shape[2:])} if family == "mlp" else {}
    torch.manual_seed(seed)
    return create_model(
        name, num_classes=10, in_chans=x.shape[1], **net_kwargs(family, kind, depth), **mlp_args
    )


def correlations(
    settings: Settings, family: str, depths: list[int], seeds: list[int]
) -> dict[str, list[float]]:
    """{"kind depth": per seed, the mean gradient correlation (Balduzzi et al. 2017) over a batch of
    training images at init}."""
    data = (settings.data or "cifar10") if family == "conv" else "mnist"
    out: dict[str, list[float]] = {}
    for kind in CONV:
        for depth in depths:
            values = []
            for seed in seeds:
                x, y = probe_batch(data, settings.data_dir, SHATTER_IMAGES, seed=seed)
                model = build_at_init(family, kind, depth, seed, x)
                values.append(statistics.fmean(gradient_correlation(model, x, y, SHATTER_EPS, seed=seed)))
            out[f"{kind} {depth}"] = values
    return out


def shattered_verdict(corr: dict[str, dict[str, list[float]]], depths: dict[str, list[int]]) -> str:
    """One sentence per family: the plain and residual nets' gradient correlation at the shallowest and
    deepest depth, and at how many depths the residual net's is higher beyond the seed spread."""
    parts = []
    for family, ds in depths.items():
        c = corr[family]
        lo, hi = min(ds), max(ds)
        beyond = sum(change_beyond_spread(c[f"plain {d}"], c[f"residual {d}"]) > 0 for d in ds)
        mean = {key: statistics.fmean(v) for key, v in c.items()}
        parts.append(
            f"{'conv' if family == 'conv' else 'fc'} nets: residual {mean[f'residual {lo}']:.2f} (depth "
            f"{lo}) → {mean[f'residual {hi}']:.2f} ({hi}), plain {mean[f'plain {lo}']:.2f} → "
            f"{mean[f'plain {hi}']:.2f}; the residual net's is higher beyond the seed spread at {beyond} "
            f"of {len(ds)} depths"
        )
    return (
        f"Input gradients at nearby inputs (x and x + {SHATTER_EPS}·ξ) correlate, at init: "
        + "; ".join(parts)
        + "."
    )


def correlation_table(corr: dict[str, dict[str, list[float]]], depths: dict[str, list[int]]) -> str:
    """Gradient correlation at init, one row per (family, kind), one column per depth."""
    tables = []
    for family, ds in depths.items():
        rows = [
            [
                f"{kind} ({'conv' if family == 'conv' else 'fc'})",
                *(pm(corr[family][f"{kind} {d}"], digits=3) for d in ds),
            ]
            for kind in CONV
        ]
        tables.append(markdown_table(["gradient correlation at init", *(f"depth {d}" for d in ds)], rows))
    return "\n\n".join(tables)


def plot_correlations(
    out: Path, corr: dict[str, dict[str, list[float]]], depths: dict[str, list[int]]
) -> str:
    """Gradient correlation at init against depth, one line per kind (± std over seeds), per family."""
    fig, axes = figure(len(depths), 1)
    for col, (family, ds) in enumerate(depths.items()):
        ax = axes[0][col]
        for kind in CONV:
            curves = [
                [(d, corr[family][f"{kind} {d}"][i]) for d in ds]
                for i in range(len(corr[family][f"{kind} {ds[0]}"]))
            ]
            plot_curve(ax, mean_curve(curves), "o-", color=COLORS[kind], label=kind)
        ax.axhline(0, color="gray", lw=0.5)
        ax.set(
            title=f"{'conv (CIFAR-10)' if family == 'conv' else 'fc (MNIST)'}: shattered gradients at init",
            xlabel="depth (layers)",
            ylabel=f"corr(∂ℓ/∂x at x, at x + {SHATTER_EPS}ξ)",
        )
        ax.legend()
    return save_figure(fig, out, "gradients_shattered.png")


def table_row(family: str, net: Net, runs: list[dict]) -> list[str]:
    """First/last ratio and log10 spread at init and after training, mean ± std over seeds."""
    return [
        f"{net.kind} {net.depth}" + (" (conv)" if family == "conv" else " (fc)"),
        pm([first_last_ratio(r["init"]) for r in runs], digits=3),
        pm([math.log10(spread(r["init"])) for r in runs]),
        pm([first_last_ratio(r["trained"]) for r in runs], digits=3),
        pm([math.log10(spread(r["trained"])) for r in runs]),
    ]


def plot_norms(out: Path, family: str, results: dict[str, list[dict]], depths: list[int], steps: int) -> str:
    """Per-layer norms (mean over seeds) at init and after training, one line per net."""
    fig, axes = figure(2, 1)
    for kind in ("plain", "residual", "highway"):
        for j, depth in enumerate(depths):
            runs = results[f"{family}/{kind}{depth}"]
            for col, when in enumerate(("init", "trained")):
                plot_curve(
                    axes[0][col],
                    mean_profile([r[when] for r in runs]),
                    band=False,  # norms span decades: a linear ± std band means nothing on log axes
                    color=COLORS[kind],
                    alpha=0.4 + 0.6 * (j + 1) / len(depths),
                    label=f"{kind} {depth}",
                )
    for ax in axes[0]:
        ax.set_yscale("log")
    axes[0][0].set(title=f"{family}: at initialisation", xlabel="layer", ylabel="‖∂L/∂W‖")
    axes[0][1].set(title=f"{family}: after {steps} steps", xlabel="layer")
    axes[0][1].legend(fontsize=7, ncol=2)
    return save_figure(fig, out, f"gradients_{family}.png")


@experiment("gradients", "gradient norm per layer at init and after training, plain/residual/highway")
def run(settings: Settings) -> Report:
    """Measure every (family, kind, depth, seed) and compare the plain nets' spread with the others'."""
    seeds = seeds_for(settings)
    steps = int(settings.pick("budget", 50, 500))
    conv_depths = settings.pick("depths", [20, 56], [20, 32, 44, 56, 110])
    mlp_depths = [10, 50, 100] if settings.quick else [10, 20, 50, 100]
    families = {"conv": conv_depths, "mlp": mlp_depths}
    sweeps = {f: sweep_for(settings, f, depths, seeds, steps) for f, depths in families.items()}
    results: dict[str, list[dict]] = {}
    rows = []
    for family, sweep in sweeps.items():
        measured = {
            (net.key, seed): measure(settings, sweep, family, net, seed) for net, seed in sweep.jobs()
        }
        for net in sweep.nets:
            results[f"{family}/{net.key}"] = runs = [measured[(net.key, s)] for s in seeds]
            rows.append(table_row(family, net, runs))
    figures = [plot_norms(Path(settings.out), f, results, depths, steps) for f, depths in families.items()]
    # Cheap (no training): every depth unless --depths names some.
    shatter_depths = {"conv": settings.depths or SHATTER_DEPTHS["conv"], "mlp": mlp_depths}
    corr = {f: correlations(settings, f, ds, seeds) for f, ds in shatter_depths.items()}
    figures.append(plot_correlations(Path(settings.out), corr, shatter_depths))

    def log_spreads(family: str, kind: str, when: str) -> list[float]:
        runs = results[f"{family}/{kind}{max(families[family])}"]
        return [math.log10(spread(r[when])) for r in runs]

    comparisons = {
        (family, when): (log_spreads(family, "plain", when), log_spreads(family, "residual", when))
        for family in families
        for when in ("init", "trained")
    }
    verdict = (
        gradients_verdict(comparisons, {f: max(d) for f, d in families.items()}, steps)
        + " "
        + shattered_verdict(corr, shatter_depths)
    )
    return Report(
        name="gradients",
        title="Gradient norm per layer: plain, residual and highway nets",
        command=settings.command,
        settings={
            "conv depths": conv_depths,
            "fc depths": mlp_depths,
            "steps": steps,
            "seeds": seeds,
            "batch": 128,
        },
        results={
            "runs": results,
            "plain_wider": {f"{f}/{w}": wider(*c) for (f, w), c in comparisons.items()},
            "gradient_correlation": corr,
            "shatter_eps": SHATTER_EPS,
        },
        table=markdown_table(
            [
                "net",
                "first/last at init",
                "log10 spread at init",
                f"first/last after {steps} steps",
                f"log10 spread after {steps} steps",
            ],
            rows,
        )
        + "\n\n"
        + correlation_table(corr, shatter_depths),
        verdict=verdict,
        figures=figures,
        notes=[
            "‖∂L/∂W‖ of the mean cross-entropy on one batch of 128 training images, in training mode "
            "(batch statistics), for the stem, every branch conv (or layer matrix) and the classifier; "
            "shortcut projections and gates are left out. Spread = max/min over layers.",
            "'nan' after training: the run's loss became NaN (it diverged) before the steps were done.",
            "Conv nets train with he2016-cifar and its linear warm-up (0.01 → 0.1 over 200 steps, as in "
            "degradation), fully connected nets with highway-mnist (the run's precision); the norms are "
            "measured in fp32.",
            "Residual fc nets start with their summing layers' matrices scaled by 1/√n (`scale_branches`): "
            "with plain He init the un-normalised identity sums explode (output std 1.7e12 at 100 layers) "
            "and the nets diverged within 50 steps. Highway fc nets get the per-depth gate bias of the "
            "highway experiment.",
            f"Gradient correlation (Balduzzi et al. 2017): per image, the Pearson correlation of ∂ℓ/∂x at x "
            f"and at x + {SHATTER_EPS}·ξ (ξ ~ N(0, 1) on the normalised image), mean over {SHATTER_IMAGES} "
            "training images, nets at init in training mode. Balduzzi et al. walk a 1-D input along a line "
            "and take the gradients' autocorrelation; a pair of nearby images is the same question asked "
            "of a 3,072-dimensional input.",
        ],
        environment=environment(runs=[*sweeps["conv"].runs, *sweeps["mlp"].runs]),
    )
