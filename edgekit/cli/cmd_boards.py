"""``edgekit boards``: list the board profiles."""

from __future__ import annotations

import argparse

from rich.table import Table

from edgekit.cli.render import add_json_flags, console, emit_result, print_whole
from edgekit.api.boards import list_boards


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "boards",
        help="list board profiles",
        description="List the known board profiles (built-in, EDGEKIT_BOARDS and --boards-dir).",
        epilog="example: edgekit boards --json",
    )
    p.add_argument("--boards-dir", action="append", default=[], metavar="DIR", help="extra folder of board/target TOML files")
    add_json_flags(p, "the board list")
    p.set_defaults(func=run)


def _size(n: int) -> str:
    if not n:
        return "-"
    for unit, f in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= f and n % (f // 1024 or 1) == 0:
            return f"{n / f:g} {unit}"
    return f"{n} B"


def run(args: argparse.Namespace) -> int:
    boards = list_boards(args.boards_dir)
    if emit_result(args, {"boards": [b.summary() for b in boards]}):
        return 0
    table = Table(title="edgekit boards")
    for col in ("name", "target", "clock", "RAM", "flash", "transport", "simulator"):
        table.add_column(col)
    for b in boards:
        clock = f"{b.clock_hz / 1e6:g} MHz" if b.clock_hz else "-"
        table.add_row(b.name, b.target, clock, _size(b.memory.ram_bytes), _size(b.memory.flash_bytes),
                      b.transport.kind, b.simulator.kind)
    print_whole(table, console)
    return 0
