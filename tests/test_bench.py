"""The throughput benchmark runs (smoke mode) and prints a well-formed table with the peaks."""

import math

import pytest
import torch

from resnets.bench import MODES, Row, format_table, matmul_peak
from resnets.cli import main


def test_smoke_run_prints_machine_peaks_and_a_row_per_model_and_mode(capsys) -> None:
    assert main(["bench", "--smoke", "--models", "resnet20", "skipnet", "--modes", "fp32", "auto"]) == 0
    out = capsys.readouterr().out
    assert "torch " + torch.__version__ in out and "threads" in out and "matmul peak" in out
    rows = [
        line for line in out.splitlines() if line.startswith("| resnet20 |") or line.startswith("| skipnet |")
    ]
    assert len(rows) == 4
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        train_ips = float(cells[4].replace(",", ""))
        assert math.isfinite(train_ips) and train_ips > 0


def test_fraction_of_peak_uses_the_rows_precision() -> None:
    rows = [
        Row("m", "fp32", "fp32", 32, 10, 50.0, 32, 20, 100.0, None),
        Row("m", "auto", "bf16", 32, 10, 50.0, 32, 20, 100.0, 12.0),
    ]
    table = format_table(rows, {"fp32": 100.0, "bf16": 1000.0})
    assert "| 50.0% |" in table.splitlines()[2] and "| 5.0% |" in table.splitlines()[3]


def test_matmul_peak_is_positive_and_modes_are_named() -> None:
    assert matmul_peak(torch.float32, torch.device("cpu"), n=64, repeats=1) > 0
    assert set(MODES) == {"fp32", "channels_last", "bf16", "auto", "compiled"}
    with pytest.raises(SystemExit):
        main(["bench", "--modes", "fp64"])


@pytest.mark.slow
def test_epoch_benchmark_smoke_prints_both_paths_and_the_ratio() -> None:
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "epoch.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--smoke"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| resnet20 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    fast, slow, ratio = float(cells[1].replace(",", "")), float(cells[2].replace(",", "")), cells[3]
    assert fast > 0 and slow > 0 and ratio.endswith("×")
    assert float(ratio[:-1]) == pytest.approx(fast / slow, abs=0.02)  # the cells are rounded
