"""skip-dynamics: what the skips do during training. While resnet56 and highway56 train, every log
interval measures on a fixed batch, per block, the residual branch against the skip path,
‖F(x)‖ / ‖S(x)‖, and for the highway net the mean transform gate T(x).

The seed's statements it makes measurable: "skipping effectively simplifies the network … in the
initial training stages" (early on a block passes mostly its skip path: small ratio, closed gates),
and "the weights adapt to mute the upstream layer, and amplify the previously-skipped layer" (the
ratio and the gates grow as the branches learn).
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import torch

from resnets.analysis.experiments.common import LINEAR_WARMUP, Settings, probe_batch, seeds_for
from resnets.analysis.experiments.registry import experiment
from resnets.analysis.experiments.sweep import Sweep, grid
from resnets.analysis.plots import figure, save_figure
from resnets.analysis.probes import record_branches
from resnets.analysis.report import Report, change_beyond_spread, environment, markdown_table, pm

NETS = {"residual": "resnet{d}", "highway": "highway{d}"}


class BranchWatcher:
    """A training callback: at every log interval, the per-block branch/skip ratio and gate on a
    fixed batch, normalised by its own batch statistics as the training batches are (running
    statistics are far off early in training and overflow the deep branches), with every buffer
    restored afterwards so the probe does not train the model."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x, self.history = x, []

    def __call__(self, trainer: Any, log: Any) -> None:
        model = trainer.model
        buffers = {name: b.clone() for name, b in model.named_buffers()}
        was_training = model.training
        model.train()
        with torch.no_grad(), record_branches(model) as stats:
            model(self.x.to(next(model.parameters()).device))
        model.train(was_training)
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
        self.history.append({"step": trainer.step, "ratio": stats.ratios(), "gate": stats.gate})


def phase_means(history: list[dict], key: str) -> tuple[float, float]:
    """Mean over blocks of `key` in the first and the last fifth of the training steps logged (the
    step-0 probe of the model as initialised is left out; `init_mean` reads it)."""
    trained = [h for h in history if h.get("step", 1) > 0]
    fifth = max(1, len(trained) // 5)
    return _block_mean(trained[:fifth], key), _block_mean(trained[-fifth:], key)


def init_mean(history: list[dict], key: str) -> float:
    """Mean over blocks of `key` at step 0, before the first update (NaN if the run has no such probe)."""
    at_init = [h for h in history if h.get("step") == 0]
    return _block_mean(at_init, key) if at_init else math.nan


def _block_mean(rows: list[dict], key: str) -> float:
    return statistics.fmean(v for r in rows for v in r[key] if v is not None)


@experiment("skip-dynamics", "branch/skip ratio and gates per block during training")
def run(settings: Settings) -> Report:
    """Train each net per seed with a BranchWatcher; plot ratio and gate per block against the step."""
    data = settings.data or "cifar10"
    depth = (settings.depths or [56])[0]
    epochs = settings.pick("budget", 1, 164)
    seeds = seeds_for(settings)
    sweep = Sweep(
        settings,
        grid(NETS, [depth]),
        seeds,
        recipe="he2016-cifar",
        data=data,
        epochs=epochs,
        overrides=LINEAR_WARMUP,
        log_points=40,
        run_name="{model}-s{seed}",
    )
    x, _ = probe_batch(data, settings.data_dir, 128, seed=1234)
    histories: dict[str, list[list[dict]]] = {kind: [] for kind in NETS}
    for net, seed in sweep.jobs():  # the watcher sees every step, so each run is trained, never reused
        watcher = BranchWatcher(x)
        sweep.train(net, seed, callbacks=[watcher])
        histories[net.kind].append(watcher.history)
    figures = [plot_dynamics(Path(settings.out), histories, depth)]

    rows, results = [], {}
    for kind, key in (("residual", "ratio"), ("highway", "ratio"), ("highway", "gate")):
        early, late = zip(*(phase_means(h, key) for h in histories[kind]), strict=True)
        at_init = [init_mean(h, key) for h in histories[kind]]
        results[f"{kind}/{key}"] = {"init": at_init, "early": list(early), "late": list(late)}
        rows.append([f"{kind}{depth}", key, pm(at_init, digits=3), pm(early, digits=3), pm(late, digits=3)])
    verdict = dynamics_verdict(results)
    notes = [
        "Measured on a fixed batch of 128 training images normalised by its own batch statistics, as in "
        "training (running statistics and every other buffer restored after), "
        "at step 0 and about 40 times over the run; block 1 is nearest the input (lighter colours are "
        "deeper blocks). A change counts only when it exceeds the seed-to-seed spread.",
        "The highway gate of a block is T(x) = σ(W_T x + b_T) with b_T = −3 at init (mostly carrying).",
    ]
    if epochs < 164:
        notes.append(
            f"Shortened: {epochs} epoch(s) of he2016-cifar; the full setting is the paper's 164 epochs."
        )
    return Report(
        name="skip-dynamics",
        title=f"What the skips do during training: resnet{depth} and highway{depth}",
        command=settings.command,
        settings={"data": data, "depth": depth, "epochs": epochs, "recipe": "he2016-cifar", "seeds": seeds},
        results={"phases": results, "histories": histories},
        table=markdown_table(["net", "quantity", "at init", "first fifth", "last fifth"], rows),
        verdict=verdict,
        figures=figures,
        notes=notes,
        environment=environment(settings.torch_device, sweep.runs),
    )


def dynamics_verdict(results: dict[str, dict[str, list[float]]]) -> str:
    """One sentence from the residual ratio and the highway gate: how each moved between the first and
    last fifth of training against the seed spread, and whether that is the seed's 'start simple, then
    use the skipped layers more' (ratio up, gates open)."""
    ratio, gate = results["residual/ratio"], results["highway/gate"]
    r_trend = change_beyond_spread(ratio["early"], ratio["late"])
    g_trend = change_beyond_spread(gate["early"], gate["late"])
    words = {1: "grows", -1: "shrinks", 0: "stays within the seed spread"}
    gate_words = {1: "open", -1: "close", 0: "stay within the seed spread"}

    def span(values: dict[str, list[float]]) -> str:
        mean = {k: statistics.fmean(v) for k, v in values.items()}
        return f"{mean['init']:.3f} at init, {mean['early']:.3f} → {mean['late']:.3f}"

    said = (
        f"Between the first and last fifth of training the residual branch {words[r_trend]} against its "
        f"skip path (‖F(x)‖/‖S(x)‖ {span(ratio)}) and the highway gates {gate_words[g_trend]} "
        f"(mean T(x) {span(gate)}): "
    )
    if r_trend > 0 and g_trend > 0:
        return (
            said + "the nets start close to their skip paths and use the skipped layers more as they train."
        )
    if r_trend <= 0 and g_trend <= 0:
        return said + "the seed's 'start simple, then amplify the skipped layers' is not seen at this budget."
    return said + "only one of the two nets moves the way the seed says at this budget."


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


def _cmap(t: float) -> Any:
    import matplotlib

    return matplotlib.colormaps["viridis"](t)
