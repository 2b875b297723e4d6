"""Training curves from run directories: loss and error against steps, train dashed, test solid."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from resnets.errors import ResnetsError


def _records(run_dir: Path) -> list[dict]:
    from resnets.train.engine import iter_json_lines

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
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
