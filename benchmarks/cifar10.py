"""Train resnet20 on the real CIFAR-10 with He et al.'s recipe, shortened to a few epochs, and print a table.

    python benchmarks/cifar10.py --data-dir DATA --epochs 5

The recipe `he2016-cifar` (SGD 0.1, momentum 0.9, wd 1e-4, batch 128, ÷10 at 50% and 75% of the run:
the paper's 32k/48k of 64k iterations) is kept; only the length is cut to `--epochs`. The paper's 64k
iterations are 164 epochs; the full run is `resnets train --recipe he2016-cifar --data-dir DIR`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

import resnets
from resnets.data.sources import default_data_dir
from resnets.runtime import machine_line, pick_precision


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data-dir",
        default=str(default_data_dir()),
        help="folder holding cifar-10-batches-bin/ (default $RESNETS_DATA_DIR, else ~/.cache/resnets/data)",
    )
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="run directory (default: a temporary one)")
    args = parser.parse_args()

    out = args.out or tempfile.mkdtemp(prefix="resnets-cifar10-")
    cfg = resnets.resolve_config(
        "he2016-cifar",
        flags={
            "model": {"name": args.model},
            "data": {"data_dir": args.data_dir},
            "run": {
                "epochs": args.epochs,
                "max_steps": None,
                "precision": args.precision,
                "seed": args.seed,
                "out": out,
            },
        },
    )
    result = resnets.train(cfg)
    s = result.summary
    precision = pick_precision(
        args.precision, torch.device("cpu" if not torch.cuda.is_available() else "cuda")
    )
    print()
    print(f"{machine_line()}, precision {precision}, device {s['device']}")
    print(f"recipe: he2016-cifar shortened to {args.epochs} epochs ({s['steps']} steps; paper: 64,000 steps)")
    print()
    print("| model | epochs | steps | test accuracy | test error | minutes | train img/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {args.model} | {s['epochs']} | {s['steps']} | {100 * s['test_accuracy']:.2f}% | "
        f"{100 * (1 - s['test_accuracy']):.2f}% | {s['wall_seconds'] / 60:.1f} | "
        f"{s['images_per_second']:.0f} |"
    )
    print()
    print("per epoch (from metrics.jsonl):")
    print("| epoch | train loss | train acc | test loss | test acc |")
    print("|---:|---:|---:|---:|---:|")
    records = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    train = {r["epoch"]: r for r in records if r["split"] == "train"}
    test = {r["epoch"]: r for r in records if r["split"] == "test"}
    for e in sorted(test):
        print(
            f"| {e} | {train[e]['loss']:.3f} | {100 * train[e]['accuracy']:.2f}% | {test[e]['loss']:.3f} | "
            f"{100 * test[e]['accuracy']:.2f}% |"
        )
    print(f"\nrun directory: {out}")


if __name__ == "__main__":
    main()
