"""The Vivado build script and Yosys synth_xilinx estimates for the Zynq boards (edgekit.compiler.fpga.xilinx).

No Vivado is installed here: these tests check what the generated script
says (part, parameters, clock, flow steps, files), not what Vivado does with
it. The synth_xilinx run needs YoWASP's Yosys (``edgekit[fpga]``).
"""

from __future__ import annotations

import re

import pytest

from edgekit.core.errors import ConfigError
from edgekit.core.profiles import get_board
from edgekit.npu.rtl_sources import RtlConfig
from edgekit.compiler.fpga.xilinx import BOARD_PARTS, XILINX_PARTS, estimate_xilinx, part_for_board, write_vivado_build
from edgekit.compiler.fpga.synth import yowasp_missing

FLOW = ["read_verilog", "read_xdc", "synth_design", "opt_design", "place_design", "route_design",
        "report_utilization -file $out/utilization.rpt", "report_timing_summary", "write_bitstream"]  # fmt: skip


@pytest.mark.parametrize("board_name, part", [("pynq-z2", "xc7z020clg400-1"), ("ultra96", "xczu3eg-sbva484-1-e"), ("kv260", "xck26-sfvc784-2LV-c")])
def test_vivado_script_builds_the_boards_npu_for_its_part(board_name, part, tmp_path):
    board, _ = get_board(board_name)
    cfg = RtlConfig.from_npu(board.npu)
    script = write_vivado_build(board_name, cfg, board.npu.clock_hz, tmp_path).read_text()
    assert re.search(rf"^set part {re.escape(part)}$", script, re.M)
    assert "synth_design -top $top -part $part" in script and "set top npu_scan_top" in script
    generics = dict(re.findall(r"-generic (\w+)=(\d+)", script))
    assert generics == {k: str(v) for k, v in cfg.parameters().items()}
    assert generics["ROWS"] == str(board.npu.rows) and generics["COLS"] == str(board.npu.cols)
    assert int(generics["INP_DEPTH"]) * board.npu.rows == board.npu.input_buffer_bytes
    # Non-project flow, in order.
    positions = [script.index(step) for step in FLOW]
    assert positions == sorted(positions)
    assert "create_project" not in script
    # Every file it reads is in the folder, and the ISA header the RTL includes.
    for path in re.findall(r"^\s+(rtl/npu/\S+\.v)", script, re.M):
        assert (tmp_path / path).is_file(), path
    assert (tmp_path / "rtl/npu/npu_isa.vh").is_file()
    period = float(re.search(r"-period ([\d.]+)", (tmp_path / "npu.xdc").read_text()).group(1))
    assert period == pytest.approx(1e9 / board.npu.clock_hz, abs=1e-3)


def test_a_board_without_a_xilinx_part_is_refused():
    with pytest.raises(ConfigError, match="no Xilinx part"):
        part_for_board("ulx3s-85f")
    assert set(BOARD_PARTS.values()) <= set(XILINX_PARTS)


@pytest.mark.slow
@pytest.mark.skipif(bool(yowasp_missing()), reason=f"synth_xilinx: {yowasp_missing()}")
def test_synth_xilinx_maps_a_small_npu_onto_7_series_cells(tmp_path):
    cfg = RtlConfig(2, 2, 64, 16, 64, 4)
    est = estimate_xilinx(cfg, XILINX_PARTS["xc7z020clg400-1"], tmp_path)
    # 2x2 MACs in DSP48E1s plus the ALU's lanes; LUT and FF counts well inside the part.
    assert est.dsps >= 4 and "DSP48E1" in est.cells
    assert 0 < est.luts < XILINX_PARTS["xc7z020clg400-1"].luts and est.ffs > 0
    assert est.config["ROWS"] == 2
