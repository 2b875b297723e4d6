"""Deployment: write a saved model as ONNX, TorchScript or a torch.export program, with its preprocessing
embedded, and check the written file against the PyTorch model before calling it done. Also runs an
exported ONNX file with ONNX Runtime for `resnets predict`.

The exported graph takes float32 NCHW images that are already normalised, (pixel/255 − mean)/std per
channel, with any batch size; it returns logits. The metadata (see `export_metadata`) says so, together
with the model name, input size, mean, std and class names, so a deployment needs nothing but the file.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnets.data import Normalize
from resnets.data.images import load_image_tensor
from resnets.deploy.inference import Prediction, fold_batchnorm, load_model, weights_path
from resnets.errors import CheckpointError, ConfigError, ResnetsError
from resnets.io.weights import ModelMeta, check_meta, meta_from_json
from resnets.weights import is_weights_name

# Each format and the file ending its loader expects (torch.export.load reads only *.pt2).
FORMATS: dict[str, str] = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "exported-program": ".pt2"}
METADATA_FILE = "resnets.json"  # the extra file that carries the metadata in TorchScript and .pt2 archives
PARITY_ATOL = 1e-4  # max |exported − eager| on the logits, in fp32
PARITY_BATCH_SIZES = (1, 3)  # neither is the traced batch (2): shows the batch dimension really is dynamic
INPUT_NAME, OUTPUT_NAME = "input", "logits"
_INSTALL_HINT = "install the export extras: pip install 'resnets[export]' (onnx, onnxscript, onnxruntime)"


class ExportError(ResnetsError):
    """An export failed, or the exported file does not compute what the PyTorch model computes."""


@dataclass(frozen=True)
class ExportResult:
    """What `export_model` wrote and how closely the written file reproduces the PyTorch model."""

    path: Path
    format: str
    max_abs_diff: float  # largest |exported − eager fp32| over the parity inputs' logits
    tolerance: float  # the bound max_abs_diff was checked against
    batch_sizes: tuple[int, ...]  # batch sizes of the parity inputs
    fused: bool  # batch norms folded into the convolutions before export
    opset: int | None  # ONNX default-domain opset; None for the torch formats
    metadata: dict[str, str] = field(default_factory=dict)  # embedded in the file (checked by reading back)


def _colour(channels: int) -> str:
    return {1: "greyscale", 3: "RGB"}.get(channels, f"{channels} channels")


def export_metadata(meta: ModelMeta) -> dict[str, str]:
    """The preprocessing and class metadata embedded in every export, as string key → string value
    (JSON for lists), the form ONNX metadata_props requires."""
    from resnets.version import __version__

    c, h, w = meta.input_size
    return {
        "model": meta.model,
        "num_classes": str(meta.num_classes),
        "input_size": json.dumps(list(meta.input_size)),
        "layout": "NCHW",
        "dtype": "float32",
        "colour": _colour(c),
        "mean": json.dumps(list(meta.mean)),
        "std": json.dumps(list(meta.std)),
        "classes": json.dumps(list(meta.classes)),
        "preprocessing": (
            f"decode as {_colour(c)}, resize to {h}x{w} (height x width, bilinear), scale pixels to [0, 1], "
            "subtract mean and divide by std per channel; feed float32 NCHW with any batch size"
        ),
        "output": f"logits of shape [batch, {meta.num_classes}]; softmax over dim 1 gives probabilities",
        "resnets_meta": meta.to_json(),  # everything `resnets predict` needs to rebuild the preprocessing
        "producer": f"resnets {__version__}",
    }


def _meta_from_metadata(metadata: dict[str, str], path: Path) -> ModelMeta:
    raw = metadata.get("resnets_meta")
    if raw is None:
        raise CheckpointError(
            f"{path} carries no resnets preprocessing metadata (was it written by `resnets export`?); "
            "export the model again with `resnets export RUN_DIR --format onnx`"
        )
    # The same checks as a weights file's metadata: predict_onnx resizes, normalises and names classes by
    # these values, so a file must not choose their sizes.
    try:
        meta = meta_from_json(raw)
        check_meta(meta)
    except ValueError as err:
        raise CheckpointError(
            f"{path}: unreadable resnets metadata ({err}); the file was altered after export or not written "
            "by resnets: export the model again with `resnets export RUN_DIR --format onnx`"
        ) from None
    return meta


def default_output(source: str | Path, format: str) -> Path:
    """Where an export goes unless told: beside the weights file, named after it (run/model.onnx); for
    shipped weights, in the working directory (resnet20.cifar10.onnx), not inside the package."""
    if is_weights_name(str(source)):
        return Path(f"{source}{FORMATS[format]}")
    weights = weights_path(source)
    return weights.with_name(weights.stem + FORMATS[format])


# --- writers: each writes `net` traced on `example` to `path` with `metadata` and returns the opset ---


def _write_onnx(
    net: nn.Module, example: torch.Tensor, path: Path, metadata: dict[str, str], opset: int | None
) -> int | None:
    try:
        import onnxscript  # noqa: F401  (the exporter needs it; a clear message beats its ImportError)
    except ImportError:
        raise ExportError(f"ONNX export needs onnxscript: {_INSTALL_HINT}") from None
    # The torch.export-based exporter (dynamo=True): it is the default and maintained one since PyTorch 2.9,
    # while the TorchScript-based exporter (dynamo=False) warns that it will be removed. It gave parity to
    # ~1e-6 on every resnets family we tried (plain, residual, pre-activation, DenseNet, folded or not).
    program = torch.onnx.export(
        net,
        (example,),
        dynamo=True,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        opset_version=opset,
        verbose=False,
    )
    # The exporter's graph optimizer (optimize=True) folds conv→batch-norm pairs on its own, so in ONNX
    # only batch norms after something else (DenseNet, pre-activation) stay, with or without --no-fuse.
    program.model.metadata_props.update(metadata)
    # One self-contained file: every resnets model is far below protobuf's 2 GB limit.
    written = program.model.opset_imports.get("")
    if opset is not None and written != opset:
        # The exporter builds opset 18 or newer and converts down; when that fails it keeps its own version.
        raise ExportError(
            f"the ONNX exporter could not write opset {opset} (it produced opset {written}); "
            "use --opset 18 or newer, or leave --opset out"
        )
    program.save(path, external_data=False)
    return written


def _write_torchscript(
    net: nn.Module, example: torch.Tensor, path: Path, metadata: dict[str, str], opset: int | None
) -> int | None:
    # Tracing, not scripting: resnets models use Python freely (a dense layer takes a tensor or a list),
    # which torch.jit.script rejects, while their traced graphs hold no batch-size constants (the parity
    # check runs batch sizes other than the traced one to make sure).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit")
        traced = torch.jit.trace(net, example, check_trace=False)  # the parity check does this job
        torch.jit.save(traced, str(path), _extra_files={METADATA_FILE: json.dumps(metadata)})
    return None


def _write_exported_program(
    net: nn.Module, example: torch.Tensor, path: Path, metadata: dict[str, str], opset: int | None
) -> int | None:
    program = torch.export.export(net, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(path), extra_files={METADATA_FILE: json.dumps(metadata)})
    return None


# --- loaders: each reads a written file back as (function of a float32 batch -> logits, metadata) ---


def _onnx_session(path: Path) -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError(f"running ONNX files needs onnxruntime: {_INSTALL_HINT}") from None
    if not path.is_file():
        raise CheckpointError(f"ONNX file {path} does not exist")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: ORT's warnings about unused initializers are noise here
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # ORT raises its own pybind exception types (InvalidProtobuf, Fail, …)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path} is not a valid ONNX model (truncated or corrupt?): {reason}; export it again with "
            "`resnets export RUN_DIR --format onnx`"
        ) from None


def _load_onnx(path: Path) -> tuple[Callable[[torch.Tensor], torch.Tensor], dict[str, str]]:
    session = _onnx_session(path)
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {name: x.numpy()})[0])

    return run, dict(session.get_modelmeta().custom_metadata_map)


def _load_torchscript(path: Path) -> tuple[Callable[[torch.Tensor], torch.Tensor], dict[str, str]]:
    extra = {METADATA_FILE: ""}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit")
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    raw = extra[METADATA_FILE]
    return module, json.loads(raw.decode() if isinstance(raw, bytes) else raw)


def _load_exported_program(path: Path) -> tuple[Callable[[torch.Tensor], torch.Tensor], dict[str, str]]:
    extra = {METADATA_FILE: ""}
    program = torch.export.load(str(path), extra_files=extra)
    raw = extra[METADATA_FILE]
    return program.module(), json.loads(raw.decode() if isinstance(raw, bytes) else raw)


_WRITERS = {
    "onnx": _write_onnx,
    "torchscript": _write_torchscript,
    "exported-program": _write_exported_program,
}
_LOADERS = {"onnx": _load_onnx, "torchscript": _load_torchscript, "exported-program": _load_exported_program}


def parity_tolerance(reference: torch.Tensor, atol: float = PARITY_ATOL) -> float:
    """The bound on max |exported − eager|: a flat `atol` on the logits. Measured differences are
    ~1e-6 (float32 rounding in a different operator order), far inside it for logits of any usual size."""
    return atol


@torch.no_grad()
def export_model(
    source: str | Path,
    format: str = "onnx",
    out: str | Path | None = None,
    *,
    opset: int | None = None,
    fuse: bool = True,
    batch_sizes: Sequence[int] = PARITY_BATCH_SIZES,
    atol: float = PARITY_ATOL,
) -> ExportResult:
    """Export a saved model (run directory or .safetensors file) in fp32 eval mode to `format`, check the
    written file against the eager model on random batches, and keep it only if they agree."""
    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    if opset is not None and format != "onnx":
        raise ConfigError(f"--opset applies to ONNX only, not to {format}")
    if not batch_sizes or min(batch_sizes) < 1:
        raise ConfigError(f"parity batch sizes must be positive integers, got {list(batch_sizes)}")
    out = Path(out) if out is not None else default_output(source, format)
    if format == "exported-program" and out.suffix != ".pt2":
        raise ConfigError(
            f"torch.export.load reads only files ending in .pt2; name the output {out.stem}.pt2"
        )
    model = load_model(source).float().eval()
    meta: ModelMeta = model.meta  # type: ignore[assignment]
    net = fold_batchnorm(model) if fuse else model
    # Batch 2: torch.export treats sizes 0 and 1 as constants, so tracing on 1 would fix the batch size.
    example = torch.randn(2, *meta.input_size, generator=torch.Generator().manual_seed(0))
    metadata = export_metadata(meta)

    out.parent.mkdir(parents=True, exist_ok=True)
    # Written under its own name in a private folder beside `out` (the loaders check the file ending, and
    # the file gets the umask's permissions), then renamed over `out` only once it has passed the checks.
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp = tmp_dir / out.name
    try:
        try:
            opset_used = _WRITERS[format](net, example, tmp, metadata, opset)
        except ExportError:
            raise
        except Exception as err:  # exporters raise many types; what matters is which step failed
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ExportError(
                f"the {format} exporter failed on {meta.model}: {first}. Try --no-fuse or another --format"
            ) from err
        diffs, tolerances = [], []
        generator = torch.Generator().manual_seed(1)
        try:
            run, written_metadata = _LOADERS[format](tmp)
            for n in batch_sizes:
                x = torch.randn(n, *meta.input_size, generator=generator)
                expected, got = model(x), run(x)
                if tuple(got.shape) != tuple(expected.shape):
                    raise ExportError(
                        f"the exported {format} model returns shape {tuple(got.shape)} for a batch of {n}, "
                        f"the PyTorch model {tuple(expected.shape)}; the file was not written"
                    )
                diffs.append(float((got.float() - expected).abs().max()))
                tolerances.append(parity_tolerance(expected, atol))
        except ExportError:
            raise
        except Exception as err:  # ORT's and torch's loaders raise many types
            raise ExportError(
                f"the written {format} file could not be loaded back and run ({err}); "
                "the file was not written"
            ) from err
        # Each batch against its own bound; NaN compares false with everything, so a NaN fails too.
        passed = all(d <= t for d, t in zip(diffs, tolerances, strict=True))
        diff = max(diffs) if all(math.isfinite(d) for d in diffs) else math.nan
        tolerance = min(tolerances)
        if not passed:
            raise ExportError(
                f"the exported {format} model differs from the PyTorch fp32 model by up to {diff:.3g} "
                f"(tolerance {tolerance:.3g}) on random inputs; the file was not written. "
                + ("Try --no-fuse." if fuse else "Please report this with the model name.")
            )
        if {k: written_metadata.get(k) for k in metadata} != metadata:
            raise ExportError(f"the {format} file did not keep its metadata; the file was not written")
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return ExportResult(
        out, format, diff, tolerance, tuple(batch_sizes), fuse and net is not model, opset_used, metadata
    )


# Operators a resnets export never writes that loop for as long as the file says (Loop, Scan, If: their
# subgraphs) or allocate a size computed while the graph runs (a 200-byte ConstantOfShape asks for any
# size). Other operators' sizes follow from the initializers and the input, which the file holds.
REFUSED_ONNX_OPS = frozenset(
    {"Loop", "Scan", "If", "SequenceMap", "ConstantOfShape", "Expand", "Tile", "Range", "Resize",
     "Upsample", "OneHot", "NonZero", "Compress", "Unique", "StringSplit"}
)  # fmt: skip


def check_onnx_graph(path: Path, num_classes: int, session: Any) -> None:
    """Refuse an ONNX graph whose declared output is not [batch, num_classes], that uses operators of
    REFUSED_ONNX_OPS, or operators outside ONNX's standard domain (custom kernels), before it runs."""
    outputs = session.get_outputs()
    if len(outputs) != 1 or len(outputs[0].shape) != 2 or outputs[0].shape[1] != num_classes:
        shapes = [o.shape for o in outputs]
        raise CheckpointError(
            f"{path} declares outputs {shapes}, but its metadata says one output of [batch, {num_classes}] "
            "class scores; the file was altered after export: export it again"
        )
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    stack, ops = [graph], set()
    while stack:
        g = stack.pop()
        for node in g.node:
            ops.add(node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}")
            for attr in node.attribute:
                stack.extend([attr.g] if attr.HasField("g") else list(attr.graphs))
    refused = sorted(op for op in ops if op in REFUSED_ONNX_OPS or "." in op)
    if refused:
        raise CheckpointError(
            f"{path} uses {', '.join(refused)}, which a resnets export never writes; such operators loop "
            "or allocate sizes chosen while the graph runs. Export the model again from its weights"
        )


