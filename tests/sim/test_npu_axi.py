"""npu_top behind AXI (rtl/npu/npu_axi.v) under Verilator, against the Python model and the integer reference.

The harness (rtl/npu/axi_harness.cpp) reaches the registers over AXI4-Lite
and serves the AXI4 master from a slave model that withholds its ready and
valid signals at random and answers after a latency; it faults on a
protocol violation. Outputs must be bit-exact. The first run builds the
pynq-z2 (8x8) model behind a 64-bit bus (cached under ~/.cache/edgekit).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.core.profiles import get_board
from edgekit.npu.reference import run_layer
from edgekit.npu.rtl_sources import RtlConfig, rtl_dir, rtl_sources
from edgekit.sim.npu.verilator import verilate, verilator_missing

sys.path.insert(0, str(Path(__file__).parent))
from test_npu_rtl import PYNQ, _load_layer  # noqa: E402
from test_npu_sim import LAYERS, conv  # noqa: E402

pytestmark = pytest.mark.skipif(bool(verilator_missing()), reason=f"NPU AXI co-simulation: {verilator_missing()}")
REG_ID, REG_GEOMETRY, REG_STATUS, REG_PROG_LO, REG_INSN_COUNT, REG_WRAP_STATUS, REG_IMEM_DEPTH = 0x00, 0x04, 0x0C, 0x10, 0x18, 0x80, 0x84


def build_axi_model(cfg: RtlConfig, axi_bytes: int = 8) -> Path:
    """The verilated npu_axi with ``cfg`` on an ``axi_bytes`` bus and the AXI slave model: the C API of harness.cpp."""
    return verilate("npu_axi", [rtl_dir() / "npu_axi.v", *rtl_sources()], rtl_dir() / "axi_harness.cpp",
                    cfg.parameters() | {"AXI_BYTES": axi_bytes}, label=f"axi{axi_bytes * 8}-{cfg.rows}x{cfg.cols}",
                    cflags=f"-DNPU_AXI_BYTES={axi_bytes}", what="the NPU AXI model", lib_name="libnpu_axi.so")  # fmt: skip


def _use_axi(monkeypatch, axi_bytes: int):
    """edgekit.sim.npu.rtl_device on the AXI-wrapped NPU instead of the bare npu_top."""
    from edgekit.sim.npu import rtl_device

    monkeypatch.setattr(rtl_device, "build_model", lambda cfg: build_axi_model(cfg, axi_bytes))
    return rtl_device


@pytest.fixture
def axi(monkeypatch):
    return _use_axi(monkeypatch, 8)


@pytest.fixture(params=[8, 32], ids=["64bit", "256bit"])
def axi_any(monkeypatch, request):
    """The 64-bit bus of the Zynq-7000 HP ports and a 256-bit one (one bus word per instruction)."""
    return _use_axi(monkeypatch, request.param)


def test_registers_over_axi_lite(axi):
    rtl = axi.RtlNpu(PYNQ, 4096)
    assert rtl.reg(REG_ID) == 0x4E505538  # "NPU8"
    assert rtl.reg(REG_GEOMETRY) == 8 << 16 | 8
    assert rtl.reg(REG_IMEM_DEPTH) == 1024
    rtl._lib.npu_reg_write(rtl._h, REG_PROG_LO, 0xABCDC0)
    rtl._lib.npu_reg_write(rtl._h, REG_INSN_COUNT, 77)
    assert (rtl.reg(REG_PROG_LO), rtl.reg(REG_INSN_COUNT)) == (0xABCDC0, 77)
    assert rtl.reg(REG_STATUS) == 0 and rtl.reg(REG_WRAP_STATUS) == 0


def test_a_program_longer_than_the_instruction_buffer_is_refused(axi):
    from edgekit.npu.ring import NpuFault

    rtl = axi.RtlNpu(PYNQ, 64 * 1024)
    with pytest.raises(NpuFault):
        rtl.run(0, 1025)
    assert rtl.reg(REG_WRAP_STATUS) == 1 and rtl.reg(REG_STATUS) & 0x4


# conv8x8k1 and the odd channel counts of LAYERS give unaligned DMA beats
# (one DMA beat over two bus words); latency 1 and 20 cycles.
@pytest.mark.parametrize("latency", [1, 20])
@pytest.mark.parametrize("layer", [*LAYERS, conv(8, 8, 24, k=1)], ids=lambda layer: layer.name if layer.kind == "conv" else "add")
def test_layer_through_axi_is_bit_exact(layer, latency, axi):
    from edgekit.sim.npu.simulator import NpuCore

    dram, prog, prog_addr, xs = _load_layer(layer, PYNQ)
    rtl = axi.RtlNpu(PYNQ, len(dram), mem_latency=latency)
    rtl.write(0, bytes(dram))
    got = rtl.run(prog_addr, len(prog.layers[0].insns))
    want = NpuCore(PYNQ, dram).run(prog.layers[0].insns)
    out = prog.tensors[layer.output]
    np.testing.assert_array_equal(out.unpack(rtl.read(out.addr, out.nbytes))[0], run_layer(layer, xs))
    assert got.leftover_tokens == 0 and rtl.reg(REG_WRAP_STATUS) == 0
    assert (got.vectors, got.instructions, got.dma_write_bytes) == (want.vectors, want.instructions, want.dma_write_bytes)


@pytest.mark.parametrize("where", ["by-3", "output-over-4k"])
@pytest.mark.parametrize("layer", LAYERS[:2], ids=lambda layer: layer.name)
def test_unaligned_dma_through_axi_is_bit_exact(layer, where, axi_any):
    """The layer's data moved up by 8k+3 bytes: every DMA beat straddles two bus words, some a 4 KiB page boundary."""
    import dataclasses

    from edgekit.npu.isa import Load, Store, encode_program

    dram, prog, prog_addr, xs = _load_layer(layer, PYNQ)
    out = prog.tensors[layer.output]
    shift = 3 if where == "by-3" else (4096 - out.addr - out.nbytes // 2) // 8 * 8 + 3
    assert prog_addr + shift > 4096 and (where == "by-3" or out.addr + shift < 4096 < out.addr + shift + out.nbytes)
    insns = [dataclasses.replace(i, dram_addr=i.dram_addr + shift) if isinstance(i, (Load, Store)) else i for i in prog.layers[0].insns]
    new_prog = -(-(prog_addr + shift) // 64) * 64
    moved = bytes(shift) + dram[:prog_addr] + bytes(new_prog - prog_addr - shift) + encode_program(insns)
    rtl = axi_any.RtlNpu(PYNQ, len(moved), mem_latency=5)
    rtl.write(0, moved)
    rtl.run(new_prog, len(insns))
    np.testing.assert_array_equal(out.unpack(rtl.read(out.addr + shift, out.nbytes))[0], run_layer(layer, xs))
    assert rtl.reg(REG_WRAP_STATUS) == 0


def test_digits_through_axi_is_bit_exact_with_the_model(axi, tmp_path):
    import onnx

    from edgekit.compiler.driver import compile_model
    from edgekit.package import open_package
    from edgekit.runtime.npu.runner import NpuRunner
    from test_npu_sim import _digits

    qdq, feeds = _digits()
    onnx.save(qdq, tmp_path / "digits_q.onnx")
    compile_model(str(tmp_path / "digits_q.onnx"), "pynq-z2", tmp_path / "digits.ekpkg")
    board, _ = get_board("pynq-z2")
    runs = {}
    for engine in ("rtl", "model"):
        runner = NpuRunner(open_package(tmp_path / "digits.ekpkg"), board, sim=engine)
        runs[engine] = (runner.run(feeds), runner.npu_report())
        runner.close()
    for name, value in runs["rtl"][0].items():
        np.testing.assert_array_equal(value, runs["model"][0][name], err_msg=name)
    layers = [lj["name"] for lj in runs["rtl"][1]["layers"] if lj["where"] == "npu"]
    assert layers == ["conv1", "conv2", "conv3", "fc1", "fc2"]
