"""Import weights trained elsewhere: a torchvision or timm ResNet/DenseNet state_dict into a resnets model.

resnets' ImageNet ResNets, ResNeXts, wide ResNets and DenseNets use torchvision's state_dict keys, and
timm's plain variants of those (7×7 stem, convolutional downsample: resnet18…152, resnext50_32x4d,
wide_resnet50_2, densenet121/161/169/201) use the same keys too, so importing is mostly renaming what
differs:

- `module.` (DataParallel / DistributedDataParallel) and `_orig_mod.` (torch.compile) prefixes;
- torchvision's pre-0.3 DenseNet keys, `denselayer1.norm.1.weight` for `denselayer1.norm1.weight`
  (the pattern torchvision's and timm's DenseNet loaders rewrite);
- a checkpoint that wraps the state_dict as {"state_dict": …} or {"model": …};
- BatchNorm `num_batches_tracked` counters that old files lack (filled with 0; eval never reads them).

timm's deep-stem and average-downsample variants (resnet50d, densenetblur121d, …) are other architectures;
their keys are reported as missing/unexpected with a hint.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnets.errors import CheckpointError, ConfigError
from resnets.io.safe_load import safe_torch_load
from resnets.io.weights import CONVERT_HINT, MAX_CLASSES, ModelMeta, check_meta, load_weights, save_weights
from resnets.models.factory import create_model
from resnets.registry import get_spec

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
CONTAINER_KEYS = ("state_dict", "model")
# torchvision < 0.3 named a dense layer's modules `norm.1`, `relu.1`, `conv.1`, …; now `norm1`, `conv1`.
_OLD_DENSENET_KEY = re.compile(r"^(.*\.denselayer\d+\.(?:norm|relu|conv))\.([12])\.([a-z_]+)$")
_SHOWN = 12  # keys listed per kind in an error before "… and N more"


@dataclass
class ImportReport:
    """How a foreign state_dict mapped onto a resnets model: what was renamed, filled, left out."""

    model: str
    num_classes: int
    loaded: int = 0  # tensors copied into the model
    conversions: list[str] = field(default_factory=list)  # renamings applied, in words
    filled: list[str] = field(default_factory=list)  # num_batches_tracked set to 0 (absent in the file)
    missing: list[str] = field(default_factory=list)  # model keys the file lacks (left as initialised)
    unexpected: list[str] = field(default_factory=list)  # file keys the model has no place for (ignored)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(
        default_factory=list
    )  # key, file, model
    hints: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every model tensor came from the file and every file tensor was used."""
        return not (self.missing or self.unexpected or self.mismatched)

    def problems(self) -> str:
        """The missing, unexpected and shape-mismatched keys, one kind per paragraph."""

        def listing(title: str, items: Sequence[str]) -> str:
            more = f"\n  … and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
            return f"{title} ({len(items)}):\n" + "\n".join(f"  {k}" for k in items[:_SHOWN]) + more

        parts = []
        if self.missing:
            parts.append(listing("missing from the file (left as initialised)", self.missing))
        if self.unexpected:
            parts.append(listing("unexpected in the file (ignored)", self.unexpected))
        if self.mismatched:
            shapes = [f"{k}: file {list(a)}, model {list(b)}" for k, a, b in self.mismatched]
            parts.append(listing("shape mismatch (left as initialised)", shapes))
        return "\n".join(parts + self.hints)

    def summary(self) -> str:
        """A few lines for the command line: what was loaded and converted, and any problems."""
        lines = [f"{self.model} ({self.num_classes} classes): loaded {self.loaded} tensors"]
        lines += [f"  {c}" for c in self.conversions]
        if self.filled:
            lines.append(f"  filled {len(self.filled)} missing BatchNorm num_batches_tracked with 0")
        if not self.complete:
            lines.append(self.problems())
        return "\n".join(lines)


def _strip_prefixes(sd: dict[str, torch.Tensor], notes: list[str]) -> dict[str, torch.Tensor]:
    # Strip only the wrapper prefixes every key has: a wrapper adds them to all keys, a real module name
    # would not. One pass over the keys whatever the nesting: a file may repeat a prefix 10^6 times.
    if not sd:
        return sd
    shared = os.path.commonprefix(list(sd))  # noqa: RUF071 (characters, not path parts, are meant)
    cut, counts = 0, dict.fromkeys(WRAPPER_PREFIXES, 0)
    while True:
        prefix = next((p for p in WRAPPER_PREFIXES if shared.startswith(p, cut)), None)
        if prefix is None:
            break
        cut += len(prefix)
        counts[prefix] += 1
    if cut == 0:
        return sd
    for prefix, count in counts.items():
        if count:
            times = f" ({count:,} times)" if count > 1 else ""
            notes.append(f"stripped the {prefix!r} prefix from every key{times}")
    return {k[cut:]: v for k, v in sd.items()}


