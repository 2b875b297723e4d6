"""Weights and checkpoints: safe formats, atomic writes, clear errors on hostile or broken files."""

import os
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch

from resnets.errors import CheckpointError
from resnets.io.weights import ModelMeta, load_weights, save_weights
from resnets.train import checkpoint as ckpt
from resnets.train.checkpoint import load_checkpoint, load_state, save_checkpoint, tidy_checkpoint

META = ModelMeta("resnet20", 10, 3, [3, 32, 32], [0.5] * 3, [0.25] * 3, [str(i) for i in range(10)])


def _weights(value: float) -> dict[str, torch.Tensor]:
    return {"a": torch.full((3, 2), value), "b.c": torch.arange(4.0)}


def test_weights_round_trip_with_metadata(tmp_path) -> None:
    save_weights(tmp_path / "w.safetensors", _weights(1.5), META)
    tensors, meta = load_weights(tmp_path / "w.safetensors")
    assert torch.equal(tensors["a"], _weights(1.5)["a"]) and meta == META
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_would_run_code_is_refused(tmp_path) -> None:
    marker = tmp_path / "pwned"
    evil_pt = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(1), "x": _Evil(str(marker))}, evil_pt)
    with pytest.raises(CheckpointError, match=r"pickle-based PyTorch file.*convert it once"):
        load_weights(evil_pt)
    with pytest.raises(CheckpointError, match="could not be loaded safely"):
        load_state(evil_pt)
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(_Evil(str(marker))))
    with pytest.raises(CheckpointError, match="pickle-based"):
        load_weights(raw)
    assert not marker.exists()


def test_truncated_and_garbage_safetensors_give_clear_errors(tmp_path) -> None:
    path = tmp_path / "w.safetensors"
    save_weights(path, _weights(2.0), META)
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        load_weights(path)
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        load_weights(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_weights(tmp_path / "missing.safetensors")


def test_a_crash_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch) -> None:
    folder = tmp_path / "checkpoints" / "last"
    save_checkpoint(folder, _weights(1.0), {"step": 1})

    def crash(state, path):  # write half a file, then die as a killed process would
        Path(path).write_bytes(b"PK\x03\x04 partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(folder, _weights(2.0), {"step": 2})
    monkeypatch.undo()
    weights, state = load_checkpoint(folder)
    assert state["step"] == 1 and torch.equal(weights["a"], _weights(1.0)["a"])
    assert sorted(p.name for p in folder.parent.iterdir()) == ["last"]  # the temporary folder is gone


def test_interrupted_swap_falls_back_to_the_previous_checkpoint(tmp_path) -> None:
    folder = tmp_path / "last"
    save_checkpoint(folder, _weights(1.0), {"step": 1})
    os.replace(folder, tmp_path / "last.old")  # a crash between the two renames of a swap
    _, state = load_checkpoint(folder)
    assert state["step"] == 1
    save_checkpoint(folder, _weights(3.0), {"step": 3})  # the next save cleans up
    assert load_checkpoint(folder)[1]["step"] == 3 and not (tmp_path / "last.old").exists()


def test_a_refused_checkpoint_never_costs_the_good_one_beside_it(tmp_path) -> None:
    # Issue 13: last/ complete but its state.pt truncated, an intact last.old/ beside it. Tidying used
    # to see two files present, delete last.old, then refuse last: the only good checkpoint was gone.
    folder, old = tmp_path / "last", tmp_path / "last.old"
    save_checkpoint(folder, _weights(1.0), {"step": 1})
    shutil.copytree(folder, tmp_path / "keep")
    save_checkpoint(folder, _weights(2.0), {"step": 2})  # a save deletes last.old: put it back after
    os.replace(tmp_path / "keep", old)
    state = folder / "state.pt"
    state.write_bytes(state.read_bytes()[:100])
    assert load_checkpoint(folder)[1]["step"] == 1  # the refused one is passed over
    tidy_checkpoint(folder)
    assert not old.exists() and load_checkpoint(folder)[1]["step"] == 1  # the good one put in place
    # Both refused: nothing is deleted, and the error is the newer checkpoint's.
    shutil.copytree(folder, old)
    for f in (folder / "state.pt", old / "state.pt"):
        f.write_bytes(b"PK\x03\x04 broken")
    tidy_checkpoint(folder)
    assert folder.exists() and old.exists()
    with pytest.raises(CheckpointError, match=re.escape(str(folder / "state.pt"))):
        load_checkpoint(folder)


def test_state_file_holds_only_plain_data(tmp_path) -> None:
    folder = tmp_path / "c"
    state = {"step": 5, "rng": torch.get_rng_state(), "nested": {"lr": [0.1, 0.01]}}
    save_checkpoint(folder, _weights(0.0), state)
    loaded = torch.load(folder / "state.pt", weights_only=True)
    assert loaded["step"] == 5 and torch.equal(loaded["rng"], state["rng"])


def test_a_safetensors_header_length_that_looks_like_a_pickle_marker_loads(tmp_path) -> None:
    # A header of 0x280 bytes starts the file with 80 02, pickle protocol 2's first two bytes.
    path = tmp_path / "w.safetensors"
    for pad in range(700):
        save_weights(
            path, _weights(1.0), ModelMeta("resnet20", 10, 3, [3, 32, 32], [0.5], [0.2], ["x" * pad])
        )
        if path.read_bytes()[:2] == b"\x80\x02":
            break
    else:
        pytest.skip("could not build such a header")
    tensors, meta = load_weights(path)
    assert torch.equal(tensors["a"], _weights(1.0)["a"]) and meta.model == "resnet20"


def test_metadata_cannot_make_load_model_allocate(tmp_path) -> None:
    import resnets

    # A tiny file whose metadata describes a huge fully connected net: refused before any allocation.
    meta = ModelMeta("skipnet", 10, 1, [1, 28, 28], [0.5], [0.2], ["x"] * 10, model_kwargs={"width": 200_000})
    save_weights(tmp_path / "bomb.safetensors", {"head.weight": torch.zeros(10, 2)}, meta)
    with pytest.raises(CheckpointError, match="does not match a skipnet"):
        resnets.load_model(tmp_path / "bomb.safetensors")


def test_train_state_round_trips_through_a_checkpoint_and_refuses_a_foreign_dict(tmp_path) -> None:
    from resnets.errors import CheckpointError
    from resnets.train.state import TrainState

    state = TrainState(
        step=7,
        epoch=1,
        batch_in_epoch=3,
        optimizer={"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]},
        scheduler={"last_epoch": 7},
        scaler={},
        rng_cpu=torch.get_rng_state(),
        best=None,  # no epoch finished yet: kept as None, not dropped
        train_seconds=1.5,
        wall_seconds=2.5,
        images_seen=448,
        meter={"count": 3},
    )
    save_checkpoint(tmp_path / "last", {"w": torch.ones(2)}, state.to_dict())
    _, raw = load_checkpoint(tmp_path / "last")
    assert set(raw) == {f for f in state.to_dict()} and "ema" not in raw and raw["best"] is None
    back = TrainState.from_dict(raw)
    assert (back.step, back.epoch, back.batch_in_epoch, back.images_seen, back.meter) == (
        7,
        1,
        3,
        448,
        {"count": 3},
    )
    assert torch.equal(back.rng_cpu, state.rng_cpu) and back.optimizer == state.optimizer
    with pytest.raises(CheckpointError, match=r"missing batch_in_epoch.*unknown weights"):
        TrainState.from_dict({**{k: v for k, v in raw.items() if k != "batch_in_epoch"}, "weights": 1})
