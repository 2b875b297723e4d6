"""Speed levers chosen by measurement (resnets.train.tune), the EMA's warm-up and flip test-time
augmentation: the decisions on constructed timings, the cache against hostile files, numerics kept."""

import json
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnets.models.factory import create_model
from resnets.runtime import TensorBatches, evaluate_batches
from resnets.train import tune
from resnets.train.optim import build_ema, ema_decay_at

KEY = tune.ProbeKey("resnet20", (3, 32, 32), 64, "bf16", "Some CPU", 2, "2.14.1")
LONG, SHORT = 1e6, 1.0  # eager run estimates in seconds: worth probing, not worth it


class FakeProbe:
    """A measurement that records how it was asked and answers with constructed speed-ups."""

    def __init__(self, channels_last: bool = True, compiled: bool = False) -> None:
        self.calls: list[tuple[bool | None, bool]] = []
        self.answer = tune.Levers(channels_last, compiled, {"channels_last": 1.2, "compile": 0.9}, "probed")

    def __call__(self, channels_last: bool | None, try_compile: bool) -> tune.Levers:
        self.calls.append((channels_last, try_compile))
        return tune.Levers(**{**self.answer.__dict__, "speedups": dict(self.answer.speedups)})


def test_levers_given_by_the_user_are_never_measured(tmp_path) -> None:
    fake = FakeProbe()
    levers = tune.choose(False, True, KEY, fake, LONG, tmp_path / "tune.json")
    assert (levers.channels_last, levers.compile, levers.source) == (False, True, "asked") and not fake.calls
    assert not (tmp_path / "tune.json").exists()


def test_auto_levers_are_probed_once_then_cached(tmp_path) -> None:
    cache, fake = tmp_path / "tune.json", FakeProbe(channels_last=False, compiled=True)
    first = tune.choose("auto", "auto", KEY, fake, LONG, cache)
    assert fake.calls == [(None, True)] and first.source == "probed" and not first.channels_last
    again = tune.choose("auto", "auto", KEY, fake, LONG, cache)
    assert len(fake.calls) == 1 and again.source == "cached"
    assert (again.channels_last, again.compile, again.speedups) == (False, True, first.speedups)
    assert again.describe() == "channels_last: off (1.20×), compile: on (0.90×) [cached]"
    other = tune.ProbeKey(**{**KEY.__dict__, "threads": 1})  # another thread count: another answer
    tune.choose("auto", "auto", other, fake, LONG, cache)
    assert len(fake.calls) == 2 and len(json.loads(cache.read_text())) == 2


def test_one_lever_asked_the_other_probed(tmp_path) -> None:
    fake = FakeProbe(channels_last=True, compiled=True)
    levers = tune.choose(True, "auto", KEY, fake, LONG, tmp_path / "tune.json")
    assert fake.calls == [(True, True)] and levers.channels_last and levers.compile
    fake = FakeProbe(channels_last=False, compiled=True)
    levers = tune.choose("auto", False, KEY, fake, LONG, tmp_path / "other.json")
    assert fake.calls == [(None, False)] and not levers.compile  # never compiled against the user's word


def test_a_run_too_short_to_pay_for_the_probe_takes_the_defaults(tmp_path) -> None:
    fake = FakeProbe()
    levers = tune.choose("auto", "auto", KEY, fake, SHORT, tmp_path / "tune.json")
    assert not fake.calls and (levers.channels_last, levers.compile) == (True, False)
    assert levers.source.startswith("default")


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[1, 2]",
        json.dumps({KEY.text(): {"channels_last": "yes", "compile": False}}),
        json.dumps({KEY.text(): {"channels_last": True, "compile": False, "speedups": {"compile": -1}}}),
        json.dumps({KEY.text(): {"channels_last": True, "compile": False}, "pad": "x" * (1 << 20)}),
    ],
    ids=["malformed", "not-a-mapping", "wrong-type", "impossible-ratio", "oversized"],
)
def test_a_hostile_cache_file_costs_a_probe_not_the_run(tmp_path, content) -> None:
    cache, fake = tmp_path / "tune.json", FakeProbe()
    cache.write_text(content)
    assert tune.read_cache(cache) == {}
    assert tune.choose("auto", "auto", KEY, fake, LONG, cache).source == "probed" and fake.calls
    assert KEY.text() in json.loads(cache.read_text())  # rewritten with the fresh answer


