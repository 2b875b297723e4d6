"""resnets: residual networks and their relatives (plain, highway, dense, learned skips) in PyTorch."""

from resnets import models as _models  # noqa: F401  (registers every architecture)
from resnets.inference import InferenceOptions, evaluate, load_model, predict, prepare_inference
from resnets.info import ModelInfo, count_flops, count_params, model_info
from resnets.registry import SKIP_KINDS, create_model, list_models, register_model
from resnets.train.config import TrainConfig, resolve_config
from resnets.train.engine import train

__version__ = "0.1.0"

__all__ = [
    "SKIP_KINDS",
    "InferenceOptions",
    "ModelInfo",
    "TrainConfig",
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
