"""One real CIFAR-10 training epoch, end to end: resnets' default path against the tutorial path.

    python benchmarks/epoch.py --data-dir DATA                  # resnet20 and resnet56
    python benchmarks/epoch.py --smoke                                    # seconds, on made-up data

The tutorial path (benchmarks/common.py) is written as the PyTorch tutorials teach it: per-sample
PIL transforms (RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize) in a DataLoader
with 2 workers, fp32, NCHW, eager. resnets' path is `resnets.train` for one epoch with its defaults
(in-memory uint8 data, batched augmentation, bf16 autocast where the CPU has it, channels_last).
Same model, batch 128, SGD; the two run interleaved so that drift of the machine's speed hits both.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from common import BATCH, machine_line, resnets_config, tutorial_train, write_fake_cifar10

import resnets
from resnets.data import load_dataset
from resnets.data.sources import default_data_dir


def resnets_epoch(model_name: str, data_dir: str, compute: str = "default") -> float:
    """Train one epoch on resnets' path; returns its training images per second. `compute="fp32"`
    keeps resnets' data path but computes as the tutorial does (fp32, NCHW), to split the speed-up
    between the data path and the compute levers."""
    with tempfile.TemporaryDirectory() as out:
        cfg = resnets_config(model_name, data_dir, 1, 0, str(Path(out) / "run"))
        if compute == "fp32":
            cfg["run"].update(precision="fp32", channels_last=False)
        result = resnets.train(cfg)
    return float(result.summary["images_per_second"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data-dir",
        default=str(default_data_dir()),
        help="folder holding cifar-10-batches-bin/ (default $RESNETS_DATA_DIR, else ~/.cache/resnets/data)",
    )
    parser.add_argument("--models", nargs="+", default=["resnet20", "resnet56"])
    parser.add_argument(
        "--rounds", type=int, default=1, help="interleaved rounds per model (median reported)"
    )
    parser.add_argument("--smoke", action="store_true", help="made-up data, 2 batches per epoch")
    args = parser.parse_args()

    tmp = None
    if args.smoke:
        tmp = tempfile.TemporaryDirectory()
        write_fake_cifar10(Path(tmp.name), per_file=BATCH * 2 // 5 + 1)
        args.data_dir, args.models = tmp.name, args.models[:1]
    data = load_dataset("cifar10", data_dir=args.data_dir)
    images_hwc = data.train.images.permute(0, 2, 3, 1).contiguous().numpy()
    labels = data.train.labels.numpy()

    print(f"{machine_line()}, batch {BATCH}, {len(labels):,} training images per epoch")
    print(
        "| model | resnets img/s | tutorial img/s | speed-up | resnets epoch (s) | tutorial epoch (s) "
        "| resnets data path, fp32 NCHW img/s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in args.models:
        fast, slow, data_only = [], [], []
        for _ in range(args.rounds):  # interleaved, so drift of the machine's speed cancels
            fast.append(resnets_epoch(name, args.data_dir))
            slow.append(tutorial_train(name, images_hwc, labels, data.mean, data.std)[1])
            data_only.append(resnets_epoch(name, args.data_dir, compute="fp32"))
        f, s, d = (float(np.median(v)) for v in (fast, slow, data_only))
        n = len(labels)
        print(
            f"| {name} | {f:,.0f} | {s:,.0f} | {f / s:.2f}× | {n / f:,.1f} | {n / s:,.1f} "
            f"| {d:,.0f} ({d / s:.2f}×) |"
        )
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
