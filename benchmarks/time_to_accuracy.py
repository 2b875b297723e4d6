"""Wall time for a CIFAR-10 ResNet to reach the paper's test accuracy, with the `fast-cifar` recipe.

    python benchmarks/time_to_accuracy.py --data-dir ../shared/data        # resnet20, target 91.25%
    python benchmarks/time_to_accuracy.py --recipe he2016-cifar --epochs 30  # any recipe, for contrast
    python benchmarks/time_to_accuracy.py --smoke                          # seconds, on made-up data

The target is He et al. 2016's Table 6 error for the model (ResNet-20: 8.75%, i.e. 91.25% accuracy),
single view, on the 10,000 test images. The clock is the run's wall time (data, training, the
evaluation after every epoch and the checkpoints), read when each epoch's test accuracy is known.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from common import machine_line, write_fake_cifar10

import resnets
from resnets.runtime import pick_device, pick_precision

# He et al. 2016, Table 6: CIFAR-10 test error (%) of the option-A ResNets.
PAPER_ERROR = {"resnet20": 8.75, "resnet32": 7.51, "resnet44": 7.17, "resnet56": 6.97, "resnet110": 6.43}


def epoch_table(metrics_file: Path) -> list[dict]:
    """Per epoch: test accuracy and the wall seconds at which it was known, from metrics.jsonl."""
    records = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
    train = {r["epoch"]: r for r in records if r["split"] == "train"}
    return [
        {
            "epoch": r["epoch"],
            "wall_seconds": r["wall_seconds"],
            "test_accuracy": r["accuracy"],
            "train_loss": train[r["epoch"]]["loss"],
        }
        for r in records
        if r["split"] == "test"
    ]


def first_reaching(rows: list[dict], target: float) -> dict | None:
    """The first epoch whose test accuracy is at least `target`, or None."""
    return next((r for r in rows if r["test_accuracy"] >= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--recipe", default="fast-cifar")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's length")
    parser.add_argument("--target", type=float, default=None, help="test accuracy (default: the paper's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="run directory (default: a temporary one)")
    parser.add_argument("--smoke", action="store_true", help="made-up data, 2 short epochs")
    args = parser.parse_args()

    run_flags: dict = {"seed": args.seed, "quiet": args.smoke}
    if args.epochs is not None:
        run_flags.update(epochs=args.epochs, max_steps=None)
    tmp = tempfile.TemporaryDirectory() if args.smoke or args.out is None else None
    if args.smoke:
        args.data_dir = str(write_fake_cifar10(Path(tmp.name) / "data", per_file=64))
        run_flags.update(epochs=2, max_steps=None)
    out = args.out or str(Path(tmp.name) / "run")
    target = args.target if args.target is not None else 1 - PAPER_ERROR.get(args.model, 8.75) / 100
    cfg = resnets.resolve_config(
        args.recipe,
        flags={
            "model": {"name": args.model},
            "data": {"data_dir": args.data_dir},
            "run": {**run_flags, "out": out},
        },
    )
    result = resnets.train(cfg)
    rows = epoch_table(Path(out) / "metrics.jsonl")
    hit = first_reaching(rows, target)
    device = pick_device(cfg.run.device)
    precision = pick_precision(cfg.run.precision, device)

    print()
    print(f"{machine_line()}, device {device}, precision {precision}")
    print(
        f"recipe {args.recipe}: {cfg.run.epochs} epochs, batch {cfg.data.batch_size}, "
        f"{cfg.schedule.name} schedule, lr {cfg.optim.lr}, label smoothing {cfg.optim.label_smoothing}"
    )
    print()
    print("| epoch | minutes | train loss | test accuracy |")
    print("|---:|---:|---:|---:|")
    for r in rows:
        mark = " ←" if r is hit else ""
        print(
            f"| {r['epoch']} | {r['wall_seconds'] / 60:.1f} | {r['train_loss']:.3f} | "
            f"{100 * r['test_accuracy']:.2f}%{mark} |"
        )
    final = rows[-1]
    print()
    if hit is not None:
        print(
            f"{args.model} reached {100 * target:.2f}% at epoch {hit['epoch']} after "
            f"{hit['wall_seconds'] / 60:.1f} minutes; final {100 * final['test_accuracy']:.2f}% after "
            f"{result.summary['wall_seconds'] / 60:.1f} minutes."
        )
    else:
        best = max(rows, key=lambda r: r["test_accuracy"])
        print(
            f"{args.model} did not reach {100 * target:.2f}%: best {100 * best['test_accuracy']:.2f}% "
            f"(epoch {best['epoch']}), final {100 * final['test_accuracy']:.2f}% after "
            f"{result.summary['wall_seconds'] / 60:.1f} minutes."
        )
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
