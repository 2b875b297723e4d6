"""reproduce: train with a paper's recipe and put our CIFAR-10 test error beside the paper's, mean ± std
over seeds. A budget shortens every run (the recipe's milestones are fractions of the run, so the
schedule still decays); the report then says plainly that it is a shortened run.

The `cpu` setting trains the paper's nets with another, complete short schedule instead (fast-cifar:
40 epochs, warm-up and cosine to zero; 3 seeds), beside He et al.'s Table 6 and two public
reproductions' published numbers, and labels every figure as a different schedule."""

from __future__ import annotations

from pathlib import Path

from resnets.analysis.experiments.common import Settings, seeds_for
from resnets.analysis.experiments.registry import experiment
from resnets.analysis.experiments.sweep import Net, Run, Sweep
from resnets.analysis.plots import figure, plot_curve, save_figure
from resnets.analysis.report import Report, environment, markdown_table, mean_curve, mean_std, pm
from resnets.errors import ConfigError

# CIFAR-10 test error (%), with standard augmentation, as the papers report it.
PAPER_ERROR = {
    # He et al. 2016, Table 6 (best of 5 runs for 110; single runs otherwise).
    "he2016-cifar": {
        "resnet20": 8.75,
        "resnet32": 7.51,
        "resnet44": 7.17,
        "resnet56": 6.97,
        "resnet110": 6.43,
        "resnet1202": 7.93,
    },
    # He et al. 2016b, Table 2/3: pre-activation, median of 5 runs.
    "he2016b-preact-cifar": {"preact_resnet110": 6.37, "preact_resnet164": 5.46, "preact_resnet1001": 4.92},
    # Huang et al. 2017, Table 2, C10+.
    "densenet-cifar": {"densenet40_k12": 5.24, "densenet_bc100_k12": 4.51, "densenet_bc190_k40": 3.46},
}
# Published CIFAR-10 test error (%) of public reproductions (each trains 200 epochs, lr ÷10 at 100 and
# 150): akamaster/pytorch_resnet_cifar10 (option A, best runs; its README), chenyaofo/pytorch-cifar-models
# (its README's table; batch 256, Nesterov, wd 1e-4).
PUBLIC_ERROR = {
    "akamaster": {"resnet20": 8.27, "resnet32": 7.37, "resnet44": 6.90, "resnet56": 6.61, "resnet110": 6.32},
    "chenyaofo": {"resnet20": 7.40, "resnet32": 6.47, "resnet44": 5.99, "resnet56": 5.63},
}
CPU_RECIPE, CPU_EPOCHS = "fast-cifar", 40  # the `cpu` setting's schedule (a few hours of 2 cores per net)
ALIASES = {"preact-cifar": "he2016b-preact-cifar"}
# How each recipe turns a depth into a model name, and its default depths.
MODEL_FOR_DEPTH = {
    "he2016-cifar": ("resnet{d}", [20, 32, 44, 56, 110]),
    "he2016b-preact-cifar": ("preact_resnet{d}", [164]),
    "densenet-cifar": ({40: "densenet40_k12", 100: "densenet_bc100_k12", 190: "densenet_bc190_k40"}, [100]),
}
FULL_EPOCHS = {"he2016-cifar": 164, "he2016b-preact-cifar": 164, "densenet-cifar": 300}


def models_for(recipe: str, depths: list[int] | None) -> list[str]:
    """The model names a recipe reproduces at `depths` (default: the paper's table)."""
    pattern, default = MODEL_FOR_DEPTH[recipe]
    names = []
    for d in depths or default:
        name = pattern.get(d) if isinstance(pattern, dict) else pattern.format(d=d)
        if name not in PAPER_ERROR[recipe]:
            known = ", ".join(str(k) for k in (pattern if isinstance(pattern, dict) else default))
            raise ConfigError(f"{recipe} has no paper figure for depth {d}; depths with one: {known}")
        names.append(name)
    return names


@experiment("reproduce", "a paper's recipe, our error beside the paper's")
def run(settings: Settings) -> Report:
    """Train each model per seed with the recipe (shortened to the budget) and compare with the paper."""
    recipe = ALIASES.get(settings.recipe or "he2016-cifar", settings.recipe or "he2016-cifar")
    if recipe not in PAPER_ERROR:
        raise ConfigError(
            f"nothing to reproduce for {recipe!r}; choose one of {', '.join([*PAPER_ERROR, *ALIASES])}"
        )
    if settings.cpu:
        return run_cpu(settings, recipe)
    models = models_for(recipe, settings.depths)
    full = FULL_EPOCHS[recipe]
    epochs = settings.pick("budget", 1, full)
    seeds = seeds_for(settings)
    data = settings.data or "cifar10"
    sweep = Sweep(settings, [Net(name, name) for name in models], seeds, recipe, data, epochs=epochs)
    errors = {
        name: [100 * (1 - r.result.summary["test_accuracy"]) for r in runs]
        for name, runs in sweep.train_all().items()
    }
    rows = [
        [
            name,
            f"{PAPER_ERROR[recipe][name]:.2f}",
            pm(errs),
            f"{mean_std(errs)[0] - PAPER_ERROR[recipe][name]:+.2f}",
        ]
        for name, errs in errors.items()
    ]
    shortened = epochs < full
    gaps = {n: mean_std(e)[0] - PAPER_ERROR[recipe][n] for n, e in errors.items()}
    worst = max(gaps, key=lambda n: abs(gaps[n]))
    verdict = (
        f"SHORTENED RUN ({epochs} of {full} epochs): our errors are not comparable with the paper's; "
        f"the largest gap is {gaps[worst]:+.2f} points ({worst})."
        if shortened
        else f"With the paper's full recipe our errors are within {abs(gaps[worst]):.2f} points of the paper "
        f"(largest gap: {worst})."
    )
    return Report(
        name="reproduce",
        title=f"Reproducing {recipe} on CIFAR-10",
        command=settings.command,
        settings={"recipe": recipe, "models": models, "epochs": epochs, "full epochs": full, "seeds": seeds},
        results={
            "errors": errors,
            "paper": {n: PAPER_ERROR[recipe][n] for n in models},
            "shortened": shortened,
        },
        table=markdown_table(["model", "paper error (%)", "our error (%)", "difference (points)"], rows),
        verdict=verdict,
        notes=[
            "He et al. chose the schedule on a 45k/5k split and report single runs (best of 5 for "
            "ResNet-110); He et al. 2016b and Huang et al. report medians of 5 runs. We train on all 50k "
            "training images and report mean ± std over the seeds run.",
        ],
        environment=environment(settings.torch_device, sweep.runs),
    )


