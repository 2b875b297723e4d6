"""highway (Srivastava, Greff & Schmidhuber 2015, Fig. 1): fully connected plain and highway nets of
10, 20, 50 and 100 layers on MNIST, trained with one recipe. The paper: plain nets get harder to train
with depth and the 100-layer plain net fails, while highway nets of every depth train. Also the mean
transform-gate value T(x) per layer of the trained highway nets (the paper's Fig. 2: most gates stay
mostly closed, carrying their input)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path

import torch

from resnets.analysis.experiments.common import (
    Settings,
    carry_gate_bias,
    mlp_kwargs,
    probe_batch,
    seeds_for,
)
from resnets.analysis.experiments.registry import experiment
from resnets.analysis.experiments.sweep import Run, Sweep, grid
from resnets.analysis.plots import figure, plot_curve, save_figure
from resnets.analysis.probes import record_gates
from resnets.analysis.report import Report, environment, markdown_table, mean_curve, mean_profile, pm

NETS = {"plain": "plain_mlp", "highway": "highway_mlp"}
CHANCE = math.log(10)  # the loss of a uniform guess over 10 classes


def trains(final_loss: float) -> bool:
    """A net 'trains' when its final training loss is below half the loss of guessing (ln 10 / 2)."""
    return final_loss < CHANCE / 2


def final_loss(run: Run) -> float:
    """The training loss of the run's last epoch; a diverged run (NaN loss) did not train: infinite."""
    epochs_done = run.records("train")
    return epochs_done[-1]["loss"] if not run.diverged and epochs_done else math.inf


def gate_profile(run: Run, x: torch.Tensor) -> list[float]:
    """The mean transform gate T(x) per layer of a trained highway net on the batch `x`."""
    model = run.result.model.cpu().float().eval()
    with record_gates(model) as means:
        model(x)
    return means


@experiment("highway", "plain vs highway fully connected nets on MNIST (Srivastava et al. 2015)")
def run(settings: Settings) -> Report:
    """Train every (kind, depth, seed); plot training loss curves and the gate profile."""
    data = settings.data or "mnist"
    depths = settings.pick("depths", [10, 20, 50, 100], [10, 20, 50, 100])
    epochs = settings.pick("budget", 2, 20)
    seeds = seeds_for(settings, quick=(0, 1, 2))
    sweep = Sweep(
        settings,
        grid(NETS, depths, lambda kind, d: {"model": {"kwargs": mlp_kwargs(kind, d)}}),
        seeds,
        recipe="highway-mnist",
        data=data,
        epochs=epochs,
        log_points=60,
        may_diverge=True,
    )
    runs = sweep.train_all()
    final = {key: [final_loss(r) for r in per_seed] for key, per_seed in runs.items()}
    x, _ = probe_batch(data, settings.data_dir, 512)
    gates = {
        d: [gate_profile(r, x) for r in runs[f"highway{d}"] if not r.diverged]
        for d in depths
        if any(not r.diverged for r in runs[f"highway{d}"])
    }
    figures = [plot_losses(Path(settings.out), runs, depths), plot_gates(Path(settings.out), gates, depths)]
    rows = [
        [
            d,
            loss_cell(final[f"plain{d}"]),
            loss_cell(final[f"highway{d}"]),
            f"{statistics.fmean(statistics.fmean(g) for g in gates[d]) if d in gates else math.nan:.3f}",
        ]
        for d in depths
    ]
    deepest = max(depths)
    plain, highway = final[f"plain{deepest}"], final[f"highway{deepest}"]
    return Report(
        name="highway",
        title="Plain against highway fully connected nets on MNIST (Srivastava et al. 2015, Fig. 1)",
        command=settings.command,
        settings={
            "data": data,
            "depths": depths,
            "epochs": epochs,
            "recipe": "highway-mnist",
            "seeds": seeds,
        },
        results={"final_train_loss": final, "gate_means": gates, "as_paper": as_paper(plain, highway)},
        table=markdown_table(
            ["layers", "plain: final train loss", "highway: final train loss", "highway: mean gate"], rows
        ),
        verdict=highway_verdict(plain, highway, deepest),
        figures=figures,
        notes=[
            f"'Trains' means a final training loss below ln(10)/2 = {CHANCE / 2:.2f} (half of guessing); "
            "a run whose loss became NaN (diverged) counts as inf.",
            "Gate biases b_T = "
            + ", ".join(f"{carry_gate_bias(d):.2f} ({d} layers)" for d in depths)
            + ": at init the closed gates of the whole stack carry half of the input (see carry_gate_bias); "
            "with a fixed −3 the 50- and 100-layer highway nets diverged or did not train.",
            "Plain layers have 71 units and highway layers 50, as in the paper, so the nets have similar "
            "parameter counts; one recipe for all (SGD 0.05, momentum 0.9, cosine), where the paper "
            "tuned the learning rate per net by random search.",
        ],
        environment=environment(settings.torch_device, sweep.runs),
    )


