"""The `resnets` command line: a thin shell over the library (each command calls one function).

Over 400 lines on purpose: it is one argparse parser per command with its flags and help text beside
the few lines that call the library; split per command, a flag's definition and its use would sit in
different files for no gain in what any one piece does.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from resnets.errors import ConfigError, ResnetsError, TrainingInterrupted, printable
from resnets.info import ModelInfo, model_info
from resnets.io.atomic import write_text
from resnets.registry import list_models
from resnets.weights import weights_for

_COLUMNS = ("name", "params", "FLOPs", "input", "depth", "skip", "weights", "paper")


def _si(n: float) -> str:
    """1234567 -> '1.23M': three significant digits with a K/M/G/T suffix."""
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{suffix}"
    return f"{n:.3g}"


def _row(info: ModelInfo) -> tuple[str, ...]:
    c, h, w = info.input_size
    return (
        info.name,
        f"{info.params:,}",
        _si(info.flops),
        f"{c}x{h}x{w}",
        str(info.depth),
        info.skip,
        ",".join(info.weights) or "-",
        info.paper,
    )


def format_models_table(infos: Sequence[ModelInfo], fmt: str = "table") -> str:
    """Render model facts as an aligned text table, a Markdown table or JSON lines."""
    if fmt == "json":
        return "\n".join(json.dumps(i.as_dict()) for i in infos)
    rows = [_COLUMNS, *(_row(i) for i in infos)]
    if fmt == "markdown":
        lines = ["| " + " | ".join(r) + " |" for r in rows]
        lines.insert(
            1, "|" + "|".join("---:" if c in ("params", "FLOPs", "depth") else "---" for c in _COLUMNS) + "|"
        )
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
    right = {1, 2, 4}
    return "\n".join(
        "  ".join(
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()
        for r in rows
    )


def cmd_models(args: argparse.Namespace) -> int:
    """`resnets models [PATTERN]`: every registered model with counted parameters and FLOPs."""
    names = list_models(args.pattern)
    if args.pretrained:
        names = [n for n in names if weights_for(n)]
    if not names:
        which = "with shipped weights " if args.pretrained else ""
        print(
            f"no model {which}matches {args.pattern or '*'!r}; `resnets models` lists them all",
            file=sys.stderr,
        )
        return 1
    print(format_models_table([model_info(n) for n in names], args.format))
    return 0


# `resnets train` flags and the config keys they set (flags sit above --config files, below --set).
_TRAIN_FLAGS = {
    "model": "model.name",
    "weights": "model.weights",
    "data": "data.name",
    "data_dir": "data.data_dir",
    "download": "data.download",
    "val_split": "data.val_split",
    "skip_bad_images": "data.skip_bad_images",
    "batch_size": "data.batch_size",
    "lr": "optim.lr",
    "epochs": "run.epochs",
    "max_steps": "run.max_steps",
    "seed": "run.seed",
    "precision": "run.precision",
    "device": "run.device",
    "out": "run.out",
    "compile": "run.compile",
    "channels_last": "run.channels_last",
    "quiet": "run.quiet",
    "sync_bn": "run.sync_bn",
}


def _flags_to_layer(args: argparse.Namespace) -> dict:
    layer: dict = {}
    for flag, key in _TRAIN_FLAGS.items():
        value = getattr(args, flag, None)
        if value is None:
            continue
        section, name = key.split(".")
        layer.setdefault(section, {})[name] = value
    return layer


def cmd_train(args: argparse.Namespace) -> int:
    """`resnets train`: resolve the config (recipe, files, flags, --set) and train."""
    from resnets.api import train
    from resnets.train.config import resolve_config
    from resnets.train.engine import SUMMARY_KEYS

    if args.nproc is not None:
        from resnets.train.distributed import launch

        return launch(args.nproc, args.argv)
    if args.resume:
        given = [
            f"--{k.replace('_', '-')}"
            for k in _TRAIN_FLAGS
            if k != "quiet" and getattr(args, k, None) is not None
        ]
        given += (
            ["--config"] * bool(args.config) + ["--set"] * bool(args.set) + ["--recipe"] * bool(args.recipe)
        )
        if given:
            raise ConfigError(
                f"--resume continues the run exactly as its config.yaml says; drop {', '.join(given)} "
                "(or start a new run with them)"
            )
        result = train(resume=args.resume, quiet=args.quiet)
    else:
        cfg = resolve_config(args.recipe, args.config or [], _flags_to_layer(args), args.set or [])
        result = train(cfg)
    if int(os.environ.get("RANK", "0") or 0) != 0:  # under torchrun, rank 0 reports for the job
        return 0
    s = result.summary
    print(json.dumps({k: s[k] for k in SUMMARY_KEYS}, indent=1))
    print(f"run directory: {result.run_dir}")
    return 0


def _inference_options(args: argparse.Namespace) -> Any:
    from resnets.deploy.inference import InferenceOptions

    return InferenceOptions(
        precision=args.precision, channels_last=args.channels_last, fuse=args.fuse, compile=args.compile
    )


def _add_inference_flags(p: argparse.ArgumentParser, precision: str) -> None:
    p.add_argument(
        "--device", default="auto" if precision == "auto" else "cpu", help="auto | cpu | cuda | cuda:N"
    )
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "fp16"),
        default=precision,
        help=f"autocast precision (default {precision}; auto: bf16 where the device has it natively, "
        "else fp16 on CUDA, fp32 on a CPU)",
    )
    p.add_argument(
        "--compile", action="store_true", help="torch.compile with frozen weights (~1 min to compile)"
    )
    p.add_argument("--no-fuse", dest="fuse", action="store_false", help="keep batch norms separate")
    p.add_argument(
        "--no-channels-last", dest="channels_last", action="store_false", help="keep NCHW memory format"
    )


def _file_part(name: str, limit: int = 60) -> str:
    """`name` as part of a file name: letters, digits, '.', '-' and '_' only, at most `limit` long."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:limit].lstrip(".") or "data"


