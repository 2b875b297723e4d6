"""An experiment's output: `results.json` (every number), PNG figures and `report.md` (what was run, on
what machine and versions, the figures, the table and the verdict in one sentence); and the statistics
over seeds every experiment reports: mean ± std of a number, of a curve, and whether a change exceeds
the seed-to-seed spread."""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from resnets.runtime import code_commit


@dataclass
class Report:
    """What one experiment found."""

    name: str
    title: str
    command: str  # the exact command that produced it
    settings: dict[str, Any]  # what was run: models, depths, seeds, budget, data
    results: dict[str, Any]  # every number
    table: str  # Markdown
    verdict: str  # one sentence, decided from the numbers
    figures: list[str] = field(default_factory=list)  # PNG file names in the experiment directory
    notes: list[str] = field(default_factory=list)  # caveats: shortened budgets, departures from the paper
    environment: dict[str, Any] = field(default_factory=dict)


def environment(device: torch.device | None = None, runs: Sequence[Any] | None = None) -> dict[str, Any]:
    """The machine (CPU model, bf16/AMX, threads, GPU), versions, what `auto` precision picks, the commit
    and, given the experiment's training runs (objects with `how`: "trained", "resumed" or "reused"),
    how many it measured and how many of those it read back instead of training."""
    from resnets import runtime
    from resnets.version import __version__

    env = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        **runtime.environment(device, None if runs is None else len(runs)),
        "resnets": __version__,
    }
    if runs is not None:
        # Which runs this process trained matters for the timings and for trusting a --reuse-runs report.
        env["runs_reused"] = sum(getattr(r, "how", "trained") == "reused" for r in runs)
        env["runs_resumed"] = sum(getattr(r, "how", "trained") == "resumed" for r in runs)
        # The runs' own training time, which a report built from runs read back would otherwise hide.
        seconds = [
            getattr(r.result, "summary", {}).get("wall_seconds") for r in runs if getattr(r, "result", None)
        ]
        if seconds and all(isinstance(t, int | float) for t in seconds):
            env["runs_train_minutes"] = round(sum(seconds) / 60, 1)
    commit = code_commit()
    if commit:
        env["commit"] = commit
    return env


def change_beyond_spread(before: Sequence[float], after: Sequence[float]) -> int:
    """+1 if the mean of `after` exceeds that of `before` by more than the larger seed-to-seed std, −1 if
    it falls below by more, 0 if the change is within it (or a value is not finite)."""
    (b, b_std), (a, a_std) = mean_std(before), mean_std(after)
    change, spread = a - b, max(b_std, a_std)
    if not (math.isfinite(change) and math.isfinite(spread)) or abs(change) <= spread:
        return 0
    return 1 if change > 0 else -1


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value; nan when a value is not finite, e.g.
    the infinite loss of a diverged run)."""
    values = list(values)
    if not all(math.isfinite(v) for v in values):
        return sum(values) / len(values), math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def pm(values: Sequence[float], scale: float = 1.0, digits: int = 2) -> str:
    """'mean ± std' of `values` × `scale`, or the single value."""
    m, s = mean_std([v * scale for v in values])
    return f"{m:.{digits}f} ± {s:.{digits}f}" if len(values) > 1 else f"{m:.{digits}f}"


@dataclass(frozen=True)
class Curve:
    """A quantity against x over seeds: at each x the mean and the sample std (0 for one seed)."""

    x: list[float]
    mean: list[float]
    std: list[float]
    seeds: int


def mean_curve(curves: Sequence[Sequence[tuple[float, float]]]) -> Curve:
    """Mean ± std over seeds of (x, value) curves, point by point up to the shortest curve (a run that
    diverged stopped logging early); x is read from the first curve (every seed logs the same steps)."""
    if not curves:
        raise ValueError("mean_curve needs at least one curve")
    n = min(len(c) for c in curves)
    values = np.array([[v for _, v in c[:n]] for c in curves], dtype=float).reshape(len(curves), n)
    with np.errstate(invalid="ignore"):  # inf - inf in the std of a diverged run's loss: nan, as mean_std
        std = values.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros(n)
    return Curve(
        [float(x) for x, _ in curves[0][:n]], values.mean(axis=0).tolist(), std.tolist(), len(curves)
    )


def mean_profile(profiles: Sequence[Sequence[float]], first: int = 1) -> Curve:
    """Mean ± std over seeds of per-layer values (layer `first`, `first` + 1, …), as `mean_curve`."""
    return mean_curve([list(enumerate(p, start=first)) for p in profiles])


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """A Markdown table; `align` is one character per column ('l' or 'r', default: r except the first)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(report: Report, out: str | Path) -> Path:
    """Write results.json and report.md into `out` (created); returns the report's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(asdict(report), indent=1, default=_jsonable) + "\n")
    env = report.environment
    lines = [
        f"# {report.title}",
        "",
        f"**Verdict.** {report.verdict}",
        "",
        "```",
        report.command,
        "```",
        "",
        "Run on " + ", ".join(f"{k} {v}" for k, v in env.items()) + ".",
        "",
        "Settings: " + "; ".join(f"{k} = {_short(v)}" for k, v in report.settings.items()) + ".",
        "",
        report.table,
        "",
    ]
    lines += [f"![{Path(f).stem}]({f})\n" for f in report.figures]
    if report.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in report.notes] + [""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def _short(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.Tensor):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
