"""skip-dynamics: what the skips do during training. While resnet56 and highway56 train, every log
interval measures on a fixed batch, per block, the residual branch against the skip path,
‖F(x)‖ / ‖S(x)‖, and for the highway net the mean transform gate T(x).

The seed's two statements, each tested per stage (the blocks between two downsamplings), never on the
average over all blocks, which mixes stages that move in opposite directions:
1. "skipping effectively simplifies the network … in the initial training stages": in the first fifth
   of training a block passes mostly its skip path (‖F(x)‖/‖S(x)‖ below 1, highway gates below ½,
   beyond the seed spread);
2. "the network gradually restores the skipped layers" (the weights "amplify the previously-skipped
   layer"): the ratio and the gates grow from the first to the last fifth, beyond the seed spread.
The nets train with a complete short schedule (fast-cifar's warm-up and cosine decay to zero, the
200-step linear warm-up of the depth experiments in front), not a truncated 164-epoch one. Where resnets
ships resnet{depth} weights (a complete 30-40 epoch schedule), they are probed the same way: where
training ends, as context for claim 2 (one run of another length, so not counted in its verdict).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from resnets.analysis.experiments.common import LINEAR_WARMUP, Settings, probe_batch, seeds_for
from resnets.analysis.experiments.registry import experiment
from resnets.analysis.experiments.sweep import Sweep, grid
from resnets.analysis.plots import figure, plot_curve, save_figure
from resnets.analysis.probes import record_branches
from resnets.analysis.report import (
    Report,
    change_beyond_spread,
    environment,
    markdown_table,
    mean_curve,
    mean_std,
    pm,
)

NETS = {"residual": "resnet{d}", "highway": "highway{d}"}
RECIPE = "fast-cifar"  # warm-up, peak, cosine to zero: a complete schedule at any length
QUANTITIES = (("residual", "ratio"), ("highway", "ratio"), ("highway", "gate"))


class BranchWatcher:
    """A training callback: at every log interval, the per-block branch/skip ratio and gate on a
    fixed batch, normalised by its own batch statistics as the training batches are (running
    statistics are far off early in training and overflow the deep branches), with every buffer
    restored afterwards so the probe does not train the model."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x, self.history, self.names = x, [], []

    def __call__(self, trainer: Any, log: Any) -> None:
        self.names, ratios, gates = branch_profile(trainer.model, self.x)
        self.history.append({"step": trainer.step, "ratio": ratios, "gate": gates})


def branch_profile(
    model: torch.nn.Module, x: torch.Tensor
) -> tuple[list[str], list[float | None], list[float | None]]:
    """Block names, ‖F(x)‖/‖S(x)‖ and mean gate per block on batch `x`, normalised by its own batch
    statistics as in training; every buffer (batch-norm running statistics) is restored afterwards."""
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    was_training = model.training
    model.train()
    with torch.no_grad(), record_branches(model) as stats:
        model(x.to(next(model.parameters()).device))
    model.train(was_training)
    with torch.no_grad():
        for name, b in model.named_buffers():
            b.copy_(buffers[name])
    return stats.names, stats.ratios(), stats.gate


def shipped_endpoint(data: str, depth: int, x: torch.Tensor, device: torch.device) -> dict[str, Any] | None:
    """resnets' shipped resnet{depth} weights for `data` (trained to within a point or two of the paper)
    and their ‖F(x)‖/‖S(x)‖ per stage on `x`: where a complete schedule ends. None where none ship."""
    from resnets.analysis.experiments.twins import shipped_twins
    from resnets.models.factory import create_model
    from resnets.weights import find_weights

    shipped = shipped_twins({"residual": NETS["residual"]}, depth, data)  # the lesion study's lookup
    if shipped is None:
        return None
    entry = find_weights(None, shipped["residual"])
    model = create_model(entry.model, weights=entry.tag).to(device)
    names, ratios, _ = branch_profile(model, x)
    per_stage = {
        stage: _block_mean([{"ratio": ratios}], "ratio", blocks) for stage, blocks in stages(names).items()
    }
    return {
        "weights": entry.name,
        "test_accuracy": entry.test_accuracy,
        "command": entry.command,
        "ratio": per_stage,
    }


