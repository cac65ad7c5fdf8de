"""Constant folding without LLVM builds (constant_fold.py): the same module, the same code, less compile time.

``FoldConstant`` compiled every ``permute_dims`` of a per-channel constant
with LLVM (212 builds, 9.5 s of PP-OCR cls's 31 s int8 compile) and
legalized every call of the module to look for constant arguments (0.8 s a
run). These tests hold the replacement to what ``FoldConstant`` produced.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

tvm = pytest.importorskip("tvm")

from _int8_checks import normal_feeds, quantized, small_cnn  # noqa: E402
from tvm import relax  # noqa: E402
from tvm.script import relax as R  # noqa: E402

from edgekit.compiler.backends.llvm import constant_fold, relax_build  # noqa: E402
from edgekit.compiler.backends.llvm.relax_build import build_cpu, import_onnx  # noqa: E402
from edgekit.frontend.loader import load_model  # noqa: E402


def _scaled_module(scale: np.ndarray, offset: np.ndarray) -> tvm.IRModule:
    """``x * permute_dims(scale) + permute_dims(offset)``, NCHW constants on an NHWC tensor (as ConvertLayout leaves them)."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", R.Tensor((1, 4, 4, 8), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            s = bb.emit(relax.op.permute_dims(relax.const(scale), [0, 2, 3, 1]))
            o = bb.emit(relax.op.permute_dims(relax.const(offset), [0, 2, 3, 1]))
            y = bb.emit(relax.op.multiply(x, s))
            out = bb.emit_output(relax.op.add(y, o))
        bb.emit_func_output(out)
    return bb.get()


def _counting_fold_constant(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Makes ``relax.transform.FoldConstant`` passes record each run."""
    runs: list[int] = []
    real = relax.transform.FoldConstant

    def counting() -> tvm.transform.Pass:
        inner = real()

        @tvm.transform.module_pass(opt_level=0, name="CountedFoldConstant")
        def run(mod, ctx):
            runs.append(1)
            return inner(mod)

        return run

    monkeypatch.setattr(relax.transform, "FoldConstant", counting)
    return runs


def test_permuted_constants_fold_in_numpy_to_what_fold_constant_gives(monkeypatch):
    rng = np.random.default_rng(0)
    scale = rng.standard_normal((1, 8, 1, 1)).astype(np.float32)
    offset = rng.integers(-100, 100, (1, 8, 1, 1)).astype(np.float32)
    mod = _scaled_module(scale, offset)
    want = relax.transform.FoldConstant()(mod)
    runs = _counting_fold_constant(monkeypatch)
    got = constant_fold.fold_constants_pass()(mod)
    # Nothing left for FoldConstant: it did not run (it would legalize every call to find out).
    assert runs == []
    # The bindings of the folded constants stay until dead-code elimination (FoldConstant drops them).
    dce = relax.transform.DeadCodeElimination()
    tvm.ir.assert_structural_equal(dce(got), dce(want))
    consts = []
    relax.analysis.post_order_visit(got["main"], lambda e: consts.append(e) if isinstance(e, tvm.ir.expr.Constant) else None)
    assert [c.value.numpy().tobytes() for c in consts[:2]] == [
        np.transpose(v, [0, 2, 3, 1]).tobytes() for v in (scale, offset)
    ]


def test_fold_constant_still_runs_where_a_call_reads_only_constants(monkeypatch):
    bb = relax.BlockBuilder()
    x = relax.Var("x", R.Tensor((8,), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            c = bb.emit(relax.op.add(relax.const(np.ones(8, np.float32)), relax.const(np.ones(8, np.float32))))
            out = bb.emit_output(relax.op.multiply(x, c))
        bb.emit_func_output(out)
    mod = bb.get()
    want = relax.transform.FoldConstant()(mod)
    runs = _counting_fold_constant(monkeypatch)
    got = constant_fold.fold_constants_pass()(mod)
    assert runs == [1]
    tvm.ir.assert_structural_equal(got, want)


@pytest.mark.parametrize("mcpu", ["haswell", "znver4"])
def test_int8_cnn_compiles_to_the_same_code_as_with_fold_constant(tmp_path, monkeypatch, mcpu):
    """The whole CPU pipeline (float requantization, layouts, lifted weight transforms) with TVM's
    FoldConstant in place of fold_constants_pass: the same library bytes and the same weights."""
    shape = (1, 3, 12, 12)
    fp32 = small_cnn(shape, seed=5, mean=0.0, stride_on="depthwise")
    calibration = {"x": np.concatenate([f["x"] for f in normal_feeds(shape, 4, seed=6)])}
    model = load_model(onnx.load(quantized(tmp_path, fp32, calibration)))
    target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu})

    def library(tag: str) -> tuple[bytes, list[bytes]]:
        mod, params = import_onnx(model)
        built = build_cpu(mod, target, params)
        path = tmp_path / f"{tag}.so"
        built.executable.export_library(str(path))
        return path.read_bytes(), [p.numpy().tobytes() for p in built.params]

    got = library("numpy-fold")
    monkeypatch.setattr(constant_fold, "fold_constants_pass", relax.transform.FoldConstant)
    want = library("fold-constant")
    assert got[1] == want[1]
    assert got[0] == want[0]


def test_weight_transforms_run_from_an_exported_library(tmp_path):
    """_transform_params loads its run-once module from a library (the VM's JIT of the same code took
    4x as long); where it cannot be exported it falls back to the executable."""
    from tvm.script import tirx as T

    @T.prim_func
    def double(a: T.Buffer((4,), "float32"), b: T.Buffer((4,), "float32")):
        for i in range(4):
            b[i] = a[i] * T.float32(2)

    exe = tvm.compile(tvm.IRModule({"double": double}), "llvm")
    loaded = relax_build._loaded(exe, tmp_path / "t.so")
    assert isinstance(loaded, tvm.runtime.Module) and (tmp_path / "t.so").is_file()

    class NoLinker:
        def export_library(self, path: str) -> None:
            raise RuntimeError("no C compiler")

    fallback = NoLinker()
    assert relax_build._loaded(fallback, tmp_path / "u.so") is fallback
