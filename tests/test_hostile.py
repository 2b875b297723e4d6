"""Hostile and broken input: nothing a file holds runs as code, allocates beyond the file, or fails with
anything but a ResnetsError that names the file; the odd image modes convert to stated pixel values."""

import gzip
import io
import json
import os
import pickle
import re
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile
from safetensors.torch import save as safetensors_save

import resnets.data.formats as formats_mod
from formats import (
    MarkerPayload,
    png_declaring,
    random_images,
    safetensors_bytes,
    stored_zip,
    torch_file_with_pickle,
    torch_records,
    write_cifar10,
    write_cifar_binary,
    write_cifar_python,
    write_idx,
    write_mnist,
)
from resnets.data import load_dataset
from resnets.data.formats import read_cifar_binary, read_cifar_python, read_idx, read_pickled_names
from resnets.data.images import MAX_PIXELS, load_image_tensor, to_mode
from resnets.deploy.convert import load_state_dict_file
from resnets.errors import CheckpointError, ConfigError, DataError, ResnetsError
from resnets.io.weights import CONVERT_HINT, ModelMeta, check_meta, load_weights, save_weights
from resnets.train.checkpoint import load_state, save_checkpoint
from resnets.train.config import build_config, load_yaml, resolve_config

FUZZ = settings(
    max_examples=int(os.environ.get("RESNETS_FUZZ_EXAMPLES", "150")),  # more for a long local run
    deadline=None,
    database=None,  # no .hypothesis/ folder in the checkout
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _payload_pickle(marker: Path, protocol: int, via: str = "exec") -> bytes:
    return pickle.dumps({"weights": torch.zeros(2), "x": MarkerPayload(marker, via)}, protocol=protocol)


# ---- 1. checkpoints: nothing unpickles code; broken files fail before allocating -----------------


@pytest.mark.parametrize(
    "kind", ["torch.save", "legacy torch.save", "pickle-2", "pickle-3", "pickle-4", "pickle-5"]
)
def test_pickled_weights_are_refused_unread_with_the_conversion_recipe(tmp_path, kind) -> None:
    marker, path = tmp_path / "pwned", tmp_path / "model.pt"
    payload = {"w": torch.zeros(2), "x": MarkerPayload(marker)}
    if kind == "torch.save":
        torch.save(payload, path)
    elif kind == "legacy torch.save":
        torch.save(payload, path, _use_new_zipfile_serialization=False)
    else:
        path.write_bytes(_payload_pickle(marker, int(kind[-1])))
    before = path.read_bytes()
    with pytest.raises(CheckpointError) as err:
        load_weights(path)
    msg = str(err.value)
    assert str(path) in msg and "pickle-based" in msg and "weights_only=True" in msg and "convert" in msg
    assert not marker.exists() and path.read_bytes() == before  # nothing ran, nothing was changed


@pytest.mark.slow
def test_the_conversion_recipe_turns_a_trusted_state_dict_into_loadable_weights(tmp_path) -> None:
    sd = {"conv.weight": torch.randn(4, 3, 3, 3), "fc.bias": torch.arange(5.0)[1:]}  # a non-contiguous view
    torch.save(sd, tmp_path / "IN.pt")
    command = CONVERT_HINT.split('python -c "', 1)[1].split('" (', 1)[0]
    subprocess.run([sys.executable, "-c", command], cwd=tmp_path, check=True, timeout=120)
    tensors, meta = load_weights(tmp_path / "OUT.safetensors")
    assert meta is None and tensors.keys() == sd.keys()
    assert all(torch.equal(tensors[k], sd[k]) for k in sd)


def test_training_state_with_a_custom_class_is_refused_unrun(tmp_path) -> None:
    marker, path = tmp_path / "pwned", tmp_path / "state.pt"
    torch.save({"step": 3, "x": MarkerPayload(marker, "os.system")}, path)
    with pytest.raises(CheckpointError) as err:
        load_state(path)
    msg = str(err.value)
    assert str(path) in msg and "unsupported global posix.system" in msg.lower()
    assert "weights_only=False" not in msg and "add_safe_globals" not in msg  # no advice to unpickle it
    assert not marker.exists()


def _zip_with(path: Path, compression: int) -> None:
    buf = io.BytesIO()
    torch.save({"t": torch.zeros(64)}, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as src, zipfile.ZipFile(path, "w", compression) as out:
        for name in src.namelist():
            out.writestr(name, src.read(name))


def test_state_files_torch_would_allocate_for_are_refused_before_torch_load(tmp_path, monkeypatch) -> None:
    def never(*args, **kwargs):
        raise AssertionError("torch.load must not see this file")

    monkeypatch.setattr(torch, "load", never)
    # Legacy format: a 365-byte file may declare a storage of 2^34 floats, which torch allocates first.
    buf = io.BytesIO()
    torch.save({"t": torch.zeros(4)}, buf, _use_new_zipfile_serialization=False)
    legacy = tmp_path / "legacy.pt"
    claim = b"cpuq\x06\x8a\x05" + (2**34).to_bytes(5, "little")  # LONG1: 2^34 elements
    legacy.write_bytes(buf.getvalue().replace(b"cpuq\x06K\x04", claim))
    assert claim in legacy.read_bytes()
    # A deflated record: a zip bomb of zeros inflates ~1000-fold.
    deflated = tmp_path / "deflated.pt"
    _zip_with(deflated, zipfile.ZIP_DEFLATED)
    # A stored record whose directory entry claims 2 GB.
    lying = tmp_path / "lying.pt"
    _zip_with(lying, zipfile.ZIP_STORED)
    raw = bytearray(lying.read_bytes())
    entry = raw.index(b"PK\x01\x02")
    raw[entry + 24 : entry + 28] = struct.pack("<I", 2**31)
    lying.write_bytes(bytes(raw))
    for path, message in [
        (legacy, r"does not start with a zip record.*legacy \(pre-1.6\) format"),
        (deflated, "is compressed or larger than the file"),
        (lying, "is compressed or larger than the file"),
        (tmp_path / "missing.pt", "does not exist"),
    ]:
        with pytest.raises(CheckpointError, match=message) as err:
            load_state(path)
        assert str(path) in str(err.value)
    monkeypatch.undo()
    control = tmp_path / "stored.pt"  # the same archive, rewritten but honest, loads
    _zip_with(control, zipfile.ZIP_STORED)
    assert torch.equal(load_state(control)["t"], torch.zeros(64))


def _call(module: str, name: str, arg: bytes) -> bytes:
    """Protocol 2: {"x": module.name(arg)}, where `arg` is the opcodes that push the one argument."""
    return b"\x80\x02}X\x01\x00\x00\x00xc" + f"{module}\n{name}\n".encode() + arg + b"\x85Rs."


_INT_2_30 = b"J" + (2**30).to_bytes(4, "little")  # BININT 2^30


@pytest.mark.parametrize("loader", [load_state, load_state_dict_file])
@pytest.mark.parametrize(
    ("pickled", "reason"),
    [
        # All four are globals torch's weights_only unpickler admits: each call allocates what the file asks.
        (_call("builtins", "bytearray", _INT_2_30), "unsupported global builtins.bytearray"),
        (_call("__builtin__", "bytearray", _INT_2_30), "unsupported global __builtin__.bytearray"),
        (_call("torch", "FloatTensor", _INT_2_30), "unsupported global torch.FloatTensor"),
        (
            _call("torch.storage", "UntypedStorage", _INT_2_30),
            "unsupported global torch.storage.UntypedStorage",
        ),
        (_call("_codecs", "encode", b"X\x02\x00\x00\x00ab"), "unsupported global _codecs.encode"),
        # Protocol 4 names a global by strings on the stack, which a reading of the pickle cannot resolve.
        (
            b"\x80\x04}\x8c\x01x\x8c\x08builtins\x8c\tbytearray\x93" + _INT_2_30 + b"\x85Rs.",
            "names a class or function through STACK_GLOBAL",
        ),
        (b"\x80\x02}X\x01\x00\x00", "its pickle record 'archive/data.pkl' cannot be parsed"),  # truncated
    ],
    ids=[
        "bytearray",
        "py2-bytearray",
        "FloatTensor",
        "UntypedStorage",
        "codecs",
        "STACK_GLOBAL",
        "truncated",
    ],
)
def test_state_files_whose_pickle_would_allocate_are_refused_before_torch_load(
    tmp_path, monkeypatch, loader, pickled, reason
) -> None:
    path = tmp_path / "state.pt"
    path.write_bytes(torch_file_with_pickle(pickled))
    assert path.stat().st_size < 1500
    calls: list[object] = []
    monkeypatch.setattr(torch, "load", lambda *args, **kwargs: calls.append(args))
    with pytest.raises(CheckpointError, match=re.escape(reason)) as err:
        loader(path)
    msg = str(err.value)
    assert msg.startswith(str(path)) and calls == []  # refused before torch.load saw the file
    assert "add_safe_globals" not in msg and "weights_only=False" not in msg


def test_torch_load_itself_makes_whatever_bytearray_a_state_file_names() -> None:
    # Why the check above matters: the same file asking for 16 bytes is read by torch as asked.
    small = torch_file_with_pickle(_call("builtins", "bytearray", b"K\x10"))
    assert torch.load(io.BytesIO(small), weights_only=True) == {"x": bytearray(16)}


def test_real_training_states_pass_the_pickle_check(tmp_path) -> None:
    """What resnets' engine saves (optimizer, GradScaler, EMA, RNG, meter) and more: all loads as saved."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    adamw = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 3, 5, 5)).sum().backward()
    sgd.step()
    adamw.step()
    state = {
        "step": 3,
        "optimizer": sgd.state_dict(),
        "adamw": adamw.state_dict(),
        "scaler": torch.amp.GradScaler("cpu", enabled=True).state_dict(),
        "rng_cpu": torch.get_rng_state(),
        "ema": model.state_dict(),  # an OrderedDict with _metadata
        "meter": {
            "confusion": torch.zeros(3, 3, dtype=torch.long),
            "loss_sum": torch.tensor(1.5),
            "count": 4,
        },
        "parameters": list(model.parameters()),
        "dtypes": [torch.ones(2, dtype=t) for t in (torch.half, torch.bfloat16, torch.bool, torch.int8)],
        "view": torch.arange(10.0)[2:5],
        "size": torch.Size([2, 3]),
        "device": torch.device("cpu"),
        "best": {"accuracy": 0.5, "split": "val"},
        "lr_lambdas": [None],
    }
    path = tmp_path / "state.pt"
    torch.save(state, path)
    loaded = load_state(path)
    assert loaded.keys() == state.keys() and loaded["ema"]._metadata == state["ema"]._metadata
    assert torch.equal(loaded["rng_cpu"], state["rng_cpu"]) and loaded["size"] == torch.Size([2, 3])
    assert torch.equal(loaded["adamw"]["state"][0]["exp_avg"], state["adamw"]["state"][0]["exp_avg"])
    assert (
        isinstance(loaded["parameters"][0], torch.nn.Parameter)
        and loaded["dtypes"][1].dtype == torch.bfloat16
    )


@pytest.mark.parametrize("loader", [load_state, load_state_dict_file])
def test_a_tensor_view_larger_than_its_storage_is_refused(tmp_path, loader) -> None:
    # 2 bytes of data viewed with stride 0 as 2^40 elements: torch.load allows it, and a copy of it
    # (optimizer.load_state_dict casts to the parameter's dtype) would allocate 2 TiB.
    path = tmp_path / "state.pt"
    torch.save({"exp_avg": torch.zeros(1, dtype=torch.half).as_strided((2**40,), (0,))}, path)
    assert path.stat().st_size < 2000
    with pytest.raises(
        CheckpointError, match=r"holds a tensor of shape \[1099511627776\] \(2,199,023,255,552 by"
    ):
        loader(path)


@pytest.mark.parametrize("loader", [load_state, load_state_dict_file])
def test_zip_records_that_share_their_bytes_are_refused(tmp_path, monkeypatch, loader) -> None:
    tensors = {f"t{i}": torch.full((4,), float(i)) for i in range(4)}  # storages archive/data/0…3
    records = torch_records(tensors)
    honest = tmp_path / "honest.pt"
    honest.write_bytes(stored_zip(records))
    assert torch.equal(loader(honest)["t3"], tensors["t3"])  # the hand-written zip is one torch.load reads
    # Three directory entries pointing at data/0's bytes: torch.load reads each as a storage of its own, so
    # N entries of an M-byte record allocate N×M bytes from a file holding M.
    aliases = {f"archive/data/{i}": "archive/data/0" for i in (1, 2, 3)}
    aliased = tmp_path / "aliased.pt"
    aliased.write_bytes(stored_zip({k: v for k, v in records.items() if k not in aliases}, aliases))
    read = torch.load(aliased, weights_only=True)
    assert all(torch.equal(read[f"t{i}"], tensors["t0"]) for i in range(4))
    # Many entries pointing at one 64 KB record: their sizes add up to far more than the file.
    big = torch_records({"t": torch.zeros(2**14)})
    many = tmp_path / "many.pt"
    many.write_bytes(stored_zip(big, {f"archive/data/{i}": "archive/data/0" for i in range(1, 1000)}))
    assert many.stat().st_size < 200_000
    calls: list[object] = []
    monkeypatch.setattr(torch, "load", lambda *args, **kwargs: calls.append(args))
    for path in (aliased, many):  # records laid end to end leave no bytes for two records to share
        with pytest.raises(CheckpointError, match=r"record 'archive/data/.' does not start where") as err:
            loader(path)
        assert str(err.value).startswith(str(path)) and "damaged or crafted" in str(err.value)
    assert calls == []


def test_broken_or_odd_state_files_name_the_file(tmp_path) -> None:
    good = tmp_path / "good.pt"
    torch.save({"step": 1, "rng": torch.get_rng_state()}, good)
    cases = {
        "truncated.pt": good.read_bytes()[: len(good.read_bytes()) // 2],
        "garbage.pt": bytes(range(256)) * 4,
        "empty.pt": b"",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError, match=name):
            load_state(tmp_path / name)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match=r"list\.pt: a training state is a dict, found list"):
        load_state(tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="is not a file"):
        load_state(tmp_path)
    assert load_state(good)["step"] == 1  # the good one is untouched and loads


def _good_safetensors(tmp_path: Path) -> tuple[bytes, dict]:
    save_weights(tmp_path / "good.safetensors", {"a": torch.arange(6.0).reshape(2, 3), "b": torch.ones(2)})
    raw = (tmp_path / "good.safetensors").read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return raw, json.loads(raw[8 : 8 + n])


def test_broken_safetensors_are_refused_by_their_header_checks(tmp_path) -> None:
    raw, header = _good_safetensors(tmp_path)
    data = raw[8 + struct.unpack("<Q", raw[:8])[0] :]
    bad_dtype = {**header, "a": {**header["a"], "dtype": "F99"}}
    beyond = {**header, "a": {**header["a"], "data_offsets": [0, 2**40]}, "b": {**header["b"]}}
    huge_shape = {**header, "a": {**header["a"], "shape": [2**40, 2**40]}}
    cases = {
        # The safetensors messages show which check refused the file: each runs before any allocation.
        "truncated": (raw[:-7], "incomplete metadata, file not fully covered"),
        "garbage": (b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all", "invalid JSON in header"),
        "longer-than-file": (safetensors_bytes(header, data, length=10_000), "invalid header length"),
        "absurd-length": (safetensors_bytes(header, data, length=2**62), "header too large"),
        "max-length": (b"\xff" * 8 + b"{}", "header too large"),
        "offsets-beyond-file": (safetensors_bytes(beyond, data), "invalid shape, data type, or offset"),
        "overflowing-shape": (safetensors_bytes(huge_shape, data), "overflow"),
        "wrong-dtype": (safetensors_bytes(bad_dtype, data), "unknown variant `F99`"),
        "non-string-metadata": (safetensors_bytes({"__metadata__": {"resnets": 5}}), "expected a string"),
        "empty": (b"", "header too small"),
    }
    for name, (content, reason) in cases.items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(content)
        with pytest.raises(CheckpointError, match=reason) as err:
            load_weights(path)
        assert str(path) in str(err.value) and "not a valid safetensors file" in str(err.value), name


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ("[" * 100_000, "maximum recursion depth"),  # json.loads would raise RecursionError
        (json.dumps([1, 2]), "expected a JSON object"),
        (json.dumps({"model": "resnet20", "num_classes": "ten"}), "num_classes must be int, got 'ten'"),
        (json.dumps({"model": "resnet20", "classes": [1, 2]}), "classes must be a list of str"),
        (json.dumps({"model": "x", "evil": 1}), "unknown field 'evil'"),
    ],
)
def test_resnets_metadata_of_the_wrong_shape_is_refused(tmp_path, metadata, reason) -> None:
    path = tmp_path / "w.safetensors"
    path.write_bytes(safetensors_bytes({"__metadata__": {"resnets": metadata}}))
    with pytest.raises(CheckpointError, match=reason) as err:
        load_weights(path)
    assert str(path) in str(err.value) and "unreadable resnets metadata" in str(err.value)


_GOOD_META = {
    "model": "resnet20",
    "num_classes": 3,
    "in_chans": 3,
    "input_size": [3, 32, 32],
    "mean": [0.5, 0.5, 0.5],
    "std": [0.25, 0.25, 0.25],
    "classes": ["a", "b", "c"],
    "model_kwargs": {},
}


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"input_size": [3, 32]}, r"input_size must be \[in_chans, height, width\]"),
        ({"input_size": [1, 32, 32]}, "with in_chans 3"),
        ({"input_size": [3, 100_000, 100_000]}, r"each value 1…4,096, got \[3, 100000, 100000\]"),
        ({"input_size": [3, 0, 32]}, "each value 1…4,096"),
        ({"num_classes": 10**9}, "num_classes must be 1…100,000, got 1000000000"),
        ({"num_classes": 0, "classes": []}, "num_classes must be 1…100,000, got 0"),
        ({"num_classes": 10}, "3 class names for 10 classes"),
        ({"mean": [0.5]}, r"mean needs 3 values \(one per channel\), got 1"),
        ({"std": [0.2, 0.2, 0.2, 0.2]}, "std needs 3 values"),
        ({"std": [0.2, 0.0, 0.2]}, "std values must be finite and positive"),
        ({"std": [0.2, -1.0, 0.2]}, "std values must be finite and positive"),
        ({"mean": [0.5, float("nan"), 0.5]}, "mean values must be finite"),
        ({"std": [0.2, float("inf"), 0.2]}, "std values must be finite and positive"),
        ({"model_kwargs": {"depth": 10**6}}, r"model_kwargs\.depth must be a number in 1…10,000"),
        ({"model_kwargs": {"span": 0}}, r"model_kwargs\.span must be a number in 1…10,000"),
        ({"model_kwargs": {"depth": "deep"}}, r"model_kwargs\.depth must be an int"),
        (
            {"model_kwargs": {"width": 2**40}},
            r"model_kwargs\.width must be a number in -16,777,216…16,777,216",
        ),
        ({"model_kwargs": {"layers": [{"width": 2**40}]}}, r"model_kwargs\.layers\[0\]\.width must be"),
        ({"model_kwargs": {"gate_bias": float("-inf")}}, r"model_kwargs\.gate_bias must be a number"),
        ({"model_kwargs": {"layers": [8] * 10_001}}, "model_kwargs hold more than 10,000 list items"),
    ],
)
def test_metadata_values_are_range_checked_before_anything_is_built(
    tmp_path, monkeypatch, changes, reason
) -> None:
    import resnets.models.factory

    path = tmp_path / "model.safetensors"
    save_weights(path, {"a": torch.zeros(1)}, ModelMeta(**{**_GOOD_META, **changes}))
    built: list[str] = []
    monkeypatch.setattr(resnets.models.factory, "build_model", lambda name, **kw: built.append(name))
    with pytest.raises(CheckpointError, match=reason) as err:
        resnets.load_model(path)
    msg = str(err.value)
    assert (
        msg.startswith(f"{path}: its resnets metadata is out of range") and "build the model yourself" in msg
    )
    assert built == []  # refused before the model (or anything else) was built from the values


def test_the_range_checks_pass_every_metadata_resnets_writes() -> None:
    check_meta(ModelMeta(**_GOOD_META))
    check_meta(ModelMeta(**{**_GOOD_META, "model_kwargs": {"depth": 1202, "gate_bias": -3.0, "widen": 10}}))
    # skipnet's explicit layers, an MLP's input_size, booleans and strings are not sizes to bound
    mlp = {"layers": [{"width": 64, "skips": [[1, "identity"]]}] * 6, "input_size": [28, 28], "bc": True}
    check_meta(ModelMeta(**{**_GOOD_META, "in_chans": 1, "input_size": [1, 28, 28], "mean": [0.1],
                            "std": [0.3], "model_kwargs": mlp}))  # fmt: skip


def test_a_refused_checkpoint_leaves_the_saved_one_intact(tmp_path) -> None:
    folder = tmp_path / "last"
    save_checkpoint(folder, {"a": torch.ones(2)}, {"step": 7})
    weights = folder / "weights.safetensors"
    good = weights.read_bytes()
    (tmp_path / "bad.safetensors").write_bytes(good[:20])
    with pytest.raises(CheckpointError):
        load_weights(tmp_path / "bad.safetensors")
    assert weights.read_bytes() == good and load_state(folder / "state.pt")["step"] == 7


# ---- 2. dataset parsers ------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize("via", ["exec", "os.system"])
def test_cifar_python_unpickler_refuses_every_other_global(tmp_path, protocol, via) -> None:
    marker, path = tmp_path / "pwned", tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": MarkerPayload(marker, via), "labels": [1]}, protocol=protocol))
    with pytest.raises(
        DataError, match=r"data_batch_1: refusing to unpickle ((__)?builtins?(__)?\.exec|posix\.system)"
    ):
        read_cifar_python(path)
    with pytest.raises(DataError, match="refusing to unpickle"):
        read_pickled_names(path, "label_names")
    assert not marker.exists()


def _reduce_pickle(module: str, name: str, args: bytes) -> bytes:
    """Protocol 2: call module.name on the pickled argument tuple `args` (opcodes ending in a TUPLE)."""
    return b"\x80\x02c" + f"{module}\n{name}\n".encode() + args + b"R."


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        # bytes(2**40) would allocate a terabyte; Python pickles b"" as bytes() with no argument.
        (
            _reduce_pickle("__builtin__", "bytes", b"\x8a\x06" + (2**40).to_bytes(6, "little") + b"\x85"),
            "bytes",
        ),
        # _codecs.encode is allowed for latin1 only (how bytes are pickled at protocol 2).
        (_reduce_pickle("_codecs", "encode", b"X\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13\x86"), "rot13"),
    ],
)
def test_allowed_globals_only_do_what_cifar_pickles_need(tmp_path, payload, reason) -> None:
    path = tmp_path / "batch"
    path.write_bytes(payload)
    with pytest.raises(DataError, match=rf"batch: refusing .*{reason}"):
        read_cifar_python(path)


def test_array_shells_with_a_huge_item_size_are_refused(tmp_path) -> None:
    from numpy._core.multiarray import _reconstruct

    class Shell:  # 1,000 items of 1 MB: few elements, but a gigabyte
        def __reduce__(self):
            return (_reconstruct, (np.ndarray, (1000,), np.dtype("V1000000")))

    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps({"data": Shell(), "labels": []}, protocol=2))
    # Refused by its dtype before its size: a CIFAR batch holds only plain numbers.
    with pytest.raises(DataError, match=r"batch: refusing a dtype\('V1000000'\) array"):
        read_cifar_python(path)


def _ndarray_pickle(shape_ops: bytes, call: bytes) -> bytes:
    """Protocol 2: {"data": numpy.ndarray(shape, "u1"), "labels": [1]}, calling it by `call` (REDUCE: R,
    NEWOBJ: \\x81) rather than through _reconstruct, as NumPy pickles arrays."""
    data = b"cnumpy\nndarray\n" + shape_ops + b"X\x02\x00\x00\x00u1\x86" + call
    return b"\x80\x02}(X\x04\x00\x00\x00data" + data + b"X\x06\x00\x00\x00labels]K\x01au."


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        # The shape of a real batch of one image: numpy.ndarray would return uninitialised memory as pixels.
        (_ndarray_pickle(b"K\x01M\x00\x0c\x86", b"R"), r"refusing numpy\.ndarray\(\.\.\.\)"),
        # 2^20 × 2^20 bytes: a terabyte from a 60-byte file.
        (
            _ndarray_pickle(b"J\x00\x00\x10\x00J\x00\x00\x10\x00\x86", b"R"),
            r"refusing numpy\.ndarray\(\.\.\.\)",
        ),
        (
            _ndarray_pickle(b"K\x01M\x00\x0c\x86", b"\x81"),
            r"NEWOBJ class argument must be a type|X is not a type object \(_NdarrayName\)",
        ),
    ],
    ids=["reduce-one-image", "reduce-terabyte", "newobj"],
)
def test_numpy_ndarray_cannot_be_called_by_the_file(tmp_path, payload, reason) -> None:
    path = tmp_path / "data_batch_1"
    path.write_bytes(payload)
    with pytest.raises(DataError, match=reason) as err:
        read_cifar_python(path)
    assert str(err.value).startswith(f"{path}:")


@pytest.mark.parametrize(
    ("batch", "reason"),
    [
        ([1, 2], "a CIFAR python batch is a pickled dict, found list"),
        ({"data": np.zeros((2, 3072), np.uint8)}, "needs 'data' and 'labels'"),
        ({"data": [[0] * 3072], "labels": [1]}, "'data' must be a 2-D uint8 array, found a list"),
        ({"data": np.full((1, 3072), 300.5), "labels": [1]}, "found a float64 array"),
        ({"data": np.zeros((1, 3072), np.int64) + 300, "labels": [1]}, r"pixel values must lie in 0…255"),
        ({"data": np.zeros((1, 3072), np.uint8), "labels": [[1, 2]]}, "must be a flat list of integers"),
        ({"data": np.zeros((1, 3072), np.uint8), "labels": [2**70]}, "must be a flat list of integers"),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": [1]}, r"got \(2, 3072\) and 1"),
        ({"data": np.zeros((0, 3072), np.uint8), "labels": []}, "N > 0"),
        ({"data": np.zeros((1, 1024), np.uint8), "labels": [1]}, r"expected data of shape \(N, 3072\)"),
    ],
)
def test_cifar_python_batches_of_the_wrong_shape(tmp_path, batch, reason) -> None:
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError, match=reason) as err:
        read_cifar_python(path)
    assert str(err.value).startswith(f"{path}:") and "--download" in str(err.value)


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_cifar_python_batches_of_every_protocol_load_exactly(tmp_path, protocol) -> None:
    images, labels = random_images(3, (3, 32, 32)), [4, 0, 9]
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps({"data": images.reshape(3, -1), "labels": labels}, protocol=protocol))
    got, got_labels, _ = read_cifar_python(path)
    assert np.array_equal(got, images) and got_labels.tolist() == labels


def test_cifar_binary_sizes_and_labels(tmp_path) -> None:
    imgs = random_images(3, (3, 32, 32))
    path = tmp_path / "data.bin"
    write_cifar_binary(path, imgs, np.array([1, 2, 3]))
    one = path.read_bytes()
    for name, content, reason in [
        ("truncated.bin", one[:-1], "not a whole number of 3073-byte"),
        ("extra.bin", one + b"\x00", "not a whole number of 3073-byte"),
        ("empty.bin", b"", "0 bytes is not a whole number"),
    ]:
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DataError, match=reason) as err:
            read_cifar_binary(tmp_path / name)
        assert str(tmp_path / name) in str(err.value) and "--download" in str(err.value)
    # CIFAR-10's 3,073-byte records are not CIFAR-100's 3,074 (coarse + fine label).
    with pytest.raises(DataError, match="not a whole number of 3074-byte"):
        read_cifar_binary(path, 2, 1)
    got, labels = read_cifar_binary(path)
    assert np.array_equal(got, imgs) and labels.tolist() == [1, 2, 3]


def test_cifar_labels_out_of_range_name_the_file(tmp_path) -> None:
    write_cifar10(tmp_path, "py")
    test_batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    write_cifar_python(test_batch, random_images(2, (3, 32, 32)), np.array([3, 10]))
    with pytest.raises(DataError, match=r"test_batch: test labels must lie in 0…9, found 10"):
        load_dataset("cifar10", data_dir=str(tmp_path))
    folder = tmp_path / "c100" / "cifar-100-binary"
    folder.mkdir(parents=True)
    write_cifar_binary(
        folder / "train.bin", random_images(2, (3, 32, 32)), np.array([5, 99]), np.array([1, 2])
    )
    write_cifar_binary(folder / "test.bin", random_images(1, (3, 32, 32)), np.array([100]), np.array([1]))
    with pytest.raises(DataError, match=r"test\.bin: test labels must lie in 0…99, found 100"):
        load_dataset("cifar100", data_dir=str(tmp_path / "c100"))


def test_cifar_meta_files_that_are_not_names(tmp_path) -> None:
    write_cifar10(tmp_path, "bin")
    meta = tmp_path / "cifar-10-batches-bin" / "batches.meta.txt"
    meta.write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(DataError, match=r"batches\.meta\.txt: not a readable list of class names.*delete it"):
        load_dataset("cifar10", data_dir=str(tmp_path))
    meta.write_text("a b c")  # a readable file with another count falls back to the standard names
    assert load_dataset("cifar10", data_dir=str(tmp_path)).classes[0] == "airplane"
    names = tmp_path / "meta"
    names.write_bytes(pickle.dumps({"label_names": [[1] * 5] * 10}, protocol=2))
    with pytest.raises(DataError, match="must be a list of class names"):
        read_pickled_names(names, "label_names")


def _record_reads(monkeypatch) -> list[int]:
    sizes: list[int] = []
    real = formats_mod._read_exact

    def recording(f, n, path):
        sizes.append(n)
        return real(f, n, path)

    monkeypatch.setattr(formats_mod, "_read_exact", recording)
    return sizes


@pytest.mark.parametrize("gz", [False, True])
def test_idx_dims_of_2_31_are_refused_before_reading_or_allocating(tmp_path, monkeypatch, gz) -> None:
    sizes = _record_reads(monkeypatch)
    header = bytes([0, 0, 8, 3]) + (2**31).to_bytes(4, "big") * 3
    path = tmp_path / ("huge.gz" if gz else "huge")
    path.write_bytes(gzip.compress(header) if gz else header)
    with pytest.raises(
        DataError, match=r"huge(\.gz)?: header claims dimensions \(2147483648, 2147483648, 2147483648\)"
    ):
        read_idx(path)
    assert sizes == [12]  # only the dimensions were read: nothing of the claimed size was requested


def test_broken_idx_files(tmp_path) -> None:
    good = tmp_path / "good"
    write_idx(good, random_images(3, (4, 4)))
    raw = good.read_bytes()
    zipped = gzip.compress(raw)
    corrupt = bytearray(zipped)
    corrupt[15] ^= 0xFF  # inside the deflate stream: zlib fails with its own error type
    cases = [
        ("magic", b"\x12\x34\x08\x03" + raw[4:], "bad magic number 12340803"),
        ("type", bytes([0, 0, 0x07, 3]) + raw[4:], "bad magic number 00000703"),
        ("empty", b"", "bad magic number empty"),
        ("dims-255", bytes([0, 0, 8, 255]) + b"\x00\x00\x00\x01" * 255, "header claims 255 dimensions"),
        ("short-header", raw[:9], "truncated"),
        ("truncated", raw[:-1], r"truncated \(header claims 48 bytes"),
        ("extra", raw + b"\x00", "more data than"),
        ("truncated.gz", zipped[:-12], "cannot read"),
        ("corrupt.gz", bytes(corrupt), r"cannot read \(Error -3 while decompressing"),
    ]
    for name, content, reason in cases:
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DataError, match=reason) as err:
            read_idx(tmp_path / name)
        assert str(err.value).startswith(f"{tmp_path / name}:") and "--download" in str(err.value), name
    # gzip is told by content, not by name
    (tmp_path / "no-suffix").write_bytes(zipped)
    assert np.array_equal(read_idx(tmp_path / "no-suffix"), read_idx(good))


def test_mnist_with_no_images_or_labels_out_of_range(tmp_path) -> None:
    write_mnist(tmp_path)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    write_idx(labels, np.array([0, 1, 2, 3, 4, 10], np.uint8))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: test labels must lie in 0…9, found 10"):
        load_dataset("mnist", data_dir=str(tmp_path))
    write_idx(labels, np.zeros(0, np.uint8))
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((0, 28, 28), np.uint8))
    with pytest.raises(DataError, match=r"N labels \(N > 0\)"):
        load_dataset("mnist", data_dir=str(tmp_path))


# ---- 3. images -----------------------------------------------------------------------------------


def _encoded(array: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, fmt, **kw)
    return buf.getvalue()


def test_corrupt_images_are_refused_with_the_file_named(tmp_path) -> None:
    rgb = random_images(1, (16, 16, 3))[0]
    png, jpg = _encoded(rgb, "PNG"), _encoded(rgb, "JPEG")
    cases = {
        "truncated.png": (png[: len(png) // 2], "not a readable image"),
        "truncated.jpg": (jpg[: len(jpg) // 2], "not a readable image"),
        "noise.png": (
            bytes(np.random.default_rng(1).integers(0, 256, 600, dtype=np.uint8)),
            "accepted formats",
        ),
        "empty.jpg": (b"", "accepted formats"),
        "text.jpg": (b"hello, I am not an image\n", "accepted formats"),
        # EPS would run Ghostscript: not an accepted format even though Pillow could open it.
        "figure.eps": (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n", "accepted formats"),
    }
    for name, (content, reason) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DataError, match=reason) as err:
            load_image_tensor(tmp_path / name, 3, None)
        assert str(err.value).startswith(f"{tmp_path / name}:"), name


def test_decompression_bombs_are_refused_before_decoding(tmp_path, monkeypatch) -> None:
    decoded: list[tuple[int, int]] = []
    real_load = ImageFile.ImageFile.load

    def recording_load(self):
        decoded.append(self.size)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", recording_load)
    limit = Image.MAX_IMAGE_PIXELS
    # 400 M pixels (above twice the limit: Pillow's error) and 81 M (above it: Pillow's warning).
    for name, (w, h) in {"bomb.png": (20000, 20000), "big.png": (9000, 9000)}.items():
        (tmp_path / name).write_bytes(png_declaring(w, h))
        assert (tmp_path / name).stat().st_size < 100_000
        with pytest.raises(DataError, match=rf"{name}: image too large.*at most {MAX_PIXELS:,} pixels"):
            load_image_tensor(tmp_path / name, 1, (8, 8))
    assert decoded == [] and limit == Image.MAX_IMAGE_PIXELS  # never decoded; Pillow's limit restored


def test_bad_files_in_a_folder_fail_on_the_first_or_are_skipped_and_listed(tmp_path) -> None:
    for split, cls, i in [(s, c, i) for s, n in (("train", 2), ("val", 1)) for c in "ab" for i in range(n)]:
        (tmp_path / split / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(random_images(1, (8, 8, 3), seed=i)[0]).save(tmp_path / split / cls / f"{i}.png")
    (tmp_path / "train" / "a" / "bomb.png").write_bytes(png_declaring(20000, 20000))
    (tmp_path / "train" / "b" / "cut.jpg").write_bytes(_encoded(random_images(1, (8, 8, 3))[0], "JPEG")[:100])
    Image.new("LAB", (8, 8)).save(tmp_path / "val" / "b" / "lab.tif")
    with pytest.raises(DataError) as err:
        load_dataset(f"imagefolder:{tmp_path}")
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path / 'train' / 'a' / 'bomb.png'}: image too large")
    assert "--skip-bad-images" in msg
    data = load_dataset(f"imagefolder:{tmp_path}", skip_bad_images=True)
    assert (len(data.train), len(data.test)) == (4, 2)
    note = next(n for n in data.notes if n.startswith("skipped"))
    listed = "train/a/bomb.png, train/b/cut.jpg, val/b/lab.tif"
    assert note == f"skipped 3 unreadable file(s) (--skip-bad-images): {listed}"


def _tensor_of(tmp_path: Path, name: str, content: bytes, channels: int) -> np.ndarray:
    (tmp_path / name).write_bytes(content)
    return load_image_tensor(tmp_path / name, channels, None).numpy()


def test_16_bit_greyscale_scales_65535_to_255(tmp_path) -> None:
    values = np.array([[0, 257, 1000, 32768], [40000, 65280, 65534, 65535]], np.uint16)
    buf = io.BytesIO()
    Image.fromarray(values).save(buf, "PNG")  # a 16-bit greyscale PNG
    assert Image.open(io.BytesIO(buf.getvalue())).mode.startswith("I")
    expected = np.floor(values.astype(np.float64) * 255 / 65535 + 0.5)
    got = _tensor_of(tmp_path, "i16.png", buf.getvalue(), 1)[0]
    assert got.tolist() == expected.tolist() and got[1, 3] == 255 and got[0, 1] == 1
    assert np.array_equal(_tensor_of(tmp_path, "i16.png", buf.getvalue(), 3), np.stack([got] * 3))


def test_32_bit_and_float_greyscale(tmp_path) -> None:
    wide = Image.fromarray(np.array([[0, 1000, 65535]], np.int32))
    assert wide.mode == "I" and np.asarray(to_mode(wide, 1)).tolist() == [[0, 4, 255]]  # above 255: 16-bit
    narrow = Image.fromarray(np.array([[0, 17, 255]], np.int32))
    assert np.asarray(to_mode(narrow, 1)).tolist() == [[0, 17, 255]]  # within 0…255: taken as 8-bit
    floats = Image.fromarray(np.array([[0.0, 0.5, 1.0, np.nan]], np.float32))
    assert floats.mode == "F"
    assert np.asarray(to_mode(floats, 1)).tolist() == [[0, 128, 255, 0]]


def test_palette_images_take_their_palette_colours(tmp_path) -> None:
    palette = [10, 20, 30, 200, 100, 50, 0, 255, 0]
    index = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    img = Image.new("P", (3, 2))
    img.putdata(index.flatten().tolist())
    img.putpalette(palette + [0] * (768 - len(palette)))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    got = _tensor_of(tmp_path, "p.png", buf.getvalue(), 3)
    expected = np.array(palette).reshape(3, 3)[index].transpose(2, 0, 1)
    assert np.array_equal(got, expected)
    # With transparency: index 1 fully transparent, index 2 half: composited over black.
    buf = io.BytesIO()
    img.save(buf, "PNG", transparency=bytes([255, 0, 128]))
    got = _tensor_of(tmp_path, "pt.png", buf.getvalue(), 3).astype(int)
    alpha = np.array([255, 0, 128])[index]
    want = np.array(palette).reshape(3, 3)[index].transpose(2, 0, 1) * alpha / 255
    assert np.abs(got - want).max() <= 1 and got[:, 0, 1].tolist() == [0, 0, 0]


def test_alpha_is_composited_over_black(tmp_path) -> None:
    rgba = np.array([[[200, 100, 50, 128], [200, 100, 50, 0], [200, 100, 50, 255]]], np.uint8)
    got = _tensor_of(tmp_path, "rgba.png", _encoded(rgba, "PNG"), 3).astype(int)
    want = rgba[..., :3].transpose(2, 0, 1) * (rgba[..., 3] / 255)
    assert np.abs(got - want).max() <= 1 and got[:, 0, 1].tolist() == [0, 0, 0]
    la = Image.fromarray(np.array([[[200, 128], [90, 255], [255, 0]]], np.uint8))
    assert la.mode == "LA"
    buf = io.BytesIO()
    la.save(buf, "PNG")
    got = _tensor_of(tmp_path, "la.png", buf.getvalue(), 1)[0].astype(int)
    assert np.abs(got - np.array([[200 * 128 / 255, 90, 0]])).max() <= 1


def test_cmyk_jpeg_becomes_rgb(tmp_path) -> None:
    buf = io.BytesIO()
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(buf, "JPEG", quality=95)  # pure red
    red = _tensor_of(tmp_path, "red.jpg", buf.getvalue(), 3).astype(int)
    assert np.abs(red - np.array([255, 0, 0])[:, None, None]).max() <= 3
    buf = io.BytesIO()
    Image.new("CMYK", (8, 8), (0, 0, 0, 128)).save(buf, "JPEG", quality=95)  # 50% black: grey 127
    grey = _tensor_of(tmp_path, "grey.jpg", buf.getvalue(), 1).astype(int)
    assert np.abs(grey - 127).max() <= 3


def test_one_bit_and_unsupported_modes(tmp_path) -> None:
    bits = np.array([[0, 1, 1, 0]], bool)
    buf = io.BytesIO()
    Image.fromarray(bits).save(buf, "PNG")
    assert _tensor_of(tmp_path, "bits.png", buf.getvalue(), 1)[0].tolist() == [[0, 255, 255, 0]]
    buf = io.BytesIO()
    Image.new("LAB", (4, 4), (50, 128, 128)).save(buf, "TIFF")  # Pillow's LAB → RGB is not colorimetric
    with pytest.raises(DataError, match=r"lab\.tif: cannot convert the image \(images in colour mode LAB"):
        _tensor_of(tmp_path, "lab.tif", buf.getvalue(), 3)


# ---- 4. fuzzing: nothing but ResnetsError, or a valid result -----------------------------------


@st.composite
def mutated(draw, valid: bytes) -> bytes:
    """`valid` with a few random edits, most of them in the first 64 bytes (where the headers are)."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        end = max(len(data) - 1, 0)
        pos = draw(st.integers(0, min(end, 64)) | st.integers(0, end))
        kind = draw(st.sampled_from(["set", "overwrite", "insert", "delete", "truncate"]))
        if kind == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif kind == "overwrite":
            chunk = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x80\x00\x00\x00"]))
            data[pos : pos + 4] = chunk
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 16))]
        else:
            del data[pos:]
    return bytes(data)


