"""Channels-last reductions on int8 tensors: squeeze sums and max pools after a transpose to NCHW.

The integer lowering turns a quantized global average pool (the squeeze of
every squeeze-and-excitation block) into an int32 ``sum`` and keeps max
pools in NCHW; ConvertLayout leaves both behind a transpose of the whole
activation. :func:`channel_sum_pass` moves them into the NHWC layout the
convolutions write (see its docstring for the measured cost).
"""

from __future__ import annotations

import logging
from typing import Any

from edgekit.compiler.cpu_rewrite import bound_value, mutator_pass, static_shape

__all__ = ["channel_sum_pass"]

logger = logging.getLogger(__name__)


def _channel_sum(x: Any) -> Any:
    """``y[n, 0, 0, c] = sum_hw int32(x[n, h, w, c])``: an int8 NHWC tensor summed over H and W in int32."""
    from tvm import te

    n, h, w, c = x.shape
    rh = te.reduce_axis((0, h), name="rh")
    rw = te.reduce_axis((0, w), name="rw")
    return te.compute(
        (n, 1, 1, c), lambda i, _a, _b, k: te.sum(x[i, rh, rw, k].astype("int32"), axis=[rh, rw]), name="channel_sum"
    )


def channel_sum_pass() -> Any:
    """Channels-last reductions: squeeze sums and max pools after a transpose to NCHW.

    * ``sum(permute_dims(x, NHWC -> NCHW), axis=[2, 3])`` (``x`` possibly
      cast from int8 to int32) becomes a sum over ``x``'s own H and W,
      the cast inside it. The integer lowering turns a quantized global
      average pool (the squeeze of every squeeze-and-excitation block) into
      an int32 ``sum``, which ConvertLayout leaves in NCHW: a transpose of
      the whole activation went before each (PP-OCR cls int8: 7 transposes,
      33 us of 510 on one Zen 5 core), and the cast to int32 was a kernel
      of its own writing four bytes per value.
    * ``max_pool2d(permute_dims(x, NHWC -> NCHW))`` of int8 values becomes
      the NHWC pool of ``x``, transposed after: TVM's NCHW int8 pool was a
      scalar loop (PP-OCR cls's last pool: 6.6 us, and 4.7 us for the
      transpose before it, one Zen 5 core).
    """
    import tvm
    from tvm import relax
    from tvm.relax import op as R

    sum_op = tvm.ir.Op.get("relax.sum")
    permute_op = tvm.ir.Op.get("relax.permute_dims")
    astype_op = tvm.ir.Op.get("relax.astype")
    pool_op = tvm.ir.Op.get("relax.nn.max_pool2d")

    @relax.expr_functor.mutator
    class ChannelSum(relax.PyExprMutator):
        def to_nchw(self, expr: Any) -> Any:
            """``x`` when ``expr`` is ``permute_dims(x, [0, 3, 1, 2])``, else None."""
            perm = bound_value(self, expr)
            if isinstance(perm, relax.Call) and perm.op.same_as(permute_op) and perm.attrs.axes is not None:
                if [int(a) for a in perm.attrs.axes] == [0, 3, 1, 2]:
                    return perm.args[0]
            return None

        def visit_call_(self, call: Any) -> Any:
            call = super().visit_call_(call)
            if not isinstance(call, relax.Call):
                return call
            if call.op.same_as(pool_op):
                return self.pool(call)
            if not call.op.same_as(sum_op) or call.attrs.axis is None:
                return call
            summed = sorted(int(a) for a in call.attrs.axis)
            if summed == [1, 2] and call.attrs.keepdims and str(call.ty.dtype) == "int32":
                # Already NHWC: sum(astype(x: int8)) reads the int8 values.
                cast = bound_value(self, call.args[0])
                if isinstance(cast, relax.Call) and cast.op.same_as(astype_op):
                    shape = static_shape(cast.args[0], "int8")
                    if shape is not None and len(shape) == 4:
                        return self.builder_.call_te(_channel_sum, cast.args[0], primfunc_name_hint="channel_sum")
                return call
            if summed != [2, 3] or not call.attrs.keepdims:
                return call
            # sum(permute(astype(x))) or sum(astype(permute(x))).
            src, int8 = call.args[0], None
            cast = bound_value(self, src)
            if isinstance(cast, relax.Call) and cast.op.same_as(astype_op):
                x = int8 = self.to_nchw(cast.args[0])
            else:
                x = self.to_nchw(src)
                cast = bound_value(self, x) if x is not None else None
                if isinstance(cast, relax.Call) and cast.op.same_as(astype_op):
                    int8 = cast.args[0]
            if x is None:
                return call
            if int8 is not None and static_shape(int8, "int8") is not None and str(call.ty.dtype) == "int32":
                inner = self.builder_.emit(self.builder_.call_te(_channel_sum, int8, primfunc_name_hint="channel_sum"))
                return R.permute_dims(inner, [0, 3, 1, 2])
            inner = self.builder_.emit(R.sum(x, axis=[1, 2], keepdims=True))
            return R.permute_dims(inner, [0, 3, 1, 2])

        def pool(self, call: Any) -> Any:
            a = call.attrs
            x = self.to_nchw(call.args[0])
            if x is None or a.layout != "NCHW" or a.out_layout != "NCHW" or static_shape(x, "int8") is None:
                return call
            y = self.builder_.emit(
                R.nn.max_pool2d(x, [int(v) for v in a.pool_size], [int(v) for v in a.strides], [int(v) for v in a.padding],
                                [int(v) for v in a.dilation], bool(a.ceil_mode), bool(a.count_include_pad),
                                layout="NHWC", out_layout="NHWC")
            )  # fmt: skip
            return R.permute_dims(y, [0, 3, 1, 2])

    return mutator_pass(ChannelSum, "EdgekitChannelSum")
