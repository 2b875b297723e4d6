"""Config resolution (recipe → file → flags → --set), validation, recipes and schedules."""

import dataclasses
import json

import pytest
import yaml

from resnets.data import DataRequest
from resnets.errors import ConfigError
from resnets.train import recipes
from resnets.train.config import (
    DataConfig,
    ScheduleConfig,
    build_config,
    load_yaml,
    parse_assignment,
    resolve_config,
)
from resnets.train.optim import LrSchedule
from resnets.train.recipes import RECIPES


def test_layers_apply_in_order(tmp_path) -> None:
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(
        "recipe: he2016-cifar\noptim: {lr: 0.2, weight_decay: 0.0002}\ndata: {batch_size: 64}\n"
    )
    cfg = resolve_config(None, [cfg_file], {"optim": {"lr": 0.3}}, ["optim.lr=0.4", "run.seed=3"])
    assert cfg.recipe == "he2016-cifar" and cfg.data.name == "cifar10"  # from the recipe
    assert cfg.optim.weight_decay == 0.0002 and cfg.data.batch_size == 64  # from the file
    assert cfg.optim.lr == 0.4 and cfg.run.seed == 3  # --set wins over flags, flags over the file


def test_default_is_quick_resnet20_on_digits() -> None:
    cfg = resolve_config()
    assert (cfg.recipe, cfg.model.name, cfg.data.name) == ("quick", "resnet20", "digits")


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("optim.lrr=0.1", "unknown config key 'optim.lrr'; allowed keys under optim: name, lr"),
        ("optim.name=adam", "optim.name must be one of sgd, adamw"),
        ("run.epochs=abc", "run.epochs must be an integer"),
        ("data.batch_size=0", "data.batch_size must be >= 1"),
        ("run.precision=fp8", "run.precision must be one of auto, fp32, bf16, fp16"),
        ("model.name=resnet5", "model.name: unknown model 'resnet5'"),
        ("data.name=cifar-10", "data.name: unknown dataset 'cifar-10'. Did you mean: cifar10, cifar100"),
        ("data.name=imagenet", "data.name: unknown dataset 'imagenet'. Choose one of: digits, cifar10"),
        ("data.batchsize=1", "unknown config key 'data.batchsize'; allowed keys under data: name, data_dir"),
        ("nonsense=1", "unknown config key 'nonsense'"),
        ("lr", "--set expects key.sub=value"),
    ],
)
def test_bad_keys_and_values_name_the_key_and_the_choices(assignment, message) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        resolve_config(assignments=[assignment])


def test_config_files_use_the_safe_loader(tmp_path) -> None:
    evil = tmp_path / "evil.yaml"
    evil.write_text("run: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        resolve_config(files=[evil])
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_config(files=[tmp_path / "missing.yaml"])


def test_assignment_values_are_typed() -> None:
    assert parse_assignment("schedule.milestones=[10, 20]") == {"schedule": {"milestones": [10, 20]}}
    assert parse_assignment("run.compile=true") == {"run": {"compile": True}}
    assert parse_assignment("model.kwargs={gate_bias: -2}") == {"model": {"kwargs": {"gate_bias": -2}}}


def test_he2016_recipe_and_its_schedule_at_the_milestones() -> None:
    cfg = resolve_config("he2016-cifar", flags={"model": {"name": "resnet110"}})
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay, cfg.data.batch_size) == (
        0.1,
        0.9,
        1e-4,
        128,
    )
    assert cfg.run.max_steps == 64000
    lr = LrSchedule(cfg.schedule, 64000, 390)
    # He et al. §4.2: 0.01 for the first 400 iterations (110 layers), 0.1, ÷10 at 32k and 48k.
    values = {t: cfg.optim.lr * lr(t) for t in (0, 399, 400, 31999, 32000, 47999, 48000, 63999)}
    assert values == pytest.approx(
        {0: 0.01, 399: 0.01, 400: 0.1, 31999: 0.1, 32000: 0.01, 47999: 0.01, 48000: 0.001, 63999: 0.001}
    )
    shallow = resolve_config("he2016-cifar")  # resnet20: no warm-up
    assert LrSchedule(shallow.schedule, 64000, 390)(0) == 1.0


