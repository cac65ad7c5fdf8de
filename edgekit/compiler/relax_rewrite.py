"""What the Relax rewrites share: pass wrappers and shape helpers.

Every rewrite in :mod:`edgekit.compiler.backends.llvm.layout`, the other
``backends/llvm`` modules (int8 dot products, lookups, pads, requantization)
and :mod:`edgekit.compiler.detector` (whose fast sigmoid the ``aot_c``
backend uses too, hence this module sits in ``compiler/``) is a
``relax.PyExprMutator`` run over each Relax function, followed by dead-code
elimination (:func:`mutator_pass`); most replace the calls of one
operator (:func:`call_rewrite_pass`). They sit below
:mod:`edgekit.compiler.backends.llvm.relax_build`, which assembles them, so no module
imports the pipeline back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

#: ``permute_dims`` axes from NCHW to NHWC, and back.
TO_NHWC = [0, 2, 3, 1]
TO_NCHW = [0, 3, 1, 2]

__all__ = [
    "TO_NCHW",
    "TO_NHWC",
    "bound_value",
    "call_rewrite_pass",
    "calls_rewrite_pass",
    "const_value",
    "dtype_of",
    "is_call",
    "mutator_pass",
    "out_dtype",
    "permuted",
    "round_up",
    "static_float_shapes",
    "static_shape",
    "use_counts",
    "with_pass",
]


def out_dtype(attrs: Any) -> str | None:
    """A conv's ``out_dtype`` attribute, None when unset (same as the input's)."""
    dtype = attrs.out_dtype
    return None if dtype is None or str(dtype) in ("", "None") else str(dtype)


def calls_rewrite_pass(rewrites: Mapping[str, Callable[[Any, Any], Any]], pass_name: str, setup: Any = None) -> Any:
    """A Relax module pass applying ``rewrites[op](mutator, call)`` to every call of each operator.

    ``rewrites`` maps full operator names (``"relax.take"``) to functions that
    return the replacement expression (they may ``emit`` helper bindings on
    ``mutator.builder_`` and look bindings up with :func:`bound_value`) or
    None to keep the call. Calls are visited after their arguments.
    ``setup`` as in :func:`mutator_pass`.
    """
    import tvm
    from tvm import relax

    ops = [(tvm.ir.Op.get(name), rewrite) for name, rewrite in rewrites.items()]

    @relax.expr_functor.mutator
    class Rewriter(relax.PyExprMutator):
        def visit_call_(self, call: Any) -> Any:
            call = super().visit_call_(call)
            if isinstance(call, relax.Call):
                for op, rewrite in ops:
                    if call.op.same_as(op):
                        new = rewrite(self, call)
                        return call if new is None else new
            return call

    return mutator_pass(Rewriter, pass_name, setup)


def call_rewrite_pass(op_name: str, rewrite: Any, pass_name: str) -> Any:
    """:func:`calls_rewrite_pass` for one operator, ``rewrite(builder, call)``."""
    return calls_rewrite_pass({op_name: lambda mutator, call: rewrite(mutator.builder_, call)}, pass_name)


def with_pass(passes: list[Any], new: Any, *, after: str = "", before: str = "") -> list[Any]:
    """``passes`` with ``new`` right after each pass named ``after``, or right before each one named ``before``."""
    out = []
    for p in passes:
        if p.info.name == before:
            out.append(new)
        out.append(p)
        if p.info.name == after:
            out.append(new)
    return out


def is_call(expr: Any, op_name: str) -> bool:
    """True when ``expr`` is a call of the Relax operator ``op_name`` (``"relax.take"``)."""
    import tvm
    from tvm import relax

    return isinstance(expr, relax.Call) and expr.op.same_as(tvm.ir.Op.get(op_name))


def mutator_pass(mutator_cls: Any, pass_name: str, setup: Any = None) -> Any:
    """A Relax module pass running ``mutator_cls(mod)`` over every Relax function, then dead-code elimination.

    ``setup(mutator)``, if given, is called before the functions are visited
    (e.g. to hand the mutator state that needs it, such as binding lookups).
    """
    import tvm
    from tvm import relax

    @tvm.transform.module_pass(opt_level=0, name=pass_name)
    def apply(mod: Any, _ctx: Any) -> Any:
        mutator = mutator_cls(mod)
        if setup is not None:
            setup(mutator)
        for gv, func in list(mod.functions_items()):
            if isinstance(func, relax.Function):
                mutator.builder_.update_func(gv, mutator.visit_expr(func))
        return relax.transform.DeadCodeElimination()(mutator.builder_.get())

    return apply


def dtype_of(expr: Any) -> str:
    """A Relax expression's element dtype (``"int8"``), ``""`` where its type has none (a tuple)."""
    return str(getattr(expr.ty, "dtype", ""))


def static_shape(expr: Any, dtype: str | None = None) -> list[int] | None:
    """The static shape of a ``dtype`` Relax tensor (any dtype: ``None``), None for anything else."""
    from tvm import relax

    t = expr.ty
    if not isinstance(t, relax.TensorType) or (dtype is not None and str(t.dtype) != dtype) or t.shape is None:
        return None
    try:
        return [int(v) for v in t.shape.values]
    except (TypeError, AttributeError):
        return None


def static_float_shapes(*exprs: Any) -> list[list[int]] | None:
    """Static shapes of float32 tensors, or None if any is not one."""
    shapes = [static_shape(e, "float32") for e in exprs]
    return None if any(s is None for s in shapes) else shapes


def round_up(value: int, multiple: int) -> int:
    """``value`` rounded up to a multiple of ``multiple``."""
    return -(-value // multiple) * multiple


def bound_value(mutator: Any, expr: Any) -> Any:
    """What ``expr`` is bound to in the function ``mutator`` (or a block builder) visits, through aliases (``y = x``).

    ``expr`` itself when it is not a variable; None for a variable bound
    nowhere in the function (a parameter).
    """
    from tvm import relax

    value = mutator.lookup_binding(expr) if isinstance(expr, relax.Var) else expr
    while isinstance(value, relax.Var):
        value = mutator.lookup_binding(value)
    return value


def permuted(mutator: Any, expr: Any) -> tuple[Any, list[int]] | None:
    """``(x, axes)`` when ``expr`` is bound to ``permute_dims(x, axes)`` with explicit axes, else None."""
    inner = bound_value(mutator, expr)
    if not is_call(inner, "relax.permute_dims") or inner.attrs.axes is None:
        return None
    return inner.args[0], [int(v) for v in inner.attrs.axes]


def use_counts(mod: Any) -> dict[Any, int]:
    """How many bindings (and function results) of ``mod``'s Relax functions read each variable."""
    from tvm import relax

    uses: dict[Any, int] = {}
    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            for expr in [*relax.analysis.get_var2val(func).values(), func.body.body]:
                for v in relax.analysis.free_vars(expr):
                    uses[v] = uses.get(v, 0) + 1
    return uses


def const_value(expr: Any) -> Any:
    """The numpy value of a Relax constant, None for anything else."""
    value = getattr(expr, "value", None)
    return value.numpy() if hasattr(value, "numpy") else None
