"""lesion (Veit, Wilber & Belongie 2016): delete or reorder the blocks of a trained network at test time
and measure the test error; the same for its plain twin.

A deleted block passes on only its skip path (for a plain block, the parameter-free identity, option A
where the shape changes). Veit et al. found, for a fully trained ResNet-110 on CIFAR-10 (§4.2–4.3,
Fig. 3): deleting one block barely changes the error, except at the downsampling blocks; the error grows
smoothly with the number of blocks deleted at random; swapping pairs of blocks of the same shape raises
it smoothly too; and deleting one layer of a plain network (VGG-15) sends it to chance.

The nets: resnets' shipped CIFAR-10 weights where both twins of the depth are shipped (resnet20.cifar10
and plain20.cifar10: trained to within a point of their full accuracy, the regime the paper measures),
else each seed's nets trained here for `--budget` epochs.
"""

from __future__ import annotations

import itertools
import random
import statistics
from collections.abc import Sequence
from pathlib import Path

import torch

from resnets.analysis.experiments.common import Settings, dataset_splits, error_rate, seeds_for
from resnets.analysis.experiments.registry import experiment
from resnets.analysis.experiments.twins import Twins, trained_twins
from resnets.analysis.plots import figure, plot_curve, save_figure
from resnets.analysis.probes import lesioned, reordered, skip_blocks, swappable_pairs
from resnets.analysis.report import (
    Curve,
    Report,
    change_beyond_spread,
    environment,
    markdown_table,
    mean_profile,
    mean_std,
    pm,
)

NETS = {"residual": "resnet{d}", "plain": "plain{d}"}
DRAWS = 3  # random block sets (and random swaps) per number deleted (swapped), per seed
QUICK_TEST_IMAGES = 5000  # --quick evaluates the first 5,000 test images (binomial std ≈ 0.4 points at 10%)
CHANCE_MARGIN = 0.05  # a curve within 5 points of chance error (90% on CIFAR-10) has stopped rising
MAX_COUNTS = 12  # numbers of deleted blocks / swaps evaluated per curve: resnet56 has 25 and 92 of them


def spread_counts(n: int, at_most: int = MAX_COUNTS) -> list[int]:
    """1 … n when n ≤ `at_most`, else `at_most` counts spread evenly from 1 to n (both ends kept): the
    curves' shape at a fixed cost (resnet20: every count; resnet56: 12 of 25 deletions, 12 of 92 swaps)."""
    if n <= at_most:
        return list(range(1, n + 1))
    return sorted({round(1 + i * (n - 1) / (at_most - 1)) for i in range(at_most)})


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
    seeds: Sequence[int],
    precision: str = "auto",
    draws: int = DRAWS,
) -> dict:
    """Test error of one net: intact, with each single block deleted, with k random non-downsampling
    blocks deleted (k = 1 … all of them) and after k random swaps of same-shape blocks (k = 1 … the
    number of such pairs), k thinned by `spread_counts`; `draws` random sets per k for each seed."""
    blocks, down = skip_blocks(model), downsampling(model)
    pairs = swappable_pairs(model, x[:1])
    single = []
    for i in range(len(blocks)):
        with lesioned(model, [i]):
            single.append(error_rate(model, x, y, precision))
    keep = [i for i in range(len(blocks)) if i not in down]
    several: dict[int, list[float]] = {k: [] for k in spread_counts(len(keep))}
    swapped: dict[int, list[float]] = {k: [] for k in spread_counts(len(pairs))}
    for seed in seeds:
        rng = random.Random(seed)
        for k in several:
            for _ in range(draws):
                with lesioned(model, rng.sample(keep, k)):
                    several[k].append(error_rate(model, x, y, precision))
        for k in swapped:
            for _ in range(draws):
                with reordered(model, rng.sample(pairs, k)):
                    swapped[k].append(error_rate(model, x, y, precision))
    return {
        "chance": 1 - 1 / model.num_classes,
        "intact": error_rate(model, x, y, precision),
        "single": single,
        "several": several,
        "reordered": swapped,
        "downsampling": down,
        "pairs": pairs,
    }


