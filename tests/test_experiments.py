"""Experiments: each one's machinery on tiny real-format data in seconds (files written, numbers finite),
and the verdict logic on constructed inputs."""

import json
import math

import pytest
import torch

import resnets
import resnets.analysis.experiments.landscape as landscape_module
from formats import write_cifar10, write_mnist
from resnets.analysis.experiments import EXPERIMENTS, Settings, run_experiment
from resnets.analysis.experiments.degradation import degradation_notes, degrades, final_train_error
from resnets.analysis.experiments.dynamics import (
    branch_profile,
    dynamics_verdict,
    endpoint_sentence,
    init_mean,
    phase_means,
    shipped_endpoint,
    stages,
)
from resnets.analysis.experiments.gradients import (
    first_last_ratio,
    gradients_verdict,
    shattered_verdict,
    spread,
    wider,
)
from resnets.analysis.experiments.highway import carry_gate_bias, loss_cell, trains
from resnets.analysis.experiments.landscape import (
    barrier,
    basin_distance,
    depth_trend,
    landscape_verdict,
    rise_at,
)
from resnets.analysis.experiments.lesion import (
    deletion_curve,
    downsampling,
    lesion_verdict,
    single_increases,
    smooth_growth,
    spread_counts,
)
from resnets.analysis.experiments.normfree import normfree_verdict
from resnets.analysis.experiments.reproduce import models_for
from resnets.analysis.experiments.shortcuts import agreeing_pairs, shortcuts_verdict
from resnets.analysis.experiments.skip_span import cell, span_layers, span_verdict
from resnets.analysis.report import Report, change_beyond_spread, markdown_table, mean_std, pm, write_report
from resnets.cli import main
from resnets.data import load_dataset
from resnets.errors import ConfigError
from resnets.weights import find_weights


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_cifar10(root, "bin", per_file=32)
    write_mnist(root, n_train=256, n_test=32)
    return str(root)


def _check_outputs(out, name: str) -> dict:
    results = json.loads((out / "results.json").read_text())
    report = (out / "report.md").read_text()
    assert results["name"] == name and results["verdict"] in report and "torch" in report
    for fig in results["figures"]:
        assert (out / fig).stat().st_size > 1000 and f"]({fig})" in report
    return results


# ---- verdict logic on constructed numbers -----------------------------------------------------


def test_degradation_verdict_needs_more_than_the_seed_spread() -> None:
    assert degrades([0.30, 0.32], [0.40, 0.41])  # +0.095, spread 0.014
    assert not degrades([0.30, 0.32], [0.31, 0.33])  # +0.01 within spread 0.014
    assert not degrades([0.40, 0.41], [0.30, 0.32])  # deeper is better
    steps = [{"accuracy": a} for a in [0.1] * 18 + [0.6, 0.8]]
    assert final_train_error(steps) == pytest.approx(0.3)  # the last tenth: 2 of 20 log lines


def test_degradation_notes_name_the_protocol_that_ran() -> None:
    train = {"plain": ([0.05], [0.10]), "residual": ([0.05], [0.04])}
    (all_images,) = degradation_notes(train, 56, 15, "fast-cifar", subset=0)
    assert "15 epochs of fast-cifar on all training images" in all_images and "he2016" not in all_images
    (truncated,) = degradation_notes(train, 56, 4, "he2016-cifar", subset=0)
    assert truncated.startswith("Shortened: 4 epoch(s) of he2016-cifar")
    subset_notes = degradation_notes(train, 56, 10, "fast-cifar", subset=5000)
    assert "subset of 5,000 training images" in subset_notes[0] and len(subset_notes) == 2


def test_highway_gate_bias_carries_half_the_input_through_the_stack() -> None:
    for depth in (10, 100):
        b = carry_gate_bias(depth)
        assert (1 - 1 / (1 + math.exp(-b))) ** depth == pytest.approx(0.5)
    assert carry_gate_bias(100) < carry_gate_bias(10) < 0


def test_gradient_ratios_and_highway_training_threshold() -> None:
    assert first_last_ratio([1e-4, 1e-2, 1.0]) == pytest.approx(1e-4)
    assert spread([1e-4, 1e-2, 1.0]) == pytest.approx(1e4) and spread([2.0, 2.0]) == 1.0
    assert trains(0.05) and not trains(2.30) and not trains(math.log(10) / 2)


def test_shattered_verdict_counts_depths_where_residual_correlates_beyond_the_spread() -> None:
    conv = {
        "plain 20": [0.60, 0.66], "residual 20": [0.92, 0.93], "highway 20": [0.99, 0.99],
        "plain 56": [0.01, 0.00], "residual 56": [0.79, 0.80], "highway 56": [0.97, 0.96],
    }  # fmt: skip
    fc = {"plain 10": [0.9, 0.5], "residual 10": [0.8, 0.6], "highway 10": [1.0, 1.0]}
    said = shattered_verdict({"conv": conv, "mlp": fc}, {"conv": [20, 56], "mlp": [10]})
    assert "conv nets: residual 0.93 (depth 20) → 0.80 (56), plain 0.63 → 0.01" in said
    assert "beyond the seed spread at 2 of 2 depths" in said  # both gaps far beyond a std of ≤ 0.04
    assert "fc nets: residual 0.70 (depth 10) → 0.70 (10)" in said and "at 0 of 1 depths" in said


