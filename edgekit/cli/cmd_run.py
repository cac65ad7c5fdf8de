"""``edgekit run``: run a package on inputs from an ``.npz`` file."""

from __future__ import annotations

import argparse

from rich.table import Table

from edgekit.cli.render import console
from edgekit.runtime.data import read_npz, stack_outputs, write_npz
from edgekit.runtime.runner import run_package

__all__ = ["add_parser", "run", "add_target_flags"]


def add_target_flags(p: argparse.ArgumentParser) -> None:
    """Flags shared by commands that run a package: board, override, port, simulator."""
    p.add_argument("--board", help="board to run on (default: the board the package was built for)")
    p.add_argument("--allow-other-board", action="store_true", help="run a package built for another board")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--port", metavar="P", help="serial port (or address) of an attached board")
    where.add_argument("--sim", action="store_const", const=True, default=None,
                       help="run on the board's simulator even if a board is attached")
    p.add_argument("--boards-dir", action="append", default=[], metavar="DIR", help="extra folder of board/target TOML files")


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
    add_target_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    arrays = read_npz(args.input)
    results, samples, info = run_package(
        args.package,
        arrays,
        board=args.board,
        allow_other_board=args.allow_other_board,
        port=args.port,
        sim=args.sim,
        board_dirs=args.boards_dir,
    )
    outputs = stack_outputs(results, mode=samples.mode)
    write_npz(args.output, outputs)
    if getattr(args, "quiet", False):
        return 0
    where = "simulated " if info.get("simulated") else ""
    table = Table(title=f"{len(samples)} sample(s) on {where}{info.get('runner', '')} -> {args.output}")
    for col in ("output", "shape", "dtype", "min", "max"):
        table.add_column(col)
    for name, arr in outputs.items():
        lo, hi = (f"{arr.min():.4g}", f"{arr.max():.4g}") if arr.size and arr.dtype.kind in "fiub" else ("-", "-")
        table.add_row(name, "x".join(map(str, arr.shape)), str(arr.dtype), lo, hi)
    console.print(table)
    return 0