def endpoint_sentence(results: dict[str, dict[str, list[float]]], endpoint: dict[str, Any]) -> str:
    """The fully trained net's ratio per stage beside the first fifth of these runs: does a complete
    schedule end with larger branches (the seed's restoring) than early training had?"""
    stage_names, trained = list(endpoint["ratio"]), endpoint["ratio"]
    early = {s: statistics.fmean(results[f"residual/ratio/{s}"]["early"]) for s in stage_names}
    higher = [s for s in stage_names if trained[s] > early[s]]
    listed = f" ({', '.join(higher)})" if higher else ""
    return (
        f"Trained to the end (the shipped {endpoint['weights']}, {100 * endpoint['test_accuracy']:.2f}% test "
        f"accuracy; one run, not counted above): the ratio per stage is "
        f"{', '.join(f'{trained[s]:.2f}' for s in stage_names)} against "
        f"{', '.join(f'{early[s]:.2f}' for s in stage_names)} in the first fifth here, higher in "
        f"{len(higher)} of {len(stage_names)} stages{listed}."
    )


def phase_means(history: list[dict], key: str, blocks: Sequence[int] | None = None) -> tuple[float, float]:
    """Mean over `blocks` (default all) of `key` in the first and the last fifth of the training steps
    logged (the step-0 probe of the model as initialised is left out; `init_mean` reads it)."""
    trained = [h for h in history if h.get("step", 1) > 0]
    fifth = max(1, len(trained) // 5)
    return _block_mean(trained[:fifth], key, blocks), _block_mean(trained[-fifth:], key, blocks)


def init_mean(history: list[dict], key: str, blocks: Sequence[int] | None = None) -> float:
    """Mean over `blocks` of `key` at step 0, before the first update (NaN if the run has no such probe)."""
    at_init = [h for h in history if h.get("step") == 0]
    return _block_mean(at_init, key, blocks) if at_init else math.nan


def _block_mean(rows: list[dict], key: str, blocks: Sequence[int] | None = None) -> float:
    return statistics.fmean(
        v for r in rows for i, v in enumerate(r[key]) if v is not None and (blocks is None or i in blocks)
    )


def stages(names: Sequence[str]) -> dict[str, list[int]]:
    """Block indices per stage, from the block names ("layer2.1" is in stage "layer2")."""
    out: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        out.setdefault(name.rpartition(".")[0] or name, []).append(i)
    return out


def stage_series(history: list[dict], key: str, blocks: Sequence[int]) -> list[tuple[float, float]]:
    """(step, mean of `key` over `blocks`) at every probe of one run."""
    return [(float(h["step"]), _block_mean([h], key, blocks)) for h in history]


@experiment("skip-dynamics", "branch/skip ratio and gates per stage during training: the seed's claims")
def run(settings: Settings) -> Report:
    """Train each net per seed with a BranchWatcher; plot ratio and gate per block against the step."""
    data = settings.data or "cifar10"
    depth = (settings.depths or [56])[0]
    epochs = settings.pick("budget", 1, 30)
    seeds = seeds_for(settings, quick=(0, 1, 2))
    sweep = Sweep(
        settings,
        grid(NETS, [depth]),
        seeds,
        recipe=RECIPE,
        data=data,
        epochs=epochs,
        overrides=LINEAR_WARMUP,
        log_points=40,
        run_name="{model}-s{seed}",
    )
    x, _ = probe_batch(data, settings.data_dir, 128, seed=1234)
    histories: dict[str, list[list[dict]]] = {kind: [] for kind in NETS}
    names: dict[str, list[str]] = {}
    for net, seed in sweep.jobs():  # the watcher sees every step, so each run is trained, never reused
        watcher = BranchWatcher(x)
        sweep.train(net, seed, callbacks=[watcher])
        histories[net.kind].append(watcher.history)
        names[net.kind] = watcher.names
    per_stage = {kind: stages(names[kind]) for kind in NETS}
    figures = [plot_dynamics(Path(settings.out), histories, depth)]
    figures += [
        plot_stage(Path(settings.out), histories, per_stage, stage, depth) for stage in per_stage["residual"]
    ]

    rows, results = [], {}
    for kind, key in QUANTITIES:
        for stage, blocks in per_stage[kind].items():
            early, late = zip(*(phase_means(h, key, blocks) for h in histories[kind]), strict=True)
            at_init = [init_mean(h, key, blocks) for h in histories[kind]]
            results[f"{kind}/{key}/{stage}"] = {"init": at_init, "early": list(early), "late": list(late)}
            rows.append(
                [f"{kind}{depth}", stage, key, pm(at_init, digits=3), pm(early, digits=3), pm(late, digits=3)]
            )
    stage_names = list(per_stage["residual"])
    verdict = dynamics_verdict(results, stage_names)
    endpoint = shipped_endpoint(data, depth, x, settings.torch_device)
    if endpoint is not None:
        verdict += " " + endpoint_sentence(results, endpoint)
    notes = [
        "Measured on a fixed batch of 128 training images normalised by its own batch statistics, as in "
        "training (running statistics and every other buffer restored after), "
        "at step 0 and about 40 times over the run. Per stage: the mean over its blocks; the per-block "
        "figure shows the first seed, block 1 nearest the input (lighter colours are deeper blocks). A "
        "change counts only when it exceeds the seed-to-seed spread.",
        "The highway gate of a block is T(x) = σ(W_T x + b_T) with b_T = −3 at init (mostly carrying).",
        f"Schedule: {RECIPE} (Nesterov SGD, lr 0.1, cosine to 0) over {epochs} epoch(s), with the depth "
        "experiments' 200-step linear warm-up from 0.01 in front (56-layer nets sit at chance for "
        "hundreds of steps at lr 0.1 from the start): a departure from the paper's 164-epoch step "
        "schedule, so that a short run still warms up, peaks and decays.",
    ]
    if endpoint is not None:
        notes.append(
            f"Trained to the end: the shipped {endpoint['weights']} (`{endpoint['command']}`; its EMA "
            "weights), probed on the same batch in the same way. It is one run of another length (no "
            "200-step warm-up), so it is context for the second claim, not counted in it: where a "
            "complete schedule ends, against where these short runs start."
        )
    return Report(
        name="skip-dynamics",
        title=f"What the skips do during training, per stage: resnet{depth} and highway{depth}",
        command=settings.command,
        settings={"data": data, "depth": depth, "epochs": epochs, "recipe": RECIPE, "seeds": seeds},
        results={
            "phases": results,
            "stages": per_stage["residual"],
            "histories": histories,
            "shipped": endpoint,
        },
        table=markdown_table(["net", "stage", "quantity", "at init", "first fifth", "last fifth"], rows),
        verdict=verdict,
        figures=figures,
        notes=notes,
        environment=environment(settings.torch_device, sweep.runs),
    )


def simplifies(phase: dict[str, list[float]], below: float) -> bool:
    """Claim 1 for one stage: in the first fifth the quantity sits below `below` (1 for the branch/skip
    ratio, ½ for the gates) by more than the seed spread."""
    mean, std = mean_std(phase["early"])
    return mean + std < below


def restores(phase: dict[str, list[float]]) -> bool:
    """Claim 2 for one stage: the quantity grows from the first to the last fifth, beyond the spread."""
    return change_beyond_spread(phase["early"], phase["late"]) > 0


def dynamics_verdict(results: dict[str, dict[str, list[float]]], stage_names: Sequence[str]) -> str:
    """Two sentences, one per claim of the seed, each counting the stages where both the residual ratio
    and the highway gate show it beyond the seed spread, with the numbers per stage; then the second
    claim per net."""

    def values(kind: str, key: str, phase: str) -> str:
        return ", ".join(f"{statistics.fmean(results[f'{kind}/{key}/{s}'][phase]):.2f}" for s in stage_names)

    ratio = {s: results[f"residual/ratio/{s}"] for s in stage_names}
    gate = {s: results[f"highway/gate/{s}"] for s in stage_names}
    simple = [s for s in stage_names if simplifies(ratio[s], 1.0) and simplifies(gate[s], 0.5)]
    restored = [s for s in stage_names if restores(ratio[s]) and restores(gate[s])]
    n = len(stage_names)

    def where(found: list[str]) -> str:
        return f"in {len(found)} of {n} stages" + (f" ({', '.join(found)})" if found else "")

    first = (
        "'Skipping simplifies the network in the initial stages' holds "
        + where(simple)
        + ": in the first fifth of training ‖F(x)‖/‖S(x)‖ per stage is "
        + f"{values('residual', 'ratio', 'early')} (below 1: the skip carries more) and the highway "
        + f"gates {values('highway', 'gate', 'early')} (below ½: carrying)."
    )
    second = (
        "'The network gradually restores the skipped layers' holds "
        + where(restored)
        + f": from the first to the last fifth the ratio goes {values('residual', 'ratio', 'early')} → "
        f"{values('residual', 'ratio', 'late')} and the gates {values('highway', 'gate', 'early')} → "
        f"{values('highway', 'gate', 'late')}, a change counted only beyond the seed spread."
    )
    # Per net, because the two kinds can part ways (a highway gate opening while residual branches
    # shrink relative to their growing skips): the claim above needs both.
    gates = [s for s in stage_names if restores(gate[s])]
    grows = [s for s in stage_names if restores(ratio[s])]
    falls = [s for s in stage_names if change_beyond_spread(ratio[s]["early"], ratio[s]["late"]) < 0]
    per_net = f"Per net: the highway gates open {where(gates)}; the residual ratio grows {where(grows)}" + (
        f" and falls {where(falls)}." if falls else "."
    )
    return f"{first} {second} {per_net}"


def plot_dynamics(out: Path, histories: dict[str, list[list[dict]]], depth: int) -> str:
    """Ratio (residual, highway) and gate (highway) per block against the step, for the first seed."""
    panels = [("residual", "ratio", "‖F(x)‖ / ‖S(x)‖"), ("highway", "ratio", "‖F(x)‖ / ‖S(x)‖")]
    panels.append(("highway", "gate", "mean gate T(x)"))
    fig, axes = figure(3, 1, size=(5.0, 4.0))
    for ax, (kind, key, label) in zip(axes[0], panels, strict=True):
        history = histories[kind][0]  # first seed: one line per block, coloured by depth in the net
        n_blocks = len(history[0][key])
        for b in range(n_blocks):
            values = [h[key][b] for h in history]
            if values[0] is None:
                continue
            ax.plot([h["step"] for h in history], values, color=_cmap(b / max(1, n_blocks - 1)), lw=0.8)
        ax.set(
            title=f"{kind}{depth}: {label}",
            xlabel="iteration",
            ylabel=label,
            yscale="log" if key == "ratio" else "linear",
        )
    return save_figure(fig, out, "skip_dynamics.png")


def plot_stage(
    out: Path,
    histories: dict[str, list[list[dict]]],
    per_stage: dict[str, dict[str, list[int]]],
    stage: str,
    depth: int,
) -> str:
    """One stage: the residual and highway ratio and the highway gate (mean over the stage's blocks)
    against the step, mean ± std over seeds; the claims' thresholds dotted (ratio 1, gate ½)."""
    fig, axes = figure(3, 1, size=(5.0, 4.0))
    for ax, (kind, key) in zip(axes[0], QUANTITIES, strict=True):
        blocks = per_stage[kind][stage]
        curve = mean_curve([stage_series(h, key, blocks) for h in histories[kind]])
        plot_curve(ax, curve, "-", color="tab:blue" if kind == "residual" else "tab:green")
        ax.axhline(1.0 if key == "ratio" else 0.5, ls=":", color="gray")
        label = "‖F(x)‖ / ‖S(x)‖" if key == "ratio" else "mean gate T(x)"
        ax.set(title=f"{kind}{depth} {stage}: {label}", xlabel="iteration", ylabel=label)
    return save_figure(fig, out, f"skip_dynamics_{stage}.png")


def _cmap(t: float) -> Any:
    import matplotlib

    return matplotlib.colormaps["viridis"](t)
