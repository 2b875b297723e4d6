"""Accuracy parity: resnets' fast default path and the fp32 tutorial path, trained for the same epochs
with the same recipe and seeds, reach the same CIFAR-10 test accuracy.

    python benchmarks/parity.py --data-dir DATA                 # resnet20, 3 epochs, 3 seeds
    python benchmarks/parity.py --smoke                                   # seconds, on made-up data

Both paths train with SGD 0.1, momentum 0.9, wd 5e-4, a cosine schedule per step and batch 128
(benchmarks/common.py). resnets' path uses its defaults (bf16 autocast where the CPU has it,
channels_last, batched augmentation on uint8 data); the tutorial path is fp32, NCHW, per-sample PIL
transforms. The verdict: the difference of the means is within the seed-to-seed spread (the larger
of the two sample standard deviations).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from common import machine_line, resnets_config, tutorial_accuracy, tutorial_train, write_fake_cifar10

import resnets
from resnets.data import load_dataset
from resnets.data.sources import default_data_dir


def within_spread(a: list[float], b: list[float]) -> tuple[float, float, bool]:
    """The difference of the means, the spread (larger sample std), and whether the first is within
    the second."""
    diff = statistics.fmean(a) - statistics.fmean(b)
    spread = max(statistics.stdev(a), statistics.stdev(b))
    return diff, spread, abs(diff) <= spread


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
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--smoke", action="store_true", help="made-up data, 1 epoch, 2 seeds")
    args = parser.parse_args()

    tmp = tempfile.TemporaryDirectory()
    if args.smoke:
        args.data_dir = str(write_fake_cifar10(Path(tmp.name) / "data", per_file=64))
        args.epochs, args.seeds = 1, args.seeds[:2]
    data = load_dataset("cifar10", data_dir=args.data_dir)
    hwc = {
        split: (ds.images.permute(0, 2, 3, 1).contiguous().numpy(), ds.labels.numpy())
        for split, ds in (("train", data.train), ("test", data.test))
    }

    print(f"{machine_line()}; {args.model}, {args.epochs} epochs per run, seeds {args.seeds}")
    print()
    print("| seed | resnets test acc | tutorial test acc | resnets img/s | tutorial img/s |")
    print("|---:|---:|---:|---:|---:|")
    fast, slow = [], []
    for seed in args.seeds:  # interleaved, so drift of the machine's speed hits both paths
        out = str(Path(tmp.name) / f"run-{seed}")
        result = resnets.train(resnets_config(args.model, args.data_dir, args.epochs, seed, out))
        fast.append(float(result.summary["test_accuracy"]))
        model, rate = tutorial_train(args.model, *hwc["train"], data.mean, data.std, args.epochs, seed)
        slow.append(tutorial_accuracy(model, *hwc["test"], data.mean, data.std))
        print(
            f"| {seed} | {100 * fast[-1]:.2f}% | {100 * slow[-1]:.2f}% | "
            f"{result.summary['images_per_second']:,.0f} | {rate:,.0f} |"
        )
    diff, spread, same = within_spread(fast, slow)
    print()
    print(
        f"resnets {100 * statistics.fmean(fast):.2f} ± {100 * statistics.stdev(fast):.2f}%, "
        f"tutorial {100 * statistics.fmean(slow):.2f} ± {100 * statistics.stdev(slow):.2f}% "
        f"(mean ± sample std over {len(args.seeds)} seeds)"
    )
    verdict = "within" if same else "outside"
    print(f"difference {100 * diff:+.2f} points, {verdict} the seed-to-seed spread ({100 * spread:.2f}).")
    tmp.cleanup()


if __name__ == "__main__":
    main()