def test_densenet_recipe_divides_at_half_and_three_quarters() -> None:
    cfg = resolve_config("densenet-cifar")
    assert cfg.data.batch_size == 64 and cfg.optim.nesterov and cfg.run.epochs == 300
    per_epoch = 782
    lr = LrSchedule(cfg.schedule, 300 * per_epoch, per_epoch)
    assert [lr(e * per_epoch) for e in (0, 149, 150, 224, 225, 299)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01]
    )


def test_a_run_cut_by_max_steps_gets_the_whole_schedule_compressed() -> None:
    # densenet-cifar: divide by 10 at epochs 150 and 225 of 300; a run cut to 1,000 steps of 782-step
    # epochs keeps those points at the same fractions: steps 500 and 750.
    cfg = resolve_config("densenet-cifar")
    lr = LrSchedule(cfg.schedule, 1000, 782, planned_steps=300 * 782)
    assert [lr(s) for s in (0, 499, 500, 749, 750, 999)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    # fast-cifar: 1-epoch warm-up, cosine to 0 over 30; cut to 400 steps of 703: warm-up of 13 steps.
    fast = LrSchedule(resolve_config("fast-cifar").schedule, 400, 703, planned_steps=30 * 703)
    assert fast.warmup_steps == round(703 * 400 / (30 * 703)) == 13
    assert fast(13) == pytest.approx(1.0) and fast(400) == pytest.approx(0.0)
    assert LrSchedule(cfg.schedule, 300 * 782, 782, planned_steps=300 * 782).milestones == [
        150 * 782,
        225 * 782,
    ]


def test_cosine_onecycle_and_linear_warmup_shapes() -> None:
    cos = LrSchedule(ScheduleConfig(name="cosine", unit="step", warmup=10, warmup_factor=0.0), 110, 10)
    assert cos(0) == 0.0 and cos(5) == pytest.approx(0.5) and cos(10) == pytest.approx(1.0)
    assert cos(60) == pytest.approx(0.5) and cos(110) == pytest.approx(0.0)
    one = LrSchedule(
        ScheduleConfig(name="onecycle", unit="fraction", warmup=0.25, warmup_factor=0.04), 100, 10
    )
    assert one(0) == pytest.approx(0.04) and one(25) == pytest.approx(1.0) and one(100) == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("run.checkpoint_every=0", "run.checkpoint_every must be >= 1"),
        ("data.eval_batch_size=0", "data.eval_batch_size must be >= 1"),
        ("data.workers=-1", "data.workers must be >= 0"),
        ("optim.momentum=5", "optim.momentum must be in [0, 1)"),
        ("optim.weight_decay=-1", "optim.weight_decay must be >= 0"),
        ("optim.grad_clip=-1", "optim.grad_clip must be > 0"),
        ("schedule.gamma=-1", "schedule.gamma must be > 0"),
        ("schedule.milestones=[-5]", "schedule.milestones must be >= 0"),
        ("run.device=tpu", "run.device must be auto, cpu, cuda or cuda:N"),
        ("model.kwargs={foo: 1}", "model.kwargs {'foo': 1} do not fit resnet20"),
        ("model.kwargs={num_classes: 3}", "model.kwargs cannot set num_classes"),
    ],
)
def test_out_of_range_values_are_refused_up_front(assignment, message) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_config(assignments=[assignment])
    assert message in str(err.value)


def test_exponent_floats_recipe_flag_precedence_and_kwargs_merge(tmp_path) -> None:
    assert resolve_config(assignments=["optim.lr=1e-3"]).optim.lr == 0.001
    f = tmp_path / "c.yaml"
    f.write_text("recipe: quick\noptim: {lr: 5e-4}\nmodel: {name: skipnet, kwargs: {depth: 4, width: 32}}\n")
    cfg = resolve_config("he2016-cifar", [f], {}, ["model.kwargs.width=64"])
    assert cfg.recipe == "he2016-cifar"  # --recipe is a flag: it sits above the file
    assert cfg.optim.lr == 0.0005 and cfg.model.kwargs == {"depth": 4, "width": 64}


def test_shortened_he2016_run_still_decays() -> None:
    cfg = resolve_config("he2016-cifar", flags={"run": {"epochs": 5, "max_steps": None}})
    lr = LrSchedule(cfg.schedule, 5 * 390, 390)
    assert [lr(0), lr(975), lr(1463)] == pytest.approx([1.0, 0.1, 0.01])