def cmd_eval(args: argparse.Namespace) -> int:
    """`resnets eval`: metrics of a saved model on a dataset's test split, printed and saved."""
    from resnets.deploy.inference import evaluate, weights_path
    from resnets.weights import is_weights_name

    metrics = evaluate(
        args.path,
        data=args.data,
        data_dir=args.data_dir,
        device=args.device,
        options=_inference_options(args),
        flip_tta=args.tta == "flip",
    )
    long = ("confusion_matrix", "per_class_accuracy", "classes")
    print(json.dumps({k: v for k, v in metrics.items() if k not in long}, indent=1))
    print(per_class_table(metrics))
    views = "_flip_tta" if args.tta == "flip" else ""
    name = f"eval_{_file_part(metrics['dataset'])}{views}.json"
    # Beside the weights, except shipped ones: the installed package is not the user's to write in.
    out = (
        Path(f"{args.path}_{name}") if is_weights_name(args.path) else weights_path(args.path).with_name(name)
    )
    if out.is_symlink():
        raise ConfigError(
            f"{out} is a symbolic link; resnets replaces its own files and never writes through a link. "
            "Remove the link and evaluate again"
        )
    write_text(out, json.dumps(metrics, indent=1) + "\n")
    print(f"saved {out}")
    return 0


def per_class_table(metrics: dict[str, Any]) -> str:
    """Accuracy and image count of each class, worst first: where a model goes wrong."""
    rows = [
        (acc, printable(str(name))[:40], sum(row))
        for name, acc, row in zip(
            metrics["classes"], metrics["per_class_accuracy"], metrics["confusion_matrix"], strict=True
        )
    ]
    width = max([5, *(len(name) for _, name, _ in rows)])
    lines = [f"{'class':<{width}}  accuracy  images"]
    lines += [f"{name:<{width}}  {acc:8.2%}  {count:6d}" for acc, name, count in sorted(rows)]
    return "\n".join(lines)