def _write(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


_CIFAR_BIN = np.concatenate([np.array([[3], [7]], np.uint8), random_images(2, (3072,))], axis=1).tobytes()


@FUZZ
@given(content=st.binary(max_size=7000) | mutated(_CIFAR_BIN), label_bytes=st.sampled_from([1, 2]))
def test_fuzz_cifar_binary(tmp_path, content, label_bytes) -> None:
    try:
        images, labels = read_cifar_binary(_write(tmp_path, "b.bin", content), label_bytes, label_bytes - 1)
    except DataError as err:
        assert str(tmp_path) in str(err)
        return
    assert images.shape == (len(content) // (3072 + label_bytes), 3, 32, 32) and len(labels) == len(images)


_CIFAR_PY = [
    pickle.dumps({"data": random_images(2, (3072,)), "labels": [1, 2], "batch_label": "x"}, protocol=p)
    for p in (2, 4, 5)
]
_plain = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


@FUZZ
@given(
    content=st.sampled_from(_CIFAR_PY).flatmap(mutated)
    | st.binary(max_size=300)
    | st.builds(
        pickle.dumps, st.dictionaries(st.sampled_from(["data", "labels", "x"]), _plain), st.integers(0, 5)
    )
)
def test_fuzz_cifar_python(tmp_path, content) -> None:
    path = _write(tmp_path, "batch", content)
    try:
        images, labels, _ = read_cifar_python(path)
    except DataError as err:
        assert str(path) in str(err)
        return
    assert images.dtype == np.uint8 and images.shape[1:] == (3, 32, 32) and len(labels) == len(images) > 0


_IDX = bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 3]) + bytes(range(18))


