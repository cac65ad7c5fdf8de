"""``edgekit bench --tracker HOST:PORT --key NAME``: the board-farm flags of ``bench``.

Kept apart from :mod:`edgekit.cli.cmd_bench` so the farm path stays two
calls there: :func:`add_tracker_flags` in ``add_parser`` and
:func:`bench_over_tracker` in ``run``.
"""

from __future__ import annotations

import argparse
from typing import Any, Mapping

from edgekit.core.errors import InputError
from edgekit.runtime.rpc import SESSION_WAIT_S, bench_remote, parse_tracker

__all__ = ["add_tracker_flags", "bench_over_tracker"]


def add_tracker_flags(p: argparse.ArgumentParser) -> None:
    """Adds ``--tracker``, ``--key`` and ``--wait`` to the ``bench`` parser."""
    g = p.add_argument_group("board farm (TVM RPC tracker)")
    g.add_argument("--tracker", metavar="HOST:PORT",
                   help="run on whichever board registered under --key with this TVM RPC tracker is free")
    g.add_argument("--key", metavar="NAME", help="board kind the tracker knows the boards by (default: the package's board)")
    g.add_argument("--wait", type=float, default=SESSION_WAIT_S, metavar="S",
                   help=f"give up when no board is free for S seconds (default {SESSION_WAIT_S:.0f})")


def bench_over_tracker(args: argparse.Namespace, bench_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Runs the benchmark through the tracker named by ``args.tracker``.

    Args:
        args: Parsed ``bench`` arguments (with the flags of :func:`add_tracker_flags`).
        bench_kwargs: The keyword arguments ``bench`` would give ``bench_package``.

    Raises:
        InputError: for flags that do not combine with ``--tracker``.
    """
    for flag, value in (("--port", args.port), ("--sim", args.sim), ("--baseline", getattr(args, "baseline", None))):
        if value:
            raise InputError(f"{flag} cannot be combined with --tracker",
                             hint="The tracker picks the board; drop one of the two.")
    tracker = parse_tracker(args.tracker)
    # Unset counts (None) keep bench_remote's defaults.
    kwargs = {k: v for k, v in bench_kwargs.items() if k not in ("port", "sim") and v is not None}
    key = args.key or args.board
    if not key:
        from edgekit.package import open_package

        key = open_package(args.package, allow_other_board=True).board
    return bench_remote(args.package, tracker=tracker, key=key, wait_s=args.wait, **kwargs)
