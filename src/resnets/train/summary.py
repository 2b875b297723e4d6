"""The end of a run: the final weights (model.safetensors), summary.json and eval_test.json."""

from __future__ import annotations

import json
import platform
from typing import TYPE_CHECKING, Any

import torch

from resnets.info import count_params
from resnets.io.atomic import write_text
from resnets.io.weights import save_weights
from resnets.runtime import cpu_model

if TYPE_CHECKING:
    from resnets.train.engine import Trainer

# The numbers every summary.json holds (DESIGN.md), first among its other fields.
SUMMARY_KEYS = (
    "test_accuracy",
    "test_loss",
    "train_accuracy",
    "train_loss",
    "epochs",
    "steps",
    "wall_seconds",
    "images_per_second",
)


def finish_run(trainer: Trainer, epochs: int) -> dict[str, Any]:
    """Evaluate the final model (the EMA if kept), save its weights and write the summary (rank 0);
    returns the summary, which every rank computes."""
    t, train = trainer, trainer.last_train
    test = t.evaluate("test", per_class=True)
    if t.dist.is_main:
        save_weights(t.run_dir / "model.safetensors", t.eval_model().state_dict(), t.meta)
    summary = {
        "model": t.cfg.model.name,
        "dataset": t.data.name,
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "test_top5_accuracy": test["top5_accuracy"],
        "train_accuracy": train.get("accuracy"),
        "train_loss": train.get("loss"),
        "epochs": epochs,
        "steps": t.step,
        "wall_seconds": round(t.wall_seconds(), 3),
        "images_per_second": round(t.images_per_second(), 1),
        "params": count_params(t.model),
        "device": str(t.device),
        "precision": t.precision,
        "speed_levers": t.levers.describe(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "processes": t.dist.world_size,
        "global_batch": t.cfg.data.batch_size,
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "best": t.best,
        # resnets' git commit when this process started (or resumed) the run; None outside a checkout
        "commit": t.commit,
    }
    if "val" in t.eval_batches:
        val = t.evaluate("val")
        summary["val_accuracy"], summary["val_loss"] = val["accuracy"], val["loss"]
    if t.dist.is_main:
        write_text(t.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        write_text(t.run_dir / "eval_test.json", json.dumps(test, indent=1) + "\n")
    return summary
