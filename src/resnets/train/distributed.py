"""Many processes, one run: torchrun's environment, the process group, and batch norm over the global batch.

`torchrun --nproc_per_node=N -m resnets train ...` (or `resnets train --nproc N`) starts N copies of the
trainer. Each reads its rank from the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK), joins one
process group (NCCL on CUDA, gloo on CPU) and trains on its shard of every global batch under
DistributedDataParallel, which averages the gradients: the update is the one a single process makes on
the whole global batch. Only rank 0 writes the run directory.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

from resnets.errors import ConfigError

if TYPE_CHECKING:
    from resnets.runtime import ClassificationMeter


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job: its rank among `world_size`, and its rank on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, writes metrics and saves checkpoints."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """More than one process: gradients and batch-norm statistics cross processes."""
        return self.world_size > 1


SINGLE = DistInfo()


def from_env() -> DistInfo:
    """This process's place in the job: from the process group the caller has already joined, else
    from the variables torchrun sets (one process without either)."""
    if dist.is_available() and dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank()) or 0)
        return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local)
    try:
        return DistInfo(
            rank=int(os.environ.get("RANK", 0)),
            world_size=int(os.environ.get("WORLD_SIZE", 1)),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        )
    except ValueError as err:
        raise ConfigError(
            f"RANK, WORLD_SIZE and LOCAL_RANK must be integers (as torchrun sets them): {err}"
        ) from None


def restart_count() -> int:
    """How many times torchrun has restarted this job's workers (0 on the first attempt)."""
    value = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or "0"
    if not value.isdigit():
        raise ConfigError(f"TORCHELASTIC_RESTART_COUNT must be a count, got {value!r}")
    return int(value)


def job_id() -> str | None:
    """The id torchrun gives this job (the same across its restarts), or None outside torchrun."""
    return os.environ.get("TORCHELASTIC_RUN_ID") or None


def agree(info: DistInfo, flag: bool) -> bool:
    """True on every rank if `flag` is true on any rank (one tiny collective; no-op in one process)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return bool(t.item() > 0)


def barrier(info: DistInfo) -> None:
    """Wait for every process (no-op in one process)."""
    if info.enabled:
        dist.barrier()


def device_for(info: DistInfo, requested: torch.device) -> torch.device:
    """One GPU per process: cuda:LOCAL_RANK when the run is on CUDA; the CPU otherwise."""
    if requested.type == "cuda" and info.enabled:
        if info.local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"local rank {info.local_rank} has no GPU: this node has {torch.cuda.device_count()}; "
                "start at most that many processes per node (--nproc_per_node)"
            )
        torch.cuda.set_device(info.local_rank)
        return torch.device("cuda", info.local_rank)
    return requested


@contextlib.contextmanager
def process_group(info: DistInfo, device: torch.device) -> Iterator[None]:
    """Join the job's process group for the duration of the block (NCCL on CUDA, gloo on CPU); nothing
    for a single process, or when the caller has already joined one."""
    if not info.enabled or dist.is_initialized():
        yield
        return
    from torch.distributed.rendezvous import rendezvous

    # torchrun's store (env://), with keys of their own per restart: the restarted workers of a job
    # otherwise read the addresses their dead predecessors published there and fail to connect.
    store, rank, world_size = next(rendezvous("env://"))
    store = dist.PrefixStore(f"resnets/attempt{restart_count()}", store)
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo", store=store, rank=rank, world_size=world_size
    )
    try:
        yield
    finally:
        dist.destroy_process_group()


def broadcast_text(info: DistInfo, text: str) -> str:
    """Rank 0's `text` on every rank (e.g. the run directory rank 0 chose)."""
    if not info.enabled:
        return text
    box = [text if info.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return str(box[0])


def all_reduce_sum(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each tensor summed over every process (one collective for all of them)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensors
    flat = torch.cat([t.reshape(-1).to(torch.float64) for t in tensors])
    dist.all_reduce(flat)
    out, i = [], 0
    for t in tensors:
        out.append(flat[i : i + t.numel()].view(t.shape).to(t.dtype))
        i += t.numel()
    return out


class _SumOverProcesses(torch.autograd.Function):
    """y = Σ_processes x; its gradient is again the sum of every process's gradient of y."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class CrossProcessBatchNorm(nn.BatchNorm2d):
    """Batch norm whose training statistics are those of the global batch (Ioffe & Szegedy 2015, Alg. 1,
    over every process's images), for CPU processes: PyTorch's SyncBatchNorm runs on GPUs only.

    Each process sends its per-channel count, sum and sum of squares through a differentiable
    all-reduce, so the backward pass also crosses processes, as SyncBatchNorm's does. Outside training,
    or in one process, it is an ordinary BatchNorm2d (same state_dict keys)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()) or (
            dist.get_world_size() == 1
        ):
            return super().forward(x)
        xf = x.float()
        count = torch.full((1,), xf.numel() / xf.shape[1], dtype=torch.float32, device=x.device)
        local = torch.cat([count, xf.sum((0, 2, 3)), (xf * xf).sum((0, 2, 3))])
        total = _SumOverProcesses.apply(local)
        n, c = total[0], self.num_features
        mean = total[1 : 1 + c] / n
        var = (total[1 + c :] / n - mean * mean).clamp_min(0)  # biased, as batch norm normalises
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_((var * n / (n - 1).clamp_min(1)).detach(), m)
        shape = (1, -1, 1, 1)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm2d of `model` normalised over the global batch: SyncBatchNorm on GPUs,
    CrossProcessBatchNorm (same state, same keys) on the CPU."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if type(child) is nn.BatchNorm2d:
            replacement = CrossProcessBatchNorm(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            ).to(device)
            replacement.load_state_dict(child.state_dict())
            setattr(model, name, replacement)
        else:
            convert_sync_batchnorm(child, device)
    return model


def launch(nproc: int, argv: list[str]) -> int:
    """`resnets train --nproc N ...`: run the same command in N processes on this machine under torchrun
    (standalone rendezvous): this process becomes torchrun, so its exit status is torchrun's."""
    import sys

    if nproc < 1:
        raise ConfigError(f"--nproc must be >= 1, got {nproc}")
    if "LOCAL_RANK" in os.environ:
        raise ConfigError("--nproc starts torchrun itself; under torchrun leave it out")
    rest, skip = [], False
    for arg in argv:  # the command again, without --nproc
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            rest.append(arg)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    # Become torchrun (no parent left behind): signals reach it and it stops its workers.
    os.execv(sys.executable, [*command, "-m", "resnets", *rest])
    return 0  # not reached


def all_reduce_meter(meter: ClassificationMeter, info: DistInfo, device: torch.device) -> None:
    """Sum a meter's counts over the processes in place (every rank then holds the job's)."""
    if not info.enabled:
        return
    count = torch.tensor([meter.count], dtype=torch.float64, device=device)
    loss, top1, top5, confusion, count = all_reduce_sum(
        [meter.loss_sum, meter.top1, meter.top5, meter.confusion, count]
    )
    meter.loss_sum, meter.top1, meter.top5, meter.confusion = loss, top1, top5, confusion
    meter.count = int(count.item())
