"""int8 depthwise convolutions as four taps per ``vpdpbusd`` lane (backends.llvm.depthwise_vnni; issue #14).

Code generation is checked for explicit targets by reading their assembly,
whatever CPU runs the test; bit identity with the generic integer kernels
where this CPU runs AVX512-VNNI + VBMI code, and for Cascade Lake code
(AVX512-VNNI without VBMI: ``vpermd`` + ``vpshufb`` for ``vpermb``) also within
1 LSB of onnxruntime.
"""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

tvm = pytest.importorskip("tvm")

from _host_cpu import first_runnable, skip_unless_runs_here  # noqa: E402
from _int8_checks import assert_within_one_lsb_of_onnxruntime, parallel_closures  # noqa: E402

import edgekit.compiler.backends.llvm.int8 as cpu_int8  # noqa: E402
from edgekit.compiler.backends.llvm.depthwise_vnni import MAX_ACCUMULATORS, choose_tile, lanes_of  # noqa: E402
from edgekit.compiler.backends.llvm.relax_build import build_cpu, prepare_cpu_module, schedule_passes  # noqa: E402
from edgekit.compiler.importer import import_onnx  # noqa: E402
from edgekit.compress import QuantConfig, quantize  # noqa: E402
from edgekit.frontend.loader import load_model  # noqa: E402

ZEN4 = {"kind": "llvm", "mcpu": "znver4"}
ALDERLAKE = {"kind": "llvm", "mcpu": "alderlake"}  # AVX-VNNI (256-bit vpdpbusd), no AVX-512
CASCADELAKE = {"kind": "llvm", "mcpu": "cascadelake"}  # AVX512-VNNI, no VBMI (no vpermb)


@pytest.mark.parametrize(("mcpu", "lanes"), [("znver4", 16), ("icelake-server", 16), ("sapphirerapids", 16),
                                             ("alderlake", 8), ("cascadelake", 16), ("skylake-avx512", 0), ("haswell", 0)])  # fmt: skip
def test_chosen_by_the_targets_vnni(mcpu, lanes):
    # cascadelake has AVX512-VNNI but no VBMI (no vpermb): the 16-channel kernel, permuted without it;
    # skylake-avx512 has no VNNI (tap pairs), haswell no AVX-512 either (depthwise_avx2).
    assert lanes_of(tvm.target.Target({"kind": "llvm", "mcpu": mcpu})) == lanes


@pytest.mark.parametrize(("oh", "ow", "kh", "starts", "strides"),
                         [(20, 20, 3, [0], (1, 1)), (2, 96, 5, [0, 1], (1, 1)), (12, 96, 3, [0], (2, 1)), (80, 80, 7, [0, 3], (1, 1)),
                          (7, 7, 3, [0], (2, 2)), (1, 1, 3, [0], (1, 1))])  # fmt: skip
def test_tiles_divide_the_output_and_stay_under_1_kib(oh, ow, kh, starts, strides):
    rows, cols = choose_tile(oh, ow, kh, starts, strides)
    assert oh % rows == 0 and ow % cols == 0
    # 16 int32 lanes each: at 1 KiB TVM allocates the tile as a workspace, per tile.
    assert rows * cols <= MAX_ACCUMULATORS[16] and rows * cols * 16 * 4 < 1024
    assert rows * cols >= min(8, oh * ow) or (oh, ow) == (7, 7)  # 7x7 has no divisor tile of 8 to 15


def _model() -> onnx.ModelProto:
    """33 channels (two whole blocks and a ragged one): a strided 3x3 depthwise conv, ReLU
    (the next input's zero point is -128), a 5x5 and a 7x7 one, a 1x1 conv to 8 channels
    (fewer than one block) and a 3x3 one on those."""
    rng = np.random.default_rng(0)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)

    inits = [numpy_helper.from_array(w(33, 1, 3, 3), "w1"), numpy_helper.from_array(w(33, 1, 5, 5), "w2"),
             numpy_helper.from_array(w(33, 1, 7, 7), "w3"), numpy_helper.from_array(w(8, 33, 1, 1), "w4"),
             numpy_helper.from_array(w(8, 1, 3, 3), "w5"), numpy_helper.from_array(w(33, 1)[:, 0], "b1")]  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["d1"], group=33, strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["d1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["d2"], group=33, pads=[2, 2, 2, 2]),
        helper.make_node("Conv", ["d2", "w3"], ["d3"], group=33, strides=[1, 2], pads=[3, 3, 3, 3]),
        helper.make_node("Conv", ["d3", "w4"], ["c4"]),
        helper.make_node("Conv", ["c4", "w5"], ["y"], group=8, pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(nodes, "dw", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 33, 13, 18])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 7, 5])], inits)  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("dw_vnni")
    onnx.save(_model(), str(d / "fp32.onnx"))
    cal = {"x": np.random.default_rng(1).standard_normal((8, 33, 13, 18)).astype(np.float32)}
    return str(quantize(str(d / "fp32.onnx"), QuantConfig(), calibration=cal).save(d / "int8.onnx"))


