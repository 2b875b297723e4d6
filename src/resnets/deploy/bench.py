"""Throughput of training and inference per model and execution mode, against the machine's peak.

Every figure is measured in the same run as the matmul peak it is compared with, so the fractions
hold on a shared machine whose speed drifts. Data is synthetic and already on the device: this
measures the model's compute path, not data loading or augmentation.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from resnets.deploy.inference import InferenceOptions, prepare_inference
from resnets.info import count_flops
from resnets.models.factory import create_model
from resnets.registry import get_spec
from resnets.runtime import autocast, machine_line, pick_device, pick_precision


@dataclass(frozen=True)
class Mode:
    """How a model is executed: memory format, precision, compilation."""

    name: str
    channels_last: bool
    precision: str  # fp32 | bf16 | auto
    compile: bool = False  # training: torch.compile; inference: torch.compile with frozen weights
    fuse: bool = False  # inference only: batch norms folded into the convolutions before them
    train: bool = True  # False: a mode that differs only at inference measures inference only


MODES = {
    "fp32": Mode("fp32", False, "fp32"),  # the tutorial's default: NCHW, fp32, eager
    "channels_last": Mode("channels_last", True, "fp32"),
    "bf16": Mode("bf16", False, "bf16"),
    "unfused": Mode("unfused", True, "auto", train=False),  # auto without folding: that lever alone
    "auto": Mode("auto", True, "auto", fuse=True),  # what `resnets train` / `resnets eval` do by default
    "compiled": Mode("compiled", True, "auto", compile=True, fuse=True),
    # What `auto` amounts to on a CPU without bf16 (fp32, channels_last, compiled where it pays): the
    # fp32 path, measurable on any CPU.
    "fp32_compiled": Mode("fp32_compiled", True, "fp32", compile=True, fuse=True),
}
SMOKE_MODELS = ("resnet20",)  # --smoke: one small model per mode, a few steps: checks that it runs
SMOKE = {"batch": 8, "infer_batch": 8, "steps": 1, "repeats": 1, "warmup": 1}  # 2 calls per rate
DEFAULT_MODELS = (
    "resnet20",
    "resnet56",
    "resnet110",
    "preact_resnet164",
    "densenet_bc100_k12",
    "highway56",
    "resnet50",
)
# resnet50 trains at 128×128 here (224×224 training is impractical on two cores); it infers at 224,
# in batches of 32 and with fewer timed steps, so that one row takes seconds, not minutes.
TRAIN_SIZE = {"resnet50": 128}
BATCH = {"resnet50": 32}
STEPS = {"resnet50": 2}


@dataclass
class Row:
    """One measured (model, mode) pair."""

    model: str
    mode: str
    precision: str
    train_size: int
    train_ips: float | None
    train_gflops: float | None
    infer_size: int
    infer_ips: float
    infer_gflops: float
    peak_mb: float | None


def matmul_peak(dtype: torch.dtype, device: torch.device, n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of an n×n matrix product in `dtype`, the best of `repeats` (after one warm-up)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        # glibc keeps freed memory in the process; hand it back so that the peak resident set measured
        # next is this row's, not what an earlier, larger model left behind.
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # Linux: reset VmHWM (peak resident set)


def _peak_memory_mb(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def median_rate(
    step: Callable[[], None], batch: int, steps: int, repeats: int, device: torch.device, warmup: int = 3
) -> float:
    """Median images/s over `repeats` timings of `steps` calls (after `warmup` untimed calls)."""
    for _ in range(warmup):
        step()
    rates = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)
        rates.append(batch * steps / (time.perf_counter() - t))
    return statistics.median(rates)


def measure(
    name: str,
    mode: Mode,
    *,
    batch: int | None = None,
    infer_batch: int | None = None,
    steps: int | None = None,
    repeats: int = 3,
    warmup: int = 3,
    device: torch.device | None = None,
) -> Row:
    """Training and inference throughput of model `name` in `mode` on synthetic data (batches of
    128 and 256 and 5 timed steps unless given, fewer for the large models)."""
    device = device or pick_device("auto")
    spec = get_spec(name)
    precision = pick_precision(mode.precision, device, spec.family)
    c, h, _ = spec.input_size
    train_size = TRAIN_SIZE.get(name, h)
    fmt = torch.channels_last if mode.channels_last and spec.family != "mlp" else torch.contiguous_format
    torch.manual_seed(0)
    model = create_model(name).to(device, memory_format=fmt)
    net = torch.compile(model) if mode.compile else model
    batch = batch or BATCH.get(name, 128)
    infer_batch = infer_batch or BATCH.get(name, 256)
    steps = steps or STEPS.get(name, 5)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, c, train_size, train_size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, spec.num_classes, (batch,), device=device)

    def train_step() -> None:
        with autocast(device, precision):
            loss = F.cross_entropy(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    _reset_peak_memory(device)
    model.train()
    train_ips = median_rate(train_step, batch, steps, repeats, device, warmup) if mode.train else None
    peak = _peak_memory_mb(device)

    xi = torch.randn(infer_batch, c, h, h, device=device).contiguous(memory_format=fmt)
    options = InferenceOptions(mode.precision, mode.channels_last, fuse=mode.fuse, compile=mode.compile)
    infer_net, _ = prepare_inference(model, device, options, spec.family)

    def infer_step() -> None:
        with torch.inference_mode(), autocast(device, precision):
            infer_net(xi)

    infer_ips = median_rate(infer_step, infer_batch, steps, repeats, device, warmup)
    # Training costs about three forward passes (forward, and backward for inputs and weights).
    train_flops = 3 * count_flops(model, (c, train_size, train_size))
    infer_flops = count_flops(model, (c, h, h))
    return Row(
        name,
        mode.name,
        precision,
        train_size,
        train_ips,
        None if train_ips is None else train_ips * train_flops / 1e9,
        h,
        infer_ips,
        infer_ips * infer_flops / 1e9,
        peak,
    )


TABLE_HEADER = (
    "| model | mode | precision | train size | train img/s | train GFLOP/s | % peak | infer size | "
    "infer img/s | infer GFLOP/s | % peak | train peak MB |\n"
    "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def format_row(r: Row, peaks: dict[str, float] | None) -> str:
    """One Markdown row; the fraction of peak uses the bf16 peak for bf16 rows, else the fp32 peak
    (`peaks` None: a smoke run, whose one-step timings and small peak make a fraction meaningless)."""
    peak = None if peaks is None else peaks["bf16"] if r.precision == "bf16" else peaks["fp32"]

    def share(gflops: float | None) -> str:
        return "–" if gflops is None or peak is None else f"{100 * gflops / peak:.1f}%"

    mem = f"{r.peak_mb:,.0f}" if r.peak_mb is not None else "–"
    cells = [
        r.model,
        r.mode,
        r.precision,
        str(r.train_size),
        "–" if r.train_ips is None else f"{r.train_ips:,.0f}",
        "–" if r.train_gflops is None else f"{r.train_gflops:,.1f}",
        share(r.train_gflops),
        str(r.infer_size),
        f"{r.infer_ips:,.0f}",
        f"{r.infer_gflops:,.1f}",
        share(r.infer_gflops),
        mem,
    ]
    return "| " + " | ".join(cells) + " |"


def format_table(rows: Sequence[Row], peaks: dict[str, float] | None) -> str:
    """The header and one row per measurement, as Markdown."""
    return "\n".join([TABLE_HEADER, *(format_row(r, peaks) for r in rows)])


def run_benchmark(
    models: Sequence[str] = DEFAULT_MODELS,
    modes: Sequence[str] = ("fp32", "channels_last", "bf16", "unfused", "auto"),
    *,
    smoke: bool = False,
    batch: int | None = None,
    steps: int | None = None,
    print_fn: Callable[[str], None] = print,
) -> str:
    """Measure every (model, mode) and print the machine, versions, peaks and the table row by row;
    return the whole table."""
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"unknown mode(s) {unknown}; choose from {', '.join(MODES)}")
    device = pick_device("auto")
    size = 256 if smoke else 4096
    peaks = {
        "fp32": matmul_peak(torch.float32, device, size),
        "bf16": matmul_peak(torch.bfloat16, device, size),
    }
    print_fn(f"{machine_line(device)}, device {device}")
    print_fn(
        f"matmul peak ({size}×{size}, same run): fp32 {peaks['fp32']:,.0f} GFLOP/s, "
        f"bf16 {peaks['bf16']:,.0f} GFLOP/s"
    )
    kwargs: dict[str, Any] = dict(SMOKE) if smoke else {"batch": batch, "steps": steps}
    shown = None if smoke else peaks  # a smoke run checks that each mode runs; its % of peak means nothing

    print_fn(TABLE_HEADER)
    rows = []
    for name in models:
        for mode in modes:  # each row is printed as soon as it is measured
            rows.append(measure(name, MODES[mode], device=device, **kwargs))
            print_fn(format_row(rows[-1], shown))
    return format_table(rows, shown)
