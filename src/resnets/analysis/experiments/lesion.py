"""lesion (Veit, Wilber & Belongie 2016): delete residual blocks of a trained network at test time and
measure the test error; the same for its plain twin.

A deleted block passes on only its skip path (for a plain block, the parameter-free identity, option A
where the shape changes). Veit et al. found that deleting one block of a ResNet barely changes the
error, except at the downsampling blocks, that the error grows smoothly with the number deleted, and
that deleting a layer of a plain network destroys it.
"""

from __future__ import annotations

import random
import statistics
from pathlib import Path

import torch

from resnets.analysis.experiments.common import Settings, error_rate, held_out_split, seeds_for
from resnets.analysis.experiments.registry import experiment
from resnets.analysis.experiments.sweep import Sweep, grid
from resnets.analysis.plots import figure, plot_curve, save_figure
from resnets.analysis.probes import lesioned, skip_blocks
from resnets.analysis.report import (
    Report,
    change_beyond_spread,
    environment,
    markdown_table,
    mean_curve,
    mean_profile,
    mean_std,
    pm,
)

NETS = {"residual": "resnet{d}", "plain": "plain{d}"}
DRAWS = 5  # random block sets per number deleted


def downsampling(model: torch.nn.Module) -> list[int]:
    """Indices of the blocks that change the feature map's shape (their skip is not the identity)."""
    return [
        i
        for i, (_, b) in enumerate(skip_blocks(model))
        if (getattr(b, "conv1", None) is not None and b.conv1.stride != (1, 1))
        or (getattr(b, "conv2", None) is not None and b.conv2.stride != (1, 1))
    ]


def lesion_errors(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    max_deleted: int,
    seed: int,
    precision: str = "auto",
) -> dict:
    """Test error intact, with each single block deleted, and with k random non-downsampling blocks
    deleted (k = 1…max_deleted, DRAWS draws each)."""
    blocks = skip_blocks(model)
    down = downsampling(model)
    single = []
    for i in range(len(blocks)):
        with lesioned(model, [i]):
            single.append(error_rate(model, x, y, precision))
    rng = random.Random(seed)
    keep = [i for i in range(len(blocks)) if i not in down]
    several = {}
    for k in range(1, min(max_deleted, len(keep)) + 1):
        errs = []
        for _ in range(DRAWS):
            with lesioned(model, rng.sample(keep, k)):
                errs.append(error_rate(model, x, y, precision))
        several[k] = errs
    return {
        "intact": error_rate(model, x, y, precision),
        "single": single,
        "several": several,
        "downsampling": down,
    }


@experiment("lesion", "delete blocks at test time (Veit et al. 2016)")
def run(settings: Settings) -> Report:
    """Train the residual net and its plain twin per seed, then lesion both."""
    data = settings.data or "cifar10"
    depth = (settings.depths or [20 if settings.quick else 110])[0]
    epochs = settings.pick("budget", 1, 164)
    recipe = "he2016-cifar"
    seeds = seeds_for(settings)
    sweep = Sweep(
        settings,
        grid(NETS, [depth]),
        seeds,
        recipe=recipe,
        data=data,
        epochs=epochs,
        run_name="{model}-s{seed}",
    )
    n_test = 2000 if settings.quick else None
    x, y = held_out_split(data, settings.data_dir)
    x, y = x[:n_test], y[:n_test]
    results: dict[str, list[dict]] = {kind: [] for kind in NETS}
    for net, seed in sweep.jobs():
        model = sweep.train(net, seed).result.model.eval()
        half = len(skip_blocks(model)) // 2
        results[net.kind].append(lesion_errors(model, x, y, half, seed, settings.precision))
    increase = {kind: typical_increase(runs) for kind, runs in results.items()}
    rows = [
        [
            f"{kind}{depth}",
            pm([r["intact"] for r in runs], 100),
            pm(increase[kind], 100),
            pm([max(r["single"]) for r in runs], 100),
        ]
        for kind, runs in results.items()
    ]
    robust, more_robust = robustness(increase["residual"], increase["plain"])
    notes = [f"Error on the first {len(y):,} test images." if n_test else "Error on the whole test set."]
    if settings.quick:
        notes.append(
            f"Quick setting: {depth}-layer nets trained {epochs} epoch(s) of he2016-cifar (Veit et al.: "
            "ResNet-110 fully trained); the paper's numbers are not expected, only the contrast."
        )
    return Report(
        name="lesion",
        title=f"Lesion study: deleting blocks of resnet{depth} and plain{depth} at test time",
        command=settings.command,
        settings={"data": data, "depth": depth, "epochs": epochs, "recipe": recipe, "seeds": seeds},
        results={
            "residual": results["residual"],
            "plain": results["plain"],
            "robust": robust,
            "more_robust": more_robust,
        },
        table=markdown_table(
            ["net", "intact error (%)", "median increase, one block (points)", "worst single deletion (%)"],
            rows,
        ),
        verdict=lesion_verdict(increase["residual"], increase["plain"], depth),
        figures=[plot_lesions(Path(settings.out), results, depth)],
        notes=notes,
        environment=environment(settings.torch_device, sweep.runs),
    )


