"""Rewriting QOperator-form models into QDQ form.

Pre-quantized models often come in onnxruntime's "QOperator" form: integer
operators (``QLinearConv``, ``QLinearMatMul``, ``ConvInteger``,
``MatMulInteger``, ``DynamicQuantizeLinear`` and the ``com.microsoft``
``QGemm``/``QLinear*`` contrib operators, every one onnxruntime's
quantizer writes: Add, Mul, Concat, (Global)AveragePool, Sigmoid,
LeakyRelu, Softmax, Where) that TVM's ONNX importer does not
know. :func:`normalize_qoperator` rewrites each into the equivalent QDQ group:
``DequantizeLinear`` on the integer inputs, the float operator, and a
``QuantizeLinear`` on the output where the original output was quantized.
The QDQ form is what onnxruntime's own quantizer writes today and what the
compiler lowers to integer kernels.

onnxruntime has no QOperator -> QDQ converter, so this rewrite is
hand-written. Handlers sit in a table keyed by op type; the whole model is
checked first and every operator without a handler is reported in one error.

It is front-end work (the compiler runs it on every QOperator model it loads,
``edgekit compress`` before quantizing), so it lives in ``frontend``, below
both.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgekit.core.errors import ModelError, UnsupportedOpsError

__all__ = ["NormalizeResult", "normalize_qoperator", "QOPERATOR_OPS", "is_qoperator_model"]

logger = logging.getLogger(__name__)

_MS = "com.microsoft"


@dataclass
class NormalizeResult:
    """What :func:`normalize_qoperator` did.

    Attributes:
        model: The model in QDQ form (a new proto; the input is not changed).
        modified: Whether anything was rewritten.
        rewritten: How many nodes of each op type were rewritten.
    """

    model: onnx.ModelProto
    modified: bool
    rewritten: dict[str, int] = field(default_factory=dict)


class _Graph:
    """Helpers to add nodes and constants with unique names while rewriting."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.inits = {t.name: t for t in model.graph.initializer}
        self.used = {o for n in model.graph.node for o in (*n.input, *n.output)} | set(self.inits)
        self.used |= {v.name for v in (*model.graph.input, *model.graph.output)}
        self.rank = _ranks(model)

    def name(self, base: str) -> str:
        candidate, i = base, 0
        while candidate in self.used:
            i += 1
            candidate = f"{base}_{i}"
        self.used.add(candidate)
        return candidate

    def const(self, base: str, value: np.ndarray) -> str:
        name = self.name(base)
        tensor = numpy_helper.from_array(np.asarray(value), name)
        self.model.graph.initializer.append(tensor)
        self.inits[name] = tensor
        return name

    def value(self, name: str) -> np.ndarray | None:
        t = self.inits.get(name)
        return None if t is None else numpy_helper.to_array(t)


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # contrib ops may stop inference; ranks of constants still work
        inferred = model
    ranks = {t.name: len(t.dims) for t in model.graph.initializer}
    for vi in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output):
        tt = vi.type.tensor_type
        if tt.HasField("shape"):
            ranks.setdefault(vi.name, len(tt.shape.dim))
    return ranks


def _inp(node: onnx.NodeProto, i: int) -> str:
    return node.input[i] if i < len(node.input) else ""


def _attrs(node: onnx.NodeProto, drop: tuple[str, ...] = ()) -> dict[str, object]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name not in drop}


def _attr(node: onnx.NodeProto, name: str, default: object) -> object:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


