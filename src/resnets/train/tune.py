"""Speed levers chosen by measurement: channels_last and torch.compile for a model's training step.

Which levers pay depends on the CPU and the model (channels_last slowed DenseNet training on one of the
project's CPUs and sped ResNets up on all of them; compile paid 1.17× for ResNet-20 on an AVX-512 BF16
CPU). Like `torch.backends.cudnn.benchmark` on a GPU, a run whose levers are `auto` times the candidates
for a few steps on a copy of its model, on its own input size, batch and precision, and remembers the
answer per (model, input, batch, precision, device, threads, torch) in the user's cache directory. A
lever only changes memory layout or kernel fusion, never the precision the user asked for.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from resnets.io.atomic import write_text
from resnets.models.factory import create_model
from resnets.registry import get_spec
from resnets.runtime import autocast, cpu_model, machine_line, pick_device, pick_precision

CACHE_FILE = "tune.json"
MAX_CACHE_BYTES = 1 << 20  # a cache file larger than this is not ours: ignored (and rewritten)
PROBE_SECONDS = 1.5  # timed seconds per candidate (after warm-up)
# A lever is probed only where the run is long enough that the probe is noise against it: the eager
# estimate of the whole run must exceed this many times the probe's own cost.
PAYBACK = 20
COMPILE_SECONDS = 60.0  # what one torch.compile of a small net costs on a 2-core CPU, roughly
MIN_GAIN = 1.03  # a lever must be at least 3% faster to be switched on (below that: timing noise)


def cache_dir() -> Path:
    """$RESNETS_CACHE_DIR, else $XDG_CACHE_HOME/resnets, else ~/.cache/resnets."""
    if os.environ.get("RESNETS_CACHE_DIR"):
        return Path(os.environ["RESNETS_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "resnets"


@dataclass(frozen=True)
class ProbeKey:
    """What a measured answer holds for."""

    model: str  # name and builder options
    input: tuple[int, ...]  # (C, H, W)
    batch: int
    precision: str
    device: str  # the CPU's model name, or the GPU's
    threads: int
    torch: str
    asked: str = "channels_last=auto, compile=auto"  # which levers were left to the probe

    def text(self) -> str:
        """The key as one string (the cache file's key)."""
        c, h, w = self.input
        return (
            f"{self.model} {c}x{h}x{w} batch {self.batch} {self.precision} on {self.device} "
            f"({self.threads} threads, torch {self.torch}); {self.asked}"
        )


@dataclass
class Levers:
    """The chosen levers, the measured speed-up of each against its alternative, and where it came from."""

    channels_last: bool
    compile: bool
    speedups: dict[str, float] = dataclasses.field(default_factory=dict)  # lever → its ratio
    source: str = "default"  # probed | cached | default | asked

    def describe(self) -> str:
        """One line, e.g. "channels_last: on (1.30×), compile: on (1.17×) [cached]"."""
        parts = []
        for name in ("channels_last", "compile"):
            value = "on" if getattr(self, name) else "off"
            ratio = self.speedups.get(name)
            parts.append(f"{name}: {value}" + (f" ({ratio:.2f}×)" if ratio is not None else ""))
        return ", ".join(parts) + f" [{self.source}]"


def probe_key(
    model_name: str,
    kwargs: dict[str, Any],
    input_shape: tuple[int, ...],
    batch: int,
    precision: str,
    device: torch.device,
    channels_last: bool | str = "auto",
    compile: bool | str = "auto",
) -> ProbeKey:
    """The key for a model (with its builder options) trained on `device` at this input, batch and
    precision, with the levers as asked (true, false or auto)."""
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    options = ",".join(f"{k}={kwargs[k]}" for k in sorted(kwargs))
    name = f"{model_name}({options})" if options else model_name
    return ProbeKey(
        name,
        tuple(input_shape),
        batch,
        precision,
        where,
        torch.get_num_threads(),
        torch.__version__,
        f"channels_last={_asked(channels_last)}, compile={_asked(compile)}",
    )


def _asked(value: bool | str) -> str:
    return value if isinstance(value, str) else str(value).lower()


# ---- the cache: a small JSON file, read defensively (it is a file anyone could have written) --------


def read_cache(path: Path | None = None) -> dict[str, dict[str, Any]]:
    """The cached answers, {key text: {channels_last, compile, speedups}}; an unreadable, oversized or
    malformed file reads as empty (it only costs a new probe) rather than failing the run."""
    path = path or cache_dir() / CACHE_FILE
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_CACHE_BYTES:
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and _valid_entry(v)}


def _valid_entry(entry: Any) -> bool:
    if not isinstance(entry, dict):
        return False
    speedups = entry.get("speedups", {})
    return (
        isinstance(entry.get("channels_last"), bool)
        and isinstance(entry.get("compile"), bool)
        and isinstance(speedups, dict)
        and all(isinstance(v, int | float) and 0 < v < 1e3 for v in speedups.values())
    )


def write_cache(key: ProbeKey, levers: Levers, path: Path | None = None) -> Path:
    """Add (or replace) one answer in the cache file, written atomically; returns the file."""
    path = path or cache_dir() / CACHE_FILE
    entries = read_cache(path)
    entries[key.text()] = {
        "channels_last": levers.channels_last,
        "compile": levers.compile,
        "speedups": {k: round(v, 4) for k, v in levers.speedups.items()},
    }
    if path.is_symlink():  # never written through a link (docs/hostile-input.md)
        path.unlink()
    write_text(path, json.dumps(entries, indent=1, sort_keys=True) + "\n")
    return path


