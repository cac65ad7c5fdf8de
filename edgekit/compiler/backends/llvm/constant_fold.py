"""Layout operators on constants, folded in numpy instead of by TVM's ``FoldConstant``.

``relax.transform.ConvertLayout`` leaves every per-channel constant of an
NCHW graph (requantization multipliers, offsets, zero points) behind a
``permute_dims`` to NHWC. ``FoldConstant`` folds such a call by legalizing
it, *compiling the PrimFunc with LLVM* and running it: one LLVM build per
constant, ~45 ms each. PP-OCR cls int8 has 212 of them, 9.5 s of a 31 s
compile (Zen 4, znver4 code; ``benchmarks/compile_time.py``). A transpose is
exact in numpy, so :func:`fold_permuted_constants_pass` folds them first and
``FoldConstant`` finds nothing of the kind left to build: the constants, and
so the generated code, are the same bytes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["fold_constants_pass", "fold_permuted_constants_pass"]


def _permuted(call: Any) -> Any:
    """``relax.const`` of ``permute_dims(constant, axes)``, None when ``call`` is not one."""
    from tvm import relax

    from edgekit.compiler.relax_rewrite import const_value

    value = const_value(call.args[0])
    if value is None:
        return None
    axes = None if call.attrs.axes is None else [int(a) for a in call.attrs.axes]
    return relax.const(np.ascontiguousarray(np.transpose(value, axes)), str(value.dtype))


def fold_permuted_constants_pass() -> Any:
    """A Relax pass replacing ``permute_dims`` of a constant by the permuted constant (numpy, exact).

    Like ``FoldConstant``, it also reads a variable bound to a constant as
    that constant (``y = c; z = f(x, y)`` becomes ``z = f(x, c)``), so that
    the rewrites after it see the constant. The bindings of the folded
    constants stay (``FoldConstant`` drops them) until dead-code elimination,
    which every pipeline that runs this pass runs after it.
    """
    import tvm
    from tvm import relax

    op = tvm.ir.Op.get("relax.permute_dims")

    @relax.expr_functor.mutator
    class Folder(relax.PyExprMutator):
        def visit_call_(self, call: Any) -> Any:
            call = super().visit_call_(call)
            if isinstance(call, relax.Call) and call.op.same_as(op):
                folded = _permuted(call)
                if folded is not None:
                    return folded
            return call

        def _constant_or(self, var: Any) -> Any:
            value = self.lookup_binding(var)
            return value if isinstance(value, tvm.ir.expr.Constant) else var

        def visit_var_(self, var: Any) -> Any:
            return self._constant_or(super().visit_var_(var))

        def visit_dataflow_var_(self, var: Any) -> Any:
            return self._constant_or(super().visit_dataflow_var_(var))

    @tvm.transform.module_pass(opt_level=0, name="EdgekitFoldPermutedConstants")
    def apply(mod: Any, _ctx: Any) -> Any:
        if not _scan(mod).permuted_or_bound:  # nothing for the mutator: no round trip
            return mod
        folder = Folder(mod)
        for gv, func in list(mod.functions_items()):
            if isinstance(func, relax.Function):
                folder.builder_.update_func(gv, folder.visit_expr(func))
        return folder.builder_.get()

    return apply


class _Scan:
    """What a module holds that constant folding could act on."""

    def __init__(self) -> None:
        self.permuted_or_bound = False  # permute_dims(constant), or a variable bound to a constant
        self.foldable = False  # a call that reads no variable: FoldConstant may evaluate it


def _scan(mod: Any) -> _Scan:
    import tvm
    from tvm import relax

    permute = tvm.ir.Op.get("relax.permute_dims")
    scan = _Scan()

    def reads(expr: Any) -> bool:
        if isinstance(expr, relax.Tuple):
            return any(reads(e) for e in expr.fields)
        return isinstance(expr, (relax.Var, relax.Call))

    def reads_no_variable(call: Any) -> bool:
        return not any(reads(a) for a in call.args)

    def visit(expr: Any) -> None:
        if isinstance(expr, relax.Call):
            if expr.op.same_as(permute) and isinstance(expr.args[0], tvm.ir.expr.Constant):
                scan.permuted_or_bound = True
            elif reads_no_variable(expr):
                scan.foldable = True

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
            if any(isinstance(v, tvm.ir.expr.Constant) for v in relax.analysis.get_var2val(func).values()):
                scan.permuted_or_bound = True
    return scan


def fold_constants_pass() -> Any:
    """``FoldConstant``, with the permuted constants folded in numpy first, and
    run only where a call reads no variable.

    ``FoldConstant`` legalizes *every* call of the module to find out whether
    it has constant arguments (a TE computation per call: 0.8 s per run on
    PP-OCR cls int8, three runs per build); once the permuted constants are
    folded, most modules have no such call left, and the pass changed
    nothing there (the same library bytes).
    """
    import tvm
    from tvm import relax

    fold = relax.transform.FoldConstant()

    @tvm.transform.module_pass(opt_level=0, name="EdgekitFoldConstantWhereNeeded")
    def apply(mod: Any, ctx: Any) -> Any:
        return fold(mod) if _scan(mod).foldable else mod

    return tvm.transform.Sequential([fold_permuted_constants_pass(), apply], name="EdgekitFoldConstant")
