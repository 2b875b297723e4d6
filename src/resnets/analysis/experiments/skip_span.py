"""skip-span: the seed's rule for when a skip needs its own weight. "In the simplest case, only the
weights for the adjacent layer's connection are adapted, with no explicit weights for the upstream
layer. This works best when a single nonlinear layer is stepped over, or when the intermediate layers
are all linear. If not, then an explicit weight matrix should be learned for the skipped connection
(a HighwayNet should be used)."

Fully connected SkipNets on MNIST, one depth and width, one recipe, over a grid: the skip jumps 1, 2
or 3 layers (a^l = g(Z^l + S(a^(l-k))), k = 2, 3, 4), the layers it jumps over are ReLU or linear
(identity activation), and the skip is an identity (no explicit weight), a learned projection W^(l-k,l)
or a highway gate. The skips do not overlap: the net is a plain first layer (784 → width) and blocks of
k layers, each block's last layer fed by a skip from the block's input, as a residual block is.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from resnets.analysis.experiments.common import Settings, carry_gate_bias, seeds_for
from resnets.analysis.experiments.registry import experiment
from resnets.analysis.experiments.sweep import Net, Run, Sweep
from resnets.analysis.plots import figure, plot_curve, save_figure
from resnets.analysis.report import Report, change_beyond_spread, environment, markdown_table, mean_curve, pm

JUMPS = (1, 2, 3)  # layers stepped over: k = jumps + 1
BETWEEN = ("nonlinear", "linear")
KINDS = ("identity", "projection", "gated")
BLOCK_LAYERS = 24  # divisible by k = 2, 3 and 4: 12, 8 or 6 blocks
WIDTH = 64
# Without normalisation several cells (projections, linear stretches) diverged at highway-mnist's lr in a
# first run; clipping every cell's gradient norm at 1 keeps one recipe for all and lets them train.
CLIP = {"optim": {"grad_clip": 1.0}}


def span_layers(jumps: int, between: str, kind: str, width: int = WIDTH) -> list[dict[str, Any]]:
    """The SkipNet layers of one cell: a plain first layer, then BLOCK_LAYERS layers in blocks of
    jumps + 1, the last layer of each fed by a `kind` skip from the block's input, the layers in
    between linear if `between` is "linear"; `kind` "none" is the plain twin."""
    k = jumps + 1
    layers: list[dict[str, Any]] = [{"width": width}]
    for b in range(BLOCK_LAYERS // k):
        source = 1 + b * k  # the block's input a^source
        for i in range(1, k + 1):
            layer: dict[str, Any] = {"width": width}
            if i < k and between == "linear":
                layer["act"] = "identity"
            if i == k and kind != "none":
                layer["skips"] = [[source, kind]]
            layers.append(layer)
    return layers


def cell(jumps: int, between: str, kind: str) -> str:
    """A cell's key: "identity-1-nonlinear"."""
    return f"{kind}-{jumps}-{between}"