@FUZZ
@given(
    content=mutated(_IDX) | st.binary(max_size=64).map(lambda b: b"\x00\x00" + b),
    gz=st.booleans(),
)
def test_fuzz_idx(tmp_path, content, gz) -> None:
    path = _write(tmp_path, "f.gz" if gz else "f", gzip.compress(content) if gz else content)
    try:
        array = read_idx(path)
    except DataError as err:
        assert str(path) in str(err)
        return
    assert array.nbytes <= len(content)


_IMAGES = [
    _encoded(random_images(1, (6, 5, 3))[0], fmt, **kw)
    for fmt, kw in [
        ("PNG", {}),
        ("PNG", {"optimize": True}),
        ("JPEG", {}),
        ("GIF", {}),
        ("BMP", {}),
        ("TIFF", {}),
        ("TIFF", {"compression": "tiff_lzw"}),
        ("WEBP", {}),
        ("PPM", {}),
        ("TGA", {}),
    ]
]


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about the broken files it still reads
@FUZZ
@given(
    content=st.sampled_from(_IMAGES).flatmap(mutated) | st.binary(max_size=200),
    channels=st.sampled_from([1, 3]),
)
def test_fuzz_image_decoder(tmp_path, content, channels) -> None:
    path = _write(tmp_path, "img.png", content)
    try:
        tensor = load_image_tensor(path, channels, (4, 4))
    except DataError as err:
        assert str(path) in str(err)
        return
    assert tensor.dtype == torch.uint8 and tuple(tensor.shape) == (channels, 4, 4)


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
_tensor_entry = st.fixed_dictionaries(
    {
        "dtype": st.sampled_from(["F32", "F16", "I64", "U8", "BOOL", "F99", ""]),
        "shape": st.lists(st.integers(0, 2**40) | st.integers(0, 4), max_size=3),
        "data_offsets": st.lists(st.integers(0, 2**64) | st.integers(0, 64), min_size=0, max_size=3),
    }
)


