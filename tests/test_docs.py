"""The README and docs say what the code does: every command they quote parses, every link resolves,
every flag has help, and the Makefile's knobs do what the README says."""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from resnets.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _readme_commands() -> list[str]:
    """Every `resnets …` command line in the README's code blocks (fenced or indented), continuations
    joined, comments cut. (Inline spans are synopses, `resnets export RUN --format onnx|…`.)"""
    text = (ROOT / "README.md").read_text(encoding="utf-8").replace("\\\n", " ")
    commands, fenced = [], False
    for raw in text.splitlines():
        if raw.startswith("```"):
            fenced = not fenced
            continue
        if not (fenced or raw.startswith("    ")):
            continue
        line = raw.strip()
        for prefix in (".venv/bin/resnets ", "resnets "):
            if line.startswith(prefix):
                commands.append(line[len(prefix) :].split("  #")[0].strip())
    return commands


def test_the_readme_quotes_commands_of_every_kind() -> None:
    names = {shlex.split(c)[0] for c in _readme_commands()}
    assert {"train", "eval", "predict", "plot", "experiment", "reproduce", "export"} <= names


@pytest.mark.parametrize("command", _readme_commands())
def test_every_command_the_readme_quotes_parses(command: str) -> None:
    try:
        build_parser().parse_args(shlex.split(command))
    except SystemExit as exit_:  # argparse's way of refusing an option or a choice
        pytest.fail(f"README command does not parse (exit {exit_.code}): resnets {command}")


def test_every_option_and_argument_has_help() -> None:
    missing = [
        f"{name} {action.option_strings or action.dest}"
        for name, sub in _subparsers().items()
        for action in sub._actions
        if action.help is None and not isinstance(action, argparse._HelpAction)
    ]
    assert missing == []


def test_experiment_help_lists_the_experiments_and_not_reproduce() -> None:
    sub = _subparsers()["experiment"]
    text = sub.format_help()
    assert "degradation:" in text and "lesion:" in text
    assert "reproduce" not in text  # it has its own command, `resnets reproduce RECIPE`


def _links(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves_inside_the_repository(doc: Path) -> None:
    for target in _links(doc):
        resolved = (doc.parent / target.split("#")[0]).resolve()
        assert resolved.exists(), f"{doc.name} links to {target}, which is not in the repository"
        assert ROOT in resolved.parents or resolved == ROOT, f"{doc.name} links outside the repository"


def test_the_readme_quotes_no_path_outside_the_repository() -> None:
    # A new user has only the clone: data folders are DATA, ~/data or the default cache.
    assert "../" not in (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_installs_torch_from_the_index_torch_index_names(tmp_path) -> None:
    def dry_run(*extra: str) -> str:
        cmd = ["make", "-n", "-C", str(ROOT), "install", f"VENV={tmp_path / 'venv'}", *extra]
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout

    cpu = "https://download.pytorch.org/whl/cpu"
    torch_line = next(li for li in dry_run(f"TORCH_INDEX={cpu}").splitlines() if "torch==" in li)
    assert f"--index-url {cpu} torch==" in torch_line
    assert "--index-url" not in dry_run()  # by default, pip's own index


def _index_script():
    spec = importlib.util.spec_from_file_location(
        "experiments_index", ROOT / "scripts" / "experiments_index.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_experiments_index_is_written_from_the_reports(tmp_path) -> None:
    script = _index_script()
    (tmp_path / "lesion").mkdir()
    report = {
        "title": "Lesion study",
        "verdict": "It holds.",
        "figures": ["lesion.png"],
        "command": "resnets experiment lesion --quick",
        "environment": {"commit": "abc1234", "cpu": "AMD EPYC", "threads": 1, "wall_minutes": 3.5},
    }
    (tmp_path / "lesion" / "results.json").write_text(json.dumps(report))
    (tmp_path / "README.md").write_text(f"intro\n{script.START}\nstale\n{script.END}\noutro\n")
    assert script.main(["--root", str(tmp_path), "--check"]) == 1
    assert script.main(["--root", str(tmp_path)]) == 0
    text = (tmp_path / "README.md").read_text()
    assert "stale" not in text and text.startswith("intro\n") and text.endswith("outro\n")
    assert "## [Lesion study](lesion/report.md)" in text and "![lesion](lesion/lesion.png)" in text
    assert "**Verdict.** It holds." in text and "commit abc1234, AMD EPYC, 1 thread, 3.5 min" in text
    assert script.main(["--root", str(tmp_path), "--check"]) == 0


def test_the_committed_experiments_index_is_current() -> None:
    assert _index_script().main(["--check"]) == 0, "run: python scripts/experiments_index.py"


def test_the_readme_models_table_is_what_resnets_models_prints(capsys) -> None:
    # The table is pasted from the command; shipping weights changes its `weights` column, and a stale
    # copy told users that resnet32/44/56 had no weights after they were shipped.
    from resnets.cli import main

    assert main(["models", "--format", "markdown"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    start = lines.index(printed[0])
    assert lines[start : start + len(printed)] == printed, (
        "paste `resnets models --format markdown` into README"
    )
    assert not lines[start + len(printed)].startswith("|")  # no rows left over from an older table
