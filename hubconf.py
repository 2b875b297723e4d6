"""torch.hub entry points: every registered resnets model, with `pretrained=`/`weights=` for the
weights resnets trained itself.

    model = torch.hub.load("OWNER/resnets", "resnet20", pretrained=True)           # from GitHub
    model = torch.hub.load("path/to/resnets", "resnet20", source="local", pretrained=True)

Each entry point takes create_model's arguments: num_classes, in_chans, weights, pretrained,
features_only, out_indices and the model's own keyword arguments.
"""

import sys as _sys
from pathlib import Path as _Path

dependencies = ["torch", "torchvision", "safetensors"]

try:
    import resnets as _resnets
except ImportError:  # a checkout torch.hub fetched, not an installed package: import it from src/
    _sys.path.insert(0, str(_Path(__file__).resolve().parent / "src"))
    import resnets as _resnets


def _entry_point(name: str):
    def entry(pretrained: bool = False, **kwargs: object) -> "_resnets.models.base.ClassifierNet":
        return _resnets.create_model(name, pretrained=pretrained, **kwargs)

    entry.__name__ = entry.__qualname__ = name
    builder = _resnets.registry.get_spec(name).builder
    entry.__doc__ = f"resnets.create_model({name!r}, pretrained=..., **kwargs).\n\n{builder.__doc__ or ''}"
    return entry


globals().update({_name: _entry_point(_name) for _name in _resnets.list_models()})
