"""Compile-time values of a Relax function: constants, bound params, folded chains.

The ONNX importer with ``keep_params_in_input=True`` turns every initializer
(int8 weights, scales, zero points, int32 biases) into a parameter of ``main``
and keeps the arrays in the function's ``"params"`` attribute. The integer
lowering needs those values while it rewrites (requantization multipliers,
weight sums for zero-point folding), so :class:`ValueTable` resolves an
expression to a numpy array whether it is a ``Constant``, such a parameter, or
a short chain of dequantize/reshape over one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
import tvm
from tvm import relax

from edgekit.core.fixedpoint import dequantize_ref

__all__ = ["ValueTable", "QParams", "call_name", "tensor_shape", "tensor_dtype"]

logger = logging.getLogger(__name__)


def call_name(expr: relax.Expr) -> str:
    """The operator name of a Relax call, or ``""``."""
    if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
        return str(expr.op.name)
    return ""


def tensor_shape(expr: relax.Expr) -> tuple[int, ...] | None:
    """Static shape of a tensor expression, ``None`` when unknown or symbolic."""
    ty = getattr(expr, "ty", None)
    shape = getattr(ty, "shape", None)
    if not isinstance(shape, relax.ShapeExpr):
        return None
    dims = []
    for v in shape.values:
        if not isinstance(v, tvm.tirx.IntImm):
            return None
        dims.append(int(v))
    return tuple(dims)


def tensor_dtype(expr: relax.Expr) -> str:
    """Element dtype of a tensor expression (``""`` if not a tensor)."""
    return str(getattr(getattr(expr, "ty", None), "dtype", "") or "")


@dataclass(frozen=True)
class QParams:
    """Scale and zero point of a quantized tensor (per-tensor or per-axis).

    Attributes:
        scale: float32 array (0-d for per-tensor).
        zero_point: int64 array, same shape as ``scale``.
        axis: The axis a 1-D scale runs along in the tensor.
    """

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int

    @property
    def per_tensor(self) -> bool:
        return self.scale.size == 1

    @property
    def s(self) -> float:
        """The per-tensor scale as a float (only when :attr:`per_tensor`)."""
        return float(self.scale.reshape(-1)[0])

    @property
    def z(self) -> int:
        """The per-tensor zero point as an int (only when :attr:`per_tensor`)."""
        return int(self.zero_point.reshape(-1)[0])

    def same_as(self, other: "QParams") -> bool:
        """True when both describe the same per-tensor quantization."""
        return self.per_tensor and other.per_tensor and self.s == other.s and self.z == other.z


# Shape-only ops that the evaluator folds on numpy arrays.
_SHAPE_OPS: dict[str, Callable[[np.ndarray, relax.Call], np.ndarray]] = {
    "relax.reshape": lambda a, c: a.reshape(tensor_shape(c)),
    "relax.permute_dims": lambda a, c: np.transpose(a, None if c.attrs.axes is None else [int(i) for i in c.attrs.axes]),
    "relax.expand_dims": lambda a, c: a.reshape(tensor_shape(c)),
    "relax.squeeze": lambda a, c: a.reshape(tensor_shape(c)),
    "relax.flatten": lambda a, c: a.reshape(tensor_shape(c)),
}


class ValueTable:
    """Resolves Relax expressions of one function to compile-time numpy values.

    Args:
        func: The function (usually ``main``) being rewritten.
        params: Values of ``func``'s trailing parameters; defaults to its
            ``"params"`` attribute (what ``from_onnx(keep_params_in_input=True)``
            writes).
    """

    def __init__(self, func: relax.Function, params: list[np.ndarray] | None = None) -> None:
        attrs = func.attrs or {}
        if params is None:
            raw = list(attrs["params"]) if "params" in attrs else []
            params = [p.numpy() for p in raw]
        n_free = len(func.params) - len(params)
        self._params: dict[relax.Var, np.ndarray] = {
            v: np.asarray(a) for v, a in zip(list(func.params)[n_free:], params)
        }
        self._var2val = relax.analysis.get_var2val(func)

    def refresh(self, func: relax.Function) -> None:
        """Re-reads the bindings of ``func`` after a rewrite."""
        self._var2val = relax.analysis.get_var2val(func)

    def lookup(self, expr: relax.Expr) -> relax.Expr:
        """Follows dataflow variables to the expression bound to them."""
        seen = 0
        while isinstance(expr, relax.Var) and expr in self._var2val and seen < 64:
            expr = self._var2val[expr]
            seen += 1
        return expr

    def value(self, expr: relax.Expr) -> np.ndarray | None:
        """The array of a constant or a bound parameter, else ``None``."""
        expr = self.lookup(expr)
        # Prim values (clip bounds) are Constants too in 0.27: test them first.
        if isinstance(expr, tvm.tirx.IntImm):
            return np.asarray(int(expr.value), dtype=np.int64)
        if isinstance(expr, tvm.tirx.FloatImm):
            return np.asarray(float(expr.value), dtype=np.float32)
        if isinstance(expr, tvm.ir.expr.Constant):
            return np.asarray(expr.value.numpy())
        if isinstance(expr, relax.Var) and expr in self._params:
            return self._params[expr]
        return None

    def qparams(self, call: relax.Call) -> QParams | None:
        """Scale and zero point of a ``quantize``/``dequantize`` call."""
        scale = self.value(call.args[1])
        zero = self.value(call.args[2])
        if scale is None or zero is None:
            return None
        scale = scale.astype(np.float32)
        zero = np.broadcast_to(zero.astype(np.int64), scale.shape).copy()
        return QParams(scale, zero, int(call.attrs.axis))

    def evaluate(self, expr: relax.Expr, *, exact: bool = False) -> np.ndarray | None:
        """Folds ``dequantize`` and shape ops over compile-time values.

        Args:
            expr: The expression.
            exact: Dequantize in float64 (for biases folded into integer
                accumulators) instead of onnxruntime's float32 arithmetic.
        """
        expr = self.lookup(expr)
        direct = self.value(expr)
        if direct is not None:
            return direct
        name = call_name(expr)
        if name == "relax.dequantize":
            q = self.evaluate(expr.args[0], exact=exact)
            qp = self.qparams(expr)
            if q is None or qp is None:
                return None
            return dequantize_per_axis(q, qp, exact=exact)
        if name in _SHAPE_OPS:
            inner = self.evaluate(expr.args[0], exact=exact)
            return None if inner is None else _SHAPE_OPS[name](inner, expr)
        if name == "relax.astype":
            inner = self.evaluate(expr.args[0], exact=exact)
            return None if inner is None else inner.astype(str(expr.attrs.dtype))
        return None

    def name_of(self, expr: relax.Expr) -> str:
        """A readable name: the parameter's name (an ONNX tensor name) if any."""
        expr = self.lookup(expr)
        if isinstance(expr, relax.Var):
            return str(expr.name)
        return ""


def dequantize_per_axis(q: np.ndarray, qp: QParams, *, exact: bool = False) -> np.ndarray:
    """onnxruntime's DequantizeLinear (float32), per tensor or along ``qp.axis``.

    With ``exact`` the product is formed in float64 instead.
    """
    ftype = np.float64 if exact else np.float32
    q = np.asarray(q)
    if qp.per_tensor:
        if not exact:
            return dequantize_ref(q, qp.s, qp.z)
        shape = ()
    else:
        shape = [1] * q.ndim
        shape[qp.axis] = qp.scale.size
    zero = qp.zero_point.reshape(shape).astype(np.int64)
    scale = qp.scale.reshape(shape).astype(ftype)
    return ((q.astype(np.int64) - zero).astype(ftype) * scale).astype(ftype)
