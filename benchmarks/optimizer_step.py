"""What one optimizer step costs: PyTorch's three implementations side by side on a model's parameters.

    python benchmarks/optimizer_step.py                           # resnet20 and resnet56, SGD and AdamW
    python benchmarks/optimizer_step.py --models resnet110 --steps 500
    python benchmarks/optimizer_step.py --smoke                   # seconds: checks that it runs

The implementations are the per-tensor for-loop (the CPU default), `foreach` (one call per operation
over every tensor) and `fused` (one kernel over every tensor: what `resnets train` uses where the device
has it). Each is timed on the same parameters and gradients, interleaved round by round so that drift of
the machine's speed hits all of them; the table gives milliseconds per step (median over rounds) and
each one's speed-up against the for-loop of the same run, beside a whole training step's time (fp32,
eager) for scale.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import machine_line

from resnets.models.factory import create_model
from resnets.registry import get_spec
from resnets.train.tune import step_rate

IMPLEMENTATIONS = {"for-loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}
OPTIMIZERS = {
    "sgd": lambda params, **kw: torch.optim.SGD(
        params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, **kw
    ),
    "adamw": lambda params, **kw: torch.optim.AdamW(params, lr=1e-3, weight_decay=5e-2, **kw),
}


def step_ms(model_name: str, optimizer: str, steps: int, rounds: int) -> dict[str, float]:
    """Median milliseconds per optimizer step for each implementation (interleaved rounds)."""
    torch.manual_seed(0)
    model = create_model(model_name, num_classes=get_spec(model_name).num_classes)
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    opts = {name: OPTIMIZERS[optimizer](params, **kw) for name, kw in IMPLEMENTATIONS.items()}
    times: dict[str, list[float]] = {name: [] for name in opts}
    for opt in opts.values():  # warm-up: the state (momentum buffers) exists before the clock starts
        opt.step()
    for _ in range(rounds):
        for name, opt in opts.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                opt.step()
            times[name].append(1e3 * (time.perf_counter() - t0) / steps)
    return {name: statistics.median(values) for name, values in times.items()}


def train_step_ms(model_name: str, batch: int) -> float:
    """Milliseconds of one eager fp32 NCHW training step at `batch` (default optimizer), for scale."""
    spec = get_spec(model_name)
    model = create_model(model_name, num_classes=spec.num_classes)
    cpu = torch.device("cpu")
    rate = step_rate(model, spec.input_size, batch, spec.num_classes, "fp32", cpu, False, False)
    return 1e3 * batch / rate


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["resnet20", "resnet56"])
    parser.add_argument("--optimizers", nargs="+", choices=sorted(OPTIMIZERS), default=["sgd", "adamw"])
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps per timed round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (the median is reported)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch of the training step for scale")
    parser.add_argument("--smoke", action="store_true", help="resnet20, SGD, 3 steps × 1 round")
    args = parser.parse_args()
    if args.smoke:
        args.models, args.optimizers = ["resnet20"], ["sgd"]
        args.steps, args.rounds, args.batch_size = 3, 1, 4

    print(machine_line())
    print()
    print("| model | optimizer | for-loop ms | foreach ms | fused ms | fused × | fp32 step ms (batch) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name in args.models:
        scale = train_step_ms(name, args.batch_size)
        for optimizer in args.optimizers:
            ms = step_ms(name, optimizer, args.steps, args.rounds)
            print(
                f"| {name} | {optimizer} | {ms['for-loop']:.3f} | {ms['foreach']:.3f} | {ms['fused']:.3f} "
                f"| {ms['for-loop'] / ms['fused']:.2f} | {scale:.1f} ({args.batch_size}) |"
            )


if __name__ == "__main__":
    main()