def _depthwise_asm(model_path: str, target: dict) -> dict[str, str]:
    t = tvm.target.Target(target)
    mod = import_onnx(load_model(model_path))[0]
    prepared, _ = prepare_cpu_module(mod, t)
    with t, tvm.transform.PassContext(opt_level=3):
        scheduled = tvm.transform.Sequential(schedule_passes(t))(prepared)
    out = {}
    for gv, f in scheduled.functions_items():
        if isinstance(f, tvm.tirx.PrimFunc) and "depthwise" in gv.name_hint:
            lib = tvm.tirx.build(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), t)
            out[gv.name_hint] = lib.inspect_source("asm")
    return out


def _count(asm: str, mnemonic: str) -> int:
    return len(re.findall(rf"^\s+(?:\{{vex\}}\s+)?{mnemonic}\s", asm, flags=re.M))


@pytest.mark.parametrize("target", [ZEN4, ALDERLAKE, CASCADELAKE], ids=["znver4", "alderlake", "cascadelake"])
def test_kernels_take_four_taps_per_vpdpbusd(int8_model, target):
    kernels = _depthwise_asm(int8_model, target)
    assert len(kernels) == 4 and all("depthwise_conv2d_vnni" in n for n in kernels), sorted(kernels)
    for name, asm in kernels.items():
        assert _count(asm, "vpdpbusd"), name
        # No 16-bit products, no tap pairs.
        assert not {"vpmullw", "vpmaddwd", "vpdpwssd", "vpmulld"} & set(re.findall(r"^\s+(\w+)", asm, flags=re.M))
        # The accumulator tile stays under 1 KiB: no workspace allocated per tile.
        assert "TVMBackendAllocWorkspace" not in asm, name


def test_operands_are_permuted_once_per_tile(int8_model):
    kernels = _depthwise_asm(int8_model, ZEN4)
    for name, asm in kernels.items():
        dots, permutes = _count(asm, "vpdpbusd"), _count(asm, "vpermb")
        assert 0 < permutes <= dots, (name, permutes, dots)
    # An operand (4 pixels of 16 channels) serves the outputs of several rows (and, at
    # stride 1, columns) of the register tile: it is loaded and permuted once.
    assert sum(_count(a, "vpermb") for a in kernels.values()) < 0.6 * sum(_count(a, "vpdpbusd") for a in kernels.values())


def test_cascadelake_permutes_without_vpermb(int8_model):
    """AVX512-VNNI without VBMI: each operand's byte transpose is a dword permute across the 128-bit lanes and
    an in-lane byte shuffle, 16 channels per ``vpdpbusd zmm``; no VBMI instruction (it would not run there)."""
    kernels = _depthwise_asm(int8_model, CASCADELAKE)
    for name, asm in kernels.items():
        dots, permutes, shuffles = (_count(asm, m) for m in ("vpdpbusd", "vpermd", "vpshufb"))
        assert not {"vpermb", "vpermi2b", "vpermt2b", "vpmultishiftqb"} & set(re.findall(r"^\s+(\w+)", asm, flags=re.M)), name
        assert re.search(r"^\s+vpdpbusd\s+[^\n]*zmm", asm, flags=re.M), name
        assert 0 < permutes == shuffles <= dots, (name, permutes, shuffles, dots)
    # As with vpermb: an operand serving several outputs of the tile is permuted once.
    assert sum(_count(a, "vpermd") for a in kernels.values()) < 0.6 * sum(_count(a, "vpdpbusd") for a in kernels.values())


def _run(model_path: str, target: dict, x: np.ndarray) -> tuple[np.ndarray, list[str]]:
    mod, weights = import_onnx(load_model(model_path))[:2]
    built = build_cpu(mod, tvm.target.Target(target), weights)
    vm = tvm.relax.VirtualMachine(built.executable, tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(x), *built.params)
    return (out.numpy() if hasattr(out, "numpy") else out[0].numpy()), [g.name_hint for g in built.lowered.get_global_vars()]


