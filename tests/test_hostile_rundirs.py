"""Writes that must stay inside the run's own files (issue 13, class 2): a folder that is not a run is
never written into, and a symbolic link inside a run is never written or deleted through."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from resnets.api import train
from resnets.cli import main
from resnets.errors import ConfigError
from resnets.io.atomic import open_append, write_text
from resnets.train.config import resolve_config
from resnets.train.rundir import prepare_run_dir, resumable_config

QUICK = {"model": {"name": "resnet20"}, "data": {"batch_size": 256}, "run": {"epochs": 1, "quiet": True}}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    train({**QUICK, "run": {**QUICK["run"], "out": str(out)}}, plots=False)
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "downloaded"
    shutil.copytree(run, copy)
    return copy


def test_a_link_where_eval_writes_is_refused_and_its_target_untouched(finished_run, tmp_path, capsys) -> None:
    run = _copy(finished_run, tmp_path)
    target = tmp_path / "bashrc"
    target.write_text("precious\n")
    (run / "eval_digits.json").symlink_to(target)
    assert main(["eval", str(run), "--data", "digits"]) == 2
    assert "is a symbolic link" in capsys.readouterr().err
    assert target.read_text() == "precious\n"


def test_a_run_holding_links_is_refused_on_resume_and_nothing_outside_changes(finished_run, tmp_path) -> None:
    run = _copy(finished_run, tmp_path)
    target = tmp_path / "outside.txt"
    target.write_text("precious\n")
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").symlink_to(target)
    with pytest.raises(ConfigError, match=r"holds symbolic links \(.*metrics\.jsonl\).*never follows links"):
        resumable_config(run, quiet=True)
    with pytest.raises(ConfigError, match="holds symbolic links"):
        train(resume=run)
    assert target.read_text() == "precious\n" and (run / "metrics.jsonl").is_symlink()


def test_a_folder_that_is_not_a_run_is_never_written_into(tmp_path) -> None:
    project = tmp_path / "project"
    (project / "checkpoints" / "last").mkdir(parents=True)
    (project / "config.yaml").write_text("not: [a, resnets, config]\n")
    (project / "notes.txt").write_text("mine\n")
    before = {p: p.read_bytes() for p in project.rglob("*") if p.is_file()}
    cfg = resolve_config(flags={"run": {"out": str(project)}})
    with pytest.raises(ConfigError, match="is not empty and is not a resnets run"):
        prepare_run_dir(cfg)
    assert {p: p.read_bytes() for p in project.rglob("*") if p.is_file()} == before
    empty = tmp_path / "empty"
    empty.mkdir()
    cfg = resolve_config(flags={"run": {"out": str(empty)}})
    assert prepare_run_dir(cfg) == empty and (empty / "config.yaml").is_file()


def test_writers_replace_a_link_instead_of_following_it(tmp_path) -> None:
    target = tmp_path / "target"
    target.write_text("precious\n")
    link = tmp_path / "summary.json"
    link.symlink_to(target)
    write_text(link, "{}\n")
    assert target.read_text() == "precious\n" and not link.is_symlink() and link.read_text() == "{}\n"
    log = tmp_path / "metrics.jsonl"
    log.symlink_to(target)
    with pytest.raises(OSError):
        open_append(log)
    assert target.read_text() == "precious\n"
