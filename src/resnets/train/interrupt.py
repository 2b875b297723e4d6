"""Ctrl-C during training: stop cleanly with a checkpoint instead of losing the run."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from resnets.train.engine import Trainer


@contextmanager
def stop_on_sigint(trainer: Trainer) -> Iterator[None]:
    """Ctrl-C stops after the current step and checkpoints, in one process; a second one aborts.
    Processes of a job would each stop at a step of their own and leave the others waiting in a
    collective: there torchrun handles signals and a restarted job resumes from the last checkpoint."""
    if threading.current_thread() is not threading.main_thread() or trainer.dist.enabled:
        yield
        return

    def on_sigint(signum: int, frame: Any) -> None:
        if trainer.stop_requested:
            raise KeyboardInterrupt
        trainer.stop_requested = True
        print(
            "\ninterrupt: finishing this step and saving a checkpoint (Ctrl-C again to abort)",
            file=sys.stderr,
        )

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