_SAFETENSORS = safetensors_save({"a": torch.arange(6.0), "b": torch.ones(2, 2)}, metadata={"format": "pt"})


@FUZZ
@given(
    content=mutated(_SAFETENSORS)
    | st.builds(
        safetensors_bytes,
        st.dictionaries(st.text(max_size=4), _tensor_entry | _json, max_size=3),
        st.binary(max_size=64),
    )
    | st.binary(max_size=64)
)
def test_fuzz_safetensors_loader(tmp_path, content) -> None:
    path = _write(tmp_path, "w.safetensors", content)
    try:
        tensors, _ = load_weights(path)
    except CheckpointError as err:
        assert str(path) in str(err)
        return
    assert sum(t.numel() * t.element_size() for t in tensors.values()) <= len(content)


_STATE = io.BytesIO()
torch.save({"step": 3, "rng": torch.arange(10, dtype=torch.uint8), "lr": [0.1]}, _STATE)


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch warns about odd pickle protocols
@FUZZ
@given(content=mutated(_STATE.getvalue()))
def test_fuzz_training_state_loader(tmp_path, content) -> None:
    path = _write(tmp_path, "state.pt", content)
    try:
        state = load_state(path)
    except CheckpointError as err:
        assert str(path) in str(err)
        return
    assert isinstance(state, dict)


