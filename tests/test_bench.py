"""The throughput benchmark runs (smoke mode) and prints a well-formed table with the peaks."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from resnets.cli import main
from resnets.deploy import bench
from resnets.deploy.bench import MODES, Row, format_table, matmul_peak


def test_smoke_run_prints_machine_peaks_and_a_row_per_model_and_mode(capsys) -> None:
    modes = ["fp32", "unfused", "auto"]
    assert main(["bench", "--smoke", "--models", "resnet20", "skipnet", "--modes", *modes]) == 0
    out = capsys.readouterr().out
    assert "torch " + torch.__version__ in out and "threads" in out and "matmul peak" in out
    rows = [
        line for line in out.splitlines() if line.startswith("| resnet20 |") or line.startswith("| skipnet |")
    ]
    assert len(rows) == 6
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        infer_ips = float(cells[8].replace(",", ""))
        assert math.isfinite(infer_ips) and infer_ips > 0
        if cells[1] == "unfused":  # an inference-only lever: no training figures
            assert cells[4] == cells[5] == cells[6] == "–"
        else:
            assert float(cells[4].replace(",", "")) > 0


def test_smoke_is_two_steps_of_one_small_model_per_mode_without_peak_fractions(monkeypatch, capsys) -> None:
    calls: list[int] = []
    real = bench.median_rate

    def counting(step, *args, **kwargs):
        def counted() -> None:
            calls.append(1)
            step()

        return real(counted, *args, **kwargs)

    monkeypatch.setattr(bench, "median_rate", counting)
    modes = ["fp32", "unfused", "auto"]
    assert main(["bench", "--smoke", "--modes", *modes]) == 0  # no --models: the smoke model only
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")][1:]
    assert [r.split("|")[1:3] for r in rows] == [[" resnet20 ", f" {m} "] for m in modes]
    # Per mode: 1 warm-up + 1 timed step for inference, and as many for training where the mode trains.
    assert len(calls) == 2 * (2 + 1 + 2)
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[6] == cells[10] == "–"  # no % of a peak measured on a 256×256 matmul


def test_fraction_of_peak_uses_the_rows_precision() -> None:
    rows = [
        Row("m", "fp32", "fp32", 32, 10, 50.0, 32, 20, 100.0, None),
        Row("m", "auto", "bf16", 32, 10, 50.0, 32, 20, 100.0, 12.0),
    ]
    table = format_table(rows, {"fp32": 100.0, "bf16": 1000.0})
    assert "| 50.0% |" in table.splitlines()[2] and "| 5.0% |" in table.splitlines()[3]


def test_matmul_peak_is_two_n_cubed_over_the_fastest_repeat(monkeypatch) -> None:
    # A fake clock: the repeats take 4, 2 and 3 s, so the peak is 2·64³ FLOP / 2 s.
    ticks = iter([0.0, 4.0, 10.0, 12.0, 20.0, 23.0])
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(ticks))
    assert matmul_peak(torch.float32, torch.device("cpu"), n=64, repeats=3) == 2 * 64**3 / 2.0 / 1e9


def test_modes_turn_on_the_levers_their_names_promise() -> None:
    assert not MODES["fp32"].channels_last and MODES["fp32"].precision == "fp32"
    assert MODES["channels_last"].channels_last and MODES["channels_last"].precision == "fp32"
    assert MODES["bf16"].precision == "bf16"
    # unfused is auto without the fold, and measures inference only
    assert (MODES["unfused"].fuse, MODES["auto"].fuse) == (False, True) and not MODES["unfused"].train
    assert MODES["compiled"].compile and not MODES["auto"].compile
    with pytest.raises(SystemExit):
        main(["bench", "--modes", "fp64"])


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _run_smoke(script: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--smoke"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _cells(out: str, first: str) -> list[str]:
    row = next(line for line in out.splitlines() if line.startswith(f"| {first} |"))
    return [c.strip() for c in row.strip("|").split("|")]


def _number(cell: str) -> float:
    return float(cell.replace(",", "").rstrip("%×"))


@pytest.fixture
def benchmarks_on_path(monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))


@pytest.mark.slow
def test_epoch_benchmark_smoke_prints_both_paths_and_the_ratio() -> None:
    cells = _cells(_run_smoke("epoch.py"), "resnet20")
    fast, slow, ratio = _number(cells[1]), _number(cells[2]), cells[3]
    assert fast > 0 and slow > 0 and ratio.endswith("×")
    # the cells are rounded to whole img/s (and the ratio to 0.01): bound it by the rounding
    assert (fast - 0.5) / (slow + 0.5) - 0.006 <= _number(ratio) <= (fast + 0.5) / (slow - 0.5) + 0.006


@pytest.mark.slow
def test_time_to_accuracy_smoke_prints_each_seed_and_a_verdict() -> None:
    out = _run_smoke("time_to_accuracy.py")
    cells = _cells(out, "0")  # seed 0's row
    assert cells[1] == "–" and 0 <= _number(cells[3]) <= 100 and 0 <= _number(cells[4]) <= 100
    assert "0 of 1 reached 91.25%" in out and "paper's recipe" in out  # random labels cannot reach it


@pytest.mark.slow
def test_parity_and_gpu_smoke_print_their_tables() -> None:
    out = _run_smoke("parity.py")
    assert 0 <= _number(_cells(out, "0")[1]) <= 100 and "seed-to-seed spread" in out
    out = _run_smoke("gpu.py")
    for model in ("resnet56", "resnet50"):
        cells = _cells(out, model)
        assert cells[3] == "fp32 eager" and _number(cells[4]) > 0 and cells[5] == "1.00×"
    assert "bf16 channels_last eager" in out


def test_time_to_accuracy_reads_the_first_epoch_at_the_target(tmp_path, benchmarks_on_path) -> None:
    from time_to_accuracy import epoch_table, first_reaching

    lines = []
    for epoch, acc in enumerate([0.5, 0.91, 0.9130, 0.92], start=1):
        lines.append({"split": "train", "epoch": epoch, "loss": 1.0 / epoch})
        lines.append({"split": "test", "epoch": epoch, "accuracy": acc, "wall_seconds": 60.0 * epoch})
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    rows = epoch_table(tmp_path / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4] and rows[1]["train_loss"] == 0.5
    assert first_reaching(rows, 0.9125)["wall_seconds"] == 180.0
    assert first_reaching(rows, 0.95) is None


def test_parity_verdict_compares_the_mean_difference_with_the_spread(benchmarks_on_path) -> None:
    from parity import within_spread

    diff, spread, same = within_spread([0.70, 0.72, 0.74], [0.71, 0.73, 0.75])
    assert diff == pytest.approx(-0.01) and spread == pytest.approx(0.02) and same
    assert not within_spread([0.80, 0.81, 0.82], [0.70, 0.71, 0.72])[2]


@pytest.mark.slow
def test_profile_step_smoke_ranks_operators_that_sum_to_at_most_the_step() -> None:
    out = _run_smoke("profile_step.py")
    for mode in ("fp32", "channels_last", "auto"):
        assert f"### {mode}: " in out
    shares = [_number(line.split("|")[2].strip()) for line in out.splitlines() if line.startswith("| aten::")]
    assert len(shares) >= 6 and all(0 < s <= 100 for s in shares)
    assert any(line.startswith("| aten::convolution_backward |") for line in out.splitlines())


def test_optimizer_step_smoke_times_the_three_implementations() -> None:
    cells = _cells(_run_smoke("optimizer_step.py"), "resnet20")
    loop, foreach, fused, ratio = (_number(c) for c in cells[2:6])
    assert cells[1] == "sgd" and min(loop, foreach, fused) > 0
    assert ratio == pytest.approx(loop / fused, abs=0.01 + 0.001 * loop / fused)