class _Rewriter:
    """Builds the replacement nodes for one original node."""

    def __init__(self, g: _Graph, node: onnx.NodeProto) -> None:
        self.g = g
        self.node = node
        self.nodes: list[onnx.NodeProto] = []
        self.tag = node.name or node.output[0]

    def add(self, op: str, inputs: list[str], outputs: list[str] | None = None, **attrs: object) -> str:
        out = outputs or [self.g.name(f"{self.tag}_{op}")]
        self.nodes.append(helper.make_node(op, inputs, out, name=self.g.name(f"{self.tag}/{op}"), **attrs))
        return out[0]

    def dq(self, x: str, scale: str, zp: str, axis: int | None = None) -> str:
        inputs = [x, scale] + ([zp] if zp else [])
        attrs = {} if axis is None else {"axis": axis}
        return self.add("DequantizeLinear", inputs, **attrs)

    def dq_auto(self, x: str, scale: str, zp: str, axis: int) -> str:
        """DequantizeLinear with ``axis`` only when the scale is per-channel."""
        s = self.g.value(scale)
        per_channel = s is not None and s.size > 1 or (s is None and self.g.rank.get(scale, 0) == 1)
        if per_channel and axis < 0:
            rank = self.g.rank.get(x)
            if rank is None:
                raise ModelError(
                    f"cannot tell the rank of '{x}' (input of {self.node.op_type} '{self.tag}')",
                    hint="Run shape inference on the model (onnx.shape_inference.infer_shapes) and try again.",
                )
            axis += rank
        return self.dq(x, scale, zp, axis if per_channel else None)

    def q(self, y: str, scale: str, zp: str, output: str) -> None:
        self.add("QuantizeLinear", [y, scale] + ([zp] if zp else []), [output])

    def bias_scale(self, a_scale: str, w_scale: str, factor: float = 1.0) -> str:
        a, w = self.g.value(a_scale), self.g.value(w_scale)
        if a is not None and w is not None:
            return self.g.const(f"{self.tag}_bias_scale", (a.astype(np.float32) * w.astype(np.float32) * factor))
        s = self.add("Mul", [a_scale, w_scale])
        if factor != 1.0:
            s = self.add("Mul", [s, self.g.const(f"{self.tag}_alpha", np.array(factor, np.float32))])
        return s


# --------------------------------------------------------------------------- #
# Handlers: each returns the nodes replacing one original node.
# --------------------------------------------------------------------------- #


def _qlinear_conv(r: _Rewriter) -> None:
    n = r.node
    x = r.dq(_inp(n, 0), _inp(n, 1), _inp(n, 2))
    w = r.dq_auto(_inp(n, 3), _inp(n, 4), _inp(n, 5), axis=0)
    inputs = [x, w]
    if _inp(n, 8):
        inputs.append(r.dq_auto(_inp(n, 8), r.bias_scale(_inp(n, 1), _inp(n, 4)), "", axis=0))
    y = r.add("Conv", inputs, **_attrs(n))
    r.q(y, _inp(n, 6), _inp(n, 7), n.output[0])


def _qlinear_matmul(r: _Rewriter) -> None:
    n = r.node
    # Per-row scales of A run along axis -2, per-column scales of B along -1.
    a = r.dq_auto(_inp(n, 0), _inp(n, 1), _inp(n, 2), axis=-2)
    b = r.dq_auto(_inp(n, 3), _inp(n, 4), _inp(n, 5), axis=-1)
    r.q(r.add("MatMul", [a, b]), _inp(n, 6), _inp(n, 7), n.output[0])


def _qgemm(r: _Rewriter) -> None:
    n = r.node
    alpha = float(_attr(n, "alpha", 1.0))
    trans_b = int(_attr(n, "transB", 0))
    a = r.dq(_inp(n, 0), _inp(n, 1), _inp(n, 2))
    b = r.dq_auto(_inp(n, 3), _inp(n, 4), _inp(n, 5), axis=0 if trans_b else 1)
    inputs = [a, b]
    if _inp(n, 6):
        # C is int32 with scale alpha * a_scale * b_scale and zero point 0.
        inputs.append(r.dq_auto(_inp(n, 6), r.bias_scale(_inp(n, 1), _inp(n, 4), alpha), "", axis=-1))
    y_scale = _inp(n, 7)
    if y_scale:
        y = r.add("Gemm", inputs, **_attrs(n, drop=("domain",)))
        r.q(y, y_scale, _inp(n, 8), n.output[0])
    else:  # no output scale: QGemm's output is float
        r.add("Gemm", inputs, [n.output[0]], **_attrs(n, drop=("domain",)))


def _qlinear_binary(op: str) -> Callable[[_Rewriter], None]:
    def handler(r: _Rewriter) -> None:
        n = r.node
        a = r.dq(_inp(n, 0), _inp(n, 1), _inp(n, 2))
        b = r.dq(_inp(n, 3), _inp(n, 4), _inp(n, 5))
        r.q(r.add(op, [a, b]), _inp(n, 6), _inp(n, 7), n.output[0])

    return handler


def _qlinear_unary(op: str, drop: tuple[str, ...] = ()) -> Callable[[_Rewriter], None]:
    def handler(r: _Rewriter) -> None:
        n = r.node
        if int(_attr(n, "channels_last", 0)):
            raise _Unsupported(f"{n.op_type} with channels_last=1")
        x = r.dq(_inp(n, 0), _inp(n, 1), _inp(n, 2))
        r.q(r.add(op, [x], **_attrs(n, drop=("channels_last", *drop))), _inp(n, 3), _inp(n, 4), n.output[0])

    return handler


