"""A board top (``rtl/boards/``: the NPU, its block-RAM memory and the UART bridge) as Verilog parameters and as a Verilator model.

:func:`board_parameters` turns a board profile with ``[npu]`` and ``[fpga]``
sections into the top's Verilog parameters; :mod:`edgekit.npu.rtl_synth`
synthesizes the top with them. :class:`RtlBoardLink` is the top under
Verilator behind the same byte link as a serial port: bytes written are
shifted onto the board's receive pin as 8N1 frames, bytes read are decoded
from its transmit pin (``rtl/boards/board_harness.cpp``), so the host's
bridge code (:mod:`edgekit.runtime.npu_bridge`) runs unchanged on the model.
The simulated line runs at :data:`SIM_CLKS_PER_BIT` clocks per bit (the
real board: 25) so that loading a model takes seconds.
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from edgekit.core.errors import ConfigError
from edgekit.core.resources import data_dir
from edgekit.npu.rtl_build import RtlConfig, rtl_sources, verilate

if TYPE_CHECKING:
    from edgekit.core.profiles import Board

__all__ = ["board_dir", "board_sources", "board_parameters", "build_board_model", "RtlBoardLink", "SIM_CLKS_PER_BIT"]

logger = logging.getLogger(__name__)

#: Clocks per UART bit in the simulated board (the receiver needs at least 4).
SIM_CLKS_PER_BIT = 4
#: Cycles after which the simulated bridge drops an incomplete command.
SIM_TIMEOUT_CLKS = 20_000
#: Largest relative error of baud = clock / round(clock / baud) that 8N1 tolerates with margin.
MAX_BAUD_ERROR = 0.02
_COMMON = ("npu_board.v", "npu_board_mem.v", "npu_bridge.v", "npu_uart.v")
_HARNESS = "board_harness.cpp"
_LIB = "libnpu_board.so"


def board_dir() -> Path:
    """The ``rtl/boards`` folder: installed package data, else the source tree."""
    return data_dir("rtl") / "boards"


def _fpga(board: "Board"):
    if board.npu is None or board.fpga is None:
        raise ConfigError(
            f"board '{board.name}' has no FPGA board top (its profile needs [npu] and [fpga] sections)",
            hint="Use a board with an open-flow FPGA, e.g. --board ulx3s-85f (`edgekit boards` lists them).",
        )
    return board.fpga


def board_sources(board: "Board") -> list[Path]:
    """Verilog files of ``board``'s top, the top first."""
    fpga = _fpga(board)
    root = board_dir()
    top = root / f"{fpga.top}.v"
    if not top.is_file():
        raise ConfigError(f"board top {top} not found (profile key fpga.top = {fpga.top!r})", hint="Fix fpga.top in the board profile.")
    return [top, *(root / name for name in _COMMON), *rtl_sources()]


def board_parameters(board: "Board", *, simulated: bool = False) -> dict[str, int]:
    """Verilog parameters of ``board``'s top: the NPU's, its memory size, clock and baud rate.

    Args:
        board: A profile with ``[npu]`` and ``[fpga]``.
        simulated: Parameters of the Verilator model (a UART of
            :data:`SIM_CLKS_PER_BIT` clocks per bit, a short command timeout).

    Raises:
        ConfigError: no ``[fpga]``, a memory size that is not a multiple of
            32 bytes, or a baud rate the clock cannot make.
    """
    _fpga(board)
    assert board.npu is not None
    mem = board.memory.ram_bytes
    if mem < 32 or mem % 32:
        raise ConfigError(f"board '{board.name}': memory.ram = {mem} bytes is not a multiple of 32", hint='Set e.g. ram = "128 KiB".')
    clk = board.npu.clock_hz
    baud = board.transport.baudrate
    divisor = max(1, round(clk / baud))
    if divisor < SIM_CLKS_PER_BIT or abs(clk / divisor - baud) > MAX_BAUD_ERROR * baud:
        raise ConfigError(
            f"board '{board.name}': a {clk / 1e6:g} MHz clock cannot make {baud} baud (nearest {clk / divisor:.0f})",
            hint="Pick transport.baudrate close to clock / N with N >= 4 (1000000 at 25 MHz).",
        )
    params = dict(RtlConfig.from_npu(board.npu).parameters(), MEM_BYTES=mem, CLK_HZ=clk, BAUD=baud)
    if simulated:
        params.update(BAUD=clk // SIM_CLKS_PER_BIT, TIMEOUT_CLKS=SIM_TIMEOUT_CLKS)
        params["CLK_HZ"] = params["BAUD"] * SIM_CLKS_PER_BIT
    return params


def build_board_model(board: "Board") -> Path:
    """Verilates and compiles ``board``'s top with the harness; returns the cached shared library.

    Raises:
        ConfigError: Verilator, perl, make or a C++ compiler is missing, or the board has no top.
        CompileError: Verilator or the C++ compiler failed.
    """
    top = _fpga(board).top
    return verilate(top, board_sources(board), board_dir() / _HARNESS, board_parameters(board, simulated=True), label=top,
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
        params = board_parameters(board, simulated=True)
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
