"""The `resnets` command line: a thin shell over the library (each command calls one function)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from resnets.info import ModelInfo, model_info
from resnets.registry import list_models

_COLUMNS = ("name", "params", "FLOPs", "input", "depth", "skip", "paper")


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
    if not names:
        print(f"no model matches {args.pattern!r}; `resnets models` lists them all", file=sys.stderr)
        return 1
    print(format_models_table([model_info(n) for n in names], args.format))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(prog="resnets", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("models", help="list models with parameters, FLOPs, depth, skip kind and paper")
    p.add_argument("pattern", nargs="?", default=None, help="glob on model names, e.g. 'resnet*' or '*56'")
    p.add_argument("--format", choices=("table", "markdown", "json"), default="table")
    p.set_defaults(func=cmd_models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `resnets` console script."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
