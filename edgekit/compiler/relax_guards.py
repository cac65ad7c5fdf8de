"""Two TVM 0.27 Relax passes made safe for every graph ONNX can express.

* ``ConvertLayout`` aborts ("Invalid SLayout: can't find S in source layout
  AB") or even kills the process (SIGFPE) on some graphs without any
  convolution it would change (ONNX ``Max``/``Min``/``Mean`` of several
  inputs, HardSigmoid's function body, DynamicQuantizeLinear). It is skipped
  where the module has none of the ops it converts; where it still fails, the
  module goes on in its original layout (the layout change is an optimization
  only).
* ``FastMathTransform`` reads ``call.op.name`` of every call and fails on
  calls of an ``ExternFunc`` (packed builtins the ONNX ``Expand`` import emits).
  The guarded version rewrites exp/erf/tanh/softmax the same way and leaves
  other calls alone.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

__all__ = ["convert_layout_or_keep", "fast_math_transform"]

logger = logging.getLogger(__name__)


def convert_layout_or_keep(layouts: Mapping[str, Sequence[str]]) -> Any:
    """``relax.transform.ConvertLayout(layouts)``, or no change where it fails."""
    import tvm
    from tvm import relax

    inner = relax.transform.ConvertLayout(dict(layouts))

    wanted = set(layouts)

    def has_target_ops(mod: Any) -> bool:
        found = []

        def visit(expr: Any) -> None:
            if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name in wanted:
                found.append(expr)

        for _, func in mod.functions_items():
            if isinstance(func, relax.Function):
                relax.analysis.post_order_visit(func.body, visit)
                if found:
                    return True
        return False

    @tvm.transform.module_pass(opt_level=0, name="ConvertLayoutOrKeep")
    def convert(mod: Any, _ctx: Any) -> Any:
        if not has_target_ops(mod):
            # Nothing to convert, and TVM's layout inference has crashed the
            # process (SIGFPE) on some conv-free graphs (ONNX DynamicQuantizeLinear).
            return mod
        try:
            return inner(mod)
        except tvm.error.InternalError as exc:
            logger.debug("ConvertLayout failed (%s); keeping the original layout", str(exc).splitlines()[0][:200])
            return mod

    return convert


def fast_math_transform() -> Any:
    """TVM's ``FastMathTransform`` that skips calls of non-operators."""
    import tvm
    from tvm import relax, topi

    fast = {
        "relax.exp": lambda bb, call: bb.call_te(topi.fast_exp, call.args[0]),
        "relax.erf": lambda bb, call: bb.call_te(topi.fast_erf, call.args[0]),
        "relax.tanh": lambda bb, call: bb.call_te(topi.fast_tanh, call.args[0]),
        "relax.nn.softmax": lambda bb, call: bb.call_te(topi.nn.fast_softmax, call.args[0], call.attrs.axis),
    }

    @relax.expr_functor.mutator
    class _FastMath(relax.PyExprMutator):
        def visit_call_(self, call: Any) -> Any:
            call = super().visit_call_(call)
            if isinstance(call, relax.Call) and isinstance(call.op, tvm.ir.Op) and call.op.name in fast:
                return fast[call.op.name](self.builder_, call)
            return call

    @tvm.transform.module_pass(opt_level=0, name="GuardedFastMathTransform")
    def transform(mod: Any, _ctx: Any) -> Any:
        rewriter = _FastMath(mod)
        for gv, func in mod.functions_items():
            if isinstance(func, relax.Function):
                rewriter.builder_.update_func(gv, rewriter.visit_expr(func))
        return rewriter.builder_.get()

    return transform