def test_gradients_verdict_counts_plain_wider_only_beyond_the_seed_spread() -> None:
    assert wider([3.5, 3.7], [1.6, 1.8])
    assert not wider([1.15, 1.30], [1.14, 1.16])  # within the plain net's spread
    assert not wider([math.nan, 3.0], [1.0, 1.1])  # a diverged run decides nothing
    comparisons = {
        ("conv", "init"): ([3.5, 3.7], [1.6, 1.8]),
        ("conv", "trained"): ([1.4, 1.6], [1.3, 1.7]),
        ("mlp", "init"): ([1.2, 1.2], [1.1, 1.1]),
        ("mlp", "trained"): ([2.3, 2.4], [1.4, 1.4]),
    }
    said = gradients_verdict(comparisons, {"conv": 56, "mlp": 100}, steps=50)
    assert "in 3 of 4 comparisons" in said and "within the seed spread" in said
    assert (
        "conv depth 56, plain vs residual: 10^3.6 vs 10^1.7 at init, 10^1.5 vs 10^1.5 after 50 steps" in said
    )
    comparisons[("conv", "trained")] = ([2.4, 2.5], [1.3, 1.4])
    assert "narrower range" in gradients_verdict(comparisons, {"conv": 56, "mlp": 100}, steps=50)


def test_phase_means_compare_first_and_last_fifth_of_training_and_read_init_apart() -> None:  # all blocks
    history = [{"step": 0, "ratio": [100.0, None]}]
    history += [{"step": 10 * (i + 1), "ratio": [float(i), None, float(i)]} for i in range(10)]
    assert phase_means(history, "ratio") == (0.5, 8.5)
    assert init_mean(history, "ratio") == 100.0
    assert math.isnan(init_mean(history[1:], "ratio"))


def test_phase_means_and_stages_read_the_blocks_of_one_stage() -> None:
    history = [{"step": 0, "ratio": [9.0, 1.0, 5.0]}]
    history += [{"step": 10 * (i + 1), "ratio": [float(i), None, 10.0 * i]} for i in range(10)]
    assert phase_means(history, "ratio", [2]) == (5.0, 85.0) and init_mean(history, "ratio", [0, 1]) == 5.0
    names = ["layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0"]
    assert stages(names) == {"layer1": [0, 1], "layer2": [2, 3], "layer3": [4]}


def test_skip_dynamics_verdict_tests_each_claim_per_stage_beyond_the_seed_spread() -> None:
    assert change_beyond_spread([0.45, 0.46], [0.60, 0.62]) == 1
    assert change_beyond_spread([0.452, 0.470], [0.46, 0.48]) == 0  # +0.009 within the spread 0.014
    assert change_beyond_spread([0.5, 0.5], [0.3, 0.31]) == -1

    def phase(early: list[float], late: list[float]) -> dict:
        return {"init": [0.0, 0.0], "early": early, "late": late}

    results = {
        # layer1: both claims (small early, grows); layer2: starts small but stays; layer3: starts large.
        "residual/ratio/layer1": phase([0.30, 0.32], [0.60, 0.62]),
        "highway/gate/layer1": phase([0.10, 0.11], [0.30, 0.31]),
        "residual/ratio/layer2": phase([0.40, 0.42], [0.40, 0.42]),
        "highway/gate/layer2": phase([0.10, 0.10], [0.10, 0.11]),
        "residual/ratio/layer3": phase([1.20, 1.30], [2.0, 2.1]),
        "highway/gate/layer3": phase([0.20, 0.21], [0.40, 0.42]),
    }
    said = dynamics_verdict(results, ["layer1", "layer2", "layer3"])
    assert "initial stages' holds in 2 of 3 stages (layer1, layer2)" in said
    assert "restores the skipped layers' holds in 2 of 3 stages (layer1, layer3)" in said
    assert (
        "‖F(x)‖/‖S(x)‖ per stage is 0.31, 0.41, 1.25" in said
        and "0.31, 0.41, 1.25 → 0.61, 0.41, 2.05" in said
    )
    assert "the highway gates open in 2 of 3 stages (layer1, layer3)" in said
    assert said.endswith("the residual ratio grows in 2 of 3 stages (layer1, layer3).")
    results["highway/gate/layer1"] = phase([0.6, 0.7], [0.3, 0.2])  # gates open early, then close
    results["residual/ratio/layer2"] = phase([0.40, 0.42], [0.30, 0.31])  # branches shrink
    said = dynamics_verdict(results, ["layer1", "layer2", "layer3"])
    assert "holds in 1 of 3 stages (layer2)" in said and "holds in 1 of 3 stages (layer3)" in said
    assert "the highway gates open in 1 of 3 stages (layer3)" in said
    assert said.endswith("grows in 2 of 3 stages (layer1, layer3) and falls in 1 of 3 stages (layer2).")


