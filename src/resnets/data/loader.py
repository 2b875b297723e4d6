"""Deterministic batches of uint8 images: shuffled by (seed, epoch), resumable at any batch.

In-memory data is moved to the device once and indexed there; datasets that do not fit stream
through a DataLoader with workers. Both yield (uint8 NCHW images, int64 labels) on the device.
"""

from __future__ import annotations

import math
import signal
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from resnets.data.base import ImageData
from resnets.errors import DataError


def epoch_generator(seed: int, epoch: int, batch: int | None = None) -> torch.Generator:
    """A CPU generator that depends only on (seed, epoch[, batch]): the same order after a resume."""
    key = (seed * 1_000_003 + epoch) * 1_000_033 + (0 if batch is None else batch + 1)
    return torch.Generator().manual_seed(key % (2**63))


def _ignore_sigint(worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C to the main process, which checkpoints and stops them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Batches:
    """One epoch of batches at a time; `epoch(e, start=k)` skips the first k batches (for resuming).
    With `shard=(rank, processes)` each batch is this process's slice of the global batch (drop_last)."""

    def __init__(
        self,
        source: ImageData | Dataset,
        batch_size: int,
        *,
        shuffle: bool,
        drop_last: bool,
        seed: int = 0,
        device: torch.device | str = "cpu",
        workers: int = 0,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        self.source, self.batch_size = source, batch_size
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.device = torch.device(device)
        self.workers = workers
        # (rank, processes): every process walks the same global batches and takes its own equal slice
        # of each, so N processes together see exactly the batches one process would.
        self.rank, self.processes = shard
        if batch_size % self.processes:
            raise DataError(
                f"the global batch size {batch_size} does not split evenly over {self.processes} processes; "
                "choose a --batch-size that is a multiple of the number of processes"
            )
        self.size = len(source)  # type: ignore[arg-type]
        self._cached_order: tuple[int | None, torch.Tensor] = (None, torch.empty(0, dtype=torch.long))
        if drop_last and self.size < batch_size:
            raise DataError(
                f"batch_size {batch_size} is larger than the {self.size} training images; lower --batch-size"
            )
        if isinstance(source, ImageData):  # held on the device once, indexed per batch
            self._images = source.images.to(self.device)
            self._labels = source.labels.to(self.device)

    def __len__(self) -> int:
        return self.size // self.batch_size if self.drop_last else math.ceil(self.size / self.batch_size)

    def _order(self, epoch: int) -> torch.Tensor:
        if self._cached_order[0] != epoch:  # batch_indices asks once per batch: draw it once per epoch
            order = (
                torch.randperm(self.size, generator=epoch_generator(self.seed, epoch))
                if self.shuffle
                else torch.arange(self.size)
            )
            self._cached_order = (epoch, order)
        return self._cached_order[1]

    def batch_indices(self, epoch: int, batch: int) -> torch.Tensor:
        """The dataset rows of global batch `batch` of `epoch` (every process's slices together)."""
        lo = batch * self.batch_size
        return self._order(epoch)[lo : min(lo + self.batch_size, self.size)]

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield the batches of `epoch` from batch index `start` on."""
        order = self._order(epoch)
        bounds = [(i * self.batch_size, min((i + 1) * self.batch_size, self.size)) for i in range(len(self))]
        bounds = bounds[start:]
        if self.processes > 1:
            per = self.batch_size // self.processes
            bounds = [(lo + self.rank * per, lo + (self.rank + 1) * per) for lo, _ in bounds]
        if isinstance(self.source, ImageData):
            order = order.to(self.device)
            for lo, hi in bounds:
                idx = order[lo:hi]
                yield self._images[idx], self._labels[idx]
            return
        loader = DataLoader(
            self.source,
            batch_sampler=[order[lo:hi].tolist() for lo, hi in bounds],
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            worker_init_fn=_ignore_sigint if self.workers else None,
        )
        for images, labels in loader:
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