def net_for(jumps: int, between: str, kind: str) -> Net:
    """The sweep's net of one cell (the skipnet model with the cell's layers)."""
    kwargs: dict[str, Any] = {"layers": span_layers(jumps, between, kind)}
    if kind in ("identity", "projection"):
        kwargs["scale_branches"] = True  # un-normalised sums: keep the variance bounded at init
    if kind == "gated":
        kwargs["gate_bias"] = carry_gate_bias(BLOCK_LAYERS // (jumps + 1))
    return Net(cell(jumps, between, kind), "skipnet", None, {"model": {"kwargs": kwargs}})


def final_train_loss(run: Run) -> float:
    """Mean training loss over the last tenth of the logged steps (inf for a run that diverged)."""
    steps = run.records("train_step")
    if run.diverged or not steps:
        return float("inf")
    tail = steps[-max(1, len(steps) // 10) :]
    return statistics.fmean(r["loss"] for r in tail)


@experiment("skip-span", "the seed's rule: when a skip needs its own weight (span, kind, linear layers)")
def run(settings: Settings) -> Report:
    """Train every (kind, span, in-between) cell per seed and test both halves of the seed's rule."""
    seeds = seeds_for(settings, quick=(0, 1, 2))
    epochs = settings.pick("budget", 2, 20)
    nets = [net_for(j, b, k) for k in KINDS for j in JUMPS for b in BETWEEN]
    nets.append(net_for(1, "nonlinear", "none"))  # the plain twin: the same 25 layers, no skips
    sweep = Sweep(
        settings,
        nets,
        seeds,
        "highway-mnist",
        settings.data or "mnist",
        epochs=epochs,
        overrides=CLIP,
        may_diverge=True,
        log_points=40,
    )
    runs = sweep.train_all()
    results = {
        key: {
            "train_loss": [final_train_loss(r) for r in per_seed],
            "test_error": [r.test_error for r in per_seed],
        }
        for key, per_seed in runs.items()
    }
    rows = [
        [
            kind,
            str(j),
            b,
            pm(results[cell(j, b, kind)]["train_loss"], digits=4),
            pm(results[cell(j, b, kind)]["test_error"], 100),
        ]
        for kind in KINDS
        for j in JUMPS
        for b in BETWEEN
    ]
    plain = results[cell(1, "nonlinear", "none")]
    rows.append(
        ["none (plain)", "–", "nonlinear", pm(plain["train_loss"], digits=4), pm(plain["test_error"], 100)]
    )
    return Report(
        name="skip-span",
        title="When a skip needs its own weight: skip span, what it jumps over, and skip kind",
        command=settings.command,
        settings={
            "data": settings.data or "mnist",
            "layers": 1 + BLOCK_LAYERS,
            "width": WIDTH,
            "epochs": epochs,
            "recipe": "highway-mnist",
            "seeds": seeds,
        },
        results=results,
        table=markdown_table(
            ["skip", "layers jumped", "jumped layers", "final training loss", "test error (%)"], rows
        ),
        verdict=span_verdict(results),
        figures=[plot_spans(Path(settings.out), runs)],
        notes=[
            f"{1 + BLOCK_LAYERS} layers of {WIDTH} units (a plain first layer, then blocks of 2, 3 or 4 "
            "layers), no normalisation, He init with the gain of each matrix's input activation; identity "
            "and projection nets start their summing layers' matrices 1/√n smaller (`scale_branches`), the "
            "projection with gain 1; highway gates start with the per-depth carry bias of the highway "
            "experiment. Every cell clips its gradient norm at 1 (a first run without clipping saw the "
            "projection and linear cells diverge). Final training loss: mean over the last tenth of the "
            "logged steps.",
        ],
        environment=environment(settings.torch_device, sweep.runs),
    )


def span_verdict(results: dict[str, dict[str, list[float]]]) -> str:
    """Two sentences, one per half of the seed's rule, each checked beyond the seed spread."""

    def loss(kind: str, jumps: int, between: str) -> list[float]:
        return results[cell(jumps, between, kind)]["train_loss"]

    def m(values: list[float]) -> str:
        mean = statistics.fmean(values)
        return f"{mean:.4f}" if math.isfinite(mean) else "a diverged run's infinity"

    far = max(JUMPS)
    one, many, linear = (
        loss("identity", 1, "nonlinear"),
        loss("identity", far, "nonlinear"),
        loss("identity", far, "linear"),
    )
    one_better = change_beyond_spread(one, many) > 0  # the far span's loss is higher
    linear_better = change_beyond_spread(linear, many) > 0
    first = (
        f"(1) With identity skips, jumping one ReLU layer ends at training loss {m(one)}, jumping {far} ReLU "
        f"layers at {m(many)} and jumping {far} linear layers at {m(linear)}: "
        + (
            "one nonlinear layer or linear layers train better than several nonlinear ones, as the seed says."
            if one_better and linear_better
            else "the seed's first half holds "
            + (
                "only for the single nonlinear layer."
                if one_better
                else "only for the linear layers."
                if linear_better
                else "for neither: spanning several ReLU layers trained no worse here."
            )
        )
    )
    closes = {
        kind: change_beyond_spread(loss(kind, far, "nonlinear"), many) > 0 for kind in ("projection", "gated")
    }
    p_far, g_far = loss("projection", far, "nonlinear"), loss("gated", far, "nonlinear")
    better = [kind for kind, v in closes.items() if v]
    second = (
        f"(2) Over {far} ReLU layers a learned projection reaches {m(p_far)} and a highway gate {m(g_far)}: "
        + (
            f"an explicit weight on the skip closes the gap ({' and '.join(better)} below identity "
            "beyond the spread), as the seed says."
            if better
            else "neither does better than the identity skip beyond the spread: the data does not "
            "support the seed's second half here."
        )
    )
    return f"{first} {second}"


def plot_spans(out: Path, runs: dict[str, list[Run]]) -> str:
    """Training loss against the step: one panel per skip kind, one colour per span, solid where the
    jumped layers are ReLU and dashed where they are linear; mean ± std over seeds."""
    fig, axes = figure(len(KINDS), 1)
    for ax, kind in zip(axes[0], KINDS, strict=True):
        for j, jumps in enumerate(JUMPS):
            for between, style in (("nonlinear", "-"), ("linear", "--")):
                per_seed = [r for r in runs[cell(jumps, between, kind)] if r.records("train_step")]
                if per_seed:
                    curve = mean_curve([r.curve("train_step", lambda rec: rec["loss"]) for r in per_seed])
                    plot_curve(ax, curve, style, color=f"C{j}", lw=1, label=f"jumps {jumps}, {between}")
        ax.set(title=f"{kind} skips", xlabel="iteration", ylabel="training loss", yscale="log")
        ax.legend(fontsize=7)
    return save_figure(fig, out, "skip_span.png")
