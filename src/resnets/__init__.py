"""resnets: residual networks and their relatives (plain, highway, dense, learned skips) in PyTorch."""

from resnets import models as _models  # noqa: F401  (registers every architecture)
from resnets.info import ModelInfo, count_flops, count_params, model_info
from resnets.registry import SKIP_KINDS, create_model, list_models, register_model

__version__ = "0.1.0"

__all__ = [
    "SKIP_KINDS",
    "ModelInfo",
    "count_flops",
    "count_params",
    "create_model",
    "list_models",
    "model_info",
    "register_model",
]
