"""Channel concatenations as vector row copies (edgekit.compiler.backends.llvm.concat; issue #14 item 6),
and their parallel form free of byte copies (SqueezeNet int8's 55 x 55 fire concat, split on two threads)."""

from __future__ import annotations

import re

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from _int8_checks import parallel_closures  # noqa: E402

from edgekit.compiler.backends.llvm.concat import concat_pass  # noqa: E402


def _concat_module(a, b, dtype, axis=3):
    from tvm import relax
    from tvm.relax import op as R

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(a, dtype))
    y = relax.Var("y", relax.TensorType(b, dtype))
    with bb.function("main", [x, y], {"num_input": 2}):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(R.concat([x, y], axis=axis)))
        bb.emit_func_output(out)
    return concat_pass()(bb.get())


@pytest.mark.parametrize(
    ("a", "b", "dtype", "rows"),
    [((1, 5, 7, 45), (1, 5, 7, 45), "float32", True),  # SqueezeNet fire module pruned 30 %
     ((2, 3, 4, 17), (2, 3, 4, 32), "int8", True),
     ((1, 3, 3, 16), (1, 3, 3, 23), "uint8", True),
     ((1, 4, 4, 32), (1, 4, 4, 64), "float32", True),  # whole vectors: TVM's concat is not vectorized in parallel
     ((1, 3, 5, 64), (1, 3, 5, 64), "int8", True),  # SqueezeNet's fire concat: 64-byte copies
     ((1, 3, 5, 32), (1, 3, 5, 96), "uint8", True),  # 32-byte copies
     ((1, 4, 4, 8), (1, 4, 4, 45), "float32", False)],  # an input narrower than a vector
)  # fmt: skip
def test_ragged_channel_concats_are_exact(a, b, dtype, rows):
    mod = _concat_module(a, b, dtype)
    assert any(gv.name_hint.startswith("concat_rows") for gv, _ in mod.functions_items()) == rows
    vm = tvm.relax.VirtualMachine(tvm.compile(mod, tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    rng = np.random.default_rng(5)
    if dtype == "float32":
        x, y = rng.standard_normal(a).astype(dtype), rng.standard_normal(b).astype(dtype)
    else:
        info = np.iinfo(dtype)
        x, y = (rng.integers(info.min, info.max + 1, s).astype(dtype) for s in (a, b))
    got = vm["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(y)).numpy()
    np.testing.assert_array_equal(got, np.concatenate([x, y], axis=3))


def test_other_axes_keep_tvms_concat():
    mod = _concat_module((1, 5, 7, 45), (1, 3, 7, 45), "float32", axis=1)
    assert not any(gv.name_hint.startswith("concat_rows") for gv, _ in mod.functions_items())


#: Byte loads and stores: x86 (AT&T) and aarch64.
_BYTE_MOVES = re.compile(r"^\s+(movzbl|movsbl|movb|ldrb|strb|ldurb|sturb)\s", re.M)
#: Vector stores of 16 bytes or more: x86 (xmm/ymm/zmm) and aarch64 (q registers).
_VECTOR_STORES = re.compile(r"^\s+(vmovdq[au]\w*|vmovup[sd]|vmovap[sd]|movdq[au]|movup[sd])\s+%[xyz]mm\d+, [^%]*\("
                            r"|^\s+(str|stur|stp)\s+q\d+", re.M)  # fmt: skip


def _kernel_asm(mcpu: str, triple: str | None) -> str:
    """Assembly of the concat kernel of ``concat([x, y], axis=3)`` (int8, 55 x 55 x 64 each) as the pipeline
    schedules it before choosing serial or parallel, in its parallel form, compiled for ``mcpu``."""
    from edgekit.compiler.backends.llvm.relax_build import prepare_cpu_module, schedule_passes
    from edgekit.compiler.backends.llvm.thread_shares import has_parallel

    target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu, **({"mtriple": triple} if triple else {})})
    mod = _concat_module((1, 55, 55, 64), (1, 55, 55, 64), "int8")
    prepared, _ = prepare_cpu_module(mod, target, lift_params=False)
    with target, tvm.transform.PassContext(opt_level=3):
        scheduled = schedule_passes(target)[0](prepared)  # the default schedules: every kernel's loop parallel
    kernels = [f for _, f in scheduled.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert len(kernels) == 1 and has_parallel(kernels[0].body)
    asm = tvm.tirx.build(tvm.IRModule({"main": kernels[0].with_attr("global_symbol", "main")}), target).inspect_source("asm")
    closures = parallel_closures(asm)
    assert closures, "no parallel closure in the kernel's assembly"
    return closures[0]


@pytest.mark.parametrize(("mcpu", "triple"), [("znver4", None), ("haswell", None), ("znver2", None),
                                              ("cortex-a72", "aarch64-linux-gnu")])  # fmt: skip
def test_parallel_concat_copies_vectors_not_bytes(mcpu, triple):
    """TVM's concat (``c < 64 ? A : B`` per 16-byte vector) compiled inside its parallel closure to one byte
    load and store per element (znver4: 96 byte moves, no vector move; 18 -> 75 us split on two Zen 4 threads);
    the row copies stay vector moves there, with no heap allocation per iteration. Compiled only, whatever CPU
    runs the test."""
    body = _kernel_asm(mcpu, triple)
    assert not _BYTE_MOVES.search(body), _BYTE_MOVES.findall(body)[:4]
    assert _VECTOR_STORES.search(body)
    # A scalar named in the kernel (``first: T.int32 = ...``) is a buffer TVM takes from the heap on every
    # iteration of a parallel loop: two allocations and frees per pixel, 7.7 -> 138 us on one Zen 4 thread.
    assert "TVMBackendAllocWorkspace" not in body