def _rename_old_densenet(sd: dict[str, torch.Tensor], notes: list[str]) -> dict[str, torch.Tensor]:
    out, renamed = {}, 0
    for key, value in sd.items():
        match = _OLD_DENSENET_KEY.match(key)
        if match:
            key = f"{match.group(1)}{match.group(2)}.{match.group(3)}"
            renamed += 1
        out[key] = value
    if renamed:
        notes.append(f"renamed {renamed} old-style DenseNet keys (denselayerN.norm.1 -> denselayerN.norm1)")
    return out


def normalize_state_dict(state_dict: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The state_dict with wrappers undone (container dict, module./_orig_mod. prefixes, old DenseNet
    names), and the conversions applied in words. Non-tensor entries are refused."""
    notes: list[str] = []
    sd: Mapping[str, Any] = state_dict
    for key in CONTAINER_KEYS:
        inner = sd.get(key) if isinstance(sd, Mapping) else None
        if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            notes.append(f"took the tensors under the checkpoint's {key!r} entry")
            sd = inner
            break
    if not isinstance(sd, Mapping):
        raise CheckpointError(
            f"expected a state_dict (a mapping of names to tensors), got {type(sd).__name__}"
        )
    # Checked before the renamings, which compare keys as strings: torch.load allows int keys, and more.
    odd = [k for k in sd if not isinstance(k, str)]
    if odd:
        raise CheckpointError(
            f"the state_dict has keys that are not strings: {', '.join(map(repr, odd[:_SHOWN]))}; a "
            "state_dict maps parameter names to tensors. Save the model's state_dict() only"
        )
    others = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if others:
        raise CheckpointError(
            f"the state_dict holds entries that are not tensors: {', '.join(map(str, others[:_SHOWN]))}; "
            "pass the model's state_dict() only"
        )
    tensors = _strip_prefixes(dict(sd), notes)
    return _rename_old_densenet(tensors, notes), notes


def _classifier_key(model_name: str, model_kwargs: Mapping[str, Any]) -> str | None:
    with torch.device("meta"):
        probe = create_model(model_name, **model_kwargs)
    name = getattr(probe, "classifier_name", None)
    return f"{name}.weight" if name else None


def _hints(report: ImportReport) -> list[str]:
    hints = []
    foreign = set(report.unexpected)
    if any(k.startswith("conv1.0.") or k.startswith("features.conv1.") for k in foreign):
        hints.append(
            "hint: the file has a deep (3×3 conv) stem, as timm's resnet*d/densenet*d variants; resnets "
            "builds only the 7×7-stem models torchvision defines"
        )
    if any(k.split(".")[0] in ("fc", "classifier") for k, _, _ in report.mismatched):
        hints.append(
            "hint: the classifier differs in size; --num-classes must match the file's, or use "
            "--allow-partial to keep a freshly initialised classifier for fine-tuning"
        )
    return hints


def import_state_dict(
    state_dict: Mapping[str, Any], model_name: str, *, allow_partial: bool = False, **model_kwargs: Any
) -> tuple[nn.Module, ImportReport]:
    """Build `model_name` (with `model_kwargs`, e.g. num_classes) and load a torchvision/timm state_dict
    into it; the class count defaults to the file's classifier. Strict unless `allow_partial`."""
    sd, notes = normalize_state_dict(state_dict)
    if model_kwargs.get("num_classes") is None:
        model_kwargs.pop("num_classes", None)
        head = _classifier_key(model_name, model_kwargs)
        if head in sd and sd[head].dim() == 2:
            # A zero-size tensor costs nothing in the file whatever its shape: (10**7, 0) would make a
            # classifier of 10**7 rows. A non-empty one has at most as many rows as the file has bytes.
            rows = int(sd[head].shape[0])
            if sd[head].numel() == 0 or rows > MAX_CLASSES:
                raise CheckpointError(
                    f"the classifier {head} has shape {list(sd[head].shape)}: not a classifier of 1…"
                    f"{MAX_CLASSES:,} classes. Pass num_classes (--num-classes) to build the model yourself, "
                    "with --allow-partial to leave the classifier freshly initialised"
                )
            model_kwargs["num_classes"] = rows
    num_classes = model_kwargs.get("num_classes")
    if num_classes is not None and not (isinstance(num_classes, int) and 1 <= num_classes <= MAX_CLASSES):
        raise ConfigError(f"num_classes must be an integer in 1…{MAX_CLASSES:,}, got {num_classes!r}")
    # Compared on the meta device first: the file's tensors must fit the model before its memory exists.
    with torch.device("meta"):
        probe = create_model(model_name, **model_kwargs)
    expected = probe.state_dict()
    report = ImportReport(model_name, int(getattr(probe, "num_classes", 0)), conversions=notes)
    for key, target in expected.items():
        if key not in sd:
            if key.endswith("num_batches_tracked"):
                sd[key] = torch.zeros(target.shape, dtype=target.dtype)  # target is on the meta device
                report.filled.append(key)
            else:
                report.missing.append(key)
        elif tuple(sd[key].shape) != tuple(target.shape):
            report.mismatched.append((key, tuple(sd[key].shape), tuple(target.shape)))
    report.unexpected = [k for k in sd if k not in expected]
    report.hints = _hints(report)
    if not report.complete and not allow_partial:
        raise CheckpointError(
            f"the state_dict does not match {model_name}:\n{report.problems()}\n"
            "--allow-partial (allow_partial=True) loads the matching tensors anyway and leaves the rest as "
            "initialised"
        )
    model = create_model(model_name, **model_kwargs).eval()
    bad = {k for k, _, _ in report.mismatched}
    usable = {k: v for k, v in sd.items() if k in expected and k not in bad}
    model.load_state_dict(usable, strict=False)  # copies into the model's tensors, in its dtype
    report.loaded = len(usable) - len(report.filled)
    return model, report


def load_state_dict_file(path: str | Path) -> dict[str, Any]:
    """Tensors of a .safetensors file, or of a .pth/.pt file read with torch.load(weights_only=True),
    which refuses anything but tensors and plain containers without running it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    with open(path, "rb") as f:
        head = f.read(9)
    # Decided by content, not name: safetensors has an 8-byte header length, then its JSON header's "{";
    # torch.save writes a zip ("PK"), and older torch and plain pickle files start with the byte 0x80.
    if head[8:9] == b"{" or not (head[:2] == b"PK" or head[:1] == b"\x80"):
        return load_weights(path)[0]
    # Before torch.load: no legacy pickle stream, no record larger than the file or sharing its bytes, no
    # global beyond what a state_dict needs.
    return safe_torch_load(
        path,
        _TORCH_FILE_ADVICE,
        lambda reason: (
            f"{path} could not be read as plain tensors with torch.load(weights_only=True) "
            f"({reason}). {_TORCH_FILE_ADVICE}"
        ),
    )


_TORCH_FILE_ADVICE = (
    "It holds objects other than tensors, or is not a PyTorch file; resnets never unpickles code. Save only "
    f"the model's state_dict in the program that wrote it. {CONVERT_HINT}"
)


def import_weights_file(
    path: str | Path,
    model_name: str,
    out: str | Path,
    *,
    allow_partial: bool = False,
    num_classes: int | None = None,
    classes: Sequence[str] | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    **model_kwargs: Any,
) -> ImportReport:
    """Convert a torchvision/timm weights file into a resnets model file at `out` (safetensors with
    ModelMeta: ImageNet mean/std, classes named class0… unless given), ready for eval/predict/export."""
    spec = get_spec(model_name)  # an unknown name fails here, before the file is read
    if classes is not None and num_classes is None:
        num_classes = len(classes)
    state_dict = load_state_dict_file(path)
    try:
        model, report = import_state_dict(
            state_dict, model_name, allow_partial=allow_partial, num_classes=num_classes, **model_kwargs
        )
    except CheckpointError as err:  # about the file's contents: say which file
        raise CheckpointError(f"{path}: {err}") from None
    n = report.num_classes
    names = [f"class{i}" for i in range(n)] if classes is None else [str(c) for c in classes]
    if len(names) != n:
        raise ConfigError(f"{len(names)} class names given for a model with {n} classes")
    in_chans = int(model_kwargs.pop("in_chans", spec.input_size[0]))
    if len(mean) != in_chans or len(std) != in_chans:
        raise ConfigError(f"mean and std need {in_chans} values (one per input channel)")
    size = list(model_kwargs.get("input_size", spec.input_size))
    meta = ModelMeta(
        model=model_name,
        num_classes=n,
        in_chans=in_chans,
        input_size=[in_chans, *size[1:]],
        mean=[float(m) for m in mean],
        std=[float(s) for s in std],
        classes=names,
        model_kwargs=dict(model_kwargs),
    )
    try:
        check_meta(meta)  # what load_model will check: never write a file it refuses
    except ValueError as err:
        raise ConfigError(f"cannot describe the imported model: {err}") from None
    save_weights(Path(out), model.state_dict(), meta)
    return report
