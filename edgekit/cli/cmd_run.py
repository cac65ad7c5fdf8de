"""``edgekit run``: run a package on inputs from an ``.npz`` file."""

from __future__ import annotations

import argparse

from rich.table import Table

from edgekit.api.run import run_package
from edgekit.cli.progress import activity_for
from edgekit.cli.render import add_json_flags, add_target_flags, console, emit_result, target_of

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run a package on inputs from an .npz file",
        description="Run PKG on the arrays of IN.npz and write the outputs to OUT.npz. IN.npz holds one array "
        "per input name; its first axis holds samples, either as an extra axis (N, *shape) or, for batch-1 "
        "inputs, along the batch axis (N, ...). Each sample is run separately and the outputs are laid out "
        "the same way.",
        epilog="example: edgekit run model.ekpkg --input in.npz -o out.npz",
    )
    p.add_argument("package", metavar="PKG", help=".ekpkg package from `edgekit compile`")
    p.add_argument("--input", required=True, metavar="IN.npz", help="input arrays, one per model input name")
    p.add_argument("-o", "--output", required=True, metavar="OUT.npz", help="where to write the outputs")
    add_json_flags(p, "a summary (board, samples, each output's shape, dtype, min and max)")
    add_target_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with activity_for(args, "running samples") as bar:
        result = run_package(args.package, args.input, output=args.output, target=target_of(args),
                             progress=lambda done, total: bar.update(done, total))  # fmt: skip
    summary = result.to_json()
    if emit_result(args, summary) or getattr(args, "quiet", False):
        return 0
    where = "simulated " if result.simulated else ""
    table = Table(title=f"{result.samples} sample(s) on {where}{result.runner} -> {args.output}")
    for col in ("output", "shape", "dtype", "min", "max"):
        table.add_column(col)
    for out in summary["outputs"]:
        lo, hi = ("-", "-") if out["min"] is None else (f"{out['min']:.4g}", f"{out['max']:.4g}")
        table.add_row(out["name"], "x".join(map(str, out["shape"])), out["dtype"], lo, hi)
    console.print(table)
    return 0