def lesion_inputs(settings: Settings, data: str, depth: int) -> tuple[Twins, dict, list[str], dict]:
    """The twins to lesion, {kind: [(model, draw seeds, test images as it sees them, labels)]}, notes
    and the settings they came from."""
    seeds = seeds_for(settings, quick=(0, 1, 2))
    twins = trained_twins(settings, NETS, depth, data, seeds, "he2016-cifar", settings.pick("budget", 1, 164))
    test = dataset_splits(data, settings.data_dir).test
    n = min(QUICK_TEST_IMAGES, len(test)) if settings.quick else len(test)
    images, labels = test.images[:n], test.labels[:n]
    entries = {
        kind: [
            (t.model, seeds if twins.shipped else [seeds[i]], t.normalize(images), labels)
            for i, t in enumerate(nets)
        ]
        for kind, nets in twins.nets.items()
    }
    notes = [twins.note()]
    if twins.shipped:
        notes.append(
            f"The spreads are over the random draws ({DRAWS} per seed, seeds {', '.join(map(str, seeds))}) "
            "and, for single deletions, over the blocks."
        )
    notes.append(
        f"Error on the first {n:,} of the {len(test):,} test images."
        if n < len(test)
        else "Error on the whole test set."
    )
    return twins, entries, notes, {**twins.source, "draw_seeds": seeds}


@experiment("lesion", "delete and reorder blocks at test time (Veit et al. 2016)")
def run(settings: Settings) -> Report:
    """Lesion the residual net and its plain twin: single deletions, random deletions, reorderings."""
    data = settings.data or "cifar10"
    depth = (settings.depths or [20 if settings.quick else 110])[0]
    twins, nets, notes, source = lesion_inputs(settings, data, depth)
    results = {
        kind: [lesion_errors(model, x, y, seeds, settings.precision) for model, seeds, x, y in entries]
        for kind, entries in nets.items()
    }
    claims = {
        "single": robustness(single_increases(results["residual"]), single_increases(results["plain"])),
        "smooth": smooth_growth(
            *_mean_and_ks(deletion_curve(results["residual"])), near_chance(results["residual"])
        ),
        "plain_smooth": smooth_growth(
            *_mean_and_ks(deletion_curve(results["plain"])), near_chance(results["plain"])
        ),
        "reorder": robustness(swap_increases(results["residual"]), swap_increases(results["plain"])),
    }
    rows = [table_row(NETS[kind].format(d=depth), runs_) for kind, runs_ in results.items()]
    return Report(
        name="lesion",
        title=f"Lesion study: deleting and reordering blocks of resnet{depth} and plain{depth} at test time",
        command=settings.command,
        settings={"data": data, "depth": depth, **source},
        results={**results, "claims": claims},
        table=markdown_table(
            [
                "net",
                "intact error (%)",
                "one block deleted: median increase (points)",
                "worst single deletion (%)",
                "half the blocks deleted (%)",
                "one swap: increase (points)",
            ],
            rows,
        ),
        verdict=lesion_verdict(results, depth),
        figures=[plot_lesions(Path(settings.out), results, depth)],
        notes=notes,
        environment=environment(settings.torch_device, twins.runs or None),
    )


def single_increases(runs: list[dict]) -> list[float]:
    """What one deletion of a non-downsampling block costs: per net the median increase over those
    blocks; for one net (the shipped weights) the increase of each such block, so that the spread the
    verdict is checked against is over the blocks."""
    per_block = [
        [e - r["intact"] for i, e in enumerate(r["single"]) if i not in r["downsampling"]] for r in runs
    ]
    return per_block[0] if len(runs) == 1 else [statistics.median(p) for p in per_block]