def test_the_cache_is_never_read_or_written_through_a_link(tmp_path) -> None:
    target = tmp_path / "elsewhere.json"
    target.write_text(json.dumps({KEY.text(): {"channels_last": False, "compile": True, "speedups": {}}}))
    link = tmp_path / "tune.json"
    os.symlink(target, link)
    assert tune.read_cache(link) == {}
    tune.write_cache(KEY, tune.Levers(True, False), link)
    assert not link.is_symlink() and "elsewhere" not in link.read_text()
    assert json.loads(target.read_text())[KEY.text()]["compile"] is True  # the link's target untouched


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("RESNETS_CACHE_DIR", str(tmp_path / "mine"))
    assert tune.cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("RESNETS_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert tune.cache_dir() == tmp_path / "xdg" / "resnets"


def test_the_probe_leaves_the_model_and_the_random_stream_untouched() -> None:
    model = create_model("resnet20", num_classes=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    levers = tune.probe(model, (3, 16, 16), 4, 10, "fp32", torch.device("cpu"), None, try_compile=False)
    assert torch.equal(torch.rand(3), expected)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert set(levers.speedups) == {"channels_last"} and levers.speedups["channels_last"] > 0
    assert levers.channels_last == (levers.speedups["channels_last"] >= tune.MIN_GAIN)
    assert next(model.parameters()).is_contiguous()  # still in the default layout


def test_probe_key_names_model_options_input_and_machine() -> None:
    key = tune.probe_key(
        "resnet20", {"width": 2, "act": "relu"}, (3, 32, 32), 128, "fp32", torch.device("cpu")
    )
    assert key.text().startswith("resnet20(act=relu,width=2) 3x32x32 batch 128 fp32 on ")
    assert f"{torch.get_num_threads()} threads, torch {torch.__version__}" in key.text()


# ---- the EMA's warm-up -------------------------------------------------------------------------


def test_ema_with_warm_up_matches_a_float64_recurrence() -> None:
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema = build_ema(net, 0.999)
    ema.update_parameters(net)  # the first update copies the weights
    ref = {k: v.double().clone() for k, v in net.state_dict().items()}
    for n in range(1, 8):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        net(torch.randn(8, 3))  # moves the batch norm statistics
        ema.update_parameters(net)
        d = (1 + n) / (10 + n)  # TensorFlow's num_updates warm-up; far below 0.999 this early
        ref = {
            k: (d * ref[k] + (1 - d) * v.double()) if v.is_floating_point() else v.double()
            for k, v in net.state_dict().items()
        }
    for k, v in ema.module.state_dict().items():
        torch.testing.assert_close(v.double(), ref[k], rtol=1e-6, atol=1e-6), k
    assert ema_decay_at(0.999, 10**6) == 0.999


# ---- flip test-time augmentation ---------------------------------------------------------------


def test_flip_tta_averages_the_logits_of_each_image_and_its_mirror() -> None:
    model = create_model("resnet20", num_classes=10).eval().double()
    x = torch.randn(20, 3, 8, 8, dtype=torch.float64)
    y = torch.randint(0, 10, (20,))
    with torch.no_grad():
        logits = 0.5 * (model(x) + model(torch.flip(x, dims=[3])))
    expected_loss = F.cross_entropy(logits, y).item()
    expected_acc = (logits.argmax(1) == y).double().mean().item()
    got = evaluate_batches(model, TensorBatches(x, y, 8, torch.device("cpu")), lambda t: t, 10,
                           torch.device("cpu"), "fp32", flip_tta=True)  # fmt: skip
    assert got["accuracy"] == pytest.approx(expected_acc) and got["loss"] == pytest.approx(expected_loss)
    single = evaluate_batches(model, TensorBatches(x, y, 8, torch.device("cpu")), lambda t: t, 10,
                              torch.device("cpu"), "fp32")  # fmt: skip
    assert single["loss"] != pytest.approx(expected_loss)


# ---- end to end: a training run and `resnets bench --tune` ------------------------------------


def test_a_long_enough_run_probes_its_auto_layout_and_the_next_run_reuses_it(tmp_path, monkeypatch) -> None:
    from resnets.train.run import train

    monkeypatch.setattr(tune, "PAYBACK", 0)  # the 2-epoch digits run counts as long enough
    cfg = {
        "model": {"name": "resnet20"},
        "data": {"batch_size": 64},
        "run": {"epochs": 1, "quiet": True, "compile": False, "precision": "fp32"},
    }
    first = train({**cfg, "run": {**cfg["run"], "out": str(tmp_path / "a")}})
    assert first.summary["speed_levers"].endswith("[probed]")
    assert (
        first.summary["speed_levers"].startswith("channels_last: ")
        and "compile: off" in first.summary["speed_levers"]
    )
    second = train({**cfg, "run": {**cfg["run"], "out": str(tmp_path / "b")}})
    assert second.summary["speed_levers"].endswith("[cached]")
    asked = train({**cfg, "run": {**cfg["run"], "out": str(tmp_path / "c"), "channels_last": False}})
    assert asked.summary["speed_levers"] == "channels_last: off, compile: off [asked]"
    # the layout never changes the numbers beyond the precision asked for: fp32 either way
    assert abs(first.summary["test_loss"] - asked.summary["test_loss"]) < 1e-3


def test_bench_tune_caches_the_answer_train_looks_up(capsys) -> None:
    from resnets.cli import main

    assert main(["bench", "--tune", "--smoke", "--models", "resnet20", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    assert "precision auto = " in out and "resnet20 3x32x32 batch 4 " in out
    key = tune.probe_key("resnet20", {}, (3, 32, 32), 4, out.split("batch 4 ")[1].split()[0],
                         torch.device("cpu"), "auto", False)  # fmt: skip
    entry = tune.read_cache()[key.text()]
    assert entry["compile"] is False and "channels_last" in entry["speedups"]
