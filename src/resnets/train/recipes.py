"""Named training recipes: the papers' protocols and a quick default.

A recipe is a documented function registered in `RECIPES` by name; given the model named by the other
layers (or None), it returns the config layer that sits under every other (train/config.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from resnets.errors import ConfigError
from resnets.registry import Registry

Recipe = Callable[[str | None], dict[str, Any]]  # the model's name, if chosen → a config layer

RECIPES: Registry[Recipe] = Registry(
    "recipe", ConfigError, " `resnets train --help` lists them under --recipe."
)


# The CIFAR recipes hold out 5,000 training images (He et al. 2016, §4.2: a 45k/5k train/val split):
# the best checkpoint is chosen on them and the test set is evaluated once, at the end.
# `--val-split 0` trains on all 50,000 (what benchmarks/time_to_accuracy.py does to draw the test curve).
VAL_SPLIT = 5000

# The recipe a run gets when none is named, per dataset: the digits recipe would be a poor default
# for CIFAR (15 epochs at batch 64 tuned for 1,437 8×8 images).
DEFAULT_RECIPES = {"cifar10": "fast-cifar", "cifar100": "fast-cifar"}


@RECIPES.register("quick")
def quick(model: str | None) -> dict[str, Any]:
    """The default: resnet20 on the bundled digits, cosine schedule, a few seconds per epoch on a CPU."""
    return {
        "model": {"name": "resnet20"},
        "data": {"name": "digits", "batch_size": 64},
        "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
        "schedule": {"name": "cosine", "unit": "epoch", "warmup": 1},
        "run": {"epochs": 15},
    }


@RECIPES.register("fast-cifar")
def fast_cifar(model: str | None) -> dict[str, Any]:
    """He et al.'s ResNet-20 accuracy (91.25%) in 40 epochs, the unchanged architecture: Nesterov SGD
    at batch 64, lr 0.1 with a 1-epoch linear warm-up then a cosine decay to 0 (Loshchilov & Hutter
    2017), wd 5e-4 off the norm parameters and biases (Jia et al. 2018), alternating flips (Jordan
    2024, §3.6) and an EMA of the weights (decay 0.999, warmed up) that is evaluated and saved. What
    each part is worth: the ablation in docs/performance.md."""
    return {
        "model": {"name": model or "resnet20"},
        "data": {"name": "cifar10", "batch_size": 64, "alternate_flips": True, "val_split": VAL_SPLIT},
        "optim": {
            "name": "sgd",
            "lr": 0.1,
            "momentum": 0.9,
            "nesterov": True,
            "weight_decay": 5e-4,
            "no_decay_norm_bias": True,
            "ema_decay": 0.999,
        },
        "schedule": {
            "name": "cosine",
            "unit": "epoch",
            "warmup": 1,
            "warmup_factor": 0.1,
            "final_factor": 0.0,
        },
        # 40, not 30: resnet20 (3 seeds) 90.95 ± 0.19% at 30 epochs, 91.49 ± 0.21% at 40 (docs/performance.md)
        "run": {"epochs": 40},
    }


@RECIPES.register("he2016-cifar")
def he2016_cifar(model: str | None) -> dict[str, Any]:
    """He et al. 2016 §4.2: SGD 0.1, momentum 0.9, wd 1e-4, batch 128, lr ÷10 at 32k and 48k iterations,
    stop at 64k; for 110 layers and deeper, lr 0.01 for the first 400 iterations. The milestones are
    kept as fractions of the run (32k/64k, 48k/64k), so a shortened run (--epochs) decays too."""
    from resnets.registry import get_spec

    deep = model is not None and get_spec(model).depth >= 110
    return {
        "model": {"name": model or "resnet20"},
        "data": {"name": "cifar10", "batch_size": 128, "val_split": VAL_SPLIT},
        "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": False, "weight_decay": 1e-4},
        "schedule": {
            "name": "multistep",
            "unit": "fraction",
            "milestones": [0.5, 0.75],
            "gamma": 0.1,
            "warmup": 400 if deep else 0,
            "warmup_unit": "step",
            "warmup_mode": "constant",
            "warmup_factor": 0.1,
        },
        "run": {"epochs": None, "max_steps": 64000},
    }


@RECIPES.register("he2016b-preact-cifar")
def he2016b_preact_cifar(model: str | None) -> dict[str, Any]:
    """He et al. 2016b: as he2016-cifar, with a 400-iteration warm-up at lr 0.01 for every depth."""
    layer = he2016_cifar(model or "preact_resnet164")
    layer["schedule"]["warmup"] = 400
    return layer


@RECIPES.register("densenet-cifar")
def densenet_cifar(model: str | None) -> dict[str, Any]:
    """Huang et al. 2017: batch 64, 300 epochs, lr 0.1 ÷10 at 50% and 75%, Nesterov 0.9, wd 1e-4."""
    return {
        "model": {"name": model or "densenet_bc100_k12"},
        "data": {"name": "cifar10", "batch_size": 64, "val_split": VAL_SPLIT},
        "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4},
        "schedule": {"name": "multistep", "unit": "fraction", "milestones": [0.5, 0.75], "gamma": 0.1},
        "run": {"epochs": 300},
    }


@RECIPES.register("highway-mnist")
def highway_mnist(model: str | None) -> dict[str, Any]:
    """Srivastava et al. 2015 §4.1 setting: fully connected highway nets on MNIST, SGD with momentum."""
    return {
        "model": {"name": model or "highway_mlp"},
        "data": {"name": "mnist", "batch_size": 128, "augment": False},
        "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0},
        "schedule": {"name": "cosine", "unit": "epoch"},
        "run": {"epochs": 20, "channels_last": False},
    }


def recipe_layer(name: str, model: str | None = None) -> dict[str, Any]:
    """The config layer of recipe `name` (some depend on the model, e.g. the warm-up for deep nets);
    an unknown name raises ConfigError with the closest names."""
    return RECIPES[name](model)
