"""Values that arrive by every path through one validation (issue 13, class 7), and the smaller holes
(class 8): metadata that picks what eval scans, escape codes in names, names megabytes long, two
trainers on one run."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import resnets
from resnets.cli import main
from resnets.data.formats import read_cifar_python
from resnets.errors import CheckpointError, ConfigError, DataError, printable
from resnets.io.weights import ModelMeta, check_meta, save_weights
from resnets.train.config import load_yaml, resolve_config
from resnets.train.parsing import parse_assignment
from resnets.train.rundir import run_lock


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("run:\n  seed: " + "9" * 5000, r"a value cannot be read \(ValueError"),  # Python's int digit limit
        ("run:\n  out: 2001-13-45", r"a value cannot be read \(ValueError: month must be in 1..12"),
        ("optim:\n  lr: !!float abc", r"a value cannot be read \(ValueError"),
        ("run:\n  seed: " + "[" * 30_000, "nested too deeply"),
    ],
)
def test_yaml_scalars_pyyaml_cannot_build_are_config_errors(tmp_path, text, reason) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=reason):
        load_yaml(path)
    # The same text as a --set value goes through the same checks.
    value = text.split(": ", 1)[1] if "seed: [" not in text else "[" * 30_000
    with pytest.raises(ConfigError, match=reason.replace("config file", "")):
        parse_assignment(f"x.y={value}")


def test_set_values_get_the_config_files_size_and_alias_checks() -> None:
    laughs = "&a [x,x,x,x,x,x,x,x,x,x]"
    for i in range(1, 9):
        laughs = f"{laughs}, &{chr(97 + i)} [{', '.join([f'*{chr(96 + i)}'] * 10)}]"
    with pytest.raises(ConfigError, match=r"--set model.kwargs.x holds more than 10,000 values"):
        parse_assignment(f"model.kwargs.x=[{laughs}]")
    assert parse_assignment("optim.lr=0.05") == {"optim": {"lr": 0.05}}
    assert parse_assignment("run.out=a: b: c") == {"run": {"out": "a: b: c"}}  # not YAML: a string


def test_seeds_and_huge_ints_are_range_checked_wherever_they_arrive() -> None:
    for seed, reason in [(-1, r"run.seed must be in 0 … 2\^32 - 1"), (2**40, r"run.seed must be in 0")]:
        with pytest.raises(ConfigError, match=reason):
            resolve_config(flags={"run": {"seed": seed}})
    with pytest.raises(
        ConfigError, match=r"run.epochs must be an integer within ±2\^63, got an int of about"
    ):
        resolve_config(flags={"run": {"epochs": 10**400}})
    meta = ModelMeta("resnet20", 2, 3, [3, 32, 32], [0.5] * 3, [0.2] * 3, ["a", "b"], data_seed=2**70)
    with pytest.raises(ValueError, match="data_seed must be in 0"):
        check_meta(meta)


def test_a_cifar_dtype_whose_pickled_state_sets_flags_is_refused(tmp_path) -> None:
    class Dtype:  # what a pickle can ask of numpy.dtype: NumPy's own uint8, then flags set on it
        def __reduce__(self):
            return (np.dtype, ("u1", False, False), (3, "|", None, None, None, -1, -1, 63))

    class Array:
        def __reduce__(self):
            return (
                np._core.multiarray._reconstruct,
                (np.ndarray, (0,), b"b"),
                (1, (2, 3072), Dtype(), False, bytes(6144)),
            )

    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": Array(), b"labels": [0, 1]}, protocol=2))
    with pytest.raises(DataError, match=r"refusing a dtype state \(3, '\|', None, None, None, -1, -1, 63\)"):
        read_cifar_python(path)
    assert np.dtype("u1").flags == 0
    honest = tmp_path / "honest"
    honest.write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]}, protocol=2))
    assert read_cifar_python(honest)[0].shape == (2, 3, 32, 32)


def _model_file(tmp_path, **meta_changes):
    model = resnets.create_model("resnet20", num_classes=2)
    meta = {"model": "resnet20", "num_classes": 2, "in_chans": 3, "input_size": [3, 32, 32],
            "mean": [0.5] * 3, "std": [0.2] * 3, "classes": ["cat", "dog"], **meta_changes}  # fmt: skip
    path = tmp_path / "model.safetensors"
    save_weights(path, model.state_dict(), ModelMeta(**meta))
    return path


def test_the_metadata_never_picks_a_folder_for_eval_to_scan(tmp_path) -> None:
    path = _model_file(tmp_path, dataset="imagefolder:/proc")
    with pytest.raises(
        CheckpointError, match=r"does not scan a folder a file names.*--data imagefolder:/proc"
    ):
        resnets.evaluate(path)
    with pytest.raises(CheckpointError, match="dataset must be a dataset's name"):
        resnets.load_model(_model_file(tmp_path, dataset="../../etc"))


def test_escape_codes_in_names_are_shown_not_obeyed(tmp_path, capsys) -> None:
    title = "\x1b]0;pwned\x07cat\x1b[2J"
    assert printable(title) == "\\x1b]0;pwned\\x07cat\\x1b[2J" and printable("a\nb") == "a\nb"
    path = _model_file(tmp_path, classes=[title, "dog"])
    image = tmp_path / "x.png"
    from PIL import Image

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    assert main(["predict", str(path), str(image)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\\x1b]0;pwned" in out


def test_a_name_megabytes_long_is_cut_in_the_error(capsys) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_config(flags={"model": {"name": "x" * 6_000_000}})
    assert len(str(err.value)) < 2000
    assert main(["train", "--set", "model.name=" + "y" * 100_000]) == 2
    assert len(capsys.readouterr().err) < 2000


def test_a_second_trainer_of_one_run_is_refused(tmp_path) -> None:
    run = tmp_path / "run"
    refused = pytest.raises(ConfigError, match=r"being trained by another resnets process \(pid \d+\)")
    with run_lock(run), refused, run_lock(run):
        pass
    with run_lock(run):  # released with the first
        pass
    assert (run / ".lock").read_text().strip().isdigit()
