"""Training curves from run directories (loss and error against steps: step records as lines, epochs and
evaluations as markers), and
the figure helpers experiments share: a headless figure, saving it, a mean ± std curve over seeds."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resnets.analysis.report import Curve
from resnets.errors import ResnetsError
from resnets.io.atomic import atomic_write
from resnets.train.callbacks import Callback
from resnets.train.rundir import iter_json_lines

if TYPE_CHECKING:
    from resnets.train.engine import Trainer


def figure(ncols: int = 1, nrows: int = 1, size: tuple[float, float] = (5.5, 4.0)) -> tuple[Any, Any]:
    """A matplotlib figure on the Agg backend (no display needed) and its axes, always a 2-d array."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)


def save_figure(fig: Any, out: Path, name: str) -> str:
    """Save `fig` as out/name (PNG) and close it; returns the file name for the report."""
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    _save(fig, out / name)
    plt.close(fig)
    return name


def plot_curve(
    ax: Any, curve: Curve, fmt: str = "-", scale: float = 1.0, band: bool = True, **style: Any
) -> None:
    """Draw `curve`'s mean (× `scale`) as a line and, with `band`, its ± std over seeds as a shaded band
    of the same colour (none for one seed): the seed-to-seed spread every verdict is checked against."""
    mean = [scale * m for m in curve.mean]
    (line,) = ax.plot(curve.x, mean, fmt, **style)
    if band and curve.seeds > 1:
        low = [m - scale * s for m, s in zip(mean, curve.std, strict=True)]
        high = [m + scale * s for m, s in zip(mean, curve.std, strict=True)]
        ax.fill_between(curve.x, low, high, color=line.get_color(), alpha=0.15, lw=0)


def _records(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise ResnetsError(f"{run_dir} has no metrics.jsonl; is it a resnets run directory?")
    return list(iter_json_lines(path))


# How each split of a run is drawn: the log-interval records as a line (the only curve a one-epoch or
# --max-steps run has), every epoch's mean and each held-out evaluation as markers on it.
SPLIT_STYLES = {
    "train_step": {"ls": "-", "lw": 1.0, "alpha": 0.55},
    "train": {"ls": "--", "marker": "s", "ms": 4},
    "val": {"ls": ":", "marker": "^", "ms": 5},
    "test": {"ls": "-", "marker": "o", "ms": 5},
}


def draw_runs(run_dirs: Sequence[str | Path], log_loss: bool = False) -> Any:
    """A figure of loss and error (1 − accuracy) against steps for every run: step records as a line,
    epoch means and held-out evaluations as markers; `log_loss` puts the loss on a log scale."""
    fig, axes = figure(2, 1, size=(5.5, 4.2))
    ax_loss, ax_err = axes[0]
    import matplotlib.pyplot as plt

    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, run_dir in enumerate(run_dirs):
        records = _records(Path(run_dir))
        color, label = colors[i % len(colors)], Path(run_dir).name
        for split, style in SPLIT_STYLES.items():
            rows = [r for r in records if r.get("split") == split and "accuracy" in r]
            if not rows:
                continue
            steps = [r["step"] for r in rows]
            name = "train (log interval)" if split == "train_step" else f"{split} (epoch)"
            kw = {"color": color, "label": f"{label} {name}", **style}
            ax_loss.plot(steps, [r["loss"] for r in rows], **kw)
            ax_err.plot(steps, [100 * (1 - r["accuracy"]) for r in rows], **kw)
    for ax, title in ((ax_loss, "loss"), (ax_err, "error (%)")):
        ax.set_xlabel("iterations")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    if log_loss:
        ax_loss.set_yscale("log")
    ax_err.legend(fontsize=7)
    fig.suptitle("training per log interval (line) and per epoch (squares); held-out: val ▲, test ●")
    fig.tight_layout()
    return fig


def plot_runs(run_dirs: Sequence[str | Path], out: str | Path, log_loss: bool = False) -> Path:
    """Draw every run's curves on one figure (see `draw_runs`) and save it as PNG."""
    import matplotlib.pyplot as plt

    fig = draw_runs(run_dirs, log_loss)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _save(fig, out)
    plt.close(fig)
    return out


class PlotCurves(Callback):
    """Draws the run's curves into RUN/plots/curves.png once it has finished (rank 0 only); a plot
    that fails prints a warning and never fails the finished run."""

    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        """Plot metrics.jsonl of the finished run."""
        if not trainer.dist.is_main:
            return
        try:
            plot_runs([trainer.run_dir], trainer.run_dir / "plots" / "curves.png")
        except Exception as err:  # a plot must never fail a finished run
            trainer.say(f"warning: could not draw plots ({err})")


def _save(fig: Any, path: Path) -> None:
    # Written beside its name and renamed: a link at `path` is replaced, never written through.
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format=path.suffix.lstrip(".") or "png"))