def _qlinear_concat(r: _Rewriter) -> None:
    n = r.node
    parts = [r.dq(n.input[i], n.input[i + 1], n.input[i + 2]) for i in range(2, len(n.input), 3)]
    r.q(r.add("Concat", parts, axis=int(_attr(n, "axis", 0))), _inp(n, 0), _inp(n, 1), n.output[0])


def _qlinear_softmax(r: _Rewriter) -> None:
    """QLinearSoftmax keeps the Softmax semantics of its ``opset`` attribute:
    before opset 13 the input is coerced to 2-D at ``axis`` (flattened around
    it) and normalized over everything after it."""
    n = r.node
    axis = int(_attr(n, "axis", -1))
    x = r.dq(_inp(n, 0), _inp(n, 1), _inp(n, 2))
    rank = r.g.rank.get(_inp(n, 0))
    last = rank is not None and axis % rank == rank - 1
    if int(_attr(n, "opset", 13)) >= 13 or last:
        y = r.add("Softmax", [x], axis=axis)
    else:
        if rank is None:
            raise _Unsupported("QLinearSoftmax before opset 13 on an input of unknown rank")
        flat = r.add("Flatten", [x], axis=axis % rank)
        y = r.add("Reshape", [r.add("Softmax", [flat], axis=1), r.add("Shape", [x])])
    r.q(y, _inp(n, 3), _inp(n, 4), n.output[0])


def _qlinear_where(r: _Rewriter) -> None:
    n = r.node
    a = r.dq(_inp(n, 1), _inp(n, 2), _inp(n, 3))
    b = r.dq(_inp(n, 4), _inp(n, 5), _inp(n, 6))
    r.q(r.add("Where", [_inp(n, 0), a, b]), _inp(n, 7), _inp(n, 8), n.output[0])


def _integer_op(op: str, w_axis: int) -> Callable[[_Rewriter], None]:
    """ConvInteger / MatMulInteger: integer inputs, int32 output.

    Dequantizing with scale 1 keeps the exact meaning ((x - x_zp) * (w - w_zp)
    summed in float, exact below 2**24) and the output is cast back to int32;
    :func:`_fold_integer_scales` then moves the real scales onto the
    DequantizeLinear nodes where the usual Cast -> Mul(scale) pattern follows.
    """

    def handler(r: _Rewriter) -> None:
        n = r.node
        one = r.g.const(f"{r.tag}_unit_scale", np.array(1.0, np.float32))
        x = r.dq(_inp(n, 0), one, _inp(n, 2))
        w_zp = _inp(n, 3)
        wz = r.g.value(w_zp) if w_zp else None
        if wz is not None and wz.size > 1:
            ones = r.g.const(f"{r.tag}_unit_scales", np.ones(wz.shape, np.float32))
            rank = r.g.rank.get(_inp(n, 1), 2)
            w = r.dq(_inp(n, 1), ones, w_zp, axis=w_axis if w_axis >= 0 else rank + w_axis)
        else:
            w = r.dq(_inp(n, 1), one, w_zp)
        y = r.add(op, [x, w], **_attrs(n))
        r.add("Cast", [y], [n.output[0]], to=TensorProto.INT32)

    return handler


def _dynamic_quantize(r: _Rewriter) -> None:
    """DynamicQuantizeLinear as float ops and a QuantizeLinear (ONNX spec
    formula: uint8, range widened to include 0, zero point rounded)."""
    n = r.node
    x = _inp(n, 0)
    zero = r.g.const(f"{r.tag}_zero", np.array(0.0, np.float32))
    mn = r.add("Min", [r.add("ReduceMin", [x], keepdims=0), zero])
    mx = r.add("Max", [r.add("ReduceMax", [x], keepdims=0), zero])
    scale = r.add("Div", [r.add("Sub", [mx, mn]), r.g.const(f"{r.tag}_255", np.array(255.0, np.float32))])
    # An all-zero input gives scale 0; any positive scale then yields the same
    # all-zero quantized tensor and the same (zero) products downstream.
    tiny = r.g.const(f"{r.tag}_tiny", np.array(np.finfo(np.float32).tiny, np.float32))
    y_scale = n.output[1] if len(n.output) > 1 and n.output[1] else r.g.name(f"{r.tag}_scale")
    r.add("Max", [scale, tiny], [y_scale])
    zp_f = r.add("Round", [r.add("Div", [r.add("Neg", [mn]), y_scale])])
    zp_f = r.add("Clip", [zp_f, zero, r.g.const(f"{r.tag}_255f", np.array(255.0, np.float32))])
    y_zp = n.output[2] if len(n.output) > 2 and n.output[2] else r.g.name(f"{r.tag}_zero_point")
    r.add("Cast", [zp_f], [y_zp], to=TensorProto.UINT8)
    r.q(x, y_scale, y_zp, n.output[0])