# Every key of the data section, each with a value other than its default.
DATA_KEYS = {
    "name": "cifar10",
    "data_dir": "/data",
    "download": True,
    "val_split": 5000,
    "train_subset": 10000,
    "image_size": 32,
    "channels": 3,
    "skip_bad_images": True,
    "max_in_memory_mb": 64,
    "batch_size": 32,
    "eval_batch_size": 64,
    "augment": False,
    "crop_padding": 2,
    "flip": False,
    "alternate_flips": True,
    "workers": 0,
}
BATCHING_KEYS = {
    "batch_size",
    "eval_batch_size",
    "augment",
    "crop_padding",
    "flip",
    "alternate_flips",
    "workers",
}


def test_the_data_section_is_the_loaders_request_plus_how_batches_are_made() -> None:
    request = [f.name for f in dataclasses.fields(DataRequest)]
    section = [f.name for f in dataclasses.fields(DataConfig)]
    assert issubclass(DataConfig, DataRequest) and section[: len(request)] == request
    assert set(DataConfig.__annotations__) == BATCHING_KEYS  # the loader's fields are declared once
    assert set(section) == set(DATA_KEYS) and set(section) - set(request) == BATCHING_KEYS


def test_every_data_key_is_set_by_assignment_and_by_a_file(tmp_path) -> None:
    cfg = resolve_config(assignments=[f"data.{k}={json.dumps(v)}" for k, v in DATA_KEYS.items()])
    assert {k: getattr(cfg.data, k) for k in DATA_KEYS} == DATA_KEYS
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"data": DATA_KEYS}))
    assert resolve_config(files=[path]).data == cfg.data


def test_a_run_config_saved_before_the_data_fields_moved_still_loads(tmp_path) -> None:
    saved = tmp_path / "config.yaml"  # the data section in the order runs wrote it before
    saved.write_text(
        "recipe: quick\nmodel: {name: resnet20, kwargs: {}}\n"
        "data: {name: digits, data_dir: null, download: false, val_split: 100, batch_size: 64, "
        "eval_batch_size: 512, augment: true, crop_padding: null, flip: null, image_size: null, "
        "skip_bad_images: false, workers: 2, max_in_memory_mb: 4096}\n"
    )
    cfg = build_config(load_yaml(saved))
    assert (cfg.data.val_split, cfg.data.batch_size, cfg.data.max_in_memory_mb) == (100, 64, 4096)
    assert build_config(cfg.to_dict()) == cfg


def test_unknown_recipe_suggests_the_close_one_or_lists_them() -> None:
    with pytest.raises(ConfigError, match=r"unknown recipe 'he2016_cifar'\. Did you mean: he2016-cifar, "):
        resolve_config("he2016_cifar")
    with pytest.raises(ConfigError, match=r"Choose one of: quick, fast-cifar, .* --recipe"):
        resolve_config(files=[], assignments=["recipe=zzz"])


def test_a_recipe_registered_twice_is_refused_and_each_is_a_documented_function() -> None:
    with pytest.raises(ValueError, match="a recipe named 'quick' is already registered"):
        RECIPES.register("quick")(recipes.fast_cifar)
    assert RECIPES["quick"] is recipes.quick
    for name, recipe in RECIPES.items():
        assert recipe.__name__ == name.replace("-", "_") and recipe.__doc__, name


def test_cifar_defaults_to_its_recipe_with_a_5k_validation_split() -> None:
    # He et al. 2016 §4.2 chose on a 45k/5k train/val split; a CIFAR run with no recipe named gets
    # fast-cifar, not the digits recipe, and the test set is evaluated once (see test_train).
    cfg = resolve_config(flags={"data": {"name": "cifar100"}})
    assert (cfg.recipe, cfg.data.name, cfg.data.val_split, cfg.data.batch_size) == (
        "fast-cifar",
        "cifar100",
        5000,
        64,
    )
    for recipe in ("fast-cifar", "he2016-cifar", "he2016b-preact-cifar", "densenet-cifar"):
        assert resolve_config(recipe).data.val_split == 5000, recipe
    assert resolve_config("quick", flags={"data": {"name": "cifar10"}}).recipe == "quick"  # named wins
    assert resolve_config(flags={"data": {"name": "mnist"}}).recipe == "quick"
    assert resolve_config(assignments=["data.name=cifar10", "data.val_split=0"]).data.val_split == 0
