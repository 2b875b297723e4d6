"""Many processes under torchrun (gloo on loopback, CPU): the same updates as one process, and a job that
survives losing a worker. Each test starts real processes, so all are slow."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from resnets.data import Augment, random_crop_flip
from resnets.data.base import ImageData
from resnets.data.loader import Batches, epoch_generator
from resnets.errors import DataError
from resnets.train.config import OptimConfig
from resnets.train.optim import scaled_lr

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _train_cmd(out: Path, *flags: str, quiet: bool = True) -> list[str]:
    cmd = [sys.executable, "-m", "resnets", "train", "--out", str(out), "--precision", "fp32", *flags]
    return [*cmd, "--quiet"] if quiet else cmd


def _torchrun(nproc: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        *extra,
    ]


def _run(cmd: list[str], timeout: float = 300) -> None:
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]


def _max_diff(a: Path, b: Path) -> float:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    return max(float((wa[k].double() - wb[k].double()).abs().max()) for k in wa)


# -- sharding and the lr rule, in one process -------------------------------------------------------


def test_shards_partition_every_global_batch() -> None:
    """Two ranks' slices of each global batch are disjoint and together are the one-process batch."""
    data = ImageData(
        torch.arange(40, dtype=torch.uint8).view(40, 1, 1, 1).expand(40, 1, 2, 2).clone(),
        torch.arange(40) % 10,
    )
    whole = list(Batches(data, 8, shuffle=True, drop_last=True, seed=3).epoch(1))
    parts = [
        list(Batches(data, 8, shuffle=True, drop_last=True, seed=3, shard=(r, 2)).epoch(1)) for r in (0, 1)
    ]
    assert len(whole) == len(parts[0]) == len(parts[1]) == 5
    for k, (images, labels) in enumerate(whole):
        assert torch.equal(torch.cat([parts[0][k][0], parts[1][k][0]]), images)
        assert torch.equal(torch.cat([parts[0][k][1], parts[1][k][1]]), labels)
    with pytest.raises(DataError, match="multiple of the number of processes"):
        Batches(data, 9, shuffle=True, drop_last=True, shard=(0, 2))


def test_augmenting_a_shard_gives_the_rows_of_the_whole_batch() -> None:
    images = torch.randint(0, 256, (8, 3, 6, 6), dtype=torch.uint8)
    augment = Augment(pad=2, flip=True)
    whole = random_crop_flip(images, augment, epoch_generator(0, 1, 2))
    halves = [
        random_crop_flip(images[r * 4 : r * 4 + 4], augment, epoch_generator(0, 1, 2), part=(r * 4, 8))
        for r in (0, 1)
    ]
    assert torch.equal(torch.cat(halves), whole)


def test_linear_lr_scaling_rule() -> None:
    assert scaled_lr(OptimConfig(lr=0.1), 1024) == 0.1
    assert scaled_lr(OptimConfig(lr=0.1, lr_scaling="linear", lr_base_batch=256), 1024) == pytest.approx(0.4)


# -- real processes ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_processes_match_one_without_batch_norm(tmp_path: Path) -> None:
    """An MLP (no batch norm): 2 processes × 32 images give the updates of 1 process × 64, up to the
    order of float sums in the gradient average."""
    flags = ["--model", "skipnet", "--max-steps", "6", "--epochs", "1", "--batch-size", "64"]
    _run(_train_cmd(tmp_path / "one", *flags))
    _run(_torchrun(2, "-m", "resnets", "train", *_train_cmd(tmp_path / "two", *flags)[4:]))
    assert _max_diff(tmp_path / "one", tmp_path / "two") < 1e-6


@pytest.mark.slow
def test_sync_batchnorm_matches_one_process_and_plain_ddp_does_not(tmp_path: Path) -> None:
    """resnet20 with batch norm over the global batch (--sync-bn) follows the one-process run to float
    tolerance; with per-process batch norm (statistics of 32 images) it does not."""
    flags = ["--max-steps", "3", "--epochs", "1", "--batch-size", "64", "--lr", "0.02"]
    _run(_train_cmd(tmp_path / "one", *flags))
    _run(_train_cmd(tmp_path / "sync", *flags, "--nproc", "2", "--sync-bn"))
    _run(_train_cmd(tmp_path / "local", *flags, "--nproc", "2"))
    assert (tmp_path / "sync" / "summary.json").is_file()
    sync, local = (
        _max_diff(tmp_path / "one", tmp_path / "sync"),
        _max_diff(tmp_path / "one", tmp_path / "local"),
    )
    assert sync < 1e-4
    assert local > 100 * sync
    log = (tmp_path / "sync" / "metrics.jsonl").read_text()
    assert log.count('"split": "train"') == 1  # one writer: rank 0


