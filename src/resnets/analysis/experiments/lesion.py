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

from resnets.analysis.experiments.common import (
    Settings,
    error_rate,
    figure,
    held_out_split,
    save_figure,
    seeds_for,
    train_run,
)
from resnets.analysis.probes import lesioned, skip_blocks
from resnets.analysis.report import Report, environment, markdown_table, mean_std, pm

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


def run(settings: Settings) -> Report:
    """Train the residual net and its plain twin per seed, then lesion both."""
    data = settings.data or "cifar10"
    depth = (settings.depths or [20 if settings.quick else 110])[0]
    epochs = settings.pick("budget", 1, 164)
    recipe = "he2016-cifar"
    seeds = seeds_for(settings)
    n_test = 2000 if settings.quick else None
    x, y = held_out_split(data, settings.data_dir)
    x, y = x[:n_test], y[:n_test]
    results: dict[str, list[dict]] = {"residual": [], "plain": []}
    for seed in seeds:
        for kind, name in (("residual", f"resnet{depth}"), ("plain", f"plain{depth}")):
            run_dir = Path(settings.out) / "runs" / f"{name}-s{seed}"
            trained = train_run(settings, name, run_dir, recipe=recipe, data=data, seed=seed, epochs=epochs)
            model = trained.model.eval()
            half = len(skip_blocks(model)) // 2
            results[kind].append(lesion_errors(model, x, y, half, seed, settings.precision))

    n_blocks = len(results["residual"][0]["single"])
    down = results["residual"][0]["downsampling"]
    fig, axes = figure(2, 1)
    for kind, style in (("residual", "o-"), ("plain", "s--")):
        runs = results[kind]
        mean_single = [statistics.fmean(r["single"][i] for r in runs) for i in range(n_blocks)]
        axes[0][0].plot(range(1, n_blocks + 1), [100 * e for e in mean_single], style, label=f"{kind}{depth}")
        axes[0][0].axhline(100 * statistics.fmean(r["intact"] for r in runs), ls=":", color="gray")
        ks = sorted(runs[0]["several"])
        axes[0][1].plot(
            ks,
            [100 * statistics.fmean(e for r in runs for e in r["several"][k]) for k in ks],
            style,
            label=f"{kind}{depth}",
        )
    for i in down:
        axes[0][0].axvline(i + 1, color="red", alpha=0.2)
    axes[0][0].set(
        xlabel="deleted block (red: downsampling)", ylabel="test error (%)", title="one block deleted"
    )
    axes[0][1].set(
        xlabel="blocks deleted (random, not downsampling)", ylabel="test error (%)", title="several"
    )
    for ax in axes[0]:
        ax.legend()
    fig_name = save_figure(fig, Path(settings.out), "lesion.png")

    def typical_increase(kind: str) -> list[float]:
        """Per seed: the median error increase over single deletions of non-downsampling blocks."""
        out = []
        for r in results[kind]:
            rest = [e for i, e in enumerate(r["single"]) if i not in r["downsampling"]]
            out.append(statistics.median(rest) - r["intact"])
        return out

    res_inc, plain_inc = typical_increase("residual"), typical_increase("plain")
    rows = []
    for kind in ("residual", "plain"):
        runs = results[kind]
        inc = res_inc if kind == "residual" else plain_inc
        rows.append(
            [
                f"{kind}{depth}",
                pm([r["intact"] for r in runs], 100),
                pm(inc, 100),
                pm([max(r["single"]) for r in runs], 100),
            ]
        )
    ratio = mean_std(plain_inc)[0] / max(mean_std(res_inc)[0], 1e-9)
    robust = ratio > 4  # the residual net loses less than a quarter of what the plain net loses
    more_robust = mean_std(plain_inc)[0] - mean_std(res_inc)[0] > max(
        mean_std(res_inc)[1], mean_std(plain_inc)[1]
    )
    verdict = (
        f"Deleting one non-downsampling block raises the test error of resnet{depth} by a median "
        f"{pm(res_inc, 100)} points and that of plain{depth} by {pm(plain_inc, 100)} points: "
        + (
            "the residual net survives lesions, the plain net does not (as Veit et al. 2016 found)."
            if robust
            else f"the residual net loses {ratio:.1f}× less, but far more than the near-unchanged error "
            "Veit et al. 2016 found for a fully trained ResNet-110."
            if more_robust
            else "the residual net is not more robust here (Veit et al. 2016 found it is)."
        )
    )
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
        verdict=verdict,
        figures=[fig_name],
        notes=notes,
        environment=environment(settings.torch_device),
    )