def cmd_predict(args: argparse.Namespace) -> int:
    """`resnets predict`: top-k classes of image files."""
    from resnets.deploy.inference import predict

    options = _inference_options(args)
    for p in predict(args.path, args.images, top_k=args.top_k, options=options, device=args.device):
        print(printable(p.file))
        for name, prob in p.top:
            print(f"  {prob:7.2%}  {printable(name)}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """`resnets export`: a saved model as ONNX, TorchScript or a torch.export program, parity-checked."""
    from resnets.deploy.export import export_model

    r = export_model(args.path, args.format, args.out, opset=args.opset, fuse=args.fuse)
    opset = f", opset {r.opset}" if r.opset is not None else ""
    print(f"wrote {r.path}")
    print(f"format: {r.format}{opset}, batch norms {'folded' if r.fused else 'kept'}, dynamic batch size")
    sizes = ", ".join(map(str, r.batch_sizes))
    print(
        f"parity: max |diff| {r.max_abs_diff:.3g} against the PyTorch fp32 model on batch sizes {sizes} "
        f"(tolerance {r.tolerance:.3g})"
    )
    if r.format == "torchscript":
        print("note: PyTorch deprecates TorchScript; prefer --format exported-program or onnx")
    return 0


def cmd_import_weights(args: argparse.Namespace) -> int:
    """`resnets import-weights`: a torchvision/timm state_dict as a resnets model file."""
    from resnets.deploy.convert import import_weights_file

    report = import_weights_file(
        args.file, args.model, args.out, allow_partial=args.allow_partial, num_classes=args.num_classes
    )
    print(report.summary())
    print(f"wrote {args.out}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    """`resnets plot`: loss and error curves of one or more runs on one figure."""
    from resnets.analysis.plots import plot_runs

    out = args.out or str(Path(args.runs[0]) / "plots" / "curves.png")
    print(f"wrote {plot_runs(args.runs, out, log_loss=args.log_loss)}")
    return 0


def _experiment_settings(args: argparse.Namespace, name: str) -> Any:
    from resnets.analysis.experiments import Settings

    out = Path(args.out) if args.out else Path("experiments") / (name + ("-quick" if args.quick else ""))
    return Settings(
        quick=args.quick,
        out=out,
        data=getattr(args, "data", None),
        data_dir=args.data_dir,
        seeds=args.seeds,
        depths=args.depths,
        budget=args.budget,
        subset=args.subset,
        device=args.device,
        precision=args.precision,
        recipe=getattr(args, "recipe", None),
        cpu=getattr(args, "cpu", False),
        reuse_runs=args.reuse_runs,
        argv=["resnets", *sys.argv[1:]],
    )


def cmd_experiment(args: argparse.Namespace) -> int:
    """`resnets experiment NAME`: run one experiment, write results.json, figures and report.md."""
    from resnets.analysis.experiments import run_experiment

    report, path = run_experiment(args.name, _experiment_settings(args, args.name))
    print(report.table)
    print()
    print(report.verdict)
    print(f"report: {path}")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    """`resnets reproduce RECIPE`: a paper's recipe, our error beside the paper's."""
    from resnets.analysis.experiments import run_experiment

    report, path = run_experiment("reproduce", _experiment_settings(args, f"reproduce-{args.recipe}"))
    print(report.table)
    print()
    print(report.verdict)
    print(f"report: {path}")
    return 0


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, e.g. 20,32,44,56; got {text!r}"
        ) from None


def _add_experiment_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--quick",
        action="store_true",
        help="the short CPU setting: a minute (backprop) to about half an hour (degradation) on 2 cores "
        "(default: the paper's protocol, a GPU job)",
    )
    p.add_argument("--budget", type=float, help="training epochs per run (fractions allowed)")
    p.add_argument(
        "--subset",
        type=int,
        metavar="N",
        help="degradation: fit a class-balanced subset of N training images (quick default 5000; 0: all)",
    )
    p.add_argument("--depths", type=_int_list, help="comma-separated depths, e.g. 20,32,44,56")
    p.add_argument(
        "--seeds",
        type=_int_list,
        help="comma-separated seeds (default 0,1,2; 0,1 in quick gradients, highway, paper-recipe runs)",
    )
    p.add_argument("--data-dir", help="folder holding the dataset files")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "fp16"),
        default="auto",
        help="training precision of every run (default auto)",
    )
    p.add_argument("--out", help="experiment directory (default experiments/NAME[-quick])")
    p.add_argument(
        "--reuse-runs",
        action="store_true",
        help="continue an interrupted experiment: keep runs in OUT/runs that finished with the same config, "
        "resume stopped ones, and read back the losses landscape logged in OUT",
    )


def cmd_bench(args: argparse.Namespace) -> int:
    """`resnets bench`: training and inference images/s per model and mode, beside the matmul peak."""
    from resnets.deploy.bench import DEFAULT_MODELS, SMOKE_MODELS, run_benchmark

    if args.tune:
        from resnets.train.tune import tune_models

        seconds, compiled = (0.2, False) if args.smoke else (1.5, True)
        tune_models(
            args.models or ["resnet20"], batch=args.batch_size or 128, seconds=seconds, try_compile=compiled
        )
        return 0
    run_benchmark(
        args.models or list(SMOKE_MODELS if args.smoke else DEFAULT_MODELS),
        args.modes,
        smoke=args.smoke,
        batch=args.batch_size,
        steps=args.steps,
    )
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(prog="resnets", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("models", help="list models with parameters, FLOPs, depth, skip kind and paper")
    p.add_argument("pattern", nargs="?", default=None, help="glob on model names, e.g. 'resnet*' or '*56'")
    p.add_argument(
        "--format",
        choices=("table", "markdown", "json"),
        default="table",
        help="output format (default table)",
    )
    p.add_argument("--pretrained", action="store_true", help="only models with shipped weights")
    p.set_defaults(func=cmd_models)

    from resnets.train.recipes import RECIPES

    t = sub.add_parser("train", help="train a model (default: resnet20 on the bundled digits)")
    t.add_argument(
        "--recipe",
        choices=list(RECIPES),
        default=None,
        help="named recipe (default: fast-cifar for cifar10/cifar100, quick otherwise)",
    )
    t.add_argument("--config", action="append", metavar="FILE.yaml", help="config file(s), applied in order")
    t.add_argument("--model", help="model name (see `resnets models`)")
    t.add_argument(
        "--weights",
        help="start from these weights (fine-tuning): shipped ones (cifar10, resnet20.cifar10) or a "
        "resnets .safetensors file; other classes get a new classifier",
    )
    t.add_argument("--data", help="digits | cifar10 | cifar100 | mnist | fashion-mnist | imagefolder:PATH")
    t.add_argument("--data-dir", help="folder holding the dataset files")
    t.add_argument("--download", action="store_true", default=None, help="download the dataset if missing")
    t.add_argument("--val-split", type=int, help="hold out N training images for validation")
    t.add_argument("--skip-bad-images", action="store_true", default=None, help="skip unreadable image files")
    t.add_argument("--epochs", type=_positive_int, help="training epochs (default: the recipe's)")
    t.add_argument(
        "--max-steps",
        type=_positive_int,
        help="stop after N optimizer steps; the recipe's schedule is compressed to fit",
    )
    t.add_argument("--batch-size", type=_positive_int, help="images per step (default: the recipe's)")
    t.add_argument("--lr", type=float, help="peak learning rate (default: the recipe's)")
    t.add_argument(
        "--seed", type=int, help="seed of the initial weights, data order and augmentation (default 0)"
    )
    t.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "fp16"),
        help="autocast precision (default auto: bf16 where the device has it natively, else fp16 on CUDA, "
        "fp32 on a CPU)",
    )
    t.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    levers = "(default: timed on first use of the model and machine, then cached; `resnets bench --tune`)"
    t.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"torch.compile the model {levers}",
    )
    t.add_argument(
        "--channels-last",
        dest="channels_last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"NHWC memory format for conv nets {levers}",
    )
    t.add_argument("--out", help="run directory (default runs/<model>-<data>-<time>)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run exactly where it stopped")
    t.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override any config key, e.g. optim.lr=0.05"
    )
    t.add_argument("--quiet", action="store_true", default=None, help="print only the final summary")
    t.add_argument(
        "--sync-bn", action="store_true", default=None, help="multi-process: batch norm over the global batch"
    )
    t.add_argument(
        "--nproc",
        type=int,
        metavar="N",
        help="train in N processes on this machine (shortcut for torchrun --standalone --nproc_per_node=N)",
    )
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a saved model on a dataset's test split")
    e.add_argument(
        "path", help="run directory, model .safetensors file, or shipped weights (resnet20.cifar10)"
    )
    e.add_argument("--data", help="dataset (default: the one it was trained on)")
    e.add_argument("--data-dir", help="folder holding the dataset files (default: the one the run recorded)")
    e.add_argument(
        "--tta",
        choices=("none", "flip"),
        default="none",
        help="test-time augmentation: flip averages each image with its mirror image (default: one view)",
    )
    _add_inference_flags(e, precision="auto")
    e.set_defaults(func=cmd_eval)

    pr = sub.add_parser("predict", help="classify image files with a saved model")
    pr.add_argument(
        "path",
        help="run directory, model .safetensors file, shipped weights (resnet20.cifar10), or .onnx file "
        "from `resnets export` (CPU, fp32)",
    )
    pr.add_argument("images", nargs="+", help="image files")
    pr.add_argument("--top-k", type=_positive_int, default=5, help="how many classes to show")
    _add_inference_flags(pr, precision="fp32")
    pr.set_defaults(func=cmd_predict)

    from resnets.deploy.export import FORMATS

    xp = sub.add_parser(
        "export", help="write a saved model as ONNX, TorchScript or a torch.export program (parity-checked)"
    )
    xp.add_argument(
        "path", help="run directory, model .safetensors file, or shipped weights (resnet20.cifar10)"
    )
    xp.add_argument("--format", choices=list(FORMATS), required=True, help="what to write")
    xp.add_argument(
        "--out", help="output file (default: beside the weights, model.onnx / .torchscript.pt / .pt2)"
    )
    xp.add_argument("--opset", type=_positive_int, help="ONNX opset (default: the exporter's)")
    xp.add_argument("--no-fuse", dest="fuse", action="store_false", help="keep batch norms separate")
    xp.set_defaults(func=cmd_export)

    iw = sub.add_parser(
        "import-weights", help="convert a torchvision/timm state_dict into a resnets model file"
    )
    iw.add_argument("file", help=".safetensors, or .pth/.pt read with torch.load(weights_only=True)")
    iw.add_argument("--model", required=True, help="resnets model name (see `resnets models`)")
    iw.add_argument("--out", required=True, help="model .safetensors file to write")
    iw.add_argument("--num-classes", type=_positive_int, help="classes (default: the file's classifier)")
    iw.add_argument(
        "--allow-partial", action="store_true", help="load the matching tensors even if some are missing"
    )
    iw.set_defaults(func=cmd_import_weights)

    from resnets.deploy.bench import DEFAULT_MODELS, MODES

    b = sub.add_parser("bench", help="throughput per model and execution mode, against the matmul peak")
    b.add_argument(
        "--models", nargs="+", help=f"model names (default {' '.join(DEFAULT_MODELS)}; with --tune resnet20)"
    )
    b.add_argument(
        "--modes",
        nargs="+",
        default=["fp32", "channels_last", "bf16", "unfused", "auto"],
        choices=list(MODES),
        help="execution modes (compiled takes about a minute per model to compile)",
    )
    b.add_argument("--batch-size", type=_positive_int, help="training batch (default 128; resnet50 32)")
    b.add_argument("--steps", type=_positive_int, help="timed steps per repeat (default 5; resnet50 2)")
    b.add_argument(
        "--smoke",
        action="store_true",
        help="one small model (resnet20 unless --models), batch 8, two steps per mode: checks that it runs",
    )
    b.add_argument(
        "--tune",
        action="store_true",
        help="time channels_last and compile for each model's training step (default model resnet20) and "
        "cache the choice `resnets train` makes for that model, batch and machine",
    )
    b.set_defaults(func=cmd_bench)

    from resnets.analysis.experiments import EXPERIMENTS

    ex = sub.add_parser(
        "experiment",
        help="run an experiment: figure, table and verdict",
        description="\n".join(f"{k}: {v.summary}" for k, v in EXPERIMENTS.items() if k != "reproduce"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ex.add_argument(
        "name", choices=[k for k in EXPERIMENTS if k != "reproduce"], help="which experiment (listed above)"
    )
    ex.add_argument("--data", help="dataset (default: the experiment's)")
    _add_experiment_flags(ex)
    ex.set_defaults(func=cmd_experiment)

    from resnets.analysis.experiments.reproduce import ALIASES, PAPER_ERROR

    rp = sub.add_parser("reproduce", help="train with a paper's recipe; our error beside the paper's")
    rp.add_argument("recipe", choices=[*PAPER_ERROR, *ALIASES], help="the paper's recipe to train with")
    rp.add_argument(
        "--cpu",
        action="store_true",
        help="the paper's nets with fast-cifar's 40-epoch schedule instead, 3 seeds, beside the paper's and "
        "public reproductions' errors (default depth 20: 1 hour on 2 AMX cores, nearly 3 on AVX-512 BF16)",
    )
    _add_experiment_flags(rp)
    rp.set_defaults(func=cmd_reproduce)

    pl = sub.add_parser(
        "plot", help="draw loss and error curves of runs (every log interval, epochs and evaluations marked)"
    )
    pl.add_argument("runs", nargs="+", help="run directories")
    pl.add_argument("--out", help="PNG file (default RUN/plots/curves.png of the first run)")
    pl.add_argument("--log-loss", action="store_true", help="the loss on a log scale")
    pl.set_defaults(func=cmd_plot)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `resnets` console script."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return int(args.func(args))
    except TrainingInterrupted as err:  # asked for, not a failure: the checkpoint to resume is named
        print(f"interrupted: {printable(str(err))}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # outside a training loop (loading data, evaluating): nothing to save
        print(f"interrupted: resnets {args.command} stopped by Ctrl-C", file=sys.stderr)
        return 130
    except ResnetsError as err:
        print(f"error: {printable(str(err))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
