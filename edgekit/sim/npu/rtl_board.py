"""A board top (``rtl/boards/``: the NPU, its block-RAM memory and the UART bridge) under Verilator.

The top's files and Verilog parameters are :mod:`edgekit.npu.rtl_sources`'s
(synthesis reads the same); :func:`simulated_parameters` speeds its UART up
for simulation. :class:`RtlBoardLink` is the top under
Verilator behind the same byte link as a serial port: bytes written are
shifted onto the board's receive pin as 8N1 frames, bytes read are decoded
from its transmit pin (``rtl/boards/board_harness.cpp``), so the host's
bridge code (:mod:`edgekit.runtime.npu.bridge`) runs unchanged on the model.
The simulated line runs at :data:`SIM_CLKS_PER_BIT` clocks per bit (the
real board: 25) so that loading a model takes seconds.
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from edgekit.npu.rtl_sources import MIN_CLKS_PER_BIT, board_dir, board_parameters, board_sources
from edgekit.sim.npu.verilator import verilate

if TYPE_CHECKING:
    from edgekit.core.profiles import Board

__all__ = ["simulated_parameters", "build_board_model", "RtlBoardLink", "SIM_CLKS_PER_BIT"]

logger = logging.getLogger(__name__)

#: Clocks per UART bit in the simulated board: the fewest the receiver takes.
SIM_CLKS_PER_BIT = MIN_CLKS_PER_BIT
#: Cycles after which the simulated bridge drops an incomplete command.
SIM_TIMEOUT_CLKS = 20_000
_HARNESS = "board_harness.cpp"
_LIB = "libnpu_board.so"


def simulated_parameters(board: "Board") -> dict[str, int]:
    """Verilog parameters of ``board``'s top under Verilator: a UART of :data:`SIM_CLKS_PER_BIT` clocks per bit, a short command timeout.

    Raises:
        ConfigError: as :func:`~edgekit.npu.rtl_sources.board_parameters`.
    """
    params = board_parameters(board)
    params.update(BAUD=params["CLK_HZ"] // SIM_CLKS_PER_BIT, TIMEOUT_CLKS=SIM_TIMEOUT_CLKS)
    params["CLK_HZ"] = params["BAUD"] * SIM_CLKS_PER_BIT
    return params


def build_board_model(board: "Board") -> Path:
    """Verilates and compiles ``board``'s top with the harness; returns the cached shared library.

    Raises:
        ConfigError: Verilator, perl, make or a C++ compiler is missing, or the board has no top.
        CompileError: Verilator or the C++ compiler failed.
    """
    params = simulated_parameters(board)  # a board without [fpga] fails here
    assert board.fpga is not None
    top = board.fpga.top
    return verilate(top, board_sources(board), board_dir() / _HARNESS, params, label=top,
                    cflags=f"-DCLKS_PER_BIT={SIM_CLKS_PER_BIT}", what=f"the {board.name} RTL model", lib_name=_LIB)  # fmt: skip


_libs: dict[Path, ctypes.CDLL] = {}


def _load(path: Path) -> ctypes.CDLL:
    lib = _libs.get(path)
    if lib is None:
        lib = ctypes.CDLL(str(path))
        vp, u64 = ctypes.c_void_p, ctypes.c_uint64
        lib.board_new.argtypes, lib.board_new.restype = [], vp
        lib.board_free.argtypes, lib.board_free.restype = [vp], None
        lib.board_write.argtypes, lib.board_write.restype = [vp, ctypes.c_char_p, u64], None
        lib.board_read.argtypes, lib.board_read.restype = [vp, ctypes.c_void_p, u64, u64], u64
        lib.board_idle.argtypes, lib.board_idle.restype = [vp, u64], None
        lib.board_leds.argtypes, lib.board_leds.restype = [vp], ctypes.c_uint32
        lib.board_cycles.argtypes, lib.board_cycles.restype = [vp], u64
        _libs[path] = lib
    return lib


class RtlBoardLink:
    """The board top under Verilator, reached through its serial line.

    Time on this link is simulated time: the board's cycles at its clock.

    Args:
        board: A profile with ``[npu]`` and ``[fpga]`` (e.g. ``ulx3s-85f``).

    Raises:
        ConfigError: Verilator or a C++ compiler is missing, or the board has no top.
        CompileError: the RTL did not build.
    """

    def __init__(self, board: "Board") -> None:
        params = simulated_parameters(board)
        self.clock_hz = params["CLK_HZ"]
        self.baudrate = params["BAUD"]
        self.resync_cycles = 2 * params["TIMEOUT_CLKS"]
        self._lib = _load(build_board_model(board))
        self._h = self._lib.board_new()

    def __del__(self) -> None:
        h, self._h = getattr(self, "_h", None), None
        if h:
            self._lib.board_free(h)

    def write(self, data: bytes) -> None:
        """Sends ``data`` on the board's receive line (returns once sent)."""
        self._lib.board_write(self._h, bytes(data), len(data))

    def read(self, n: int, timeout_s: float) -> bytes:
        """Up to ``n`` bytes from the board's transmit line within ``timeout_s`` simulated seconds."""
        buf = ctypes.create_string_buffer(n)
        got = self._lib.board_read(self._h, buf, n, int(timeout_s * self.clock_hz))
        return buf.raw[:got]

    def resync(self) -> None:
        """Lets the bridge's command timeout pass, so it waits for a new command."""
        self._lib.board_idle(self._h, self.resync_cycles)

    def clock(self) -> float:
        """Simulated seconds since the board came out of reset."""
        return self._lib.board_cycles(self._h) / self.clock_hz

    def leds(self) -> int:
        """The board's eight LEDs (``ulx3s_top.v``: 1 running, 2 done, 3 fault ...)."""
        return int(self._lib.board_leds(self._h))

    def close(self) -> None:
        """Frees the model."""
        self.__del__()