def run_cpu(settings: Settings, recipe: str) -> Report:
    """The paper's nets (default: the shallowest) trained with fast-cifar's complete 40-epoch schedule over
    3 seeds, beside the paper's and the public reproductions' errors; never called a reproduction."""
    default = MODEL_FOR_DEPTH[recipe][1]
    models = models_for(recipe, settings.depths or default[:1])
    epochs = settings.budget or CPU_EPOCHS
    seeds = seeds_for(settings, quick=(0, 1, 2))
    sweep = Sweep(
        settings, [Net(n, n) for n in models], seeds, CPU_RECIPE, settings.data or "cifar10", epochs=epochs
    )
    runs = sweep.train_all()
    errors = {
        name: [100 * (1 - r.result.summary["test_accuracy"]) for r in seeds] for name, seeds in runs.items()
    }
    rows, gaps = [], {}
    for name, errs in errors.items():
        paper = PAPER_ERROR[recipe][name]
        gaps[name] = mean_std(errs)[0] - paper
        public = [PUBLIC_ERROR[who].get(name) for who in PUBLIC_ERROR]
        rows.append(
            [
                name,
                f"{paper:.2f}",
                *("–" if p is None else f"{p:.2f}" for p in public),
                pm(errs),
                f"{gaps[name]:+.2f}",
            ]
        )
    said = "; ".join(
        f"{n} {pm(errors[n])}% test error against He et al.'s {PAPER_ERROR[recipe][n]:.2f}% "
        f"({abs(gaps[n]):.2f} points {'below' if gaps[n] < 0 else 'above'})"
        for n in models
    )
    verdict = (
        f"DIFFERENT SCHEDULE ({CPU_RECIPE}, {epochs:g} epochs, not the paper's {FULL_EPOCHS[recipe]}): "
        f"{said}, mean ± std over {len(seeds)} seeds."
    )
    return Report(
        name="reproduce",
        title=f"The nets of {recipe} on CIFAR-10 with a short CPU schedule ({CPU_RECIPE}, {epochs:g} epochs)",
        command=settings.command,
        settings={
            "recipe": CPU_RECIPE,
            "paper recipe": recipe,
            "models": models,
            "epochs": epochs,
            "seeds": seeds,
        },
        results={"errors": errors, "paper": {n: PAPER_ERROR[recipe][n] for n in models}, "shortened": True},
        table=markdown_table(
            [
                "model",
                "He et al. error (%)",
                *(f"{who} (%)" for who in PUBLIC_ERROR),
                f"ours, {CPU_RECIPE} {epochs:g} epochs (%)",
                "ours − paper (points)",
            ],
            rows,
        ),
        verdict=verdict,
        figures=[plot_cpu_curves(Path(settings.out), runs, PAPER_ERROR[recipe])],
        notes=[
            f"Schedule: {CPU_RECIPE} (Nesterov SGD at batch 64, lr 0.1 with a 1-epoch warm-up then cosine "
            "to 0, wd 5e-4 off norms and biases, alternating flips, an EMA of the weights), not He et al.'s "
            "64k iterations: a different schedule, so the difference is what the shorter training costs, "
            "not a reproduction.",
            "He et al. report single runs (Table 6), akamaster best runs, chenyaofo the accuracy of the "
            "weights it publishes, all after 164-200 epochs. Ours: mean ± std over seeds, all 50k training "
            "images, the last epoch's test error (nothing is chosen on the test set).",
        ],
        environment=environment(settings.torch_device, sweep.runs),
    )


def plot_cpu_curves(out: Path, runs: dict[str, list[Run]], paper: dict[str, float]) -> str:
    """Test and training error per epoch (mean ± std over seeds), one panel per net, with the paper's
    final error as a dashed line."""
    fig, axes = figure(len(runs), 1)
    for ax, (name, seeds) in zip(axes[0], runs.items(), strict=True):
        for split, style in (("train", "--"), ("test", "-")):
            curve = mean_curve(
                [[(r["epoch"], 1 - r["accuracy"]) for r in run.records(split)] for run in seeds]
            )
            plot_curve(ax, curve, style, scale=100, label=f"{split} error (ours)")
        ax.axhline(paper[name], color="k", ls=":", lw=1, label=f"He et al. {paper[name]:.2f}%")
        ax.set(title=name, xlabel="epoch", ylabel="error (%)", yscale="log")
        ax.legend(fontsize=7)
    return save_figure(fig, out, "reproduce_cpu.png")
