"""``edgekit bench --tracker HOST:PORT --key NAME``: the board-farm flags of
``bench`` (the farm itself: :class:`edgekit.api.bench.Tracker`)."""

from __future__ import annotations

import argparse

from edgekit.runtime.rpc import SESSION_WAIT_S

__all__ = ["add_tracker_flags"]


def add_tracker_flags(p: argparse.ArgumentParser) -> None:
    """Adds ``--tracker``, ``--key`` and ``--wait`` to the ``bench`` parser."""
    g = p.add_argument_group("board farm (TVM RPC tracker)")
    g.add_argument("--tracker", metavar="HOST:PORT",
                   help="run on whichever board registered under --key with this TVM RPC tracker is free")
    g.add_argument("--key", metavar="NAME", help="board kind the tracker knows the boards by (default: the package's board)")
    g.add_argument("--wait", type=float, default=SESSION_WAIT_S, metavar="S",
                   help=f"give up when no board is free for S seconds (default {SESSION_WAIT_S:.0f})")
