"""``edgekit flash``: upload a package to a board and verify it there."""

from __future__ import annotations

import argparse

from rich.table import Table

from edgekit.api.flash import flash_package
from edgekit.cli.progress import CliProgress
from edgekit.cli.render import add_json_flags, console, emit_result, target_of


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


def run(args: argparse.Namespace) -> int:
    result = flash_package(args.package, target=target_of(args), progress=CliProgress(args))
    if emit_result(args, result.to_json()):
        return 0
    deployment = result.deployment
    table = Table(title=f"flashed {result.model} to {result.board}" + (" (simulated)" if result.simulated else ""))
    table.add_column("item")
    table.add_column("value")
    for key, value in result.device.items():
        table.add_row(str(key), str(value))
    table.add_row("transport", deployment.transport)
    table.add_row("done", deployment.action)
    table.add_row("verified", ("yes: " if deployment.verified else "no: ") + deployment.check)
    table.add_row("time", f"{result.seconds:.2f} s")
    console.print(table)
    return 0