class _Unsupported(Exception):
    """A node has a handler but a variant it cannot rewrite."""


_HANDLERS: dict[tuple[str, str], Callable[[_Rewriter], None]] = {
    ("", "QLinearConv"): _qlinear_conv,
    ("", "QLinearMatMul"): _qlinear_matmul,
    ("", "ConvInteger"): _integer_op("Conv", 0),
    ("", "MatMulInteger"): _integer_op("MatMul", -1),
    ("", "DynamicQuantizeLinear"): _dynamic_quantize,
    (_MS, "QGemm"): _qgemm,
    (_MS, "QLinearAdd"): _qlinear_binary("Add"),
    (_MS, "QLinearMul"): _qlinear_binary("Mul"),
    (_MS, "QLinearConcat"): _qlinear_concat,
    (_MS, "QLinearGlobalAveragePool"): _qlinear_unary("GlobalAveragePool"),
    (_MS, "QLinearAveragePool"): _qlinear_unary("AveragePool"),
    (_MS, "QLinearSigmoid"): _qlinear_unary("Sigmoid"),
    (_MS, "QLinearLeakyRelu"): _qlinear_unary("LeakyRelu"),
    (_MS, "QLinearSoftmax"): _qlinear_softmax,
    (_MS, "QLinearWhere"): _qlinear_where,
}

#: Operator types this module rewrites.
QOPERATOR_OPS = frozenset(op for _, op in _HANDLERS)

# Integer operators of the contrib domain that have no handler; listed so an
# unknown one is reported rather than passed on to a compiler that fails later.
_KNOWN_UNHANDLED = frozenset(
    {"QLinearReduceMean", "QAttention", "DynamicQuantizeMatMul",
     "MatMulIntegerToFloat", "DynamicQuantizeLSTM", "QEmbedLayerNormalization", "QOrderedMatMul"}
)  # fmt: skip


def _domain(node: onnx.NodeProto) -> str:
    return "" if node.domain in ("", "ai.onnx") else node.domain


def is_qoperator_model(model: onnx.ModelProto) -> bool:
    """Whether the model contains any operator :func:`normalize_qoperator` rewrites."""
    return any((_domain(n), n.op_type) in _HANDLERS for n in model.graph.node)


def _check_supported(model: onnx.ModelProto) -> None:
    bad = Counter(
        f"{n.domain}.{n.op_type}"
        for n in model.graph.node
        if (_domain(n), n.op_type) not in _HANDLERS
        and (n.op_type in _KNOWN_UNHANDLED or (_domain(n) == _MS and n.op_type.startswith(("QLinear", "Q"))))
    )
    if bad:
        listing = ", ".join(f"{op} (x{c})" for op, c in sorted(bad.items()))
        raise UnsupportedOpsError(
            f"cannot normalize these quantized operators to QDQ: {listing}",
            hint="Quantize the fp32 model with edgekit instead (`edgekit compress --quantize int8`), "
            "or re-export it in QDQ form.",
            ops=sorted(bad),
        )