def test_the_shipped_endpoint_is_each_stage_s_ratio_computed_by_hand_with_batch_statistics() -> None:
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    endpoint = shipped_endpoint("cifar10", 20, x, torch.device("cpu"))
    assert endpoint is not None and endpoint["weights"] == "resnet20.cifar10"
    model = resnets.create_model("resnet20", weights="cifar10").train()  # batch statistics, as training
    ratios = []
    with torch.no_grad():
        h = model.relu(model.bn1(model.conv1(x)))
        for block in model.layer1:  # identity skips: S(h) = h
            branch = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(h)))))
            ratios.append(branch.flatten(1).norm(dim=1).mean() / h.flatten(1).norm(dim=1).mean())
            h = torch.relu(branch + h)
    assert endpoint["ratio"]["layer1"] == pytest.approx(float(torch.stack(ratios).mean()), rel=1e-4)
    assert list(endpoint["ratio"]) == ["layer1", "layer2", "layer3"]
    assert shipped_endpoint("cifar10", 110, x, torch.device("cpu")) is None  # no resnet110 weights ship
    model = resnets.create_model("resnet20", weights="cifar10").eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    branch_profile(model, x)
    assert not model.training and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_the_endpoint_sentence_compares_each_stage_with_the_first_fifth() -> None:
    results = {f"residual/ratio/layer{i}": {"early": [e, e]} for i, e in ((1, 0.6), (2, 0.4), (3, 0.4))}
    endpoint = {"weights": "resnet56.cifar10", "test_accuracy": 0.9191, "ratio": {}}
    endpoint["ratio"] = {"layer1": 0.3, "layer2": 0.27, "layer3": 0.55}
    said = endpoint_sentence(results, endpoint)
    assert (
        "resnet56.cifar10, 91.91% test accuracy" in said
        and "0.30, 0.27, 0.55 against 0.60, 0.40, 0.40" in said
    )
    assert said.endswith("higher in 1 of 3 stages (layer3).")


def test_lesion_knows_the_downsampling_blocks_and_reproduce_its_tables() -> None:
    assert downsampling(resnets.create_model("resnet20")) == [3, 6]
    assert downsampling(resnets.create_model("plain56")) == [9, 18]
    assert models_for("he2016-cifar", [20, 110]) == ["resnet20", "resnet110"]
    assert models_for("densenet-cifar", None) == ["densenet_bc100_k12"]
    with pytest.raises(ConfigError, match="no paper figure for depth 21"):
        models_for("he2016-cifar", [21])


def _lesion_run(intact: float, single: list[float], several: dict, swaps: dict) -> dict:
    return {
        "chance": 0.9,
        "intact": intact,
        "single": single,
        "several": several,
        "reordered": swaps,
        "downsampling": [3, 6],
    }


def test_lesion_verdicts_on_constructed_numbers() -> None:
    # Veit et al.'s picture: the residual net loses ~1 point per deleted block, smoothly; the plain net
    # is at chance after one deletion or one swap.
    assert smooth_growth([0.08, 0.09, 0.11, 0.13, 0.16]) and not smooth_growth([0.10, 0.88, 0.90, 0.90])
    assert not smooth_growth([0.10, 0.09, 0.08])  # falling is not growth
    # On thinned counts the rate per deleted block decides: +40 points at the first deletion, then
    # +10 over nine more, is a jump (per step it would look even: 0.40 against 0.10).
    assert smooth_growth([0.10, 0.50, 0.60]) and not smooth_growth([0.10, 0.50, 0.60], [0, 1, 10])
    assert smooth_growth([0.08, 0.09, 0.13, 0.17], [0, 1, 3, 5])
    # A steady rise that reaches chance and stays there (resnet56.cifar10's deletion curve, rounded):
    # read whole, the flat tail makes the last climb look like a jump; read up to chance it is smooth.
    rise = [0.08, 0.12, 0.21, 0.31, 0.44, 0.53, 0.73, 0.86, 0.87, 0.87, 0.89, 0.89, 0.89]
    ks = [0, 1, 3, 5, 8, 10, 12, 14, 16, 18, 21, 23, 25]
    assert not smooth_growth(rise, ks) and smooth_growth(rise, ks, ceiling=0.85)
    assert not smooth_growth([0.25, 0.88, 0.90, 0.90], ceiling=0.85)  # plain56: at chance after one


def test_lesion_counts_thin_out_evenly_for_deep_nets() -> None:
    assert spread_counts(7) == [1, 2, 3, 4, 5, 6, 7]  # resnet20: every count
    # resnet56's 25 deletable blocks: round(1 + i * 24 / 11), i = 0 … 11, worked out by hand.
    assert spread_counts(25) == [1, 3, 5, 8, 10, 12, 14, 16, 18, 21, 23, 25]
    assert len(spread_counts(92)) == 12 and spread_counts(92)[-1] == 92
    residual = _lesion_run(
        0.08,
        [0.09, 0.09, 0.10, 0.5, 0.10, 0.09, 0.6, 0.11, 0.10],
        {1: [0.09, 0.10], 2: [0.11, 0.12], 3: [0.13, 0.15]},
        {1: [0.085, 0.09], 2: [0.10, 0.10]},
    )
    plain = _lesion_run(
        0.12, [0.9] * 9, {1: [0.88, 0.90], 2: [0.90, 0.90], 3: [0.90, 0.90]}, {1: [0.85, 0.9], 2: [0.9, 0.9]}
    )
    # One net: the increases of each non-downsampling block (blocks 3 and 6 left out).
    assert single_increases([residual]) == pytest.approx([0.01, 0.01, 0.02, 0.02, 0.01, 0.03, 0.02])
    assert deletion_curve([residual]).mean == pytest.approx([0.08, 0.095, 0.115, 0.14])
    verdict = lesion_verdict({"residual": [residual], "plain": [plain]}, 20)
    assert "resnet20 by a median 2.00 points and that of plain20 by 78.00" in verdict
    assert "survives single lesions" in verdict and "grows smoothly from 8.0% to 14.0%" in verdict
    assert "plain20 is at 89.0% after one" in verdict and "reordering barely hurts" in verdict
    # A residual net that collapses like the plain one is called so.
    broken = {"residual": [plain], "plain": [plain]}
    verdict = lesion_verdict(broken, 20)
    assert "not more robust here" in verdict and "does not grow smoothly" in verdict
    assert "not more robust to reordering" in verdict


