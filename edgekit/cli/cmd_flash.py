"""``edgekit flash``: upload a package to a board and verify it there."""

from __future__ import annotations

import argparse
import time

from rich.table import Table

from edgekit.cli.progress import activity_for
from edgekit.cli.render import add_json_flags, console, emit_result
from edgekit.runtime.runner import open_for_board, open_runner


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "flash",
        help="upload a package to a board (or its simulator) and verify it",
        description="Upload the package's weights image to the board over its transport, have the device "
        "hash what it holds (SHA-256) and report success only when that hash matches. Without a port the "
        "board's simulator is used; a simulator starts empty, so there the upload is checked, not kept.",
        epilog="examples:\n  edgekit flash model.ekpkg --board stm32h7 --port /dev/ttyACM0\n"
        "  edgekit flash model.ekpkg --board rv32-mcu-sim --sim --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("package", metavar="PKG", help="the .ekpkg from `edgekit compile`")
    p.add_argument("--board", default=None, help="board profile (default: the one the package was built for)")
    p.add_argument("--boards-dir", action="append", default=[], metavar="DIR", help="extra folder of profiles")
    p.add_argument("--allow-other-board", action="store_true", help="flash a package built for another board")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--port", default=None, help="serial port of the board, e.g. /dev/ttyUSB0")
    where.add_argument("--sim", action="store_true", default=None, help="use the board's simulator")
    add_json_flags(p, "the result")
    p.set_defaults(func=run)


def _deployment(runner: object) -> dict[str, object]:
    """What the runner did and checked; runners that report nothing claim nothing."""
    reported = getattr(runner, "deployment", None)
    if reported:
        return dict(reported)
    return {
        "transport": "this process",
        "action": "loaded the package here; nothing was sent to a device",
        "verified": False,
        "check": "none on a device (the package's member hashes were checked when it was opened)",
    }


def run(args: argparse.Namespace) -> int:
    package, board = open_for_board(args.package, args.board, args.allow_other_board, args.boards_dir)
    start = time.perf_counter()
    with activity_for(args, f"flashing {board.name}"):
        runner = open_runner(package, board, port=args.port, sim=args.sim)
    try:
        info = runner.info()
        simulated = bool(getattr(runner, "simulated", False))
        deployment = _deployment(runner)
    finally:
        runner.close()
    result = {
        "board": board.name,
        "simulated": simulated,
        "verified": bool(deployment["verified"]),  # set by the check that ran, never assumed
        "check": deployment["check"],
        "deployment": deployment,
        "seconds": round(time.perf_counter() - start, 3),
        "device": info,
        "memory": package.manifest.get("memory", {}),
    }
    if emit_result(args, result):
        return 0
    table = Table(title=f"flashed {package.manifest.get('model', {}).get('name', 'model')} to {board.name}"
                  + (" (simulated)" if simulated else ""))
    table.add_column("item")
    table.add_column("value")
    for key, value in info.items():
        table.add_row(str(key), str(value))
    table.add_row("transport", str(deployment["transport"]))
    table.add_row("done", str(deployment["action"]))
    table.add_row("verified", ("yes: " if deployment["verified"] else "no: ") + str(deployment["check"]))
    table.add_row("time", f"{result['seconds']:.2f} s")
    console.print(table)
    return 0