# ---- the probe ----------------------------------------------------------------------------------


def step_rate(
    model: nn.Module,
    input_shape: tuple[int, ...],
    batch: int,
    num_classes: int,
    precision: str,
    device: torch.device,
    channels_last: bool,
    compiled: bool,
    seconds: float = PROBE_SECONDS,
) -> float:
    """Training images per second of a copy of `model` (SGD steps on random data), timed for about
    `seconds` after warm-up. The caller's model, its RNG state and its gradients are left untouched."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        net = copy.deepcopy(model).to(device, memory_format=fmt).train()
        x = torch.randn(batch, *input_shape, device=device).contiguous(memory_format=fmt)
        y = torch.randint(0, num_classes, (batch,), device=device)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    run = torch.compile(net) if compiled else net

    def step() -> None:
        with autocast(device, precision):
            loss = F.cross_entropy(run(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return _timed(step, batch, seconds, device)


def _timed(step: Callable[[], None], batch: int, seconds: float, device: torch.device) -> float:
    for _ in range(2):  # warm-up: allocator, oneDNN primitive caches (and compilation)
        step()
    done, t0 = 0, time.perf_counter()
    while True:
        step()
        done += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds and done >= 3:
            return batch * done / elapsed


def probe(
    model: nn.Module,
    input_shape: tuple[int, ...],
    batch: int,
    num_classes: int,
    precision: str,
    device: torch.device,
    channels_last: bool | None = None,
    try_compile: bool = True,
    seconds: float = PROBE_SECONDS,
) -> Levers:
    """Time eager NCHW against eager channels_last (unless `channels_last` is given), then the better
    layout compiled (if `try_compile`); a lever is kept only where it is at least MIN_GAIN faster."""
    rate = lambda cl, comp: step_rate(  # noqa: E731
        model, input_shape, batch, num_classes, precision, device, cl, comp, seconds
    )
    speedups: dict[str, float] = {}
    if channels_last is None:
        nchw, nhwc = rate(False, False), rate(True, False)
        speedups["channels_last"] = nhwc / nchw
        channels_last = speedups["channels_last"] >= MIN_GAIN
        eager = nhwc if channels_last else nchw
    else:
        eager = rate(channels_last, False)
    compiled = False
    if try_compile:
        speedups["compile"] = rate(channels_last, True) / eager
        compiled = speedups["compile"] >= MIN_GAIN
    return Levers(channels_last, compiled, speedups, "probed")


def choose(
    asked_channels_last: bool | str,
    asked_compile: bool | str,
    key: ProbeKey,
    measure: Callable[[bool | None, bool], Levers],
    eager_run_seconds: float,
    cache: Path | None = None,
) -> Levers:
    """Resolve `auto` levers: a lever given as true/false stays as asked; an `auto` one comes from the
    cache, else from `measure(channels_last or None to try both, try_compile)` when the run is long
    enough to pay for the probe (the answer is then cached), else from the static default (channels_last
    on, compile off). `key` must name what was asked (`probe_key(..., asked=...)`)."""
    auto_cl, auto_compile = asked_channels_last == "auto", asked_compile == "auto"
    default = Levers(
        True if auto_cl else bool(asked_channels_last), False if auto_compile else bool(asked_compile)
    )
    if not (auto_cl or auto_compile):
        default.source = "asked"
        return default
    entry = read_cache(cache).get(key.text())
    if entry is not None:
        return Levers(entry["channels_last"], entry["compile"], dict(entry["speedups"]), "cached")
    probe_cost = 3 * PROBE_SECONDS + (COMPILE_SECONDS if auto_compile else 0.0)
    if eager_run_seconds < PAYBACK * probe_cost:
        default.source = "default: run too short to probe"
        return default
    levers = measure(None if auto_cl else default.channels_last, auto_compile)
    if not auto_compile:
        levers.compile = default.compile
    write_cache(key, levers, cache)
    return levers


def tune_models(
    models: Sequence[str],
    *,
    batch: int = 128,
    seconds: float = 1.5,
    try_compile: bool = True,
    print_fn: Callable[[str], None] = print,
) -> list[tuple[str, str]]:
    """`resnets bench --tune`: probe channels_last and compile for each model's training step at its
    design input size, `batch` and auto precision, print one line per model and store the answers
    where `resnets train` looks them up (resnets.train.tune); returns (model, levers) pairs."""
    device = pick_device("auto")
    print_fn(f"{machine_line(device)}, device {device}")
    print_fn(f"cache: {cache_dir() / CACHE_FILE}")
    out = []
    for name in models:
        spec = get_spec(name)
        precision = pick_precision("auto", device, spec.family)
        conv = spec.family != "mlp"
        asked = ("auto" if conv else False, "auto" if try_compile else False)  # what was measured
        key = probe_key(name, {}, spec.input_size, batch, precision, device, *asked)
        model = create_model(name, num_classes=spec.num_classes).to(device)
        levers = probe(
            model, spec.input_size, batch, spec.num_classes, precision, device,
            None if conv else False, try_compile, seconds,
        )  # fmt: skip
        if not conv:
            levers.speedups.pop("channels_last", None)
        write_cache(key, levers)
        print_fn(f"{key.text()}: {levers.describe()}")
        out.append((name, levers.describe()))
    return out
