"""Training throughput on one GPU: the fast path (bf16 autocast, channels_last, torch.compile) against
eager fp32, with synthetic data already on the device (the real dataset cannot travel to a GPU machine).

    python benchmarks/gpu.py            # resnet56 (batch 128, 32×32), resnet50 (batch 256, 224×224)
    python benchmarks/gpu.py --smoke    # seconds, on the CPU: checks that every mode runs

For resnet56 it also says how long He et al.'s whole CIFAR schedule (64,000 iterations of 128) would
take at the measured rate. Small CIFAR nets are bound by kernel launches on a GPU, so the mode
`compiled-graphs` (torch.compile's "reduce-overhead": CUDA graphs) is measured too.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from common import machine_line

from resnets.deploy.bench import matmul_peak, median_rate
from resnets.info import count_flops
from resnets.models.factory import create_model
from resnets.registry import get_spec


@dataclass(frozen=True)
class GpuMode:
    """One way of running the training step."""

    name: str
    precision: torch.dtype | None  # autocast dtype, or None for fp32
    channels_last: bool
    compile: str | None  # torch.compile mode, or None for eager


MODES = (
    GpuMode("fp32 eager", None, False, None),
    GpuMode("bf16 channels_last eager", torch.bfloat16, True, None),
    GpuMode("bf16 channels_last compiled", torch.bfloat16, True, "default"),
    GpuMode("compiled-graphs", torch.bfloat16, True, "reduce-overhead"),
)
SETTINGS = {"resnet56": (128, 32), "resnet50": (256, 224)}  # batch, image size
HE2016_IMAGES = 64_000 * 128  # He et al. 2016 §4.2: 64k iterations of batch 128


def train_rate(
    name: str, mode: GpuMode, batch: int, size: int, device: torch.device, steps: int, repeats: int
) -> float:
    """Median training images/s of `name` in `mode` (forward, backward, SGD step)."""
    spec = get_spec(name)
    fmt = torch.channels_last if mode.channels_last else torch.contiguous_format
    torch.manual_seed(0)
    model = create_model(name).to(device, memory_format=fmt).train()
    net = torch.compile(model, mode=mode.compile) if mode.compile else model
    fused = device.type == "cuda"  # one kernel for the whole optimizer step
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4, fused=fused)
    x = torch.randn(batch, spec.input_size[0], size, size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, spec.num_classes, (batch,), device=device)

    def step() -> None:
        with torch.autocast(
            device.type, dtype=mode.precision or torch.float32, enabled=mode.precision is not None
        ):
            loss = F.cross_entropy(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return median_rate(step, batch, steps, repeats, device)


def _rate(images_per_second: float) -> str:
    """Whole images/s, or 3 significant digits below 100 (a CPU smoke run is slower than 1 img/s)."""
    return f"{images_per_second:,.0f}" if images_per_second >= 100 else f"{images_per_second:.3g}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--steps", type=int, default=50, help="timed steps per repeat")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny batches, eager modes only")
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    modes = [m for m in MODES if m.compile is None] if args.smoke else list(MODES)
    steps, repeats = (1, 1) if args.smoke else (args.steps, 3)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        gpu = torch.cuda.get_device_name(device)
    else:
        gpu = "none (CPU)"
    size = 256 if args.smoke else 8192
    peaks = {
        "fp32": matmul_peak(torch.float32, device, size),
        "bf16": matmul_peak(torch.bfloat16, device, size),
    }
    print(f"{machine_line()}, GPU {gpu}")
    print(
        f"matmul peak (same run): fp32 {peaks['fp32']:,.0f} GFLOP/s (TF32 off), "
        f"bf16 {peaks['bf16']:,.0f} GFLOP/s"
    )
    print()
    print(
        "| model | batch | size | mode | train img/s | × fp32 eager | % of peak | He et al. 64k×128 (min) |"
    )
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    for name in args.models:
        batch, size = (4, 32) if args.smoke else SETTINGS[name]
        train_flops = 3 * count_flops(create_model(name), (3, size, size))
        base = None
        for mode in modes:
            rate = train_rate(name, mode, batch, size, device, steps, repeats)
            base = base or rate
            peak = peaks["bf16" if mode.precision is not None else "fp32"]
            minutes = f"{HE2016_IMAGES / rate / 60:,.1f}" if name == "resnet56" else "–"
            print(
                f"| {name} | {batch} | {size} | {mode.name} | {_rate(rate)} | {rate / base:.2f}× | "
                f"{100 * rate * train_flops / 1e9 / peak:.1f}% | {minutes} |"
            )


if __name__ == "__main__":
    main()