@pytest.mark.parametrize("target", [{"kind": "llvm", "mcpu": first_runnable("znver4", "icelake-server")}, ALDERLAKE,
                                    CASCADELAKE], ids=["avx512vnni-vbmi", "alderlake", "cascadelake"])  # fmt: skip
def test_bit_identical_with_the_generic_integer_kernels(int8_model, monkeypatch, target):
    skip_unless_runs_here(target)
    x = np.random.default_rng(2).standard_normal((1, 33, 13, 18)).astype(np.float32) * 1.5
    got, names = _run(int8_model, target, x)
    # Each input in blocks: copied (pad_block), or written by the 8-channel 1x1 conv (place_block, 8-lane blocks).
    blocked = sum("pad_block" in n for n in names) + sum("place_block" in n for n in names)
    assert sum("depthwise_conv2d_vnni" in n for n in names) == 4 and blocked == 4
    monkeypatch.setattr(cpu_int8, "dot_isa", lambda t: None)
    generic, names = _run(int8_model, target, x)
    assert not any("vnni" in n for n in names)
    assert np.std(generic) > 0
    np.testing.assert_array_equal(got, generic)


def test_cascadelake_build_within_one_lsb_of_onnxruntime(int8_model):
    skip_unless_runs_here(CASCADELAKE)
    x = np.random.default_rng(3).standard_normal((1, 33, 13, 18)).astype(np.float32) * 1.5
    got, names = _run(int8_model, CASCADELAKE, x)
    assert sum("depthwise_conv2d_vnni" in n for n in names) == 4, names
    assert_within_one_lsb_of_onnxruntime(int8_model, {"x": x}, got)


@pytest.mark.parametrize("isa", [cpu_int8.VNNI512, cpu_int8.I16_512, cpu_int8.DW_I16_512, cpu_int8.VNNI256, cpu_int8.I16_256])
def test_dot_tiles_stay_under_1_kib(isa):
    # The other AVX-512 depthwise kernel (tap pairs, targets without VBMI) and the dense
    # convs share schedule_dot's tiles; at exactly 1 KiB TVM allocated each tile as a workspace.
    for vec_blocks in (1, 2, 3, 4, 8, 13):
        for rows in (1, 2, 3, 4, 5, 8, 12, 16, 20, 96):
            vectors, r = cpu_int8._tile(vec_blocks, rows, isa)
            assert vectors * r * isa.lanes * 4 < cpu_int8.STACK_TILE_BYTES, (vec_blocks, rows, vectors, r)


@pytest.mark.parametrize("isa", [cpu_int8.I16_256, cpu_int8.U8S8_256, cpu_int8.VNNI256, cpu_int8.VNNI512, cpu_int8.I16_512])
def test_dot_tiles_leave_registers_for_the_weights_and_the_input(isa):
    # Accumulators + one weight vector per tile vector + the broadcast input fit the register file:
    # AVX2's 7 x 2 tiles (17 live vectors in 16 registers) spilled and shuffled (ResNet-50 1.21x slower).
    for vec_blocks in (1, 2, 3, 4, 8, 13, 32, 64):
        for rows in (1, 2, 3, 4, 5, 7, 8, 12, 14, 16, 20, 28, 56, 96):
            vectors, r = cpu_int8._tile(vec_blocks, rows, isa)
            assert vectors * r + vectors + 1 <= isa.registers, (vec_blocks, rows, vectors, r)


@pytest.mark.parametrize("channels", [24, 40, 8])  # a ragged last block, two blocks and one, fewer than 16
@pytest.mark.parametrize("mcpu", ["znver4", "alderlake"])
def test_input_copy_allocates_nothing_per_parallel_iteration(mcpu, channels):
    """The blocked input copy (``pad_block``) names its row and pixel offsets as expressions: a named
    scalar is a buffer, and inside its parallel loop TVM took each from the heap
    (``TVMBackendAllocWorkspace``) on every iteration -- 3 to 4 per row before. Compiled only."""
    from edgekit.compiler.backends.llvm.depthwise_vnni import _block_func

    lanes = lanes_of(tvm.target.Target({"kind": "llvm", "mcpu": mcpu}))
    func = _block_func((1, 20, 20, channels), 1, 1, (22, 22), 128, lanes)
    target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu})
    asm = tvm.tirx.build(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target).inspect_source("asm")
    closures = parallel_closures(asm)
    assert len(closures) == 1, "the copy's row loop is no longer one parallel closure"
    assert "TVMBackendAllocWorkspace" not in closures[0]