def as_paper(plain: list[float], highway: list[float]) -> bool:
    """Srivastava et al.'s finding for the deepest nets: the plain net fails and the highway net trains
    (each judged on its final training loss, mean over seeds)."""
    return not trains(statistics.fmean(plain)) and trains(statistics.fmean(highway))


def highway_verdict(plain: list[float], highway: list[float], depth: int) -> str:
    """One sentence: whether the deepest plain and highway nets train, against the paper's finding."""

    def does(losses: list[float]) -> str:
        return "trains" if trains(statistics.fmean(losses)) else "fails to train"

    return (
        f"The {depth}-layer plain net {does(plain)} (final training loss {pm(plain, digits=3)}) and the "
        f"{depth}-layer highway net {does(highway)} ({pm(highway, digits=3)})"
        + (
            ", as Srivastava et al. found."
            if as_paper(plain, highway)
            else "; Srivastava et al. found the plain net fails and the highway net trains."
        )
    )


def plot_losses(out: Path, runs: dict[str, list[Run]], depths: list[int]) -> str:
    """One panel per kind: training loss against the step, mean ± std over seeds, per depth."""
    fig, axes = figure(2, 1)
    for ax, kind in zip(axes[0], NETS, strict=True):
        for j, depth in enumerate(depths):
            curve = mean_curve(
                [r.curve("train_step", lambda rec: rec["loss"]) for r in runs[f"{kind}{depth}"]]
            )
            plot_curve(ax, curve, color=f"C{j}", label=f"{depth} layers")
        ax.axhline(CHANCE, ls=":", color="gray")
        ax.set(
            title=f"{kind} nets", xlabel="step", ylabel="training loss (mean ± std over seeds)", yscale="log"
        )
        ax.legend()
    return save_figure(fig, out, "highway_loss.png")


def plot_gates(out: Path, gates: dict[int, list[list[float]]], depths: list[int]) -> str:
    """The gate profile of the trained highway nets (Srivastava et al. 2015, Fig. 2), per depth."""
    fig, axes = figure(1, 1)
    for j, depth in enumerate(depths):
        if depth in gates:  # layer 1 is the input projection: the first gate is layer 2's
            plot_curve(
                axes[0][0], mean_profile(gates[depth], first=2), color=f"C{j}", label=f"{depth} layers"
            )
    axes[0][0].set(
        xlabel="layer", ylabel="mean transform gate T(x)", title="trained highway nets", ylim=(0, 1)
    )
    axes[0][0].legend()
    return save_figure(fig, out, "highway_gates.png")


def loss_cell(losses: Sequence[float]) -> str:
    """Mean ± std of the runs that finished, and how many diverged ("inf ± nan" said neither)."""
    finite = [v for v in losses if math.isfinite(v)]
    diverged = f"{len(losses) - len(finite)} of {len(losses)} diverged"
    if not finite:
        return diverged
    return pm(finite, digits=3) + ("" if len(finite) == len(losses) else f" ({diverged})")