def test_report_files_and_helpers(tmp_path) -> None:
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2))) and mean_std([5.0]) == (5.0, 0.0)
    assert pm([0.1, 0.3], 100, 1) == "20.0 ± 14.1" and pm([0.5], 100) == "50.00"
    assert markdown_table(["a", "b"], [[1, 2]]).splitlines() == ["| a | b |", "| --- | ---: |", "| 1 | 2 |"]
    report = Report("x", "Title", "resnets experiment x", {"seeds": [0, 1]}, {"n": 1}, "| t |", "It holds.")
    path = write_report(report, tmp_path / "x")
    text = path.read_text()
    assert text.startswith("# Title") and "**Verdict.** It holds." in text and "seeds = 0, 1" in text
    assert json.loads((tmp_path / "x" / "results.json").read_text())["results"] == {"n": 1}


# ---- each experiment on tiny data -------------------------------------------------------------


def test_backprop_experiment_agrees_on_trained_nets(tmp_path) -> None:
    settings = Settings(
        quick=True, out=tmp_path / "bp", budget=0.5, argv=["resnets", "experiment", "backprop"]
    )
    report, _ = run_experiment("backprop", settings)
    results = _check_outputs(tmp_path / "bp", "backprop")
    assert report.results["agree"] and results["results"]["max_relative_error"] < 1e-10
    kinds = {row.split("|")[3].strip() for row in report.table.splitlines()[2:]}
    expected = {
        "W^(2,4) projection skip",
        "W^(3,5) dense skip",
        "W^(2,5) dense skip",
        "W_T^6 gate",
        "W^(5,6) own",
    }
    assert expected <= kinds


@pytest.mark.slow
def test_lesion_and_reproduce_experiments_on_tiny_cifar(tmp_path, data_dir) -> None:
    common = {"quick": True, "data_dir": data_dir, "seeds": [0, 1], "budget": 1.0, "precision": "fp32"}
    report, _ = run_experiment(
        "lesion", Settings(out=tmp_path / "lesion", **common)
    )  # --budget: trained here
    results = _check_outputs(tmp_path / "lesion", "lesion")
    assert results["settings"]["nets"] == "trained" and len(results["results"]["residual"]) == 2
    for kind in ("residual", "plain"):
        for r in results["results"][kind]:
            assert len(r["single"]) == 9 and all(0 <= e <= 1 for e in r["single"])
            assert r["downsampling"] == [3, 6] and set(r["several"]) == {str(k) for k in range(1, 8)}
            assert set(r["reordered"]) == {str(k) for k in range(1, 6)}  # 5 same-shape pairs
            assert all(len(v) == 3 for v in [*r["several"].values(), *r["reordered"].values()])
    report, _ = run_experiment(
        "reproduce", Settings(out=tmp_path / "rep", depths=[20], recipe="he2016-cifar", **common)
    )
    assert report.verdict.startswith("SHORTENED RUN (1.0 of 164 epochs)")
    assert len(report.results["errors"]["resnet20"]) == 2
    cpu = {**common, "seeds": [0], "budget": 0.5}
    report, _ = run_experiment(
        "reproduce", Settings(out=tmp_path / "cpu", depths=[20], recipe="he2016-cifar", cpu=True, **cpu)
    )
    assert report.verdict.startswith("DIFFERENT SCHEDULE (fast-cifar, 0.5 epochs, not the paper's 164)")
    error = report.results["errors"]["resnet20"][0]
    side = "below" if error < 8.75 else "above"
    assert f"against He et al.'s 8.75% ({abs(error - 8.75):.2f} points {side})" in report.verdict
    assert report.figures == ["reproduce_cpu.png"] and (tmp_path / "cpu" / "reproduce_cpu.png").stat().st_size
    assert report.settings["recipe"] == "fast-cifar" and report.settings["paper recipe"] == "he2016-cifar"
    row = report.table.splitlines()[2].split("|")
    assert [c.strip() for c in row[1:5]] == [
        "resnet20",
        "8.75",
        "8.27",
        "7.40",
    ]  # Table 6, akamaster, chenyaofo