_YAML_TOKENS = st.sampled_from(
    [
        "\n", "  ", ": ", "- ", "{", "}", "[", "]", ", ", "&a ", "*a", "!!python/object/apply:os.system ",
        "!!binary ", "!!set ", "<<: ", "'", '"', "#", "---\n", "~", "null", "true", "1e3", ".inf", "-1",
        "0x10", "model", "name", "kwargs", "resnet20", "skipnet", "data", "digits", "optim", "lr", "0.1",
        "schedule", "milestones", "run", "epochs", "device", "recipe", "quick", "he2016-cifar", "betas",
        "\t", "\x00", "é",
    ]
)  # fmt: skip


@FUZZ
@given(text=st.lists(_YAML_TOKENS, max_size=40).map("".join) | st.text(max_size=80))
def test_fuzz_config_files(tmp_path, text) -> None:
    path = _write(tmp_path, "c.yaml", text.encode("utf-8", "surrogatepass"))
    try:
        layer = load_yaml(path)
        cfg = resolve_config(files=[path])
    except ResnetsError as err:  # ConfigError, or UnknownModelError from a recipe given a bad model name
        assert str(err)
        return
    assert isinstance(layer, dict) and cfg.model.name and cfg.optim.lr > 0


_SECTIONS = {
    "model": ["name", "kwargs"],
    "data": ["name", "batch_size", "val_split", "image_size", "skip_bad_images"],
    "optim": ["name", "lr", "momentum", "betas", "weight_decay", "grad_clip", "ema_decay"],
    "schedule": ["name", "unit", "milestones", "gamma", "warmup", "warmup_unit"],
    "run": ["epochs", "max_steps", "precision", "device", "seed", "log_every"],
}
_value = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 1000) | st.floats() | st.text(max_size=8)
    | st.sampled_from(["resnet20", "skipnet", "sgd", "cosine", "epoch", "cpu", "cuda:1", "digits", "auto"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)  # fmt: skip
_config = st.dictionaries(
    st.sampled_from([*_SECTIONS, "recipe", "extra"]),
    st.dictionaries(
        st.sampled_from(sorted({k for v in _SECTIONS.values() for k in v} | {"bogus"})), _value, max_size=4
    )
    | _value,
    max_size=5,
)


@FUZZ
@given(config=_config | _value)
def test_fuzz_build_config(config) -> None:
    try:
        cfg = build_config(config)
    except ConfigError as err:
        assert str(err)
        return
    assert cfg.data.batch_size >= 1 and cfg.optim.lr > 0


# ---- 5. YAML: the safe loader only --------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "run: !!python/object/apply:os.system ['touch {marker}']\n",
        "run: !!python/object/new:subprocess.Popen [['touch', '{marker}']]\n",
        "!!python/object/apply:builtins.exec [\"open('{marker}', 'w').close()\"]\n",
    ],
)
def test_python_tags_in_a_config_are_refused_unrun(tmp_path, text) -> None:
    marker = tmp_path / "pwned"
    path = _write(tmp_path, "evil.yaml", text.format(marker=marker).encode())
    with pytest.raises(ConfigError, match=r"evil\.yaml is not valid YAML: could not determine a constructor"):
        resolve_config(files=[path])
    assert not marker.exists()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        # a "billion laughs": 9 levels of 10 aliases expand to 10^9 values
        (
            "model:\n  kwargs:\n    a0: &a0 [1,1,1,1,1,1,1,1,1,1]\n"
            + "".join(f"    a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9))
            + "optim: {lr: *a8}\n",
            "more than 10,000 values once its aliases are expanded",
        ),
        ("optim: &a {lr: 0.1, again: *a}\n", "an alias refers to itself"),
        ("a: " + "[" * 40 + "]" * 40 + "\n", "nested more than 32 levels"),
        ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),  # PyYAML's own recursion
        ("- 1\n", "must hold a mapping of sections, got list"),
        ("optim: {lr: .inf}\n", "optim.lr must be a finite number, got inf"),
        ("optim: {lr: .nan}\n", "optim.lr must be a finite number, got nan"),
        ("optim: {lr: 1" + "0" * 400 + "}\n", "optim.lr must be a number"),
        ("recipe: [quick]\n", r"recipe must be a recipe's name, got \['quick'\]"),
        ("recipe: he2016-cifar\nmodel: {name: 5}\n", "model.name must be a string, got 5"),
        ("model: {name: skipnet, kwargs: {layers: [{a: 1}]}}\n", "model.kwargs .* do not fit skipnet"),
    ],
)
def test_config_files_that_cannot_be_a_config(tmp_path, text, reason) -> None:
    path = _write(tmp_path, "c.yaml", text.encode())
    with pytest.raises(ConfigError, match=reason):
        resolve_config(files=[path])


def test_config_files_that_are_not_text(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"c\.yaml cannot be read as UTF-8 text"):
        load_yaml(_write(tmp_path, "c.yaml", b"\xff\xfe\x00\x80binary"))
    with pytest.raises(ConfigError, match="cannot be read"):
        load_yaml(tmp_path)  # a directory
    with pytest.raises(ConfigError, match="larger than 1,048,576 bytes"):
        load_yaml(_write(tmp_path, "big.yaml", b"# " + b"x" * 2**20 + b"\n"))
