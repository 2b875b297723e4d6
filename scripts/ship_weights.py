"""Add a finished run's weights to the package: copy RUN/model.safetensors to
src/resnets/weights/MODEL_TAG.safetensors, evaluate it once on the official test set (single view and
flip TTA, through `resnets.evaluate`), record its logits on a fixed input for tests/test_pretrained.py,
and print the PretrainedWeights entry to paste into src/resnets/weights/__init__.py.

    python scripts/ship_weights.py RUN --tag cifar10 --data-dir DATA \
        --recipe-mean 0.9105 --recipe-std 0.0011 --recipe-seeds 3 --machine "AMD EPYC, 2 cores" \
        --command "python benchmarks/time_to_accuracy.py ..."
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

import torch
import yaml

import resnets
from resnets.data.sources import default_data_dir
from resnets.io.weights import load_weights
from resnets.runtime import code_commit

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path, help="a finished run directory")
    parser.add_argument("--tag", default="cifar10")
    parser.add_argument(
        "--data-dir",
        default=str(default_data_dir()),
        help="folder holding cifar-10-batches-bin/ (default $RESNETS_DATA_DIR, else ~/.cache/resnets/data)",
    )
    parser.add_argument("--recipe-mean", type=float, required=True)
    parser.add_argument("--recipe-std", type=float, required=True)
    parser.add_argument("--recipe-seeds", type=int, required=True)
    parser.add_argument("--machine", required=True)
    parser.add_argument("--command", required=True, help="the exact command that trained the run")
    parser.add_argument("--paper", type=float, default=None, help="the paper's accuracy for the model")
    parser.add_argument("--notes", default="")
    parser.add_argument(
        "--commit", help="the commit the run trained on (default: what its summary.json records, else HEAD)"
    )
    args = parser.parse_args()

    summary = json.loads((args.run / "summary.json").read_text())
    _, meta = load_weights(args.run / "model.safetensors")
    name = f"{meta.model}.{args.tag}"
    dest = REPO / "src" / "resnets" / "weights" / f"{meta.model}_{args.tag}.safetensors"
    shutil.copyfile(args.run / "model.safetensors", dest)
    single = resnets.evaluate(dest, data_dir=args.data_dir)["accuracy"]
    flip = resnets.evaluate(dest, data_dir=args.data_dir, flip_tta=True)["accuracy"]
    model = resnets.load_model(dest)
    x = torch.randn(4, *meta.input_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(x)
    record = {
        "weights": name,
        "input": "torch.randn(4, C, H, W) from manual_seed(0)",
        "logits": logits.tolist(),
    }
    (REPO / "tests" / "expect" / "weights" / f"{name}.json").write_text(json.dumps(record) + "\n")
    cfg = yaml.safe_load((args.run / "config.yaml").read_text())
    # The commit the run recorded when it started; runs older than that record fall back to HEAD.
    commit = args.commit or summary.get("commit") or code_commit()
    print(
        f"""    PretrainedWeights(
        model={meta.model!r},
        tag={args.tag!r},
        file={dest.name!r},
        sha256={hashlib.sha256(dest.read_bytes()).hexdigest()!r},
        dataset={meta.dataset!r},
        recipe={cfg["recipe"]!r},
        seed={cfg["run"]["seed"]},
        commit={commit!r},
        test_accuracy={single},
        flip_tta_accuracy={flip},
        val_split={cfg["data"]["val_split"]},
        recipe_mean={args.recipe_mean},
        recipe_std={args.recipe_std},
        recipe_seeds={args.recipe_seeds},
        machine={args.machine!r},
        wall_minutes={round(summary["wall_seconds"] / 60, 1)},
        command={args.command!r},
        paper_accuracy={args.paper},
        notes={args.notes!r},
    ),"""
    )


if __name__ == "__main__":
    main()
