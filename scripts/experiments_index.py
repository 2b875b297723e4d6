"""Rewrite the index of docs/experiments/README.md from the reports themselves: per experiment directory,
its title, verdict, figures inline, the command and where and when it ran (from its results.json).

    python scripts/experiments_index.py            # rewrite the part between the index markers
    python scripts/experiments_index.py --check    # exit 1 if the index is not what the reports say
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from resnets.analysis.experiments.registry import EXPERIMENTS

START, END = "<!-- index:start -->", "<!-- index:end -->"
ROOT = Path(__file__).resolve().parents[1] / "docs" / "experiments"


def where_it_ran(env: dict) -> str:
    """'commit abc1234, 2026-12-04 19:41 UTC, AMD EPYC, 2 threads, torch 2.14.1, 12.3 min'."""
    parts = [
        f"commit {env['commit']}" if env.get("commit") else None,
        env.get("date"),
        env.get("cpu") or env.get("machine"),
        f"{env['threads']} thread{'s' if env['threads'] != 1 else ''}" if env.get("threads") else None,
        f"torch {env['torch']}" if env.get("torch") else None,
        f"{env['wall_minutes']} min" if env.get("wall_minutes") is not None else None,
        # A report built from runs read back (--reuse-runs) took minutes; its runs took this long to train.
        f"its runs trained for {env['runs_train_minutes']} min"
        if env.get("runs_reused") and env.get("runs_train_minutes")
        else None,
    ]
    return ", ".join(p for p in parts if p)


def section(folder: Path) -> str:
    """One experiment's entry: linked title, verdict, figures inline, command and provenance."""
    r = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    name = folder.name
    lines = [f"## [{r['title']}]({name}/report.md)", "", f"**Verdict.** {r['verdict']}", ""]
    lines += [f"![{Path(f).stem}]({name}/{f})" for f in r.get("figures", [])]
    lines += ["", "```", r["command"], "```", "", f"Ran at {where_it_ran(r.get('environment', {}))}.", ""]
    return "\n".join(lines)


def index(root: Path) -> str:
    """Every report under `root`, in the experiments' order."""
    order = list(EXPERIMENTS)  # registration order; another setting of one ("lesion-56") follows it
    folders = [p.parent for p in root.glob("*/results.json")]

    def rank(folder: Path) -> int:
        hits = [i for i, n in enumerate(order) if folder.name == n or folder.name.startswith(f"{n}-")]
        return hits[0] if hits else len(order)

    folders.sort(key=lambda p: (rank(p), p.name))
    return "\n".join(section(f) for f in folders)


def rewrite(readme: str, body: str) -> str:
    """`readme` with the text between the index markers replaced by `body`."""
    if START not in readme or END not in readme:
        raise SystemExit(f"the README has no {START} … {END} markers")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n\n{body}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    """Rewrite (or with --check, compare) the index of `--root`/README.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="folder of the experiment directories")
    parser.add_argument("--check", action="store_true", help="only say whether the index is current")
    args = parser.parse_args(argv)
    readme_path = args.root / "README.md"
    old = readme_path.read_text(encoding="utf-8")
    new = rewrite(old, index(args.root))
    if args.check:
        if new != old:
            print(
                f"{readme_path}: index out of date; run python scripts/experiments_index.py", file=sys.stderr
            )
            return 1
        return 0
    readme_path.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
