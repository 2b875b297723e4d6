"""normfree: residual nets without normalisation. One CIFAR ResNet trained five ways: with batch norm
(He et al. 2016), without any normalisation and He init (the net's output grows with depth: at init
resnet56's logits have a std near 10^4), and without normalisation kept trainable by Fixup (Zhang et
al. 2019), SkipInit (De & Smith 2020) or ReZero (Bachlechner et al. 2020); see resnets.blocks.

The papers' claims tested: the un-normalised net with plain init diverges or trains far worse; Fixup
trains to within about a point of the batch-norm net (their ResNet-110: 7.24% vs 6.61%); ReZero
reaches a given accuracy sooner than the other normalisation-free nets.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from resnets.analysis.experiments.common import LINEAR_WARMUP, Settings, seeds_for
from resnets.analysis.experiments.registry import experiment
from resnets.analysis.experiments.sweep import Run, Sweep, variants
from resnets.analysis.plots import figure, plot_curve, save_figure
from resnets.analysis.report import Report, change_beyond_spread, environment, markdown_table, mean_curve, pm

NO_NORM = {"norm_layer": "identity"}
VARIANTS = {  # what each net's name means in the table
    "batchnorm": {},
    "no-norm": NO_NORM,  # He init and nothing else
    "fixup": {**NO_NORM, "residual_scale": "fixup"},
    "skipinit": {**NO_NORM, "residual_scale": "skipinit"},
    "rezero": {**NO_NORM, "residual_scale": "rezero"},
}
NORM_FREE = ("fixup", "skipinit", "rezero")
RECIPE = "fast-cifar"
TARGET = 0.5  # "reaches a given accuracy": the first logged step with 50% training accuracy


def steps_to(run: Run, target: float = TARGET) -> float:
    """The first logged step at which the run's training accuracy reached `target` (inf if never)."""
    for r in run.records("train_step"):
        if r["accuracy"] >= target:
            return float(r["step"])
    return math.inf


@experiment("normfree", "residual nets without normalisation: Fixup, SkipInit, ReZero vs batch norm")
def run(settings: Settings) -> Report:
    """Train each variant per seed; compare final error, divergence and the steps to 50% accuracy."""
    data = settings.data or "cifar10"
    depth = (settings.depths or [32 if settings.quick else 110])[0]
    epochs = settings.pick("budget", 1, 164)
    seeds = seeds_for(settings, quick=(0, 1, 2))
    sweep = Sweep(
        settings,
        variants("resnet{d}", depth, VARIANTS),
        seeds,
        recipe=RECIPE,
        data=data,
        epochs=epochs,
        overrides=LINEAR_WARMUP,
        log_points=60,
        may_diverge=True,
    )
    runs = {key.removesuffix(str(depth)): per_seed for key, per_seed in sweep.train_all().items()}
    results = {
        kind: {
            "error": [r.test_error for r in per_seed],
            "diverged": [r.diverged for r in per_seed],
            "steps_to_target": [steps_to(r) for r in per_seed],
        }
        for kind, per_seed in runs.items()
    }
    rows = [
        [
            kind,
            pm(r["error"], 100),
            f"{sum(r['diverged'])} of {len(r['diverged'])}",
            pm(r["steps_to_target"], digits=0)
            if all(map(math.isfinite, r["steps_to_target"]))
            else "not reached",
        ]
        for kind, r in results.items()
    ]
    return Report(
        name="normfree",
        title=f"resnet{depth} without normalisation: Fixup, SkipInit and ReZero against batch norm",
        command=settings.command,
        settings={"data": data, "depth": depth, "epochs": epochs, "recipe": RECIPE, "seeds": seeds},
        results=results,
        table=markdown_table(
            ["net", "test error (%)", "runs diverged", f"steps to {TARGET:.0%} training accuracy"], rows
        ),
        verdict=normfree_verdict(results, depth),
        figures=[plot_curves(Path(settings.out), runs, depth)],
        notes=[
            f"Schedule: {RECIPE} over {epochs:g} epoch(s) behind the depth experiments' 200-step linear "
            "warm-up from lr 0.01, the same for every variant (the papers tune per method: Fixup adds "
            "mixup, ReZero a larger lr); a diverged run (NaN loss) counts as 100% error.",
            "Fixup's scalar bias before the classifier is left out (the classifier has its own bias).",
        ],
        environment=environment(settings.torch_device, sweep.runs),
    )


