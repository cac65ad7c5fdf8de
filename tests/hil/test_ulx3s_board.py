"""The ULX3S board top on the real board: tests/sim/test_npu_board.py's serial-port test, re-run.

Needs ``--hil --port PORT`` and the bitstream of ``edgekit synth --board
ulx3s-85f`` loaded (``openFPGALoader -b ulx3s ulx3s_top.bit``). Without
``--hil`` it is skipped; the sim tier runs the same body against the board
top's RTL on a pty (``device_port`` in tests/conftest.py chooses).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "sim"))
import test_npu_board as board_top  # noqa: E402
from test_npu_board import digits  # noqa: E402,F401  (the fixture: digits compiled for the board)


def test_digits_on_a_real_ulx3s(digits, device_port):
    """Digits on the board through ``--port``: verified upload, outputs equal to the Python model's."""
    board_top.test_run_through_a_serial_port_to_the_board(digits, device_port)
