"""Training end to end: run directory, exact resume, divergence, Ctrl-C, eval, predict, plot, CLI errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import resnets
from formats import write_mnist
from resnets.cli import main
from resnets.errors import CheckpointError, ConfigError
from resnets.io.weights import load_weights
from resnets.runtime import pick_precision
from resnets.train.checkpoint import load_checkpoint
from resnets.train.engine import TrainingDiverged, TrainingInterrupted
from resnets.train.run import train

SHORT = {"model": {"name": "resnet20"}, "data": {"batch_size": 64}, "run": {"epochs": 2, "quiet": True}}


def _cfg(out: Path, **sections) -> dict:
    cfg = {k: dict(v) for k, v in SHORT.items()}
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    cfg["run"]["out"] = str(out)
    return cfg


@pytest.mark.slow
def test_default_command_trains_digits_to_97_percent_and_writes_the_run_directory(tmp_path) -> None:
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "resnets", "train", "--out", str(run)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "epoch  15/15" in proc.stdout and f"run directory: {run}" in proc.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test_accuracy"] >= 0.97
    for key in (
        "test_accuracy",
        "test_loss",
        "train_accuracy",
        "train_loss",
        "epochs",
        "steps",
        "wall_seconds",
        "images_per_second",
    ):
        assert key in summary
    assert summary["epochs"] == 15 and summary["steps"] == 15 * (1437 // 64)
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "model.safetensors",
        "summary.json",
        "plots/curves.png",
        "checkpoints/last/weights.safetensors",
        "checkpoints/last/state.pt",
        "checkpoints/best/weights.safetensors",
    ):
        assert (run / name).is_file(), name
    assert list(run.glob("events.out.tfevents.*"))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {r["split"] for r in records} >= {"train", "test", "train_step"}
    assert resnets.resolve_config(files=[run / "config.yaml"]).model.name == "resnet20"  # enough to rerun it
    _, meta = load_weights(run / "model.safetensors")
    assert meta.model == "resnet20" and meta.input_size == [1, 8, 8] and meta.classes[3] == "3"


@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_resume_mid_epoch_is_bit_identical(tmp_path, precision) -> None:
    extra = {
        "run": {"precision": precision, "epochs": 3},
        "optim": {"ema_decay": 0.9, "label_smoothing": 0.1},
    }
    straight = train(_cfg(tmp_path / "a", **extra))
    with pytest.raises(TrainingInterrupted, match="Resume with: resnets train --resume"):
        train(_cfg(tmp_path / "b", **extra), stop_after_steps=30)  # 22 steps per epoch: mid-epoch 2
    _, state = load_checkpoint(tmp_path / "b" / "checkpoints" / "last")
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (30, 1, 8)
    resumed = train(resume=tmp_path / "b")
    a, _ = load_weights(tmp_path / "a" / "model.safetensors")
    b, _ = load_weights(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    for key in ("test_accuracy", "test_loss", "train_loss", "train_accuracy", "steps"):
        assert straight.summary[key] == resumed.summary[key], key


def test_divergence_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path) -> None:
    # Fine for one epoch, then the lr jumps by 10^6.
    cfg = _cfg(
        tmp_path / "r", schedule={"name": "multistep", "milestones": [1], "gamma": 1e6}, run={"log_every": 5}
    )
    with pytest.raises(TrainingDiverged, match=r"became NaN or infinite.*last good checkpoint.*--lr"):
        train(cfg)
    weights, state = load_checkpoint(tmp_path / "r" / "checkpoints" / "last")
    assert state["step"] == 22 and all(torch.isfinite(w).all() for w in weights.values())


def test_optimizer_options_train(tmp_path) -> None:
    for i, optim in enumerate(
        [
            {"name": "adamw", "lr": 1e-3, "weight_decay": 0.05, "no_decay_norm_bias": True},
            {"name": "sgd", "nesterov": False, "grad_clip": 1.0, "label_smoothing": 0.1},
        ]
    ):
        result = train(_cfg(tmp_path / str(i), optim=optim, schedule={"name": "onecycle"}, run={"epochs": 1}))
        assert result.summary["test_accuracy"] > 0.2  # learns something in 22 steps


def test_fp16_on_cpu_is_refused_and_auto_picks_a_real_precision() -> None:
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        pick_precision("fp16", torch.device("cpu"))
    from resnets.runtime import cpu_has_bf16

    assert pick_precision("auto", torch.device("cpu")) == ("bf16" if cpu_has_bf16() else "fp32")
    assert pick_precision("auto", torch.device("cpu"), family="mlp") == "fp32"  # measured: bf16 is slower
    assert pick_precision("bf16", torch.device("cpu"), family="mlp") == "bf16"  # an explicit choice stands


def test_mlp_on_mnist_format_and_eval_command(tmp_path, capsys) -> None:
    write_mnist(tmp_path / "data", n_train=128, n_test=32)
    run = tmp_path / "mlp"
    result = train(
        {
            "model": {"name": "highway_mlp", "kwargs": {"depth": 4}},
            "data": {"name": "mnist", "data_dir": str(tmp_path / "data"), "batch_size": 32},
            "run": {"epochs": 1, "out": str(run), "quiet": True},
        }
    )
    assert result.summary["steps"] == 4
    assert main(["eval", str(run), "--data-dir", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    assert '"dataset": "mnist"' in out and (run / "eval_mnist.json").is_file()
    saved = json.loads((run / "eval_mnist.json").read_text())
    assert len(saved["confusion_matrix"]) == 10 and saved["count"] == 32
    # Per class, from the confusion matrix independently: the printed table and the saved figures.
    conf = np.array(saved["confusion_matrix"])
    expected = conf.diagonal() / np.maximum(conf.sum(1), 1)
    assert saved["classes"] == [str(i) for i in range(10)]
    assert saved["per_class_accuracy"] == pytest.approx(expected.tolist(), abs=0)
    worst = int(np.argmin(expected))
    table = out.split("class", 1)[1].splitlines()
    assert table[1].split()[:2] == [str(worst), f"{expected[worst]:.2%}"]
    assert len(repr(saved["loss"]).rstrip("0")) <= 9  # no float32 noise: 6 significant digits


def test_eval_of_a_run_finds_the_data_folder_it_was_trained_on(tmp_path, monkeypatch, capsys) -> None:
    write_mnist(tmp_path / "data", n_train=64, n_test=16)
    monkeypatch.chdir(tmp_path)
    cfg = {"model": {"name": "highway_mlp", "kwargs": {"depth": 2}}, "run": {"epochs": 1, "quiet": True}}
    cfg["data"] = {"name": "mnist", "data_dir": "data", "batch_size": 32}  # relative, as typed
    cfg["run"]["out"] = "run"
    train(cfg)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["eval", str(tmp_path / "run")]) == 0  # no --data-dir: the run's own folder
    assert '"count": 16' in capsys.readouterr().out


def test_imagefolder_training_predict_and_plot(tmp_path, capsys) -> None:
    rng = np.random.default_rng(0)
    for cls, value in (("dark", 40), ("light", 215)):
        for i in range(12):
            img = np.clip(rng.normal(value, 20, size=(12, 12, 3)), 0, 255).astype(np.uint8)
            (tmp_path / "imgs" / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(tmp_path / "imgs" / cls / f"{i}.png")
    run = tmp_path / "run"
    train(
        {
            "model": {"name": "resnet20"},
            "data": {"name": f"imagefolder:{tmp_path / 'imgs'}", "batch_size": 8},
            "run": {"epochs": 3, "out": str(run), "quiet": True},
            "optim": {"lr": 0.05},
        }
    )
    # predict resizes and converts: a big grayscale image works for an RGB 12×12 model.
    probe = tmp_path / "probe.png"
    Image.fromarray(np.full((40, 30), 230, np.uint8)).save(probe)
    assert main(["predict", str(run), str(probe), "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(probe) and len(lines) == 3 and lines[1].strip().endswith(("light", "dark"))
    probs = [float(line.split("%")[0]) for line in lines[1:]]
    assert sum(probs) == pytest.approx(100, abs=0.1)
    assert main(["plot", str(run), str(run), "--out", str(tmp_path / "both.png")]) == 0
    with Image.open(tmp_path / "both.png") as im:
        assert im.size[0] > 500


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--model", "resnet5"], "unknown model 'resnet5'. Did you mean"),
        (["train", "--data", "cifar10", "--data-dir", "{tmp}"], "cifar10 not found in"),
        (["train", "--set", "optim.foo=1"], "unknown config key 'optim.foo'"),
        (["train", "--resume", "{tmp}"], "is not a run directory"),
        (["eval", "{tmp}/evil.pt"], "pickle-based PyTorch file"),
        (["predict", "{tmp}/missing", "x.png"], "does not exist"),
    ],
)
def test_bad_input_exits_2_with_a_message(tmp_path, monkeypatch, capsys, argv, message) -> None:
    monkeypatch.chdir(tmp_path)  # where a run without --out would go (runs/<model>-<data>-<time>)
    torch.save({"w": torch.zeros(1)}, tmp_path / "evil.pt")
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    assert message in capsys.readouterr().err
    # A run that failed before training began leaves no folder that would pass for a run.
    assert list((tmp_path / "runs").glob("*")) == []


def test_a_run_that_fails_in_setup_leaves_an_empty_out_folder_as_it_found_it(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "ok").mkdir()
    argv = ["train", "--data", "cifar10", "--data-dir", str(tmp_path / "ok"), "--quiet"]
    assert main([*argv, "--out", str(out / "new")]) == 2  # no CIFAR-10 there
    assert list(out.iterdir()) == []  # the folder it made is gone
    assert main([*argv, "--out", str(out / "new")]) == 2  # and the same --out is not refused as a run
    assert "cifar10 not found in" in capsys.readouterr().err


def test_existing_run_is_not_overwritten(tmp_path, capsys) -> None:
    train(_cfg(tmp_path / "r", run={"epochs": 1}))
    assert main(["train", "--out", str(tmp_path / "r"), "--quiet"]) == 2
    assert "already holds a run; resume it with --resume" in capsys.readouterr().err


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_resume_finishes(tmp_path) -> None:
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "resnets",
        "train",
        "--out",
        str(run),
        "--epochs",
        "40",
        "--set",
        "run.log_every=1",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Wait on an event, not a guess: the first step's record is written inside the loop, after the
    # handler that turns Ctrl-C into a checkpoint is installed (however slow the machine).
    metrics, deadline = run / "metrics.jsonl", time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.is_file() and '"train_step"' in metrics.read_text():
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 130, err
    assert "interrupted: stopped at step" in err and "error:" not in err  # asked for, not a failure
    assert "checkpoint saved" in err and "--resume" in err
    _, state = load_checkpoint(run / "checkpoints" / "last")
    assert 0 < state["step"] < 40 * 22
    done = subprocess.run(
        [sys.executable, "-m", "resnets", "train", "--resume", str(run), "--quiet"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ},
    )
    assert done.returncode == 0, done.stderr
    assert json.loads((run / "summary.json").read_text())["steps"] == 40 * 22


def test_resume_at_an_epoch_boundary_and_a_finished_run(tmp_path) -> None:
    train(_cfg(tmp_path / "a"))
    with pytest.raises(TrainingInterrupted):
        train(_cfg(tmp_path / "b"), stop_after_steps=22)  # exactly the end of epoch 1
    train(resume=tmp_path / "b")
    a, _ = load_weights(tmp_path / "a" / "model.safetensors")
    b, _ = load_weights(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    before = (tmp_path / "b" / "summary.json").read_text()
    with pytest.raises(ConfigError, match="has already finished"):
        train(resume=tmp_path / "b")
    assert (tmp_path / "b" / "summary.json").read_text() == before


def test_a_validation_split_is_watched_every_epoch_and_the_test_set_touched_once(tmp_path) -> None:
    run = tmp_path / "r"
    summary = train(_cfg(run, data={"batch_size": 64, "val_split": 100}, run={"precision": "fp32"})).summary
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["split"] == "val"] == [1, 2]
    assert not [r for r in records if r["split"] == "test"]  # no per-epoch look at the test set
    assert summary["best"]["split"] == "val"
    # The one test evaluation, at the end, is that of the saved weights (checked through `resnets eval`).
    from resnets.deploy.inference import InferenceOptions

    exact = InferenceOptions(precision="fp32", fuse=False)  # the trainer's own evaluation path
    again = resnets.evaluate(run / "model.safetensors", data="digits", options=exact)
    assert summary["test_accuracy"] == pytest.approx(again["accuracy"], abs=1e-6)


def test_callbacks_see_step_0_of_a_fresh_run_and_every_log_interval(tmp_path) -> None:
    seen: list[tuple[int, torch.Tensor]] = []

    def watch(trainer, log) -> None:
        seen.append((trainer.step, trainer.model.fc.weight.detach().clone()))

    with pytest.raises(TrainingInterrupted):
        train(_cfg(tmp_path / "a", run={"log_every": 10}), stop_after_steps=22, callbacks=[watch])
    assert [step for step, _ in seen] == [0, 10, 20]
    assert not torch.equal(seen[0][1], seen[1][1])  # step 0 is the model before any update
    seen.clear()
    train(resume=tmp_path / "a", callbacks=[watch])  # 2 epochs × 22 steps; no second step 0
    assert [step for step, _ in seen] == [30, 40]


def test_a_run_without_a_terminal_prints_every_log_intervals_record(tmp_path, capsys) -> None:
    cfg = _cfg(tmp_path / "r", run={"log_every": 10, "epochs": 1, "quiet": False})
    train(cfg)
    out = capsys.readouterr().out
    records = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["split"] == "train_step"]
    lines = [line.split() for line in out.splitlines() if line.startswith("  epoch")]
    assert [line[5] for line in lines] == [str(r["step"]) for r in steps] == ["10", "20"]
    assert [line[3] for line in lines] == ["10/22", "20/22"]
    assert [float(line[7]) for line in lines] == pytest.approx([r["loss"] for r in steps], abs=1e-4)


def test_the_plot_of_a_one_epoch_run_draws_its_step_records_and_marks_the_epoch(tmp_path) -> None:
    from resnets.analysis.plots import draw_runs

    train(_cfg(tmp_path / "r", run={"log_every": 5, "epochs": 1}))
    fig = draw_runs([tmp_path / "r"], log_loss=True)
    ax_loss, ax_err = fig.axes[:2]
    lines = {line.get_label().split(" ", 1)[1]: line for line in ax_err.get_lines()}
    steps = lines["train (log interval)"]
    assert list(steps.get_xdata()) == [5, 10, 15, 20]  # a curve, not one point
    assert lines["test (epoch)"].get_marker() == "o" and list(lines["test (epoch)"].get_xdata()) == [22]
    assert ax_loss.get_yscale() == "log" and ax_err.get_yscale() == "linear"
    assert main(["plot", str(tmp_path / "r"), "--log-loss", "--out", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").stat().st_size > 10_000


def test_tensorboard_and_metrics_keep_every_step_across_a_resume(tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = _cfg(tmp_path / "r", run={"log_every": 11})
    with pytest.raises(TrainingInterrupted):
        train(cfg, stop_after_steps=22)
    train(resume=tmp_path / "r")
    events = EventAccumulator(str(tmp_path / "r"))
    events.Reload()
    assert [e.step for e in events.Scalars("test/accuracy")] == [22, 44]
    assert [e.step for e in events.Scalars("train_step/loss")] == [11, 22, 33, 44]
    records = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "test"] == [22, 44]


def test_logged_lr_is_the_one_the_step_used(tmp_path) -> None:
    # quick: one epoch of linear warm-up from 0.1·lr, so step 1 ran at 0.01.
    train(_cfg(tmp_path / "r", run={"log_every": 1, "epochs": 1}))
    first = json.loads((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["step"] == 1 and first["lr"] == pytest.approx(0.01)


def test_max_steps_shortens_the_schedule_and_the_header_says_so(tmp_path, capsys) -> None:
    # quick: 15 epochs × 22 steps planned, 1-epoch warm-up from 0.1·lr, cosine to 0. Cut to 30 steps,
    # the warm-up is round(22 · 30/330) = 2 steps and step 29 (0-based) is at the end of the cosine.
    import math

    train(_cfg(tmp_path / "r", run={"log_every": 1, "epochs": 15, "max_steps": 30, "quiet": False}))
    assert "30 steps (1.36 of 22-step epochs, schedule compressed to fit)" in capsys.readouterr().out
    lrs = [
        r["lr"]
        for r in map(json.loads, (tmp_path / "r" / "metrics.jsonl").read_text().splitlines())
        if r["split"] == "train_step"
    ]
    expected = [0.01, 0.01 + 0.09 / 2] + [0.05 * (1 + math.cos(math.pi * (t - 2) / 28)) for t in range(2, 30)]
    assert lrs == pytest.approx(expected, rel=1e-5)


def test_a_stop_after_divergence_keeps_the_good_checkpoint(tmp_path) -> None:
    cfg = _cfg(
        tmp_path / "r",
        schedule={"name": "multistep", "milestones": [1], "gamma": 1e6},
        run={"log_every": 100},
    )
    with pytest.raises(TrainingDiverged):
        train(cfg, stop_after_steps=30)  # NaN after step 22, not yet seen at a log interval
    weights, state = load_checkpoint(tmp_path / "r" / "checkpoints" / "last")
    assert state["step"] == 22 and all(torch.isfinite(w).all() for w in weights.values())


def test_streaming_image_folder_trains_and_eval_uses_the_runs_split(tmp_path) -> None:
    rng = np.random.default_rng(1)
    for cls, value in (("a", 60), ("b", 190)):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(10):
            img = np.clip(rng.normal(value, 30, size=(10, 14, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(tmp_path / "imgs" / cls / f"{i}.png")
    run = tmp_path / "run"
    result = train(
        {
            "model": {"name": "resnet20"},
            "data": {
                "name": f"imagefolder:{tmp_path / 'imgs'}",
                "batch_size": 4,
                "max_in_memory_mb": 0,
                "workers": 0,
            },
            "run": {"epochs": 1, "out": str(run), "quiet": True, "seed": 3},
        }
    )
    assert result.summary["steps"] == 4  # 16 training images streamed in batches of 4
    # The seed-3 split again, at the run's 10×14 size; unfused, the same arithmetic as the run's own test.
    # The folder is named by the user (--data), never taken from the file's metadata (issue 13).
    with pytest.raises(CheckpointError, match="does not scan a folder a file names"):
        resnets.evaluate(run)
    metrics = resnets.evaluate(
        run, data=f"imagefolder:{tmp_path / 'imgs'}", options=resnets.InferenceOptions(fuse=False)
    )
    assert metrics["count"] == 4 and metrics["accuracy"] == result.summary["test_accuracy"]


def test_build_optimizer_groups_and_types() -> None:
    from resnets.train.config import OptimConfig
    from resnets.train.optim import build_optimizer

    model = resnets.create_model("resnet20")
    adamw = build_optimizer(
        model, OptimConfig(name="adamw", lr=1e-3, weight_decay=0.05, no_decay_norm_bias=True)
    )
    assert isinstance(adamw, torch.optim.AdamW)
    decay, no_decay = adamw.param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    sgd = build_optimizer(model, OptimConfig(nesterov=True, momentum=0.9))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"] and len(sgd.param_groups) == 1


def test_the_fused_sgd_step_is_nesterov_sgd_with_weight_decay_in_float64() -> None:
    # Two steps written out in float64 (PyTorch's SGD: g = grad + wd·p; b = μ·b + g, b₁ = g;
    # Nesterov: p -= lr·(g + μ·b)), against the optimizer resnets builds (fused where the CPU has it).
    from resnets.train.config import OptimConfig
    from resnets.train.optim import build_optimizer

    torch.manual_seed(0)
    net = torch.nn.Linear(5, 3)
    opt = build_optimizer(net, OptimConfig(lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4))
    if torch.__version__ >= "2.4":
        assert opt.defaults["fused"]
    p, buf = net.weight.detach().double().clone(), None
    for step in range(2):
        grad = torch.randn(3, 5, generator=torch.Generator().manual_seed(step))
        net.weight.grad, net.bias.grad = grad.clone(), torch.zeros(3)
        opt.step()
        g = grad.double() + 5e-4 * p
        buf = g if buf is None else 0.9 * buf + g
        p = p - 0.1 * (g + 0.9 * buf)
    assert torch.allclose(net.weight.double(), p, atol=1e-6, rtol=0)


def test_resume_refuses_other_flags_and_top_k_is_checked(tmp_path, capsys) -> None:
    assert main(["train", "--resume", str(tmp_path), "--lr", "0.5"]) == 2
    assert "--resume continues the run exactly as its config.yaml says; drop --lr" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["predict", str(tmp_path), "x.png", "--top-k", "0"])


def _grey_folder(root: Path, classes: dict[str, int], per_class: int = 8, size: int = 12) -> Path:
    rng = np.random.default_rng(0)
    for cls, value in classes.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = np.clip(rng.normal(value, 20, size=(size, size)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / cls / f"{i}.png")
    return root


def test_fine_tuning_starts_from_the_weights_with_a_new_classifier_and_their_normalisation(tmp_path) -> None:
    """`resnets train --weights FILE --data imagefolder:PATH`: the body starts as the file's, the head is
    sized for the folder's classes, grey images are read as RGB and resized to the weights' input, and
    normalised with the weights' mean/std (not the folder's)."""
    from resnets.io.weights import ModelMeta, load_weights, save_weights

    torch.manual_seed(0)
    source = resnets.create_model("resnet20")
    mean, std = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]
    meta = ModelMeta(
        "resnet20", 10, 3, [3, 32, 32], mean, std, [str(i) for i in range(10)], dataset="cifar10"
    )
    save_weights(tmp_path / "pre.safetensors", source.state_dict(), meta)
    images = _grey_folder(tmp_path / "imgs", {"cat": 40, "dog": 120, "eel": 215}, size=20)
    started: dict = {}

    def capture(trainer, log) -> None:  # a plain function is called at step 0 and each log interval
        if trainer.step == 0:
            started.update({k: v.detach().clone() for k, v in trainer.model.state_dict().items()})

    run = tmp_path / "run"
    cfg = resnets.resolve_config(
        flags={
            "model": {"name": "resnet20", "weights": str(tmp_path / "pre.safetensors")},
            "data": {"name": f"imagefolder:{images}", "batch_size": 8},
            "run": {"epochs": 1, "out": str(run), "quiet": True, "compile": False},
            "optim": {"lr": 0.01},
        }
    )
    resnets.train(cfg, callbacks=[capture])
    body = {k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}
    started = {k.removeprefix("_orig_mod."): v for k, v in started.items()}
    for key, value in body.items():
        torch.testing.assert_close(started[key].to(value.dtype), value, rtol=0, atol=0, msg=key)
    tuned, tuned_meta = load_weights(run / "model.safetensors")
    assert tuned["fc.weight"].shape == (3, 64) and tuned_meta.classes == ["cat", "dog", "eel"]
    assert tuned_meta.mean == mean and tuned_meta.std == std and tuned_meta.input_size == [3, 32, 32]
    assert tuned_meta.in_chans == 3  # the folder alone would load as one grey channel


def test_fine_tuning_refuses_weights_of_another_model(tmp_path) -> None:
    from resnets.io.weights import ModelMeta, save_weights

    meta = ModelMeta("plain20", 10, 3, [3, 32, 32], [0.5] * 3, [0.25] * 3, [str(i) for i in range(10)])
    save_weights(tmp_path / "plain.safetensors", resnets.create_model("plain20").state_dict(), meta)
    with pytest.raises(ConfigError, match="holds a plain20"):
        resnets.resolve_config(
            flags={"model": {"name": "resnet20", "weights": str(tmp_path / "plain.safetensors")}}
        )


def test_a_run_records_the_commit_of_the_code_it_ran(tmp_path) -> None:
    # The commit is asked of git here, independently: HEAD's short hash, "+modified" when src/ differs.
    src = Path(resnets.__file__).resolve().parents[1]

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=src).stdout.strip()

    head = git("rev-parse", "--short", "HEAD")
    if not head:
        pytest.skip("resnets is not imported from a git checkout here")
    expected = head + ("+modified" if git("status", "--porcelain", "--", str(src)) else "")
    result = train(_cfg(tmp_path / "r", run={"max_steps": 1, "epochs": 1}))
    assert result.summary["commit"] == expected
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["commit"] == expected