@torch.inference_mode()
def predict_onnx(path: str | Path, images: Sequence[str | Path], top_k: int = 5) -> list[Prediction]:
    """Classify image files with an exported ONNX model on ONNX Runtime's CPU provider (fp32), using the
    preprocessing its metadata records; the same output as `resnets.predict` on the original weights."""
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    path = Path(path)
    session = _onnx_session(path)
    meta = _meta_from_metadata(dict(session.get_modelmeta().custom_metadata_map), path)
    inp = session.get_inputs()[0]
    c, h, w = meta.input_size
    if list(inp.shape[1:]) != [c, h, w]:
        raise CheckpointError(
            f"{path} takes inputs of shape {inp.shape}, but its metadata says [batch, {c}, {h}, {w}]; "
            "the file was altered after export: export it again"
        )
    check_onnx_graph(path, meta.num_classes, session)
    batch = torch.stack([load_image_tensor(Path(f), c, (h, w)) for f in images])
    x = Normalize(meta.mean, meta.std)(batch)
    try:
        logits = torch.from_numpy(session.run(None, {inp.name: x.numpy()})[0])
    except Exception as err:  # ORT's own exception types (Fail, InvalidArgument, RuntimeException, …)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: ONNX Runtime failed to run the model ({reason:.300})") from None
    if tuple(logits.shape) != (len(images), meta.num_classes):
        raise CheckpointError(
            f"{path} returned outputs of shape {list(logits.shape)} for {len(images)} images, not "
            f"[{len(images)}, {meta.num_classes}] as its metadata's {meta.num_classes} classes say; the file "
            "was altered after export: export it again"
        )
    probs = logits.float().softmax(dim=1)
    values, indices = probs.topk(min(top_k, meta.num_classes), dim=1)
    return [
        Prediction(
            str(f), [(meta.classes[i], float(p)) for p, i in zip(v.tolist(), ix.tolist(), strict=True)]
        )
        for f, v, ix in zip(images, values, indices, strict=True)
    ]
