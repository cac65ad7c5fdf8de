"""ONNX → Relax import shared by every backend.

Weights are imported as function parameters (``keep_params_in_input=True``)
so a big model's weights never pass through LLVM as constants. QDQ chains are
rewritten to integer-only compute (:mod:`edgekit.compiler.integer`) before the
weights are detached, because that pass folds the quantized weights' scales
and zero points at compile time.
"""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, Any

from edgekit.core.errors import CompileError

if TYPE_CHECKING:
    from edgekit.frontend.loader import PreparedModel

__all__ = ["fusion_passes", "import_onnx", "tvm_error_line"]

logger = logging.getLogger(__name__)


def fusion_passes() -> list[Any]:
    """Legalization to TIR and operator fusion, as every backend runs them after its own Relax rewrites."""
    from tvm import relax

    return [
        relax.transform.LegalizeOps(customize_legalize_map=_extra_legalizations()),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
        relax.transform.DeadCodeElimination(),
    ]


def _extra_legalizations() -> dict[str, Any]:
    """TOPI lowerings for Relax ops TVM 0.27 imports from ONNX but has no
    legalization for (the VM then refused them: "CodeGenVM cannot emit this
    Relax operator"): ``cumsum`` (ONNX CumSum) and ``topk`` (ONNX TopK)."""
    from tvm import topi

    def cumsum(bb: Any, call: Any) -> Any:
        a = call.attrs
        axis = None if a.axis is None else int(a.axis)
        dtype = str(a.dtype) if a.dtype is not None and str(a.dtype) else None
        return bb.call_te(topi.cumsum, call.args[0], axis, dtype, bool(a.exclusive) if a.exclusive is not None else None)

    def topk(bb: Any, call: Any) -> Any:
        a = call.attrs
        return bb.call_te(topi.topk, call.args[0], int(a.k), int(a.axis), str(a.ret_type), not bool(a.largest), str(a.dtype))

    return {"relax.cumsum": cumsum, "relax.topk": topk}


def tvm_error_line(exc: BaseException) -> str:
    """The first meaningful line of a TVM exception, for one-line messages."""
    text = str(exc).strip()
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("Traceback", "File ", "  ")) and "Stack trace" not in line:
            return line[:300]
    return type(exc).__name__


#: int64 initializers up to this many elements (and int32 scalars) are given to TVM as
#: ``Constant`` nodes, not weights: they are shapes, axes and indices, which
#: its converters fold only when they are constants (an ``Expand`` whose shape
#: was a weight left a shape *value* among the weights, which the package
#: cannot store).
_INLINE_INT_ELEMENTS = 64


def _shape_constants_inline(model: Any) -> Any:
    import onnx
    from onnx import helper

    small = [
        init for init in model.graph.initializer
        if (init.data_type == onnx.TensorProto.INT64 and len(init.dims) <= 1
            and (init.dims[0] if init.dims else 1) <= _INLINE_INT_ELEMENTS)
        # int32 scalars: CumSum's axis (1-D int32 initializers are often
        # quantized biases, which the integer lowering reads as weights).
        or (init.data_type == onnx.TensorProto.INT32 and len(init.dims) == 0)
    ]
    if not small:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    names = {init.name for init in small}
    keep = [init for init in out.graph.initializer if init.name not in names]
    del out.graph.initializer[:]
    out.graph.initializer.extend(keep)
    consts = [helper.make_node("Constant", [], [init.name], value=init) for init in small]
    nodes = list(out.graph.node)
    del out.graph.node[:]
    out.graph.node.extend(consts + nodes)
    return out


def import_onnx(prepared: "PreparedModel", *, integer: bool = True) -> tuple[Any, list[Any], dict[str, Any] | None]:
    """Imports a prepared model into Relax.

    Args:
        prepared: The model from :func:`edgekit.frontend.loader.load_model`.
        integer: Rewrite QDQ chains into integer-only compute.

    Returns:
        ``(mod, weights, integer_report)``: the module whose ``main`` takes the
        model inputs followed by the weights, the weights in that order, and
        the integer-lowering report (None when the model has no QDQ nodes).

    Raises:
        CompileError: naming TVM's first error line.
    """
    from tvm.relax.frontend import detach_params
    from tvm.relax.frontend.onnx import from_onnx

    from edgekit.frontend.legalize import legalize_prepared

    legalize_prepared(prepared)  # a no-op where check_operators ran it

    has_qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in prepared.model.graph.node)
    try:
        with warnings.catch_warnings():
            # The importer warns about every initializer that is not a graph
            # input, which is exactly the layout the front end produces.
            warnings.simplefilter("ignore", UserWarning)
            mod = from_onnx(
                _shape_constants_inline(prepared.model),
                shape_dict={s.name: list(s.shape) for s in prepared.inputs},
                dtype_dict={s.name: s.dtype for s in prepared.inputs},
                keep_params_in_input=True,
            )
        report = None
        if integer and has_qdq:
            from edgekit.compiler.integer import lower_to_integer_with_report

            mod, lowering = lower_to_integer_with_report(mod)
            report = lowering.as_dict()
            logger.debug("integer-only lowering: %s", lowering.summary())  # lower.py logs it at info
        attrs = dict(mod.attrs or {})
        mod, params = detach_params(mod)
        for key, value in attrs.items():  # detach_params drops them (the lowering's table programs)
            mod = mod.with_attr(key, value)
    except CompileError:
        raise
    except Exception as exc:
        raise CompileError(
            f"TVM could not import model '{prepared.name}': {tvm_error_line(exc)}",
            hint="Run `edgekit inspect` on the model; re-export it or pass --input-shape if shapes are the problem.",
        ) from exc
    return mod, list(params.get("main", [])), report