def swap_increases(runs: list[dict]) -> list[float]:
    """What one random swap of same-shape blocks costs: every draw's increase over the intact error."""
    return [e - r["intact"] for r in runs for e in r["reordered"].get(1, [])]


def _curve(runs: list[dict], key: str) -> Curve:
    """Error against k (0: intact) over every draw of every net: mean and std per k."""
    ks = sorted(set.intersection(*(set(r[key]) for r in runs))) if runs else []
    values = [[r["intact"] for r in runs]] + [[e for r in runs for e in r[key][k]] for k in ks]
    stats = [mean_std(v) for v in values]
    samples = min(map(len, values[1:])) if ks else len(values[0])  # draws per k: what the band spans
    return Curve([0.0, *map(float, ks)], [m for m, _ in stats], [s for _, s in stats], samples)


def _mean_and_ks(curve: Curve) -> tuple[list[float], list[float]]:
    """A curve's mean errors and the counts they were measured at, as `smooth_growth` takes them."""
    return list(curve.mean), list(curve.x)


def deletion_curve(runs: list[dict]) -> Curve:
    """Error against the number of random non-downsampling blocks deleted (0: intact)."""
    return _curve(runs, "several")


def swap_curve(runs: list[dict]) -> Curve:
    """Error against the number of random swaps of same-shape blocks (0: intact)."""
    return _curve(runs, "reordered")


def near_chance(runs: list[dict]) -> float:
    """The error at which a lesion curve of these nets has stopped rising: chance less CHANCE_MARGIN."""
    return runs[0]["chance"] - CHANCE_MARGIN


def smooth_growth(errors: Sequence[float], ks: Sequence[float] | None = None, ceiling: float = 1.0) -> bool:
    """Whether error rises smoothly along `errors` at counts `ks` (default 0, 1, …), read up to its first
    point at or above `ceiling` (past chance it cannot rise, and the flat tail would hide the rise's
    shape): it ends higher than it starts and no step rises faster per unit of k than twice the average
    rate (Veit et al.: smooth for ResNets; a plain net jumps to chance at the first deletion, one step
    holding almost the whole rise)."""
    ks = list(range(len(errors))) if ks is None else list(ks)
    end = next((i for i, e in enumerate(errors) if e >= ceiling), len(errors) - 1) + 1
    errors, ks = list(errors)[:end], ks[:end]
    rates = [(b - a) / (kb - ka) for (a, ka), (b, kb) in itertools.pairwise(zip(errors, ks, strict=True))]
    total = errors[-1] - errors[0] if errors else 0.0
    return len(rates) >= 2 and total > 0 and max(rates) <= 2 * total / (ks[-1] - ks[0])


def loss_ratio(residual: list[float], plain: list[float]) -> float:
    """How many times more error the plain net loses than the residual net (means)."""
    return mean_std(plain)[0] / max(mean_std(residual)[0], 1e-9)


def robustness(residual: list[float], plain: list[float]) -> tuple[bool, bool]:
    """(robust, more_robust) from the increases: more robust when the plain net loses more by more than
    the spread; robust when, besides, the residual net loses less than a quarter of what the plain net
    loses (Veit et al.: nearly nothing against destroyed)."""
    more_robust = change_beyond_spread(residual, plain) > 0
    return more_robust and loss_ratio(residual, plain) > 4, more_robust


def table_row(name: str, runs: list[dict]) -> list[str]:
    """One net's row: intact error, single deletions, half the blocks deleted, one swap."""
    ks = sorted(runs[0]["several"])
    half = min(ks, key=lambda k: abs(k - ks[-1] / 2))  # the evaluated count nearest half of them
    return [
        name,
        pm([r["intact"] for r in runs], 100),
        pm(single_increases(runs), 100)
        if len(runs) > 1
        else f"{100 * statistics.median(single_increases(runs)):.2f}",
        pm([max(r["single"]) for r in runs], 100),
        f"{pm([e for r in runs for e in r['several'][half]], 100)} (k = {half})",
        pm(swap_increases(runs), 100) if swap_increases(runs) else "–",
    ]


