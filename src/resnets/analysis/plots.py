"""Training curves from run directories (loss and error against steps, train dashed, test solid), and
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


def plot_runs(run_dirs: Sequence[str | Path], out: str | Path) -> Path:
    """Draw loss and error (1 − accuracy) per epoch of every run on one figure and save it as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, run_dir in enumerate(run_dirs):
        records = _records(Path(run_dir))
        color = colors[i % len(colors)]
        label = Path(run_dir).name
        for split, style in (("train", "--"), ("test", "-"), ("val", ":")):
            rows = [r for r in records if r.get("split") == split and "accuracy" in r]
            if not rows:
                continue
            steps = [r["step"] for r in rows]
            ax_loss.plot(steps, [r["loss"] for r in rows], style, color=color, label=f"{label} {split}")
            ax_err.plot(
                steps, [100 * (1 - r["accuracy"]) for r in rows], style, color=color, label=f"{label} {split}"
            )
    for ax, title in ((ax_loss, "loss"), (ax_err, "error (%)")):
        ax.set_xlabel("iterations")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    ax_err.legend(fontsize=7)
    fig.suptitle("train dashed, test solid")
    fig.tight_layout()
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
