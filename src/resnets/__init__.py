"""resnets: residual networks and their relatives (plain, highway, dense, learned skips) in PyTorch."""

import sys

from resnets import models as _models  # noqa: F401  (registers every architecture)
from resnets.api import train
from resnets.deploy import convert as _convert
from resnets.deploy import export as _export
from resnets.deploy.inference import InferenceOptions, evaluate, load_model, predict, prepare_inference
from resnets.info import ModelInfo, count_flops, count_params, model_info
from resnets.models.factory import create_model
from resnets.registry import SKIP_KINDS, list_models, register_model
from resnets.train.config import TrainConfig, resolve_config
from resnets.version import __version__

# `resnets.export` and `resnets.convert` (README's names) are the modules in resnets.deploy.
export, convert = _export, _convert
sys.modules.setdefault("resnets.export", _export)
sys.modules.setdefault("resnets.convert", _convert)

__all__ = [
    "SKIP_KINDS",
    "InferenceOptions",
    "ModelInfo",
    "TrainConfig",
    "__version__",
    "count_flops",
    "count_params",
    "create_model",
    "evaluate",
    "list_models",
    "load_model",
    "model_info",
    "predict",
    "prepare_inference",
    "register_model",
    "resolve_config",
    "train",
]
