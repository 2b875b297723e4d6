"""The experiment framework: a sweep reuses finished runs and resumes stopped ones, curves are averaged
over seeds as numpy averages them, the environment names the machine and the runs, and experiments
register by decorator."""

import json
import math

import numpy as np
import pytest

import resnets.analysis.experiments.sweep as sweep_module
from resnets.analysis.experiments import EXPERIMENTS, Experiment, Settings
from resnets.analysis.experiments.registry import experiment
from resnets.analysis.experiments.sweep import RESUMED, REUSED, TRAINED, Net, Run, Sweep, grid, run_config
from resnets.analysis.report import Report, environment, mean_curve, mean_profile, write_report
from resnets.errors import ConfigError
from resnets.registry import Registry
from resnets.runtime import cpu_model
from resnets.train.engine import TrainingInterrupted

TINY = {"model": {"kwargs": {"depth": 2, "width": 8}}}  # a two-layer skipnet: a few ms per step


def _sweep(tmp_path, reuse: bool) -> Sweep:
    settings = Settings(out=tmp_path, reuse_runs=reuse, device="cpu", precision="fp32")
    net = Net("tiny", "skipnet", overrides=TINY)
    return Sweep(settings, [net], [0], recipe="quick", data="digits", steps=6, log_points=6)


def _spy_on_training(monkeypatch) -> list[dict]:
    """Record every call of the sweep's `train` (its keyword arguments) and let it train."""
    calls: list[dict] = []
    real = sweep_module.train

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep_module, "train", spy)
    return calls


def test_a_sweep_resumes_a_stopped_run_and_reuses_a_finished_one(tmp_path, monkeypatch, capsys) -> None:
    sweep = _sweep(tmp_path, reuse=True)
    net, seed = sweep.jobs()[0]
    run_dir = sweep.run_dir(net, seed)
    assert run_dir == tmp_path / "runs" / "tiny-s0"
    # Stop the run the sweep would start after 3 of its 6 steps, as Ctrl-C would.
    cfg = run_config(
        sweep.settings, "skipnet", run_dir, "quick", "digits", seed, steps=6, overrides=TINY, log_points=6
    )
    with pytest.raises(TrainingInterrupted):
        sweep_module.train(cfg, stop_after_steps=3)
    assert not (run_dir / "summary.json").exists()

    calls = _spy_on_training(monkeypatch)
    resumed = sweep.train(net, seed)
    assert resumed.how == RESUMED and calls == [{"resume": run_dir, "quiet": True}]
    assert resumed.result.summary["steps"] == 6
    assert [r["step"] for r in resumed.records("train_step")] == [1, 2, 3, 4, 5, 6]  # none twice

    again = _sweep(tmp_path, reuse=True)
    reused = again.train_all()["tiny"][0]
    assert reused.how == REUSED and len(calls) == 1  # read back: not trained again
    assert reused.result.summary == resumed.result.summary
    env = environment(runs=[*sweep.runs, *again.runs])
    assert env["runs_reused"] == 1
    trained_for = json.loads((run_dir / "summary.json").read_text())["wall_seconds"]
    assert env["runs_train_minutes"] == round(2 * trained_for / 60, 1)  # the run read back counts too
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[run 1/1] tiny seed 0")]
    assert len(said) == 4 and said[1].startswith("[run 1/1] tiny seed 0: resumed, test accuracy")
    assert said[3].startswith("[run 1/1] tiny seed 0: reused")


def test_a_sweep_reuses_runs_given_a_relative_data_folder(tmp_path, monkeypatch) -> None:
    from formats import write_mnist

    write_mnist(tmp_path / "data", n_train=64, n_test=16)
    monkeypatch.chdir(tmp_path)  # the run records the folder as an absolute path; the sweep still matches it
    settings = Settings(
        out=tmp_path / "exp", data_dir="data", reuse_runs=True, device="cpu", precision="fp32"
    )
    net = Net("tiny", "skipnet", overrides=TINY)
    first = Sweep(settings, [net], [0], recipe="quick", data="mnist", steps=2).train_all()["tiny"][0]
    again = Sweep(settings, [net], [0], recipe="quick", data="mnist", steps=2).train_all()["tiny"][0]
    assert (first.how, again.how) == (TRAINED, REUSED)


def test_a_sweep_retrains_without_reuse_or_when_the_config_changed(tmp_path, monkeypatch) -> None:
    _sweep(tmp_path, reuse=False).train_all()
    calls = _spy_on_training(monkeypatch)
    assert _sweep(tmp_path, reuse=False).train_all()["tiny"][0].how == TRAINED  # no --reuse-runs
    longer = _sweep(tmp_path, reuse=True)
    longer.steps = 7
    run = longer.train_all()["tiny"][0]
    assert run.how == TRAINED and run.result.summary["steps"] == 7 and len(calls) == 2


