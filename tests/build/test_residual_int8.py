"""ResNet bottleneck blocks whose residual adds are ONNX ``Sum`` nodes run int8 in the convs' kernels.

ResNet-50 (the onnx wheel's "light" model) writes its residual adds as
``Sum``; TVM's importer makes that ``sum(stack(broadcast_to(a), broadcast_to(b)), axis=0)``,
which the integer lowering's binary rule did not match: the ``DequantizeLinear``
pair, the add, the Relu and the ``QuantizeLinear`` stayed float, NCHW between
NHWC convs, each behind transposes and followed by a transpose back to the
next conv's u8 / int16 operand (8 ms of ResNet-50's 28 ms of int8 kernels in
znver4 code). Now the rule takes a two-input ``Sum`` as an ``Add``
(integer/patterns.py), so the requantized add and its Relu are in the
producing conv's epilogue, as for ``Add`` models.

The model is two bottleneck blocks: a stride-2 block with a downsample conv
(the block input read by two dense convs) and an identity block, each
``relu(Sum(branch, skip))``, then a 1x1 conv. Kernels are checked for
``znver4`` (u8 operands) and ``haswell`` (int16) code, and for ``cascadelake`` and
``skylake-avx512``, whatever CPU runs the test; outputs bit-identical with the same model written with ``Add`` and
within 1 LSB of onnxruntime where this CPU runs the code.

A conv whose epilogue adds a residual operand is one loop nest: the
operand's widening (``astype(t, float32) * s``) is inlined into the register
tile's write-back (tap_fusion.inline_tap_chains) and the downsample conv of
a block writes int8, not that widening in float32 (tap_fusion._widening).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import tvm
from _host_cpu import skip_unless_runs_here
from _int8_checks import assert_within_one_lsb_of_onnxruntime, kernel_calls, quantized, run_built
from onnx import TensorProto, helper, numpy_helper

from edgekit.compiler.backends.llvm.relax_build import prepare_cpu_module, schedule_passes
from edgekit.compiler.importer import import_onnx
from edgekit.frontend.loader import load_model

TARGETS = {mcpu: tvm.target.Target({"kind": "llvm", "mcpu": mcpu}) for mcpu in ("znver4", "haswell")}
#: Kernel structure also for the AVX-512 targets without VBMI (cascadelake: vpdpbusd; skylake-avx512: no VNNI).
STRUCTURE = {**TARGETS, **{m: tvm.target.Target({"kind": "llvm", "mcpu": m})
                            for m in ("cascadelake", "skylake-avx512")}}  # fmt: skip
SHAPE = (1, 16, 12, 12)


def _fp32_model(add_op: str) -> onnx.ModelProto:
    """x -> conv 1x1 (32) -> relu = t; block A (stride 2, downsample conv 32 -> 64), block B (identity), conv 1x1."""
    rng = np.random.default_rng(7)
    inits = []

    def w(name: str, *shape: int) -> str:
        value = rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))
        inits.append(numpy_helper.from_array(value.astype(np.float32), name))
        b = f"{name}_b"
        inits.append(numpy_helper.from_array((rng.standard_normal(shape[0]) * 0.1).astype(np.float32), b))
        return name

    def conv(x: str, y: str, weight: str, relu: bool = True, **attrs) -> list:
        raw = f"{y}_raw" if relu else y
        nodes = [helper.make_node("Conv", [x, weight, f"{weight}_b"], [raw], **attrs)]
        return nodes + ([helper.make_node("Relu", [raw], [y])] if relu else [])

    nodes = [
        *conv("x", "t", w("w0", 32, 16, 1, 1)),
        # Block A: 1x1 stride 2, 3x3, 1x1 to 64; the downsample conv reads t too.
        *conv("t", "a1", w("wa1", 16, 32, 1, 1), strides=[2, 2]),
        *conv("a1", "a2", w("wa2", 16, 16, 3, 3), pads=[1, 1, 1, 1]),
        *conv("a2", "a3", w("wa3", 64, 16, 1, 1), relu=False),
        *conv("t", "d", w("wd", 64, 32, 1, 1), relu=False, strides=[2, 2]),
        helper.make_node(add_op, ["a3", "d"], ["ra"]),
        helper.make_node("Relu", ["ra"], ["r"]),
        # Block B: identity skip.
        *conv("r", "b1", w("wb1", 16, 64, 1, 1)),
        *conv("b1", "b2", w("wb2", 16, 16, 3, 3), pads=[1, 1, 1, 1]),
        *conv("b2", "b3", w("wb3", 64, 16, 1, 1), relu=False),
        helper.make_node(add_op, ["r", "b3"], ["rb"]),
        helper.make_node("Relu", ["rb"], ["s"]),
        *conv("s", "y", w("wy", 32, 64, 1, 1), relu=False),
    ]
    graph = helper.make_graph(
        nodes, "bottlenecks", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(SHAPE))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 6, 6])], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    """The int8 model with ``Sum`` residual adds and with ``Add`` (the same calibration and weights)."""
    cal = {"x": np.random.default_rng(1).standard_normal((16, *SHAPE[1:])).astype(np.float32)}
    return {op: quantized(tmp_path_factory.mktemp(op), _fp32_model(op), cal) for op in ("Sum", "Add")}


def test_sum_residual_adds_are_lowered(models):
    report = import_onnx(load_model(models["Sum"]))[2]
    assert [c["kind"] for c in report["rewritten"]].count("add") == 2, report
    assert report["kept_float"] == [], report["kept_float"]
    assert "sum" not in report["float_ops"] and "add" not in report["float_ops"], report["float_ops"]


@pytest.mark.parametrize("mcpu", STRUCTURE)
def test_no_transpose_or_float_add_kernel(models, mcpu):
    calls = kernel_calls(models["Sum"], STRUCTURE[mcpu])
    first, *inner, last = calls
    assert first[1][0][-1] == "float32" and last[2][-1] == "float32", calls  # the model's input and output
    # Between them: the convs (residual adds, Relu and operand conversions in their epilogues)
    # and the 3x3 convs' pads; nothing else -- no transpose, no float add, no conversion kernel.
    others = [name for name, _, _ in inner if "conv2d" not in name and not name.startswith("pad_rows")]
    assert others == [], calls
    assert not any("transpose" in name for name, _, _ in calls[1:-1]), calls
    for name, ins, out in inner:  # activations integer; float only as per-channel constants
        assert out[-1] != "float32", name
        assert all(i[-1] != "float32" or i[:-1] in ((1, 1, 1, i[-2]),) for i in ins), (name, ins)
    # Both residual adds are in conv epilogues: two convs read another conv's int8 / operand output
    # besides their own input.
    activations = [[i for i in ins if len(i) == 5 and i[-1] in ("int8", "uint8", "int16")] for _, ins, _ in inner]
    skip_readers = [name for (name, _, _), acts in zip(inner, activations) if "conv2d" in name and len(acts) == 2]
    assert len(skip_readers) == 2, calls
    # Kernels as with Add residual adds.
    assert [n for n, _, _ in calls] == [n for n, _, _ in kernel_calls(models["Add"], STRUCTURE[mcpu])]


@pytest.mark.parametrize("mcpu", TARGETS)
def test_within_one_lsb_of_onnxruntime_and_as_add(models, mcpu):
    skip_unless_runs_here(mcpu)
    xs = [np.random.default_rng(seed).standard_normal(SHAPE).astype(np.float32) for seed in (5, 6)]
    got = run_built(models["Sum"], TARGETS[mcpu], xs)
    for x, out in zip(xs, got):
        assert_within_one_lsb_of_onnxruntime(models["Sum"], {"x": x}, out)
    for out, same in zip(got, run_built(models["Add"], TARGETS[mcpu], xs)):
        np.testing.assert_array_equal(out, same)


def _root_loops(func: tvm.tirx.PrimFunc) -> int:
    """How many loop nests the scheduled kernel's root block holds."""
    count = 0

    def visit(stmt) -> None:
        nonlocal count
        if isinstance(stmt, tvm.tirx.For):
            count += 1
            return
        for field in ("body", "seq", "block"):
            inner = getattr(stmt, field, None)
            if inner is None:
                continue
            for s in [inner] if isinstance(inner, tvm.tirx.Stmt) else list(inner):
                visit(s)

    visit(func.body)
    return count


@pytest.mark.parametrize("op", ["Sum", "Add"])
@pytest.mark.parametrize("mcpu", STRUCTURE)
def test_residual_conv_is_one_loop_nest(models, mcpu, op):
    target = STRUCTURE[mcpu]
    prepared, _ = prepare_cpu_module(import_onnx(load_model(models[op]))[0], target)
    with target, tvm.transform.PassContext(opt_level=3):
        scheduled = tvm.transform.Sequential(schedule_passes(target))(prepared)
    convs = {gv.name_hint: f for gv, f in scheduled.functions_items()
             if isinstance(f, tvm.tirx.PrimFunc) and "conv2d" in gv.name_hint}  # fmt: skip
    def activations(f: tvm.tirx.PrimFunc) -> int:
        inputs = f.params[:-1]  # buffers
        return sum(len(b.shape) == 4 and int(b.shape[1]) > 1 and str(b.dtype) in ("int8", "uint8", "int16")
                   for b in inputs)  # fmt: skip

    residual = [name for name, f in convs.items() if activations(f) == 2]
    assert len(residual) == 2, list(convs)
    for name, func in convs.items():
        assert _root_loops(func) == 1, (name, func)
