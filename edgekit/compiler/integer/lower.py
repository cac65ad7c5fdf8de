"""The integer-only lowering pass over an imported QDQ Relax module.

Run it on the module ``from_onnx(..., keep_params_in_input=True)`` returns,
*before* ``detach_params``: it reads weights, scales and zero points from the
function's ``"params"`` attribute (or from constants), rewrites every
``... -> quantize`` chain it can into integer arithmetic, and drops the
parameters that are no longer used (float biases, scales, the float view of
weights) from both the signature and the ``"params"`` attribute, so
``detach_params`` afterwards stays consistent. int8 weights stay parameters.

Rules are tried in order, each over the whole function with
:func:`tvm.relax.dpl.rewrite_call`; a rule either returns the integer
replacement of the ``quantize`` it matched, raises
:class:`~edgekit.compiler.integer.context.Skip` with a reason (the chain stays
float and the reason goes into the report), or declines.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Sequence

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import DFPattern, rewrite_call

from edgekit.compiler.integer.context import LoweringContext, Rule, Skip
from edgekit.compiler.integer.eltwise import BINARY, lower_binary
from edgekit.compiler.integer.indexing import SPLIT, lower_split
from edgekit.compiler.integer.linear import LINEAR, lower_linear
from edgekit.compiler.integer.lut import ELEMENTWISE_CHAIN, lower_lut
from edgekit.compiler.integer.lut_program import LUT_PROGRAMS
from edgekit.compiler.integer.patterns import MOVEMENT_OPS
from edgekit.compiler.integer.pool import (
    AVG_POOL, CONCAT, MAX_POOL, MEAN, MOVEMENT,
    lower_avg_pool, lower_concat, lower_max_pool, lower_mean, lower_movement,
)  # fmt: skip
from edgekit.compiler.integer.report import Chain, LoweringReport
from edgekit.compiler.integer.values import ValueTable, call_name, tensor_dtype, tensor_shape

__all__ = ["RULES", "lower_to_integer", "lower_to_integer_with_report", "float_ops"]

logger = logging.getLogger(__name__)

#: The rules, most specific first; the elementwise table rule is the fallback.
RULES: tuple[Rule, ...] = (
    Rule("linear", LINEAR.root, lower_linear),
    Rule("binary", BINARY.root, lower_binary),
    Rule("max_pool2d", MAX_POOL.root, lower_max_pool),
    Rule("avg_pool2d", AVG_POOL.root, lower_avg_pool),
    Rule("mean", MEAN.root, lower_mean),
    Rule("concat", CONCAT.root, lower_concat),
    Rule("movement", MOVEMENT.root, lower_movement),
    Rule("split", SPLIT.root, lower_split),
    Rule("elementwise", ELEMENTWISE_CHAIN.root, lower_lut),
)

# Ops that move data without arithmetic: not counted as float compute.
_NO_ARITHMETIC = frozenset(MOVEMENT_OPS) | {"relax.concat", "relax.split", "relax.strided_slice", "relax.take"}


def _apply(ctx: LoweringContext, rule: Rule, q_call: relax.Call, matches: dict[DFPattern, relax.Expr]) -> relax.Expr:
    try:
        result = rule.lower(ctx, q_call, matches)
    except Skip:
        return q_call
    if result is None:
        return q_call
    kind, detail, new = result
    ctx.rewritten.append(Chain(kind, ctx.chain_name(q_call), tensor_shape(q_call) or (), detail))
    logger.debug("integer %s %s (%s)", kind, ctx.chain_name(q_call), detail)
    return new


def _why_float(ctx: LoweringContext, q_call: relax.Call, var2val: dict) -> str:
    """Re-runs the matching rules on a chain that stayed float to get the reason."""
    for rule in RULES:
        matches = rule.pattern.extract_matched_expr(q_call, var2val)
        if matches is None:
            continue
        try:
            if rule.lower(ctx, q_call, matches) is None:
                continue
        except Skip as exc:
            return str(exc)
        return "a rule applies but was not reached (report this)"
    return f"no integer rule for {call_name(ctx.values.lookup(q_call.args[0])).removeprefix('relax.') or 'this input'}"


def _is_model_input(values: ValueTable, expr: relax.Expr) -> bool:
    """True for a parameter of the function that is not a weight (whose value is known)."""
    return isinstance(values.lookup(expr), relax.Var) and values.value(expr) is None


def _bindings(func: relax.Function) -> list[relax.VarBinding]:
    body = func.body
    return [b for block in body.blocks for b in block.bindings] if isinstance(body, relax.SeqExpr) else []


def float_ops(func: relax.Function) -> Counter[str]:
    """Ops in ``func`` that do float arithmetic (read or produce a float tensor)."""
    counts: Counter[str] = Counter()
    for binding in _bindings(func):
        value = binding.value
        name = call_name(value)
        if not name or name in _NO_ARITHMETIC:
            continue
        dtypes = [tensor_dtype(value)] + [tensor_dtype(a) for a in value.args]
        if any(d.startswith(("float", "bfloat")) for d in dtypes):
            counts[name.removeprefix("relax.")] += 1
    return counts


def _prune_params(func: relax.Function) -> relax.Function:
    """Drops trailing (weight) parameters the body no longer reads."""
    attrs = func.attrs or {}
    if "params" not in attrs:
        return func
    values = list(attrs["params"])
    n_inputs = len(func.params) - len(values)
    used = {v for v in relax.analysis.free_vars(func.body)}
    keep = [i for i, v in enumerate(func.params[n_inputs:]) if v in used]
    if len(keep) == len(values):
        return func
    params = list(func.params[:n_inputs]) + [func.params[n_inputs + i] for i in keep]
    new = relax.Function(params, func.body, func.ret_ty, func.is_pure, func.attrs, func.span)
    return new.with_attr("params", [values[i] for i in keep])


def lower_to_integer_with_report(
    mod: tvm.IRModule, *, func_name: str = "main", params: Sequence[np.ndarray] | None = None
) -> tuple[tvm.IRModule, LoweringReport]:
    """Rewrites QDQ chains of ``mod[func_name]`` into integer-only compute.

    Args:
        mod: The module from TVM's ONNX importer, before ``detach_params``.
        func_name: Function to rewrite.
        params: Values of the function's trailing weight parameters when they
            are not in its ``"params"`` attribute (e.g. after ``detach_params``).

    Returns:
        The new module (the input is not modified) and a
        :class:`~edgekit.compiler.integer.report.LoweringReport`.
    """
    func = mod[func_name]
    values = ValueTable(func, None if params is None else [np.asarray(p) for p in params])
    ctx = LoweringContext(values)
    for rule in RULES:
        func = rewrite_call(rule.pattern, lambda expr, m, rule=rule: _apply(ctx, rule, expr, m), func)
        values.refresh(func)
    func = relax.analysis.remove_all_unused(func)
    values.refresh(func)

    report = LoweringReport(rewritten=list(ctx.rewritten))
    var2val = relax.analysis.get_var2val(func)
    for binding in _bindings(func):
        value = binding.value
        if call_name(value) != "relax.quantize":
            continue
        source = values.lookup(value.args[0])
        if isinstance(source, relax.Var):  # quantizing a model input: the boundary
            continue
        if isinstance(source, relax.TupleGetItem):  # a piece of a split (or another tuple)
            kind = call_name(values.lookup(source.tuple_value)).removeprefix("relax.") or "tuple item"
        else:
            kind = call_name(source).removeprefix("relax.")
        reason = _why_float(ctx, value, var2val)
        if isinstance(source, relax.Call) and any(_is_model_input(values, a) for a in source.args):
            reason = f"{kind} of a float model input: the quantization boundary"
        report.kept_float.append(Chain(kind, ctx.chain_name(value), tensor_shape(value) or (), reason))
    report.float_ops = float_ops(func)

    func = _prune_params(func)
    out = tvm.IRModule({gv: f for gv, f in mod.functions_items()}, attrs=mod.attrs)
    if ctx.lut_programs:  # for backends that compute tables arithmetically (lut_program.py)
        out = out.with_attr(LUT_PROGRAMS, ctx.lut_programs)
    out[func_name] = func
    logger.info("%s", report.summary())
    return out, report


def lower_to_integer(mod: tvm.IRModule) -> tvm.IRModule:
    """Integer-only lowering of QDQ chains; see :func:`lower_to_integer_with_report`."""
    return lower_to_integer_with_report(mod)[0]