def normfree_verdict(results: dict[str, dict[str, list]], depth: int) -> str:
    """Three clauses, one per claim, each from the numbers against the seed spread."""
    bn, bare = results["batchnorm"], results["no-norm"]
    err = {kind: statistics.fmean(r["error"]) for kind, r in results.items()}
    bare_fails = any(bare["diverged"]) or change_beyond_spread(bn["error"], bare["error"]) > 0
    first = (
        f"Without normalisation and with He init, resnet{depth} "
        + (
            f"diverged in {sum(bare['diverged'])} of {len(bare['diverged'])} runs"
            if any(bare["diverged"])
            else f"reached {100 * err['no-norm']:.2f}% error"
        )
        + f" against batch norm's {100 * err['batchnorm']:.2f}%"
        + (" (as expected)" if bare_fails else " (not worse beyond the spread: not the expected failure)")
    )
    gap = err["fixup"] - err["batchnorm"]
    spread = max(statistics.pstdev(bn["error"]), statistics.pstdev(results["fixup"]["error"]))
    second = f"Fixup is {100 * gap:+.2f} points from batch norm " + (
        "(within a point, as Zhang et al. found)" if abs(gap) <= max(0.01, spread) else "(not within a point)"
    )
    speed = {kind: statistics.fmean(results[kind]["steps_to_target"]) for kind in NORM_FREE}
    fastest = min(speed, key=speed.get)  # type: ignore[arg-type]
    if not math.isfinite(speed[fastest]):
        # Then the final errors are what this budget can say about the three.
        order = ", ".join(f"{kind} {100 * err[kind]:.2f}%" for kind in sorted(NORM_FREE, key=err.get))
        return (
            f"{first}; {second}; no normalisation-free net reached {TARGET:.0%} training accuracy in all its "
            "runs within this budget, so which is fastest is not decided here "
            f"(by final test error: {order})."
        )
    third = (
        f"to {TARGET:.0%} training accuracy ReZero took {speed['rezero']:.0f} steps, Fixup "
        f"{speed['fixup']:.0f} and SkipInit {speed['skipinit']:.0f}: "
        + (
            "ReZero is the fastest, as Bachlechner et al. found."
            if fastest == "rezero"
            else f"{fastest} is the fastest."
        )
    )
    return f"{first}; {second}; {third}"


def plot_curves(out: Path, runs: dict[str, list[Run]], depth: int) -> str:
    """Training loss (log scale) and training error against the step, mean ± std over seeds."""
    fig, axes = figure(2, 1)
    for j, (kind, per_seed) in enumerate(runs.items()):
        finished = [r for r in per_seed if r.records("train_step")]
        if not finished:
            continue
        loss = mean_curve([r.curve("train_step", lambda rec: rec["loss"]) for r in finished])
        error = mean_curve([r.curve("train_step", lambda rec: 1 - rec["accuracy"]) for r in finished])
        plot_curve(axes[0][0], loss, "-", color=f"C{j}", label=kind)
        plot_curve(axes[0][1], error, "-", scale=100, color=f"C{j}", label=kind)
    axes[0][0].set(title=f"resnet{depth}: training loss", xlabel="iteration", ylabel="loss", yscale="log")
    axes[0][1].set(title="training error", xlabel="iteration", ylabel="error (%)")
    axes[0][1].legend()
    return save_figure(fig, out, "normfree.png")
