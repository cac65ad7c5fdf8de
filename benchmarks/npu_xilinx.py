"""Yosys synth_xilinx estimates of the NPU for the Zynq boards, and their Vivado build folders.

Usage::

    .venv/bin/python benchmarks/npu_xilinx.py [--boards pynq-z2,ultra96,kv260] [--out /tmp/npu-xilinx]

For each board: the board's NPU configuration (array, buffers, DMA width,
from its profile) as ``npu_scan_top`` parameters, synthesized by YoWASP's
Yosys ``synth_xilinx`` for the part's family (``pip install -e
".[fpga]"``), and the Vivado build folder (``build.tcl``, ``npu.xdc``,
``rtl/``) written next to it. Prints a markdown table (copied into
BENCHMARKS.md). The counts are Yosys's before placement, not Vivado's; the
Vivado scripts are not run here (no Vivado).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgekit.core.profiles import get_board  # noqa: E402
from edgekit.npu.rtl_sources import RtlConfig  # noqa: E402
from edgekit.compiler.fpga.xilinx import estimate_xilinx, part_for_board, write_vivado_build  # noqa: E402


def _pct(used: float, total: int) -> str:
    return f"{used:,.0f} ({100 * used / total:.0f} %)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boards", default="pynq-z2,ultra96,kv260")
    ap.add_argument("--out", type=Path, default=Path("/tmp/npu-xilinx"))
    args = ap.parse_args(argv)
    out = sys.stdout.write
    out("| board | part | array, buffers, DMA | LUT | LUT-RAM cells | FF | DSP | BRAM36 | Yosys time |\n|---|---|---|---|---|---|---|---|---|\n")
    for name in args.boards.split(","):
        board, _ = get_board(name)
        npu = board.npu
        assert npu is not None
        cfg = RtlConfig.from_npu(npu)
        part = part_for_board(name)
        folder = args.out / name
        write_vivado_build(name, cfg, npu.clock_hz, folder / "vivado")
        est = estimate_xilinx(cfg, part, folder / "yosys")
        (folder / "estimate.json").write_text(json.dumps(est.to_json(), indent=1))
        dsp_kind = "DSP48E1" if part.family == "xc7" else "DSP48E2"
        out(f"| {name} | {part.name} | {npu.rows}x{npu.cols}, {npu.input_buffer_bytes // 1024} KiB each, {npu.dma_bytes_per_cycle:g} B/cycle "
            f"| {_pct(est.luts, part.luts)} | {est.lutram:,} | {_pct(est.ffs, part.ffs)} | {_pct(est.dsps, part.dsps)} {dsp_kind} "
            f"| {_pct(est.bram36, part.bram36)} | {est.seconds:.0f} s |\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
