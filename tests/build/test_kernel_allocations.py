"""No CPU kernel takes memory from the heap on every iteration of a loop (issue #14).

TVM 0.27's LowerTVMBuiltin turns an allocation into a ``TVMBackendAllocWorkspace`` /
``TVMBackendFreeWorkspace`` pair unless it is "global" scope and under 1 KiB, and a
named scalar or vector in a hand-written TIR kernel is such an allocation ("local").
Inside a loop that pair runs on every iteration: it cost SqueezeNet int8 a tenth of
its time in the dense convs (36dbe4e). The check reads each kernel after the host
lowering (TVM's own pipeline up to and including LowerTVMBuiltin, no code generation):
a heap call nested in any loop, parallel or serial, fails it; so does any heap buffer
under 1 KiB (it fits on the stack; taken before a parallel loop, all threads share it).
Whole-tensor intermediates (1 KiB and more, once per call) are TVM's and allowed.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest

tvm = pytest.importorskip("tvm")

from _int8_checks import normal_feeds, quantized, small_cnn  # noqa: E402

from edgekit.compiler.backends.llvm.relax_build import prepare_cpu_module, schedule_passes  # noqa: E402
from edgekit.compiler.importer import import_onnx  # noqa: E402
from edgekit.compress import QuantConfig, quantize  # noqa: E402
from edgekit.frontend.loader import load_model  # noqa: E402

TARGETS = {
    "znver4": {"kind": "llvm", "mcpu": "znver4"},  # AVX-512 VNNI and VBMI
    "alderlake": {"kind": "llvm", "mcpu": "alderlake"},  # AVX-VNNI
    "haswell": {"kind": "llvm", "mcpu": "haswell"},  # AVX2 only
    "cortex-a72": {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72", "mattr": ["+neon"]},
}

#: TVM's LowerTVMBuiltin keeps a "global" buffer under this size on the stack (its kMaxStackAlloca).
STACK_BYTES = 1024

_LOOP = re.compile(r"\s*for .* in (?:T\.)?(parallel|serial|range|unroll|vectorized|grid)\(")
_NAME = re.compile(r"\s*(\w+)(?::[^=]*)? = ")
_SIZE = re.compile(r"TVMBackendAllocWorkspace\([^,]*,[^,]*, T\.uint64\((\d+)\)")


def heap_allocations(func: tvm.tirx.PrimFunc) -> list[str]:
    """The buffers a lowered kernel takes from the heap inside a loop (``name in <loop kinds>``) and the
    small ones it takes outside (``name: N bytes``), read from its script (a call is one line)."""
    found, loops = [], []
    for line in func.script().splitlines():
        indent = len(line) - len(line.lstrip())
        while loops and loops[-1][0] >= indent:
            loops.pop()
        if loop := _LOOP.match(line):
            loops.append((indent, loop.group(1)))
        elif "TVMBackendAllocWorkspace" in line:
            name = _NAME.match(line)
            name = name.group(1) if name else line.strip()
            size = _SIZE.search(line)
            if loops:
                found.append(f"{name} in {' > '.join(kind for _i, kind in loops)}")
            elif size is None or int(size.group(1)) < STACK_BYTES:
                found.append(f"{name}: {size.group(1) if size else '?'} bytes")
    return found


def _lowered(funcs: dict[str, tvm.tirx.PrimFunc], target: tvm.target.Target) -> tvm.IRModule:
    """``funcs`` through TVM's TIR pipeline and host finalization (LowerTVMBuiltin), as ``tvm.tirx.build`` does."""
    from tvm.tirx.build import split_host_device_mods

    mod = tvm.tirx.transform.BindTarget(target.with_host(target))(tvm.IRModule(funcs))
    pipeline, finalize_host, _ = tvm.tirx.get_default_tir_pipeline(target)
    host, _ = split_host_device_mods(pipeline(mod))
    return finalize_host()(host)


def _offenders(model_path: str, target: tvm.target.Target) -> dict[str, list[str]]:
    """:func:`heap_allocations` of every kernel of the model, every kernel parallel (the first
    scheduling pass alone: the small-kernel rule would make most of them serial)."""
    prepared, _ = prepare_cpu_module(import_onnx(load_model(model_path))[0], target, lift_params=False)
    with target, tvm.transform.PassContext(opt_level=3):
        scheduled = schedule_passes(target)[0](prepared)
        funcs = {gv.name_hint: f.with_attr("global_symbol", gv.name_hint)
                 for gv, f in scheduled.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}  # fmt: skip
        lowered = _lowered(funcs, target)
    found = {gv.name_hint: heap_allocations(f) for gv, f in lowered.functions_items()}
    return {name: hits for name, hits in found.items() if hits}