def lesion_verdict(results: dict[str, list[dict]], depth: int) -> str:
    """Three sentences, one per claim of Veit et al. 2016, each decided from the numbers."""
    res, plain = results["residual"], results["plain"]
    r_single, p_single = single_increases(res), single_increases(plain)
    robust, more_robust = robustness(r_single, p_single)
    first = (
        f"Deleting one non-downsampling block raises the test error of resnet{depth} by a median "
        f"{100 * statistics.median(r_single):.2f} points and that of plain{depth} by "
        f"{100 * statistics.median(p_single):.2f}: "
        + (
            "the residual net survives single lesions, the plain net does not (as Veit et al. found)."
            if robust
            else f"the residual net loses {loss_ratio(r_single, p_single):.1f}× less, short of the "
            "near-unchanged error Veit et al. found for a ResNet-110."
            if more_robust
            else "the residual net is not more robust here (Veit et al. found it is)."
        )
    )
    curve = deletion_curve(res)
    second = (
        f"With k random blocks deleted, resnet{depth}'s error "
        + (
            "grows smoothly"
            if smooth_growth(*_mean_and_ks(curve), near_chance(res))
            else "does not rise"
            if curve.mean[-1] <= curve.mean[0]
            else "does not grow smoothly (one step holds most of the rise)"
        )
        + f" from {100 * curve.mean[0]:.1f}% to {100 * curve.mean[-1]:.1f}% (k = {int(curve.x[-1])}), "
        f"while plain{depth} is at {100 * deletion_curve(plain).mean[1]:.1f}% after one."
    )
    r_swap, p_swap = swap_increases(res), swap_increases(plain)
    if not r_swap:
        return f"{first} {second}"
    swap_robust, swap_more = robustness(r_swap, p_swap)
    third = (
        f"One random swap of two same-shape blocks costs resnet{depth} {pm(r_swap, 100)} points and "
        f"plain{depth} {pm(p_swap, 100)}: "
        + (
            "reordering barely hurts the residual net (as Veit et al. found)."
            if swap_robust
            else "the residual net tolerates reordering better, beyond the spread."
            if swap_more
            else "the residual net is not more robust to reordering here."
        )
    )
    return f"{first} {second} {third}"


def plot_lesions(out: Path, results: dict[str, list[dict]], depth: int) -> str:
    """Veit et al.'s Fig. 3 for both nets: error with each single block deleted (downsampling blocks in
    red, intact error dotted), against the number deleted at random and against the number of random
    swaps, mean ± std over draws (and nets)."""
    fig, axes = figure(3, 1)
    for kind, style in (("residual", "o-"), ("plain", "s--")):
        runs = results[kind]
        plot_curve(
            axes[0][0], mean_profile([r["single"] for r in runs]), style, scale=100, label=f"{kind}{depth}"
        )
        axes[0][0].axhline(100 * statistics.fmean(r["intact"] for r in runs), ls=":", color="gray")
        plot_curve(axes[0][1], deletion_curve(runs), style, scale=100, label=f"{kind}{depth}")
        plot_curve(axes[0][2], swap_curve(runs), style, scale=100, label=f"{kind}{depth}")
    for i in results["residual"][0]["downsampling"]:
        axes[0][0].axvline(i + 1, color="red", alpha=0.2)
    axes[0][0].set(
        xlabel="deleted block (red: downsampling)", ylabel="test error (%)", title="one block deleted"
    )
    axes[0][1].set(
        xlabel="blocks deleted (random, not downsampling)", ylabel="test error (%)", title="several deleted"
    )
    axes[0][2].set(xlabel="random swaps of same-shape blocks", ylabel="test error (%)", title="reordered")
    for ax in axes[0]:
        ax.legend()
    return save_figure(fig, out, "lesion.png")