def typical_increase(runs: list[dict]) -> list[float]:
    """Per seed: the median error increase over single deletions of non-downsampling blocks."""
    out = []
    for r in runs:
        rest = [e for i, e in enumerate(r["single"]) if i not in r["downsampling"]]
        out.append(statistics.median(rest) - r["intact"])
    return out


def loss_ratio(residual: list[float], plain: list[float]) -> float:
    """How many times more error the plain net loses to one deletion than the residual net (means)."""
    return mean_std(plain)[0] / max(mean_std(residual)[0], 1e-9)


def robustness(residual: list[float], plain: list[float]) -> tuple[bool, bool]:
    """(robust, more_robust) from the per-seed typical increases: robust when the residual net loses
    less than a quarter of what the plain net loses (Veit et al.: nearly nothing against destroyed),
    more robust when the plain net loses more by more than the seed-to-seed spread."""
    return loss_ratio(residual, plain) > 4, change_beyond_spread(residual, plain) > 0


def lesion_verdict(residual: list[float], plain: list[float], depth: int) -> str:
    """One sentence: how much one deletion costs each net, against Veit et al. 2016's finding."""
    robust, more_robust = robustness(residual, plain)
    return (
        f"Deleting one non-downsampling block raises the test error of resnet{depth} by a median "
        f"{pm(residual, 100)} points and that of plain{depth} by {pm(plain, 100)} points: "
        + (
            "the residual net survives lesions, the plain net does not (as Veit et al. 2016 found)."
            if robust
            else f"the residual net loses {loss_ratio(residual, plain):.1f}× less, but far more than the "
            "near-unchanged error Veit et al. 2016 found for a fully trained ResNet-110."
            if more_robust
            else "the residual net is not more robust here (Veit et al. 2016 found it is)."
        )
    )


def plot_lesions(out: Path, results: dict[str, list[dict]], depth: int) -> str:
    """Test error with each single block deleted and with k random blocks deleted, mean ± std over
    seeds, residual against plain; the intact error dotted, the downsampling blocks in red."""
    fig, axes = figure(2, 1)
    for kind, style in (("residual", "o-"), ("plain", "s--")):
        runs = results[kind]
        single = mean_profile([r["single"] for r in runs])
        plot_curve(axes[0][0], single, style, scale=100, label=f"{kind}{depth}")
        axes[0][0].axhline(100 * statistics.fmean(r["intact"] for r in runs), ls=":", color="gray")
        several = [[(int(k), statistics.fmean(e)) for k, e in sorted(r["several"].items())] for r in runs]
        plot_curve(axes[0][1], mean_curve(several), style, scale=100, label=f"{kind}{depth}")
    for i in results["residual"][0]["downsampling"]:
        axes[0][0].axvline(i + 1, color="red", alpha=0.2)
    axes[0][0].set(
        xlabel="deleted block (red: downsampling)", ylabel="test error (%)", title="one block deleted"
    )
    axes[0][1].set(
        xlabel="blocks deleted (random, not downsampling)", ylabel="test error (%)", title="several"
    )
    for ax in axes[0]:
        ax.legend()
    return save_figure(fig, out, "lesion.png")