def _worker_pids(parent: int) -> dict[int, int]:
    """RANK -> pid of the processes torchrun started (read from /proc)."""
    found = {}
    for child in Path("/proc").iterdir():
        if not child.name.isdigit():
            continue
        try:
            stat = (child / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            env = (child / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if ppid == parent:
            rank = next((int(e[5:]) for e in env if e.startswith(b"RANK=")), None)
            if rank is not None:
                found[rank] = int(child.name)
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the workers through /proc")
def test_torchrun_restarts_a_killed_worker_and_finishes_like_an_unbroken_run(tmp_path: Path) -> None:
    flags = ["--epochs", "6", "--batch-size", "64", "--set", "run.log_every=5"]
    _run(_torchrun(2, "-m", "resnets", "train", *_train_cmd(tmp_path / "unbroken", *flags)[4:]))

    broken = tmp_path / "broken"
    job = subprocess.Popen(
        _torchrun(
            2, "--max-restarts", "1", "-m", "resnets", "train", *_train_cmd(broken, *flags, quiet=False)[4:]
        ),
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    killed = None
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and job.poll() is None:
        # Kill rank 1 once the first epoch's checkpoint exists and epoch 2 is under way.
        if (broken / "checkpoints" / "last").is_dir() and '"epoch": 2' in _read(broken / "metrics.jsonl"):
            workers = _worker_pids(job.pid)
            if 1 in workers:
                os.kill(workers[1], signal.SIGKILL)
                killed = workers[1]
                break
        time.sleep(0.02)
    output, _ = job.communicate(timeout=300)
    assert killed is not None, "the job ended before a worker could be killed\n" + output[-3000:]
    assert job.returncode == 0, output[-4000:]
    # Resumed (not started over) at the checkpoint of an epoch boundary before the end.
    resumed = re.search(rf"resuming {re.escape(str(broken))} at epoch (\d+), step (\d+)", output)
    assert resumed, output[-3000:]
    epoch, step = int(resumed.group(1)), int(resumed.group(2))
    assert 2 <= epoch <= 6 and step == 22 * (epoch - 1)
    assert _max_diff(tmp_path / "unbroken", broken) == 0.0  # bit for bit
    steps = [line for line in _read(broken / "metrics.jsonl").splitlines() if '"split": "train"' in line]
    assert len(steps) == 6  # every epoch logged once: the records after the checkpoint were replaced


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


# -- what a restarted job may rejoin (one process, torchrun's variables set by hand) -------------------


def _stopped_run(out: Path, monkeypatch: pytest.MonkeyPatch, job: str | None) -> None:
    from resnets.train.run import train

    if job is not None:
        monkeypatch.setenv("TORCHELASTIC_RUN_ID", job)
    train({"run": {"epochs": 2, "max_steps": 30, "out": str(out), "quiet": True}}, stop_after_steps=23)


def test_a_restarted_job_rejoins_only_the_run_it_started(tmp_path: Path, monkeypatch) -> None:
    from resnets.errors import ConfigError
    from resnets.train.run import train
    from resnets.train.rundir import JOB_MARKER

    config = {"run": {"epochs": 2, "max_steps": 30, "out": str(tmp_path / "r"), "quiet": True}}
    with pytest.raises(Exception, match="stopped at step 23"):
        _stopped_run(tmp_path / "r", monkeypatch, job="job-a")
    assert (tmp_path / "r" / JOB_MARKER).read_text().strip() == "job-a"
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-b")  # another job pointed at the same --out
    with pytest.raises(ConfigError, match="already holds a run"):
        train(config)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-a")  # the job that started it, restarted
    result = train(config)
    assert result.summary["steps"] == 30
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "2")
    with pytest.raises(ConfigError, match="give --out"):
        train({"run": {"epochs": 1, "quiet": True}})
