"""The accelerator's RTL (rtl/npu) under Verilator against the Python model and the integer reference.

Outputs must be bit-exact and, since the cycle model is calibrated from the
RTL, cycle counts must agree within 5 % per program. The first run builds
the pynq-z2 (8x8) model (about 30 s on two cores, cached under
~/.cache/edgekit); every test here uses that one configuration.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgekit.compiler.backends.npu.codegen import generate
from edgekit.compiler.backends.npu.tiling import plan
from edgekit.core.profiles import NpuConfig, get_board
from edgekit.npu.isa import Deps, encode_program
from edgekit.npu.layers import ConvLayer
from edgekit.npu.reference import run_layer
from edgekit.npu.rtl_sources import isa_header, rtl_dir
from edgekit.npu.ring import NpuFault
from edgekit.sim.npu.simulator import NpuCore
from edgekit.sim.npu.verilator import verilator_missing

sys.path.insert(0, str(Path(__file__).parent))
from test_npu_sim import LAYERS, _digits, conv, tie_add, tie_conv  # noqa: E402

PYNQ = NpuConfig(8, 8, 100_000_000, 32 * 1024, 32 * 1024, 32 * 1024, 8.0)
needs_verilator = pytest.mark.skipif(bool(verilator_missing()), reason=f"NPU RTL co-simulation: {verilator_missing()}")


def test_isa_header_is_generated_from_the_isa():
    assert (rtl_dir() / "npu_isa.vh").read_text() == isa_header()


def _load_layer(layer, npu, seed=1):
    """DRAM image with one layer's program, constants and random int8 inputs."""
    rng = np.random.default_rng(seed)
    view = layer.in_shape if isinstance(layer, ConvLayer) else layer.shape
    shapes = {n: (1, *view) for n in layer.inputs} | {layer.output: (1, *layer.out_shape)}
    prog = generate([layer], {layer.name: plan(layer, npu)}, npu, shapes)
    insns = prog.layers[0].insns
    prog_addr = -(-(prog.const_base + len(prog.const_image)) // 64) * 64
    dram = bytearray(prog_addr + 32 * len(insns))
    dram[prog.const_base : prog.const_base + len(prog.const_image)] = prog.const_image
    dram[prog_addr:] = encode_program(insns)
    xs = [rng.integers(-128, 128, (1, *view), dtype=np.int8) for _ in layer.inputs]
    for name, x in zip(layer.inputs, xs):
        t = prog.tensors[name]
        dram[t.addr : t.addr + t.nbytes] = t.pack(x)
    return dram, prog, prog_addr, [x[0] for x in xs]


@pytest.fixture(scope="module")
def rtl_factory():
    from edgekit.sim.npu.rtl_device import RtlNpu

    return lambda npu, size: RtlNpu(npu, size)


@needs_verilator
@pytest.mark.parametrize("npu", [PYNQ, dataclasses.replace(PYNQ, input_buffer_bytes=2048, weight_buffer_bytes=1024, acc_buffer_bytes=4096)],
                         ids=["8x8", "8x8-small-buffers"])  # fmt: skip
# conv8x8k1: one weight block per step, so a GEMM reads the entry its LOAD
# wrote last (a LOAD ends only once that entry is in the buffer).
@pytest.mark.parametrize("layer", [*LAYERS, conv(8, 8, 24, k=1)], ids=lambda layer: layer.name if layer.kind == "conv" else "add")
def test_rtl_layer_is_bit_exact_and_matches_the_cycle_model(layer, npu, rtl_factory):
    dram, prog, prog_addr, xs = _load_layer(layer, npu)
    # One RTL build (pynq-z2's buffers) runs both: a program tiled for smaller
    # buffers only addresses entries that exist in bigger ones.
    rtl = rtl_factory(PYNQ, len(dram))
    rtl.write(0, bytes(dram))
    got = rtl.run(prog_addr, len(prog.layers[0].insns))
    want = NpuCore(npu, dram).run(prog.layers[0].insns)
    out = prog.tensors[layer.output]
    y = out.unpack(rtl.read(out.addr, out.nbytes))[0]
    np.testing.assert_array_equal(y, run_layer(layer, xs))
    assert got.leftover_tokens == 0
    assert (got.vectors, got.instructions) == (want.vectors, want.instructions)
    assert (got.dma_read_bytes, got.dma_write_bytes) == (want.dma_read_bytes, want.dma_write_bytes)
    assert abs(got.cycles - want.cycles) <= 0.05 * want.cycles, (got.cycles, want.cycles)


@needs_verilator
@pytest.mark.parametrize("layer", [tie_add(16, 6), tie_conv(8, 8, 6)], ids=["add", "conv-two-stages"])
def test_rtl_rounds_exact_ties_to_even(layer, rtl_factory):
    """Layers where a quarter to a half of the rescaled values are exactly half-way (test_npu_sim checks
    the reference against numpy's rint): the ALU's tie detection, in the same cycles as the model."""
    dram, prog, prog_addr, xs = _load_layer(layer, PYNQ)
    rtl = rtl_factory(PYNQ, len(dram))
    rtl.write(0, bytes(dram))
    got = rtl.run(prog_addr, len(prog.layers[0].insns))
    out = prog.tensors[layer.output]
    np.testing.assert_array_equal(out.unpack(rtl.read(out.addr, out.nbytes))[0], run_layer(layer, xs))
    assert got.cycles == NpuCore(PYNQ, dram).run(prog.layers[0].insns).cycles


SMALL_4X4 = NpuConfig(4, 4, 100_000_000, 4096, 2048, 4096, 8.0)


@needs_verilator
@pytest.mark.parametrize("layer", [LAYERS[1], LAYERS[-1]], ids=["conv-two-stages", "add"])
def test_rtl_with_lut_products_is_bit_exact(layer, monkeypatch):
    """ARRAY_DSP below ROWS*COLS: 5 products as `*` (DSP blocks), 11 from the LUT multiplier."""
    from edgekit.npu.rtl_sources import RtlConfig
    from edgekit.sim.npu import rtl_device

    from_npu = RtlConfig.from_npu
    monkeypatch.setattr(RtlConfig, "from_npu", classmethod(lambda cls, npu: dataclasses.replace(from_npu(npu), array_dsp=5)))
    dram, prog, prog_addr, xs = _load_layer(layer, SMALL_4X4)
    rtl = rtl_device.RtlNpu(SMALL_4X4, len(dram))
    assert rtl.config.parameters()["ARRAY_DSP"] == 5
    rtl.write(0, bytes(dram))
    got = rtl.run(prog_addr, len(prog.layers[0].insns))
    out = prog.tensors[layer.output]
    np.testing.assert_array_equal(out.unpack(rtl.read(out.addr, out.nbytes))[0], run_layer(layer, xs))
    assert got.cycles == NpuCore(SMALL_4X4, dram).run(prog.layers[0].insns).cycles


@needs_verilator
def test_a_token_never_pushed_is_a_fault_not_a_hang(rtl_factory):
    layer = conv(16, 16, 8)
    dram, prog, prog_addr, _ = _load_layer(layer, PYNQ)
    insns = [dataclasses.replace(i, deps=Deps(i.deps.pop_prev, i.deps.pop_next)) if hasattr(i, "deps") else i for i in prog.layers[0].insns]
    dram[prog_addr:] = encode_program(insns)
    rtl = rtl_factory(PYNQ, len(dram))
    rtl.write(0, bytes(dram))
    with pytest.raises(NpuFault, match="no progress"):
        rtl.run(prog_addr, len(insns), stall_limit=20_000)


@pytest.fixture(scope="module")
def digits_package(tmp_path_factory):
    from edgekit.compiler.driver import compile_model

    qdq, feeds = _digits()
    tmp = tmp_path_factory.mktemp("rtl")
    src = tmp / "digits_q.onnx"
    onnx.save(qdq, src)
    compile_model(str(src), "pynq-z2", tmp / "digits.ekpkg")
    return tmp, src, feeds


@needs_verilator
def test_digits_on_the_rtl_matches_the_model_and_the_host_integer_compile(digits_package):
    from edgekit.compiler.backend import CompileOptions
    from edgekit.compiler.driver import compile_model
    from edgekit.package import open_package
    from edgekit.runtime.npu.runner import NpuRunner
    from edgekit.runtime.runner import open_runner

    tmp, src, feeds = digits_package
    board, _ = get_board("pynq-z2")
    runs = {}
    for engine in ("rtl", "model"):
        runner = NpuRunner(open_package(tmp / "digits.ekpkg"), board, sim=engine)
        runs[engine] = (runner.run(feeds), runner.npu_report(), runner.info())
        runner.close()
    assert runs["rtl"][2]["runner"] == "npu-rtl"
    # Bit-exact with the NPU: every layer int8 (no fp32 layers chosen by timing).
    compile_model(str(src), "host", tmp / "host.ekpkg", options=CompileOptions(int8_choice="int8"))
    host_board, _ = get_board("host")
    host = open_runner(open_package(tmp / "host.ekpkg"), host_board)
    try:
        cpu = host.run(feeds)
    finally:
        host.close()
    for name, value in runs["rtl"][0].items():
        np.testing.assert_array_equal(value, runs["model"][0][name], err_msg=name)
        np.testing.assert_array_equal(value, cpu[name], err_msg=name)
    rtl_layers = [lj for lj in runs["rtl"][1]["layers"] if lj["where"] == "npu"]
    model_layers = [lj for lj in runs["model"][1]["layers"] if lj["where"] == "npu"]
    assert [lj["name"] for lj in rtl_layers] == ["conv1", "conv2", "conv3", "fc1", "fc2"]
    for got, want in zip(rtl_layers, model_layers):
        assert abs(got["cycles"] - want["cycles"]) <= 0.05 * want["cycles"], got["name"]


@needs_verilator
def test_cli_runs_and_benches_on_the_rtl(digits_package, capsys):
    from edgekit.cli.main import main

    tmp, _, feeds = digits_package
    np.savez(tmp / "in.npz", **feeds)
    assert main(["run", str(tmp / "digits.ekpkg"), "--sim", "rtl", "--input", str(tmp / "in.npz"), "-o", str(tmp / "out.npz"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["runner"] == "npu-rtl" and summary["simulated"]
    assert main(["bench", str(tmp / "digits.ekpkg"), "--sim", "rtl", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["cycles"]["min"] > 0 and report["npu"]["layers"]


def test_sim_rtl_is_refused_on_a_board_without_an_npu(tmp_path, capsys):
    from edgekit.cli.main import main
    from edgekit.compiler.backend import CompileOptions
    from edgekit.compiler.driver import compile_model

    qdq, feeds = _digits()
    onnx.save(qdq, tmp_path / "q.onnx")
    # Any host package is refused; int8 kept unmeasured: one build, no int8/fp32 timing rounds.
    compile_model(str(tmp_path / "q.onnx"), "host", tmp_path / "host.ekpkg", options=CompileOptions(int8_choice="int8"))
    np.savez(tmp_path / "in.npz", **feeds)
    assert main(["run", str(tmp_path / "host.ekpkg"), "--sim", "rtl", "--input", str(tmp_path / "in.npz"), "-o", str(tmp_path / "o.npz")]) == 2
    assert "needs an NPU board" in capsys.readouterr().err