def test_sweep_jobs_run_seeds_outermost_and_group_runs_per_net(tmp_path) -> None:
    nets = grid({"plain": "plain{d}", "residual": "resnet{d}"}, [20, 56], lambda k, d: {"k": f"{k}{d}"})
    assert [n.key for n in nets] == ["plain20", "plain56", "residual20", "residual56"]
    assert nets[1].model == "plain56" and nets[1].overrides == {"k": "plain56"}
    sweep = Sweep(Settings(out=tmp_path), nets[:2], [3, 1], "quick", "digits", run_name="{model}-x-s{seed}")
    assert [(n.key, s) for n, s in sweep.jobs()] == [
        ("plain20", 3),
        ("plain56", 3),
        ("plain20", 1),
        ("plain56", 1),
    ]
    assert sweep.run_dir(nets[0], 3) == tmp_path / "runs" / "plain20-x-s3"
    for net, seed in reversed(sweep.jobs()):  # recorded out of order, grouped back in seed order
        sweep.runs.append(Run(net, seed, sweep.run_dir(net, seed), None, TRAINED))
    assert {k: [r.seed for r in v] for k, v in sweep.by_net().items()} == {
        "plain20": [3, 1],
        "plain56": [3, 1],
    }
    assert Net("seed identity skips", "skipnet").key == "seed identity skips"
    spaced = Sweep(Settings(out=tmp_path), [], [0], "quick", "digits", run_name="{key}")
    assert spaced.run_dir(Net("seed identity skips", "skipnet"), 0).name == "seed-identity-skips"


def test_mean_curve_is_numpy_mean_and_sample_std_up_to_the_shortest_seed() -> None:
    a = [(0, 1.0), (10, 2.0), (20, 4.0), (30, 8.0)]
    b = [(0, 3.0), (10, 2.5), (20, 1.0)]  # this seed diverged and stopped logging early
    c = [(0, 2.0), (10, 6.0), (20, 0.5), (30, 1.0), (40, 1.0)]
    curve = mean_curve([a, b, c])
    values = np.array([[v for _, v in s[:3]] for s in (a, b, c)])
    assert curve.x == [0, 10, 20] and curve.seeds == 3
    np.testing.assert_allclose(curve.mean, values.mean(axis=0))
    np.testing.assert_allclose(curve.std, values.std(axis=0, ddof=1))
    single = mean_curve([a])
    assert single.mean == [1.0, 2.0, 4.0, 8.0] and single.std == [0.0] * 4
    diverged = mean_curve([[(0, 1.0)], [(0, math.inf)]])  # a diverged run's infinite loss: nan spread
    assert diverged.mean == [math.inf] and math.isnan(diverged.std[0])
    profile = mean_profile([[1.0, 3.0], [3.0, 5.0]], first=2)
    assert profile.x == [2, 3] and profile.mean == [2.0, 4.0]
    np.testing.assert_allclose(profile.std, [math.sqrt(2)] * 2)
    with pytest.raises(ValueError, match="at least one curve"):
        mean_curve([])


def test_environment_names_the_cpu_and_counts_the_runs(tmp_path) -> None:
    net = Net("tiny", "skipnet")
    runs = [Run(net, s, tmp_path, None, how) for s, how in enumerate([TRAINED, REUSED, REUSED, RESUMED])]
    env = environment(runs=runs)
    assert env["cpu"] == cpu_model() and env["cpu"]
    assert env["runs"] == 4 and env["runs_reused"] == 2 and env["runs_resumed"] == 1
    for key in ("cpu_bf16", "threads", "torch", "torchvision", "resnets"):
        assert key in env
    assert "runs" not in environment()  # an experiment that did not pass its runs claims no count
    report = Report("x", "T", "resnets experiment x", {}, {}, "| t |", "It holds.", environment=env)
    text = write_report(report, tmp_path / "x").read_text()
    assert f"cpu {cpu_model()}" in text and "runs 4" in text


def test_experiments_register_by_decorator_in_the_listing_order() -> None:
    assert isinstance(EXPERIMENTS, Registry)
    assert list(EXPERIMENTS) == [
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
    ]
    entry = EXPERIMENTS["lesion"]
    assert isinstance(entry, Experiment) and entry.name == "lesion" and "Veit" in entry.summary
    assert entry.run.__module__ == "resnets.analysis.experiments.lesion"
    with pytest.raises(ConfigError, match="Did you mean: lesion"):
        EXPERIMENTS["lesoin"]
    with pytest.raises(ValueError, match="already registered"):
        experiment("lesion", "a second lesion")(entry.run)
