"""What the accelerator's hardware is made of: the RTL files and Verilog parameters of the NPU and of a board top.

Two flows read this one list: Verilator co-simulation
(:mod:`edgekit.sim.npu.verilator`, :mod:`edgekit.sim.npu.rtl_device`,
:mod:`edgekit.sim.npu.rtl_board`) and synthesis (:mod:`edgekit.compiler.fpga`).
A new ``.v`` file of the NPU goes into ``_SOURCES``; one of every board top
into ``_BOARD_COMMON``.

* ``rtl/npu/`` — the accelerator (``npu_top`` first) and the headers its
  files include (:func:`rtl_headers`: every ``.vh`` there, among them the
  instruction fields that :func:`isa_header` generates from :mod:`edgekit.npu.isa`);
* ``rtl/boards/`` — a board top: the NPU with its block-RAM memory and the
  UART bridge, parameterized from the board profile by :func:`board_parameters`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgekit.core.errors import ConfigError
from edgekit.core.resources import data_dir
from edgekit.npu import isa

if TYPE_CHECKING:
    from edgekit.core.profiles import Board, FpgaConfig, NpuConfig

__all__ = ["RtlConfig", "rtl_dir", "rtl_sources", "rtl_headers", "isa_header",
           "board_dir", "board_sources", "board_parameters", "MIN_CLKS_PER_BIT"]  # fmt: skip

#: The NPU's synthesizable Verilog files in ``rtl/npu``, top first (harnesses and wrappers are not among them).
_SOURCES = ("npu_top.v", "npu_dma_rd.v", "npu_store.v", "npu_walker.v", "npu_gemm.v", "npu_alu.v", "npu_ram.v", "npu_fifo.v")
#: What every board top in ``rtl/boards`` adds to the NPU, after the top itself.
_BOARD_COMMON = ("npu_board.v", "npu_board_mem.v", "npu_bridge.v", "npu_uart.v")
#: Clocks per UART bit the bridge's receiver needs at least.
MIN_CLKS_PER_BIT = 4
#: Largest relative error of baud = clock / round(clock / baud) that 8N1 tolerates with margin.
MAX_BAUD_ERROR = 0.02


@dataclass(frozen=True)
class RtlConfig:
    """The RTL parameters of one accelerator configuration (from a board's ``[npu]``)."""

    rows: int
    cols: int
    inp_depth: int
    wgt_depth: int
    acc_depth: int
    dma_bytes: int
    #: How many of the MAC array's products use DSP blocks; the others are
    #: built from LUT adders (for FPGAs with fewer DSPs than MACs). ``None``: all.
    array_dsp: int | None = None

    @classmethod
    def from_npu(cls, npu: "NpuConfig") -> "RtlConfig":
        """Entries per buffer and the DMA width of ``npu``.

        Raises:
            ConfigError: the DMA width is not a whole power of two, or a buffer
                holds no whole entry.
        """
        beat = npu.dma_bytes_per_cycle
        if beat != int(beat) or int(beat) < 1 or int(beat) & (int(beat) - 1):
            raise ConfigError(
                f"the RTL needs a DMA width that is a power of two in bytes per cycle, got {beat}",
                hint="Set dma_bytes_per_cycle in the board's [npu] section to 4, 8, 16 ...",
            )
        R, C = npu.rows, npu.cols
        depths = (npu.input_buffer_bytes // R, npu.weight_buffer_bytes // (R * C), npu.acc_buffer_bytes // (4 * C))
        if min(depths) < 1:
            raise ConfigError("an NPU buffer is smaller than one entry", hint="Enlarge the buffers in the board's [npu] section.")
        return cls(R, C, *depths, int(beat))

    def parameters(self) -> dict[str, int]:
        """Verilog parameters of ``npu_top``."""
        dsp = self.rows * self.cols if self.array_dsp is None else min(self.array_dsp, self.rows * self.cols)
        return {"ROWS": self.rows, "COLS": self.cols, "INP_DEPTH": self.inp_depth, "WGT_DEPTH": self.wgt_depth,
                "ACC_DEPTH": self.acc_depth, "DMA_BYTES": self.dma_bytes, "ARRAY_DSP": dsp}  # fmt: skip


def rtl_dir() -> Path:
    """The ``rtl/npu`` folder: installed package data, else the source tree."""
    path = data_dir("rtl") / "npu"
    if not (path / "npu_top.v").is_file():
        raise ConfigError(f"NPU RTL not found (looked for {path}/npu_top.v)", hint="Reinstall edgekit; its wheel ships rtl/npu/.")
    return path


def rtl_sources() -> list[Path]:
    """The NPU's synthesizable Verilog files, top first (the harness is not among them)."""
    root = rtl_dir()
    return [root / name for name in _SOURCES]


def rtl_headers() -> list[Path]:
    """The Verilog headers in ``rtl/npu`` (``npu_isa.vh`` ...), which the NPU's and the board tops' files include."""
    return sorted(rtl_dir().glob("*.vh"))


def isa_header() -> str:
    """Text of ``rtl/npu/npu_isa.vh``: the bit range of every instruction field, from :mod:`edgekit.npu.isa`."""
    lines = [
        "// Field positions of edgekit's NPU instruction word (docs/npu-isa.md).",
        "// Generated from edgekit/npu/isa.py by edgekit.npu.rtl_sources.isa_header(); a test checks it.",
        "`ifndef NPU_ISA_VH",
        "`define NPU_ISA_VH",
    ]
    for cls in (isa.Load, isa.Store, isa.Gemm, isa.Alu):
        for name, pos, bits in isa.field_table(cls)[2:]:
            lines.append(f"`define {cls.__name__.upper()}_{name.upper()} {pos + bits - 1}:{pos}")
    lines.append("`endif")
    return "\n".join(lines) + "\n"


def board_dir() -> Path:
    """The ``rtl/boards`` folder: installed package data, else the source tree."""
    return data_dir("rtl") / "boards"


def _fpga(board: "Board") -> "FpgaConfig":
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
    return [top, *(root / name for name in _BOARD_COMMON), *rtl_sources()]


def board_parameters(board: "Board") -> dict[str, int]:
    """Verilog parameters of ``board``'s top: the NPU's, its memory size, clock and baud rate.

    Args:
        board: A profile with ``[npu]`` and ``[fpga]``.

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
    if divisor < MIN_CLKS_PER_BIT or abs(clk / divisor - baud) > MAX_BAUD_ERROR * baud:
        raise ConfigError(
            f"board '{board.name}': a {clk / 1e6:g} MHz clock cannot make {baud} baud (nearest {clk / divisor:.0f})",
            hint=f"Pick transport.baudrate close to clock / N with N >= {MIN_CLKS_PER_BIT} (1000000 at 25 MHz).",
        )
    return dict(RtlConfig.from_npu(board.npu).parameters(), MEM_BYTES=mem, CLK_HZ=clk, BAUD=baud)
