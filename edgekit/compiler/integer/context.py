"""Shared pieces of the lowering rules: the rule type, the context, clamp bounds."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import DFPattern

from edgekit.compiler.integer.report import Chain
from edgekit.compiler.integer.values import QParams, ValueTable, tensor_shape

__all__ = ["Lowered", "Rule", "LoweringContext", "Skip", "int_range", "activation_bounds", "is_op_call"]

logger = logging.getLogger(__name__)

#: What a rule returns for a chain it lowered: (kind, detail, integer expression).
#: A rule returns ``None`` for a chain that is not its to judge and raises
#: :class:`Skip` for one that must stay float.
Lowered = tuple[str, str, relax.Expr]


class Skip(Exception):
    """Raised inside a rule to keep a chain in float; the message is the reason."""


@dataclass
class Rule:
    """A pattern and the function that lowers a match of it.

    Attributes:
        name: Kind recorded in the report (``conv2d`` / ``add`` / ...) unless
            the function names a more specific one.
        pattern: dpl pattern anchored at ``relax.quantize``.
        lower: ``(ctx, quantize_call, matches) -> Lowered | None``; raises
            :class:`Skip` with the reason when the chain must stay float.
    """

    name: str
    pattern: DFPattern
    lower: Callable[["LoweringContext", relax.Call, dict[DFPattern, relax.Expr]], "Lowered | None"]


@dataclass
class LoweringContext:
    """State shared by the rules while one function is rewritten."""

    values: ValueTable
    rewritten: list[Chain] = field(default_factory=list)
    #: Table key -> JSON of the float32 program computing it (:mod:`edgekit.compiler.integer.lut_program`).
    lut_programs: dict[str, str] = field(default_factory=dict)

    def chain_name(self, q_call: relax.Call, fallback: str = "") -> str:
        """The ONNX tensor a quantize produces, read off its scale's name."""
        name = self.values.name_of(q_call.args[1])
        for suffix in ("_scale", "_quantized_scale"):
            if name.endswith(suffix):
                return name[: -len(suffix)]
        return name or fallback

    def output_qparams(self, q_call: relax.Call) -> QParams:
        """Per-tensor output quantization of ``q_call`` or :class:`Skip`."""
        qp = self.values.qparams(q_call)
        if qp is None:
            raise Skip("output scale/zero point not known at compile time")
        if not qp.per_tensor:
            raise Skip("per-channel output quantization")
        return qp

    def input_qparams(self, dq_call: relax.Call, what: str = "input") -> QParams:
        """Per-tensor quantization of an int8 activation read by ``dq_call``."""
        qp = self.values.qparams(dq_call)
        if qp is None:
            raise Skip(f"{what} scale/zero point not known at compile time")
        if not qp.per_tensor:
            raise Skip(f"per-channel {what} activation quantization")
        dtype = str(getattr(dq_call.args[0].ty, "dtype", ""))
        if dtype != "int8":
            raise Skip(f"{what} is {dtype}, only int8 activations are lowered")
        return qp

    def shape(self, expr: relax.Expr) -> tuple[int, ...]:
        shape = tensor_shape(expr)
        if shape is None:
            raise Skip("dynamic shape")
        return shape


def int_range(dtype: str) -> tuple[int, int]:
    """The value range of an integer dtype."""
    info = np.iinfo(np.dtype(dtype))
    return int(info.min), int(info.max)


def _quantize_bound(value: float, qp: QParams) -> float:
    return float(np.rint(np.float32(value) / np.float32(qp.s))) + qp.z


def activation_bounds(
    ctx: LoweringContext,
    matches: dict[DFPattern, relax.Expr],
    relu: DFPattern,
    clip: DFPattern,
    out: QParams,
    out_dtype: str,
) -> tuple[int, int, str]:
    """Integer clamp bounds with a folded Relu/Clip, and a note for the report.

    ``quantize`` is monotone, so ``quantize(clip(v, a, b))`` equals
    ``clamp(quantize(v), quantize(a), quantize(b))`` exactly.
    """
    lo, hi = int_range(out_dtype)
    if relu in matches:
        return max(lo, out.z), hi, "relu folded into clamp"
    if clip in matches:
        call = matches[clip]
        a = ctx.values.value(call.args[1])
        b = ctx.values.value(call.args[2])
        if a is None or b is None or a.size != 1 or b.size != 1:
            raise Skip("clip bounds not known at compile time")
        qa = _quantize_bound(float(a.reshape(-1)[0]), out)
        qb = _quantize_bound(float(b.reshape(-1)[0]), out)
        return int(max(lo, min(hi, qa))), int(min(hi, max(lo, qb))), "clip folded into clamp"
    return lo, hi, ""


def is_op_call(expr: relax.Expr, name: str) -> bool:
    """True when ``expr`` calls the Relax op ``name``."""
    return isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name == name