def _fold_integer_scales(model: onnx.ModelProto) -> int:
    """Turns ``DQ(x, 1, xzp), DQ(w, 1, wzp) -> op -> Cast(int32) -> Cast(float)
    -> Mul(s_x * s_w)`` (what ConvInteger/MatMulInteger become, followed by
    onnxruntime's dynamic-quantization scaling) into ``DQ(x, s_x, xzp),
    DQ(w, s_w, wzp) -> op``, the plain QDQ form, when ``s_w`` is a constant
    and ``s_x`` a tensor.
    """
    graph = model.graph
    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    inits = {t.name for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    folded = 0
    for cast_i in [n for n in graph.node if n.op_type == "Cast" and _attr(n, "to", 0) == TensorProto.INT32]:
        op = producers.get(cast_i.input[0])
        nxt = consumers.get(cast_i.output[0], [])
        if op is None or op.op_type not in ("Conv", "MatMul") or len(nxt) != 1 or cast_i.output[0] in outputs:
            continue
        cast_f = nxt[0]
        if cast_f.op_type != "Cast" or _attr(cast_f, "to", 0) != TensorProto.FLOAT:
            continue
        muls = consumers.get(cast_f.output[0], [])
        if len(muls) != 1 or muls[0].op_type != "Mul" or cast_f.output[0] in outputs:
            continue
        mul = muls[0]
        scale_name = mul.input[1] if mul.input[0] == cast_f.output[0] else mul.input[0]
        scale_mul = producers.get(scale_name)
        dq_x, dq_w = producers.get(op.input[0]), producers.get(op.input[1])
        if scale_mul is None or scale_mul.op_type != "Mul" or dq_x is None or dq_w is None:
            continue
        if dq_x.op_type != "DequantizeLinear" or dq_w.op_type != "DequantizeLinear":
            continue
        s_x, s_w = scale_mul.input
        if s_x in inits and s_w not in inits:
            s_x, s_w = s_w, s_x
        if s_w not in inits:
            continue
        w_scale = numpy_helper.to_array(next(t for t in graph.initializer if t.name == s_w))
        unit = numpy_helper.to_array(next(t for t in graph.initializer if t.name == dq_w.input[1]))
        # A per-channel scale needs a per-channel DequantizeLinear (its zero
        # point has the scale's shape); otherwise leave the pattern alone.
        if w_scale.size > 1 and (w_scale.size != unit.size or not any(a.name == "axis" for a in dq_w.attribute)):
            continue
        dq_x.input[1] = s_x
        dq_w.input[1] = s_w
        op.output[0] = mul.output[0]
        graph.node.remove(cast_i)
        graph.node.remove(cast_f)
        graph.node.remove(mul)
        folded += 1
    return folded


def _remove_dead(model: onnx.ModelProto) -> None:
    graph = model.graph
    needed = {o.name for o in graph.output}
    keep: list[onnx.NodeProto] = []
    for node in reversed(list(graph.node)):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    del graph.node[:]
    graph.node.extend(reversed(keep))
    live = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(live)


def normalize_qoperator(model: onnx.ModelProto) -> NormalizeResult:
    """Rewrites QOperator-form nodes into QDQ form.

    Args:
        model: Any ONNX model; models without QOperator nodes come back
            unchanged with ``modified=False``.

    Returns:
        A :class:`NormalizeResult` with a new model.

    Raises:
        UnsupportedOpsError: the model has quantized operators without a
            rewrite (all of them are listed).
        ModelError: a per-channel scale's tensor has no known rank.
    """
    _check_supported(model)
    if not is_qoperator_model(model):
        out = onnx.ModelProto()
        out.CopyFrom(model)
        return NormalizeResult(out, False, {})
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = _Graph(out)
    new_nodes: list[onnx.NodeProto] = []
    counts: Counter[str] = Counter()
    unsupported: list[str] = []
    for node in out.graph.node:
        handler = _HANDLERS.get((_domain(node), node.op_type))
        if handler is None:
            new_nodes.append(node)
            continue
        rw = _Rewriter(g, node)
        try:
            handler(rw)
        except _Unsupported as exc:
            unsupported.append(f"{node.name or node.output[0]}: {exc}")
            continue
        new_nodes.extend(rw.nodes)
        counts[node.op_type] += 1
    if unsupported:
        raise UnsupportedOpsError(
            "cannot normalize these quantized nodes to QDQ: " + "; ".join(unsupported),
            hint="Re-export the model in QDQ form, or quantize the fp32 model with edgekit.",
        )
    del out.graph.node[:]
    out.graph.node.extend(new_nodes)
    folded = _fold_integer_scales(out)
    _remove_dead(out)
    if not any(n.domain == _MS for n in out.graph.node):
        keep = [o for o in out.opset_import if o.domain != _MS]
        del out.opset_import[:]
        out.opset_import.extend(keep)
    out = _ensure_opset(out)
    del out.graph.value_info[:]
    try:
        out = onnx.shape_inference.infer_shapes(out)
        onnx.checker.check_model(out)
    except Exception as exc:
        raise ModelError(
            f"the normalized model is not valid ONNX ({str(exc).splitlines()[0][:200]})",
            hint="Please report this as an edgekit bug, with the model if you can share it.",
        ) from None
    logger.info(
        "normalized %s to QDQ (%d integer op(s) folded into DequantizeLinear scales)",
        ", ".join(f"{c} {op}" for op, c in sorted(counts.items())), folded,
    )  # fmt: skip
    return NormalizeResult(out, True, dict(counts))


def _ensure_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    # Per-axis DequantizeLinear needs opset 13.
    version = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if version >= 13:
        return model
    from onnx import version_converter

    try:
        return version_converter.convert_version(model, 13)
    except Exception as exc:
        raise ModelError(
            f"cannot raise the normalized model from opset {version} to 13 ({str(exc)[:200]})",
            hint="Re-export the model with opset 13 or newer.",
        ) from None
