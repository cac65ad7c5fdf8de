"""``edgekit tune``: measure better kernels for a model on a board and keep them.

Thin wrapper over :func:`edgekit.compiler.backends.llvm.tuning.tune_model`; the records go to
the per-target database that ``edgekit compile`` reads.
"""

from __future__ import annotations

import argparse
import logging

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from edgekit.api.tune import tune_model
from edgekit.cli.render import add_json_flags, console, emit_result, err_console
from edgekit.core.tensors import parse_input_shapes

logger = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune",
        help="tune a model's kernels for a board (MetaSchedule)",
        description=(
            "Search faster schedules for each kernel of MODEL on the board's CPU and store them in the\n"
            "per-target tuning database (reused by compile, by other models with the same kernels, and by a\n"
            "re-run after an interruption: trials already measured are not repeated).\n\n"
            "The host is measured on this machine. A board reached over the network is measured on the board\n"
            "through a TVM RPC tracker (--tracker, or a profile with [transport] kind = \"rpc\" and\n"
            "host = \"HOST:PORT\"): candidates are built here for the board's target and timed by the RPC\n"
            "server registered under --key. Each target's records go to its own database, so host and\n"
            "board records never mix."
        ),
        epilog="examples:\n"
        "  edgekit tune model.onnx --board host --trials 500\n"
        "  python -m edgekit.runtime.rpc server --tracker 10.0.0.5:9190 --key my-board   # on the board\n"
        "  edgekit tune model.onnx --board my-board --trials 500 --tracker 10.0.0.5:9190\n"
        "Candidates are shared libraries that the server's own TVM runtime loads, so the server must run\n"
        "on the board's ISA (one that reports another CPU is refused; --qemu emulates boards for `bench` only).\n"
        "See docs/performance.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="MODEL", help="ONNX model")
    p.add_argument("--board", default="host", help="board profile (default: host)")
    p.add_argument("--trials", type=int, required=True, metavar="N", help="trial budget for the whole model")
    p.add_argument(
        "--input-shape", action="append", default=[], metavar="NAME=1x3x224x224", help="static shape of an input"
    )
    p.add_argument("--db", metavar="DIR", help="folder of tuning databases (default: the user cache)")
    p.add_argument("--boards-dir", action="append", default=[], metavar="DIR", help="extra folder of board/target TOML files")
    p.add_argument("--seed", type=int, default=None, help="random seed of the search")
    g = p.add_argument_group("measuring on a remote board (TVM RPC tracker)")
    g.add_argument("--tracker", metavar="HOST:PORT",
                   help="measure on a board registered with this TVM RPC tracker (default: the profile's, "
                   "for transport rpc boards)")
    g.add_argument("--key", metavar="NAME",
                   help="key the board's RPC servers are registered under (default: the profile's rpc_key, "
                   "else the board name)")
    add_json_flags(p, "the tuning report")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    bar = Progress(
        TextColumn("[bold]tuning[/bold] {task.fields[kernel]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("trials"),
        TimeElapsedColumn(),
        TextColumn("ETA {task.fields[eta]}"),
        # Progress goes to stderr, on a terminal only (the README's rule); in
        # a pipe its last frame landed on stdout as "tuning (searching) 0/? trials".
        console=err_console,
        transient=args.json,
        disable=args.json or not err_console.is_terminal,
    )
    task = bar.add_task("tune", total=None, kernel="(searching)", eta="-")

    def on_progress(p: object) -> None:
        bar.start()  # at the first trial: a refused option or model shows no bar
        eta = "-" if p.eta_s is None else f"{int(p.eta_s) // 60}:{int(p.eta_s) % 60:02d}"  # type: ignore[attr-defined]
        bar.update(
            task,
            completed=p.trials_done,  # type: ignore[attr-defined]
            total=p.trials_total,  # type: ignore[attr-defined]
            kernel=f"{p.task} ({p.task_index + 1}/{p.num_tasks})",  # type: ignore[attr-defined]
            eta=eta,
        )

    try:
        report = tune_model(args.model, args.trials, board=args.board, input_shapes=parse_input_shapes(args.input_shape),
                            db_root=args.db, seed=args.seed, tracker=args.tracker, key=args.key,
                            board_dirs=args.boards_dir, progress=on_progress)  # fmt: skip
        bar.start()  # the final state, also when no trial ran
    finally:
        if bar.live.is_started:
            bar.stop()
    if emit_result(args, report.to_json()):
        return 0
    console.print(
        f"measured {report.trials_measured} trials in {report.seconds:.0f} s "
        f"({report.trials_reused} found in the database and not repeated)"
    )
    console.print(f"database: {report.database_dir}")
    where = report.measured_on
    if where.get("where") == "rpc":
        server = f" ({where['server']}, {where['machine']})" if where.get("server") else ""
        console.print(f"measured on: '{where['key']}' RPC servers through the tracker {where['tracker']}{server}, "
                      "natively (not emulated)", highlight=False)
    else:
        console.print("measured on: this machine", highlight=False)
    for t in report.tasks:
        best = f"{t.best_us:.1f} us" if t.best_us else "-"
        console.print(f"  {t.name:<48} x{t.weight:<3} {min(t.measured, t.budget) if t.budget else t.measured:>4}+ trials  best {best}")
    return 0