#: The models each target's check compiles: PP-OCR cls int8 (VNNI dense and depthwise kernels,
#: VBMI table lookups, pads, squeeze sums) once, its preparation taking some 20 s; the small CNN
#: (int8 and fp32: the dense and depthwise kernels of each target's dot product) on every target.
#: The hand-written kernels that only other targets or models use are checked on their own below.
MODELS = {
    "znver4": ("ppocr-cls-int8", "cnn-int8", "cnn-fp32"),
    "haswell": ("cnn-int8", "cnn-fp32"),
    "alderlake": ("cnn-int8", "cnn-fp32"),
    "cortex-a72": ("cnn-int8", "cnn-fp32"),
}


@pytest.fixture(scope="module")
def models(ppocr_cls_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """PP-OCR cls quantized once (int8) and the small test CNN (fp32 and int8), by name."""
    directory = tmp_path_factory.mktemp("allocations")
    fp32 = load_model(str(ppocr_cls_path), {"x": (1, 3, 48, 192)}).model
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 48, 192)).astype(np.float32)
    cls = directory / "cls-int8.onnx"
    quantize(fp32, QuantConfig(), calibration={"x": x}).save(cls)
    cnn = small_cnn((1, 3, 16, 16), seed=0, mean=0.0, stride_on="depthwise")
    onnx.save(cnn, str(directory / "cnn-fp32.onnx"))
    cnn_int8 = quantized(directory, cnn, {"x": np.concatenate([f["x"] for f in normal_feeds((1, 3, 16, 16), 4, 1)])})
    return {"ppocr-cls-int8": str(cls), "cnn-fp32": str(directory / "cnn-fp32.onnx"), "cnn-int8": cnn_int8}


def _lowered_one(func: tvm.tirx.PrimFunc, mcpu: str) -> tvm.tirx.PrimFunc:
    target = tvm.target.Target(TARGETS[mcpu])
    with target:
        return _lowered({"main": func.with_attr("global_symbol", "main")}, target)["main"]


def test_the_check_sees_named_scalars_and_small_heap_buffers():
    from tvm.script import tirx as T

    @T.prim_func(private=True, s_tir=True)
    def named(Xs: T.Buffer((64, 16), "int8"), Ys: T.Buffer((64, 16), "int8")) -> None:
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        with T.sblock("root"):
            acc = T.decl_buffer((16,), "int8", scope="local")
            for i in T.parallel(64):
                for j in range(2):
                    half = j * 8  # a named scalar: a "local" buffer, taken per iteration of the parallel loop
                    acc[T.ramp(half, 1, 8)] = Xs.vload([i, half], "int8x8")
                Ys[i, T.ramp(0, 1, 16)] = acc[T.ramp(0, 1, 16)]

    assert heap_allocations(_lowered_one(named, "znver4")) == ["acc: 16 bytes", "half in parallel"]


def _hand_written() -> dict[str, tvm.tirx.PrimFunc]:
    """The hand-written kernels (``T.prim_func``), one typical shape each."""
    from edgekit.compiler.backends.llvm import channel_sum, concat, depthwise_vnni, int8_input, lookup, pad

    return {
        "max_pool": channel_sum._max_pool_rows((1, 24, 24, 40), (2, 2), (2, 2)),
        "channel_sum": channel_sum.channel_sum_rows((1, 24, 24, 40)),
        "concat": concat._concat_func((1, 5, 7, 45), (1, 5, 7, 45), "float32"),
        "pad_block": depthwise_vnni._block_func((1, 20, 20, 40), 1, 1, (22, 22), 128, 16),
        "quantize_input": int8_input._input_func(3, 48, 192, 1, 1, 50, 194, 0, "uint8"),
        "lookup_vbmi": lookup._lookup_vbmi_func((1, 8, 8, 40)),
        "lookup_avx2": lookup._lookup_avx2_func((1, 8, 8, 40)),
        "lookup_pad_avx2": lookup.lookup_pad_avx2_func((1, 6, 6, 40), 1, 2, (1, 8, 10, 48), -7, 5),
        "pad": pad._pad_func([(1, 6, 6, 24), (1, 6, 6, 17)], 1, 1, (1, 8, 8, 48), 0, 0, "int8", "uint8"),
    }


@pytest.mark.parametrize("mcpu", ["znver4", "cortex-a72"])
def test_hand_written_kernels_take_nothing_from_the_heap(mcpu):
    from edgekit.compiler.backends.llvm.thread_shares import parallel_outer

    found = {}
    for name, func in _hand_written().items():
        # As written, and with the outer loop parallel where the two-thread rule would split it.
        for form, f in (("", func), (" split", parallel_outer(func, 2))):
            if f is not None and (heap := heap_allocations(_lowered_one(f, mcpu))):
                found[name + form] = heap
    assert found == {}


@pytest.mark.parametrize("mcpu", TARGETS)
def test_no_kernel_allocates_from_the_heap_per_loop_iteration(models, mcpu):
    target = tvm.target.Target(TARGETS[mcpu])
    for model in MODELS[mcpu]:
        assert _offenders(models[model], target) == {}, model
