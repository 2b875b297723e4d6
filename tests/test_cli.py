"""`resnets models`: the table a user sees, through the real console entry point."""

import json
import subprocess
import sys

from resnets.cli import main


def test_models_table_lists_counted_numbers(capsys) -> None:
    assert main(["models", "resnet2*"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["name", "params", "FLOPs", "input"]
    row = out[1].split()
    assert row[:5] == ["resnet20", "269,722", "81.1M", "3x32x32", "20"]
    assert row[5] == "identity"


def test_models_json_has_every_field(capsys) -> None:
    assert main(["models", "densenet121", "--format", "json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == 7_978_856 and info["skip"] == "dense" and info["depth"] == 121


def test_models_markdown(capsys) -> None:
    assert main(["models", "plain20", "--format", "markdown"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| name |") and lines[2].startswith("| plain20 | 269,722 |")


def test_unmatched_pattern_fails_with_message(capsys) -> None:
    assert main(["models", "zzz*"]) == 1
    assert "no model matches 'zzz*'" in capsys.readouterr().err


def test_console_module_runs() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "resnets", "models", "highway_mlp"], capture_output=True, text=True, check=True
    )
    assert "highway_mlp" in proc.stdout and "gated" in proc.stdout
