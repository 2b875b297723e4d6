"""Where a training step's time goes, per execution mode: torch.profiler's top operators.

    python benchmarks/profile_step.py                       # resnet20, batch 128: fp32, NHWC, auto
    python benchmarks/profile_step.py --model resnet56 --modes fp32 auto
    python benchmarks/profile_step.py --smoke               # seconds: batch 8, one step

For each mode (the `resnets bench` modes) it prints the step's images/s beside the fp32 matmul peak
measured in the same run, then the operators with the largest self CPU time, as a share of the step.
The share is a fraction of one profiled run, so it holds on a shared machine better than absolute times.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from common import machine_line
from torch.profiler import ProfilerActivity, profile

from resnets.deploy.bench import MODES, matmul_peak
from resnets.info import count_flops
from resnets.models.factory import create_model
from resnets.registry import get_spec
from resnets.runtime import autocast, pick_precision


def profile_mode(model_name: str, mode: str, batch: int, steps: int, top: int) -> tuple[float, list[tuple]]:
    """(training images/s under the profiler, [(operator, share of self CPU time), ...]) for one mode."""
    spec, m = get_spec(model_name), MODES[mode]
    device = torch.device("cpu")
    precision = pick_precision(m.precision, device, spec.family)
    fmt = torch.channels_last if m.channels_last else torch.contiguous_format
    torch.manual_seed(0)
    net = create_model(model_name, num_classes=spec.num_classes).to(memory_format=fmt).train()
    x = torch.randn(batch, *spec.input_size).contiguous(memory_format=fmt)
    y = torch.randint(0, spec.num_classes, (batch,))
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    run = torch.compile(net) if m.compile else net

    def step() -> None:
        with autocast(device, precision):
            loss = F.cross_entropy(run(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):  # warm-up (and compilation) outside the profile
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    ranked = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return batch * steps / _elapsed(prof), [(e.key, e.self_cpu_time_total / total) for e in ranked]


def _elapsed(prof: profile) -> float:
    """Wall seconds the profiled steps took (first event start to last event end)."""
    events = prof.events()
    start = min(e.time_range.start for e in events)
    end = max(e.time_range.end for e in events)
    return (end - start) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--modes", nargs="+", default=["fp32", "channels_last", "auto"], choices=list(MODES))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--top", type=int, default=8)
    parser.add_argument("--smoke", action="store_true", help="batch 8, one step, small peak")
    args = parser.parse_args()
    if args.smoke:
        args.batch, args.steps = 8, 1
    peak = matmul_peak(torch.float32, torch.device("cpu"), 256 if args.smoke else 4096)
    flops = 3 * count_flops(create_model(args.model), get_spec(args.model).input_size)  # forward + backward
    print(machine_line())
    print(
        f"{args.model}, batch {args.batch}, {args.steps} profiled steps; fp32 matmul peak {peak:,.0f} GFLOP/s"
    )
    for mode in args.modes:
        rate, ops = profile_mode(args.model, mode, args.batch, args.steps, args.top)
        print()
        print(
            f"### {mode}: {rate:,.0f} img/s under the profiler, "
            f"{100 * rate * flops / (peak * 1e9):.1f}% of the fp32 peak"
        )
        print("| operator | share of self CPU time |")
        print("|---|---:|")
        for name, share in ops:
            print(f"| {name} | {100 * share:.1f}% |")


if __name__ == "__main__":
    main()