def test_lesion_of_the_shipped_nets_uses_their_weights_and_normalisation(tmp_path, data_dir) -> None:
    settings = Settings(out=tmp_path / "lesion", data_dir=data_dir, seeds=[0], precision="fp32")
    report, _ = run_experiment("lesion", settings)
    results = _check_outputs(tmp_path / "lesion", "lesion")
    assert results["settings"]["weights"] == ["resnet20.cifar10", "plain20.cifar10"]
    accuracy = find_weights(None, "resnet20.cifar10").test_accuracy
    assert (
        f"shipped weights resnet20.cifar10 ({accuracy:.2%} test accuracy), plain20.cifar10" in report.notes[0]
    )
    # The intact error, computed here from the raw test bytes with the published CIFAR-10 statistics
    # the weights were trained with, in plain torch.
    test = load_dataset("cifar10", data_dir=data_dir).test
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    std = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)
    model = resnets.create_model("resnet20", weights="cifar10").eval()
    with torch.no_grad():
        predicted = model((test.images.float() / 255 - mean) / std).argmax(1)
    expected = (predicted != test.labels).float().mean().item()
    assert results["results"]["residual"][0]["intact"] == pytest.approx(expected, abs=1e-6)
    assert len(results["results"]["residual"][0]["several"]["1"]) == 3  # DRAWS for the one seed


@pytest.mark.slow
def test_degradation_gradients_highway_and_dynamics_on_tiny_data(tmp_path, data_dir, monkeypatch) -> None:
    common = {"quick": True, "data_dir": data_dir, "seeds": [0, 1], "precision": "fp32"}
    deg = {"depths": [20, 32], "budget": 2.0, "subset": 100}  # 100 of the 160 tiny training images
    run_experiment("degradation", Settings(out=tmp_path / "deg", **deg, **common))
    degradation = _check_outputs(tmp_path / "deg", "degradation")
    errors = degradation["results"]["errors"]
    assert degradation["settings"]["training images"] == 100
    assert degradation["settings"]["recipe"] == "fast-cifar"
    # 100 images at batch 64 are one step per epoch (all 160 would be two): the runs fitted the subset.
    summaries = [json.loads(p.read_text()) for p in (tmp_path / "deg" / "runs").glob("*/summary.json")]
    assert len(summaries) == 8 and {s["steps"] for s in summaries} == {2}
    assert set(errors) == {"plain20", "plain32", "residual20", "residual32"}
    assert all(0 <= e <= 1 for v in errors.values() for e in v["train"] + v["test"])

    # --reuse-runs: the finished runs are read back, not trained again, and give the same numbers.
    import resnets.analysis.experiments.sweep as sweep_module

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(sweep_module, "train", no_training)
    again = Settings(out=tmp_path / "deg", reuse_runs=True, **deg, **common)
    run_experiment("degradation", again)
    reread = _check_outputs(tmp_path / "deg", "degradation")
    assert reread["results"]["errors"] == errors
    assert reread["environment"]["runs"] == 8 and reread["environment"]["runs_reused"] == 8
    monkeypatch.undo()

    run_experiment("gradients", Settings(out=tmp_path / "grad", depths=[20], budget=2, **common))
    grad = _check_outputs(tmp_path / "grad", "gradients")["results"]
    runs = grad["runs"]
    corr = grad["gradient_correlation"]
    assert set(corr["conv"]) == {"plain 20", "residual 20", "highway 20"} and len(corr["mlp"]) == 9
    assert all(len(v) == 2 and all(-1 <= c <= 1 for c in v) for f in corr.values() for v in f.values())
    assert len(runs["conv/plain20"][0]["init"]) == 20 and len(runs["mlp/highway100"][0]["init"]) == 101
    for seeds in runs.values():
        for r in seeds:  # a diverged run (NaN loss) has no gradients after training, and says so
            after = [] if r["diverged"] else r["trained"]
            assert all(math.isfinite(n) and n >= 0 for n in r["init"] + after)
            assert not r["diverged"] or all(math.isnan(n) for n in r["trained"])

    run_experiment("highway", Settings(out=tmp_path / "hw", depths=[3, 10], budget=2.0, **common))
    gates = _check_outputs(tmp_path / "hw", "highway")["results"]["gate_means"]
    assert len(gates["10"][0]) == 9 and all(0 < g < 1 for g in gates["10"][0])

    run_experiment("skip-dynamics", Settings(out=tmp_path / "dyn", depths=[20], budget=10.0, **common))
    dyn = _check_outputs(tmp_path / "dyn", "skip-dynamics")
    histories = dyn["results"]["histories"]
    assert dyn["results"]["stages"] == {"layer1": [0, 1, 2], "layer2": [3, 4, 5], "layer3": [6, 7, 8]}
    assert {"skip_dynamics_layer1.png", "skip_dynamics_layer3.png"} <= set(dyn["figures"])
    assert len(histories["residual"][0]) >= 2 and len(histories["highway"][0][0]["gate"]) == 9
    assert histories["residual"][0][0]["step"] == 0  # the net as initialised is probed too
    assert dyn["results"]["shipped"]["weights"] == "resnet20.cifar10"  # where a complete schedule ends
    assert "Trained to the end (the shipped resnet20.cifar10" in dyn["verdict"]


