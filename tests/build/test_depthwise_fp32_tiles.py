"""fp32 depthwise tiles on AVX2 targets count the per-lane input's registers (backends.llvm.schedule).

PP-OCR cls's fp32 5x5 depthwise convs (3x96 pixels, 32 and 48 channels) got
6 x 16 register tiles in haswell code: 12 accumulators, which with the two
weight vectors, the input vectors and the inlined padding's zero do not fit
AVX2's 16 registers, so LLVM kept half of them on the stack and loaded and
stored them in the tap loop (71 ymm stack loads and stores in the 48-channel kernel). Those
kernels took 1-3x their time depending on the process (BENCHMARKS.md, "PP-OCR
cls in AVX2 code: a per-kernel account"). :func:`choose_tile` now counts them
(``lane_inputs``) on AVX2-class targets; AVX-512 tiles are unchanged.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from _host_cpu import skip_unless_runs_here  # noqa: E402

from edgekit.compiler.backends.llvm.relax_build import build_cpu  # noqa: E402
from edgekit.compiler.backends.llvm.schedule import TILE_BYTES, choose_tile  # noqa: E402
from edgekit.compiler.importer import import_onnx  # noqa: E402
from edgekit.frontend.loader import load_model  # noqa: E402

#: PP-OCR cls's depthwise layers: (channels, output width).
CLS_DEPTHWISE = ((8, 96), (24, 96), (32, 96), (40, 96), (48, 96), (88, 96), (104, 96), (200, 96))


def test_lane_input_tiles_leave_registers_for_inputs_weights_and_padding():
    for channels in (8, 16, 24, 32, 48, 64, 88, 200, 512):
        for width in range(1, 100):
            vec, rows = choose_tile(channels, width, 8, channels, 16, lane_inputs=True)
            vectors = vec // 8
            assert rows * vectors + 2 * vectors + 3 <= 16 or (vec < 8 and rows * 1 + 5 <= 16)
            assert rows * vec * 4 < TILE_BYTES


def test_cls_depthwise_tiles_change_on_avx2_only():
    for channels, width in CLS_DEPTHWISE:
        # AVX2: at most 8 accumulators (was 12: 6 x 16 or 12 x 8).
        vec, rows = choose_tile(channels, width, 8, channels, 16, lane_inputs=True)
        assert rows * (vec // 8) <= 8
        # AVX-512 (16 lanes, 32 registers): the same tile with or without the count.
        assert choose_tile(channels, width, 16, channels, 32, lane_inputs=True) == choose_tile(
            channels, width, 16, channels, 32
        )
    # Dense convs (a broadcast input) keep their tiles.
    assert choose_tile(48, 96, 8, 48, 16) == (16, 6)


def _depthwise_model(channels: int, seed: int = 0):
    """One 5x5 depthwise conv (padding 2) and a HardSwish on a 1 x C x 3 x 96 input: PP-OCR cls's shape."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array((rng.standard_normal((channels, 1, 5, 5)) * 0.3).astype(np.float32), "w")
    b = numpy_helper.from_array((rng.standard_normal(channels) * 0.1).astype(np.float32), "b")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], "dw", pads=[2, 2, 2, 2], group=channels),
        helper.make_node("HardSwish", ["c"], ["y"], "hswish"),
    ]
    graph = helper.make_graph(
        nodes, "dw", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, 3, 96])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, 3, 96])], initializer=[w, b],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _stack_vector_accesses(asm: str) -> int:
    """ymm loads and stores addressed by ``%rsp`` in the depthwise kernel's compute function."""
    body = re.search(r"<fused_conv2d[a-z0-9_]*compute_>:\n(.*?)\n\n", asm, re.S)
    assert body is not None, "no depthwise compute function in the library"
    return len(re.findall(r"vmov(?:ups|aps|dqu|dqa)\s+[^\n]*%ymm[^\n]*\(%rsp\)|vmov(?:ups|aps|dqu|dqa)\s+[^\n]*\(%rsp\),\s*%ymm",
                          body.group(1)))  # fmt: skip


@pytest.mark.skipif(shutil.which("objdump") is None, reason="needs objdump")
@pytest.mark.parametrize("channels", [32, 48])
def test_haswell_depthwise_keeps_its_tile_in_registers_and_matches_onnxruntime(tmp_path, channels):
    from tvm import relax

    model = _depthwise_model(channels)
    mod, weights = import_onnx(load_model(model))[:2]
    target = tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "haswell"})
    built = build_cpu(mod, target, weights, num_threads=1)
    lib = tmp_path / "dw.so"
    built.executable.export_library(str(lib))
    asm = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(lib)], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    # 71 (48 channels) and 60 (32) by this count before; the tap loop no longer spills accumulators.
    assert _stack_vector_accesses(asm) <= 20

    skip_unless_runs_here(target)
    x = np.random.default_rng(1).standard_normal((1, channels, 3, 96)).astype(np.float32)
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(lib)), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x), *built.params).numpy()
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
