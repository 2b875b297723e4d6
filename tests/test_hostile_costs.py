"""Sizes a small file chooses (issue 13, class 4): what building a model costs is bounded by the file,
not by each metadata field alone."""

from __future__ import annotations

import time

import pytest
import torch

import resnets
from resnets.errors import CheckpointError
from resnets.io.weights import ModelMeta, save_weights

MLP_META = {
    "num_classes": 10,
    "in_chans": 1,
    "input_size": [1, 28, 28],
    "mean": [0.1],
    "std": [0.3],
    "classes": [str(i) for i in range(10)],
}


def test_a_tiny_file_asking_for_a_10000_layer_dense_net_is_refused_before_building(tmp_path, monkeypatch):
    # Issue 13: a 460-byte file with this metadata made `predict` build depth² dense skips (5 GB, 167 s).
    path = tmp_path / "model.safetensors"
    meta = ModelMeta(
        model="skipnet", model_kwargs={"depth": 10_000, "width": 32, "skip": "dense"}, **MLP_META
    )
    save_weights(path, {"head.weight": torch.zeros(1)}, meta)
    assert path.stat().st_size < 1000
    built: list[str] = []
    monkeypatch.setattr(resnets.models.factory, "build_model", lambda name, **kw: built.append(name))
    with pytest.raises(CheckpointError, match=r"depth 10,000, but the file holds only 1 tensors"):
        resnets.load_model(path)
    assert built == []


def test_a_dense_net_beyond_the_skip_bound_is_refused_in_a_moment() -> None:
    # Dense skips grow as depth²/2: the builder counts them before it makes any.
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"dense skips"):
        resnets.create_model("skipnet", depth=5000, width=8, skip="dense")
    assert time.perf_counter() - start < 30  # building them all takes minutes and gigabytes


def test_running_out_of_memory_while_building_is_a_clear_error(tmp_path, monkeypatch) -> None:
    path = tmp_path / "model.safetensors"
    meta = ModelMeta(model="plain_mlp", model_kwargs={"depth": 2}, **MLP_META)
    model = resnets.create_model("plain_mlp", num_classes=10, in_chans=1, depth=2)
    save_weights(path, model.state_dict(), meta)

    def exhausted(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(resnets.models.factory, "build_model", exhausted)
    with pytest.raises(CheckpointError, match="ran out of memory; the file is damaged or crafted"):
        resnets.load_model(path)