def test_cli_lists_experiments_and_runs_one(tmp_path, capsys) -> None:
    assert set(EXPERIMENTS) == {
        "degradation",
        "gradients",
        "highway",
        "skip-dynamics",
        "lesion",
        "landscape",
        "normfree",
        "shortcuts",
        "skip-span",
        "backprop",
        "reproduce",
    }
    out = tmp_path / "bp"
    assert main(["experiment", "backprop", "--quick", "--budget", "0.2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "agree with autograd" in printed and (out / "report.md").is_file()
    with pytest.raises(SystemExit):
        main(["experiment", "nonsense"])
    with pytest.raises(SystemExit):
        main(["reproduce", "he2016-cifar", "--depths", "20,x"])


def test_a_rerun_replaces_its_own_runs_and_keeps_other_experiments_runs(tmp_path) -> None:
    # Two processes running other seeds into one OUT must not delete each other's runs.
    settings = Settings(out=tmp_path / "bp", quick=True, budget=0.2)
    run_experiment("backprop", settings)
    other = tmp_path / "bp" / "runs" / "resnet56-s9"
    other.mkdir()
    (other / "metrics.jsonl").write_text("{}\n")
    report, _ = run_experiment("backprop", settings)  # its finished runs are trained again, not refused
    assert (other / "metrics.jsonl").read_text() == "{}\n"
    assert "agree with autograd" in report.verdict


def test_landscape_verdict_on_constructed_numbers() -> None:
    smooth = {"basin_rise": [0.10, 0.12, 0.11], "basin": 0.4, "nonconvex": 0.02, "ratio": 0.01}
    rough = {"basin_rise": [0.90, 1.10, 1.00], "basin": 0.4, "nonconvex": 0.30, "ratio": 0.20}
    said = landscape_verdict(smooth, rough, 56)
    assert "plain56's loss rises 1.000 at 0.4 filter norms" in said and "against resnet56's 0.110" in said
    assert "(beyond the spread over directions)" in said and "30.0% of its 2-D slice" in said
    assert said.endswith("steeper and less convex, as Li et al. found.")
    assert "not rougher at depth 20" in landscape_verdict(rough, smooth, 20)
    mixed = {**rough, "nonconvex": 0.0}
    assert "rougher on 2 of the 3 measures" in landscape_verdict(smooth, mixed, 20)


def test_basin_is_the_farthest_step_where_every_slice_is_below_chance() -> None:
    line = [-1.0, -0.5, 0.0, 0.5, 1.0]
    calm = [[2.0, 0.6, 0.2, 0.5, 2.1], [1.9, 0.4, 0.2, 0.3, 1.5]]
    assert basin_distance(line, [calm], chance=2.3) == 1.0  # every loss below ln 10
    wild = [[9.0, 0.9, 0.5, 2.2, 7.0]]  # leaves the basin past ±0.5 on the plain net
    assert basin_distance(line, [calm, wild], chance=2.3) == 0.5
    assert basin_distance(line, [[[9.0, 3.0, 0.5, 2.2, 7.0]]], chance=2.3) == 0.5  # at least one step
    # (0.6 + 0.5) / 2 − 0.2 and (0.4 + 0.3) / 2 − 0.2 by hand; at 1.0: (2.0 + 2.1) / 2 − 0.2
    assert rise_at(line, calm, 0.5) == pytest.approx([0.35, 0.15])
    assert rise_at(line, calm, 1.0)[0] == pytest.approx(1.85)


def test_barrier_is_the_largest_excess_over_the_chord() -> None:
    alphas = [-0.25, 0.0, 0.5, 1.0, 1.25]
    # At α = 0.5 the chord between 2 and 1 is 1.5, the loss 3: a bump of 1.5; outside [0, 1] is ignored.
    assert barrier(alphas, [9.0, 2.0, 3.0, 1.0, 5.0]) == pytest.approx(1.5)
    assert barrier(alphas, [9.0, 2.0, 1.2, 1.0, 5.0]) == 0.0  # below the chord all the way


def test_landscape_of_the_shipped_nets_on_tiny_data(tmp_path, data_dir, monkeypatch) -> None:
    small = {
        "images": 48,
        "line": 5,
        "grid": 5,
        "directions": 2,
        "hessian_images": 16,
        "iters": 3,
        "alphas": 7,
    }
    monkeypatch.setattr(landscape_module, "QUICK", small)
    settings = Settings(out=tmp_path / "land", data_dir=data_dir, precision="fp32", depths=[56, 20])
    report, _ = run_experiment("landscape", settings)
    results = _check_outputs(tmp_path / "land", "landscape")["results"]
    assert set(results) == {"20", "56"}
    for depth in ("20", "56"):
        for kind in ("residual", "plain"):
            r = results[depth][kind]
            assert len(r["slices"]) == 2 and all(len(s) == 5 for s in r["slices"])
            assert len(r["grid"]) == 5 and r["grid"][2][2] == pytest.approx(r["loss"])  # the centre is θ
            assert r["slices"][0][2] == pytest.approx(r["loss"]) and 0 <= r["nonconvex"] <= 1
            assert r["lambda_max"] >= r["lambda_min"]
            assert r["basin"] in r["line"] and len(r["basin_rise"]) == 2
            line = r["interpolation"]
            assert line["from"].startswith("a fresh initialisation") and len(line["losses"]) == 7
            assert line["alphas"][0] == -0.25 and line["alphas"][-1] == 1.25 and line["barrier"] >= 0
    assert report.verdict.index("plain20's loss") < report.verdict.index("plain56's loss")
    assert "From depth 20 to 56" in report.verdict
    for figure in ("landscape_1d.png", "landscape_2d.png", "landscape_line.png", "landscape_3d.png"):
        assert (tmp_path / "land" / figure).stat().st_size > 0, figure
    # Every loss was logged as it was computed: a rerun with --reuse-runs evaluates none of them again.
    import resnets.analysis.landscape as tools

    monkeypatch.setattr(tools, "mean_loss", lambda *a, **k: pytest.fail("a logged loss was recomputed"))
    monkeypatch.setattr(
        landscape_module, "hessian_extremes", lambda *a, **k: pytest.fail("Hessian recomputed")
    )
    rerun, _ = run_experiment("landscape", Settings(**{**settings.__dict__, "reuse_runs": True}))
    assert rerun.results["56"]["residual"]["grid"] == results["56"]["residual"]["grid"]
    assert rerun.results["20"]["plain"]["interpolation"] == results["20"]["plain"]["interpolation"]
    from resnets.weights import WEIGHTS

    shipped = next(w for w in WEIGHTS if w.name == "resnet20.cifar10")  # its `resnets eval` accuracy
    error = f"{100 * (1 - shipped.test_accuracy):.2f}"
    assert f"resnet20 | {error} | 7.37" in report.table.replace("  ", " ")  # beside Li et al.'s error


def test_depth_trend_counts_the_measures_on_which_the_gap_grows() -> None:
    def nets(plain: tuple, residual: tuple) -> dict:
        keys = ("basin_rise", "nonconvex", "ratio")
        return {
            "plain": dict(zip(keys, plain, strict=True)),
            "residual": dict(zip(keys, residual, strict=True)),
        }

    results = {
        "20": nets(([0.8, 0.8], 0.41, 0.014), ([1.2, 1.2], 0.52, 0.020)),
        "56": nets(([1.0, 1.0], 0.52, 0.004), ([0.4, 0.4], 0.33, 0.033)),
    }
    said = depth_trend(results, [20, 56])
    # Gaps plain − residual: rise −0.4 → +0.6 (grows), share −0.11 → +0.19 (grows), ratio −0.006 → −0.029.
    assert said.startswith("From depth 20 to 56 (rise in the basin plain 0.8 → 1, residual 1.2 → 0.4;")
    assert said.endswith("rougher than the residual net's on 2 of the 3 measures.")
    results["56"]["plain"]["ratio"] = 0.05
    assert depth_trend(results, [20, 56]).endswith("on all 3 measures, as Li et al. found.")


def test_landscape_line_joins_two_solutions_when_two_seeds_are_trained(
    tmp_path, data_dir, monkeypatch
) -> None:
    small = {
        "images": 32,
        "line": 3,
        "grid": 3,
        "directions": 2,
        "hessian_images": 16,
        "iters": 2,
        "alphas": 5,
    }
    monkeypatch.setattr(landscape_module, "QUICK", small)
    settings = Settings(out=tmp_path / "two", data_dir=data_dir, precision="fp32", budget=0.1, seeds=[0, 1])
    report, _ = run_experiment("landscape", settings)
    for kind, name in (("residual", "resnet20"), ("plain", "plain20")):
        line = report.results["20"][kind]["interpolation"]
        assert line["from"] == f"a second solution ({name}, seed 1)", line["from"]
    assert "a second solution" in " ".join(report.notes)


def test_normfree_verdict_on_constructed_numbers() -> None:
    def r(errors: list[float], diverged: list[bool] | None = None, steps: list[float] | None = None) -> dict:
        return {
            "error": errors,
            "diverged": diverged or [False] * 2,
            "steps_to_target": steps or [100.0, 110.0],
        }

    results = {
        "batchnorm": r([0.30, 0.31]),
        "no-norm": r([1.0, 1.0], [True, True], [math.inf, math.inf]),
        "fixup": r([0.305, 0.312]),
        "skipinit": r([0.40, 0.42], steps=[300.0, 320.0]),
        "rezero": r([0.35, 0.36], steps=[150.0, 160.0]),
    }
    said = normfree_verdict(results, 56)
    assert "resnet56 diverged in 2 of 2 runs against batch norm's 30.50% (as expected)" in said
    assert "Fixup is +0.35 points from batch norm (within a point" in said
    assert "ReZero took 155 steps, Fixup 105 and SkipInit 310: fixup is the fastest." in said
    results["no-norm"] = r([0.31, 0.30])
    results["rezero"]["steps_to_target"] = [50.0, 60.0]
    said = normfree_verdict(results, 56)
    assert "reached 30.50% error" in said and "not the expected failure" in said
    assert "ReZero is the fastest, as Bachlechner et al. found." in said
    for kind in ("fixup", "skipinit", "rezero"):  # a 1-epoch budget: none of them gets there
        results[kind]["steps_to_target"] = [math.inf, 400.0]
    said = normfree_verdict(results, 56)
    assert "so which is fastest is not decided here" in said and "the fastest" not in said
    # Means of the constructed errors, by hand: fixup (0.305 + 0.312) / 2, rezero 0.355, skipinit 0.41.
    assert said.endswith("(by final test error: fixup 30.85%, rezero 35.50%, skipinit 41.00%).")


@pytest.mark.slow
def test_normfree_on_tiny_cifar(tmp_path, data_dir) -> None:
    settings = Settings(
        out=tmp_path / "nf", data_dir=data_dir, depths=[20], seeds=[0], budget=2.0, precision="fp32"
    )
    run_experiment("normfree", settings)
    results = _check_outputs(tmp_path / "nf", "normfree")["results"]
    assert set(results) == {"batchnorm", "no-norm", "fixup", "skipinit", "rezero"}
    assert all(0 <= e <= 1 for r in results.values() for e in r["error"])
    config = (tmp_path / "nf" / "runs" / "rezero20-s0" / "config.yaml").read_text()
    assert "residual_scale: rezero" in config and "norm_layer: identity" in config


def test_shortcuts_verdict_ranks_the_kinds_against_the_table() -> None:
    errors = {
        "identity": [0.20, 0.21],
        "scaled": [0.40, 0.42],
        "gated": [0.25, 0.26],
        "shortcut_gated": [0.22, 0.23],
        "projection": [0.35, 0.36],
        "dropout": [0.90, 0.90],
    }
    assert agreeing_pairs(errors) == (15, 15)  # the paper's order exactly
    said = shortcuts_verdict(errors, 20)
    assert "identity shortcut (20.50% error) beats 5 of the 5 other kinds" in said
    assert "order 15 of the 15 pairs" in said and said.endswith("identity is best, as the paper found.")
    errors["scaled"], errors["identity"] = [0.20, 0.21], [0.40, 0.42]  # swap the two
    # Kept: the 6 pairs among the other four, and identity's and scaling's pairs with dropout (2 of 9).
    assert agreeing_pairs(errors)[0] == 8
    assert "the best here is constant scaling" in shortcuts_verdict(errors, 20)


@pytest.mark.slow
def test_shortcuts_on_tiny_cifar(tmp_path, data_dir) -> None:
    settings = Settings(
        out=tmp_path / "sc", data_dir=data_dir, depths=[20], seeds=[0], budget=1.0, precision="fp32"
    )
    report, _ = run_experiment("shortcuts", settings)
    errors = _check_outputs(tmp_path / "sc", "shortcuts")["results"]["errors"]
    assert set(errors) == {"identity", "scaled", "gated", "shortcut_gated", "projection", "dropout"}
    config = (tmp_path / "sc" / "runs" / "shortcut_gated20-s0" / "config.yaml").read_text()
    assert "skip: shortcut_gated" in config and "gate_bias: -6.0" in config
    assert "fail (> 20)" in report.table


def test_skip_span_cells_wire_the_skips_the_grid_names() -> None:
    layers = span_layers(2, "linear", "projection", width=8)  # k = 3: blocks of 3 layers
    assert len(layers) == 25 and layers[0] == {"width": 8}
    assert layers[1:4] == [
        {"width": 8, "act": "identity"},
        {"width": 8, "act": "identity"},
        {"width": 8, "skips": [[1, "projection"]]},  # a^4 = g(Z^4 + W^(1,4) a^1)
    ]
    assert layers[24] == {"width": 8, "skips": [[22, "projection"]]}
    net = resnets.create_model("skipnet", layers=span_layers(1, "nonlinear", "gated", width=8))
    carried = [layer.carry_source for layer in net.layers]
    assert carried[:5] == [None, None, 1, None, 3] and net.specs[2].act is None  # ReLU between


def test_skip_span_verdict_on_constructed_numbers() -> None:
    def r(loss: list[float]) -> dict:
        return {"train_loss": loss, "test_error": [0.1] * len(loss)}

    results = {
        cell(j, b, k): r([0.10, 0.11])
        for k in ("identity", "projection", "gated", "none")
        for j in (1, 2, 3)
        for b in ("nonlinear", "linear")
    }
    results[cell(3, "nonlinear", "identity")] = r([0.50, 0.52])
    results[cell(3, "nonlinear", "gated")] = r([0.20, 0.21])
    results[cell(3, "nonlinear", "projection")] = r([0.49, 0.53])
    said = span_verdict(results)
    assert "jumping one ReLU layer ends at training loss 0.1050, jumping 3 ReLU layers at 0.5100" in said
    assert "train better than several nonlinear ones, as the seed says" in said
    assert "closes the gap (gated below identity beyond the spread)" in said
    results[cell(3, "nonlinear", "gated")] = r([0.49, 0.53])
    results[cell(3, "linear", "identity")] = r([0.50, 0.53])
    said = span_verdict(results)
    assert (
        "holds only for the single nonlinear layer" in said
        and "does not support the seed's second half" in said
    )


@pytest.mark.slow
def test_skip_span_on_tiny_mnist(tmp_path, data_dir) -> None:
    settings = Settings(out=tmp_path / "span", data_dir=data_dir, seeds=[0], budget=1.0, precision="fp32")
    run_experiment("skip-span", settings)
    results = _check_outputs(tmp_path / "span", "skip-span")["results"]
    assert len(results) == 3 * 3 * 2 + 1
    assert all(0 < r["train_loss"][0] < 10 for r in results.values())  # finite: every run logged its steps


def test_a_loss_cell_says_how_many_runs_diverged() -> None:
    assert loss_cell([0.1, 0.3]) == "0.200 ± 0.141"  # std with ddof 1: √(2 · 0.1²) / 1
    assert loss_cell([0.1, math.inf, 0.3]) == "0.200 ± 0.141 (1 of 3 diverged)"
    assert loss_cell([math.inf, math.inf]) == "2 of 2 diverged"
