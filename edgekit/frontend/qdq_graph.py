"""Graph-level surgery on QDQ models that needs only the QDQ graph itself.

A QDQ model (what onnxruntime's quantizer writes) holds every quantized layer
as ``DequantizeLinear -> op -> QuantizeLinear``. The compiler turns those
chains into integer-only kernels; this module makes the *float* version of
chosen layers, so a compiler can keep a layer in fp32 where that is faster on
its target (issue #14, item 4), and collects the shared helpers that
:mod:`edgekit.compress.fallback` (accuracy control) uses too.

:func:`float_layers` keeps a set of layers in float:

* a quantized weight or bias (``DequantizeLinear`` of an initializer) becomes
  its dequantized float32 initializer;
* an activation that another float node computes (or a model input) is read
  directly: inside a float region the quantization (rounding and the
  calibrated saturation) is dropped, as the fp32 model has neither. Only an
  activation the quantizer folded into the zero point comes back: a range
  whose lower bound is exactly 0 (zero point at the type's minimum, what
  onnxruntime's quantizer writes when it removes a ``Relu`` or ``Clip(0, b)``)
  is read through ``Clip(0, hi)`` -- one op where the fp32 model had one,
  keeping ReLU6's upper bound -- unless its input is already known to be
  non-negative (a Relu, a sigmoid, a pool of such). A folded clip with a
  negative lower bound (hard-tanh) cannot be told from no activation and is
  not restored;
* an activation an int8 layer computes is dequantized with explicit
  arithmetic (``Cast``, ``Sub``, ``Mul``: what ``DequantizeLinear`` computes),
  so the compiler's integer patterns, which start at a ``DequantizeLinear``,
  no longer match the float layer;
* a float layer's output keeps its ``QuantizeLinear``: int8 consumers read
  exactly the quantized tensor they read before (the region boundary keeps
  the QDQ semantics), float consumers read the float value (above).

Data-movement nodes (Reshape, MaxPool, ...) whose input is computed in float
join the float region, so an all-float choice (:func:`float_model`) is the
fp32 model of the same graph with no more ops than the float model the
quantizer started from (its range clamps cost the fp32 build of PP-OCR cls
7 %; issue #14).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = [
    "PASS_THROUGH_OPS",
    "QDQ_OPS",
    "float_layers",
    "float_model",
    "has_qdq",
    "layer_subgraph",
    "named_nodes",
    "producers",
    "quantized_nodes",
    "remove_dead_qdq",
]

logger = logging.getLogger(__name__)

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")

#: Operators that only move or select int8 values with their input's scale:
#: keeping one of them in float alone cannot reduce error, and they follow
#: their input into a float region.
PASS_THROUGH_OPS = frozenset(
    {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Slice", "Split", "Gather",
     "GatherElements", "MaxPool", "Pad", "TopK", "Resize", "Identity", "Concat"}
)  # fmt: skip

#: Ops that may follow a layer before its output QuantizeLinear and belong to
#: the layer (the integer lowering folds them into the layer's requantization).
_ACTIVATIONS = frozenset({"Relu", "Clip", "LeakyRelu"})

_INT_RANGES = {TensorProto.INT8: (-128, 127), TensorProto.UINT8: (0, 255)}

#: Ops whose output is never negative, and ops whose output is non-negative
#: when every activation input is (what :class:`_FloatRewriter` tracks to drop
#: a restored ``Clip(0, hi)`` that cannot change anything).
_NON_NEGATIVE_OPS = frozenset({"Relu", "Sigmoid", "HardSigmoid", "Softmax", "Exp", "Abs"})
_SIGN_PRESERVING_OPS = PASS_THROUGH_OPS | {"AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Mul", "Add"}


def producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    """Tensor name -> the node that writes it."""
    return {o: n for n in model.graph.node for o in n.output}


def has_qdq(model: onnx.ModelProto) -> bool:
    """True when the model has QuantizeLinear/DequantizeLinear nodes."""
    return any(n.op_type in QDQ_OPS for n in model.graph.node)


def quantized_nodes(qmodel: onnx.ModelProto, skip: Sequence[str] = ()) -> list[str]:
    """Nodes of a QDQ model that read at least one dequantized tensor and do
    more than move data: the candidates for keeping in float."""
    dq_outputs = {o for n in qmodel.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    skipped = set(skip)
    return [
        n.name
        for n in qmodel.graph.node
        if n.op_type not in QDQ_OPS
        and n.op_type not in PASS_THROUGH_OPS
        and n.name not in skipped
        and any(i in dq_outputs for i in n.input)
    ]


def named_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` itself when every node has a unique name, else a copy where
    unnamed or duplicate-named nodes get ``<op>_<index>`` names (layers are
    chosen by node name)."""
    seen: set[str] = set()
    clash = False
    for n in model.graph.node:
        clash |= not n.name or n.name in seen
        seen.add(n.name)
    if not clash:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    seen = set()
    for k, n in enumerate(out.graph.node):
        if not n.name or n.name in seen:
            n.name = f"{n.op_type}_{k}"
        seen.add(n.name)
    return out


def remove_dead_qdq(model: onnx.ModelProto) -> None:
    """Removes, in place, Q/DQ nodes nothing reads and unused initializers."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    while True:
        used = {i for n in graph.node for i in n.input} | outputs
        dead = [k for k, n in enumerate(graph.node) if n.op_type in QDQ_OPS and not any(o in used for o in n.output)]
        if not dead:
            break
        for k in reversed(dead):
            del graph.node[k]
    used = {i for n in graph.node for i in n.input} | outputs
    keep = [t for t in graph.initializer if t.name in used]
    if len(keep) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(keep)


# --------------------------------------------------------------------------- #
# Keeping layers in float
# --------------------------------------------------------------------------- #


def _scalar(inits: dict[str, TensorProto], name: str) -> np.ndarray | None:
    if not name:
        return None
    t = inits.get(name)
    if t is None:
        return None
    a = numpy_helper.to_array(t)
    return a if a.size == 1 else None


def _dequantized(node: onnx.NodeProto, inits: dict[str, TensorProto]) -> np.ndarray | None:
    """The float32 value of a DequantizeLinear of an initializer (per tensor
    or per axis), or None when it is blocked or its inputs are not constant."""
    if any(a.name == "block_size" and a.i for a in node.attribute):
        return None
    try:
        q = numpy_helper.to_array(inits[node.input[0]]).astype(np.float64)
        scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        zp = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64) if len(node.input) > 2 and node.input[2] else 0.0
    except KeyError:
        return None
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    if np.ndim(scale) == 1 and q.ndim:
        shape = [1] * q.ndim
        shape[axis % q.ndim] = -1
        scale = scale.reshape(shape)
        zp = np.reshape(zp, shape) if np.ndim(zp) == 1 else zp
    # DequantizeLinear: (x - zero_point) * scale, in float32.
    return ((q - zp).astype(np.float32) * scale).astype(np.float32)


def _clip_range(q: onnx.NodeProto, inits: dict[str, TensorProto]) -> tuple[float, float] | None:
    """The float range a per-tensor int8/uint8 QuantizeLinear represents."""
    scale = _scalar(inits, q.input[1]) if len(q.input) > 1 else None
    zp_t = inits.get(q.input[2]) if len(q.input) > 2 and q.input[2] else None
    if scale is None:
        return None
    # Without a zero point the output type is uint8, or opset 21's output_dtype.
    out_dtype = next((a.i for a in q.attribute if a.name == "output_dtype" and a.i), TensorProto.UINT8)
    dtype = zp_t.data_type if zp_t is not None else out_dtype
    if dtype not in _INT_RANGES or (zp_t is not None and _scalar(inits, zp_t.name) is None):
        return None
    zp = float(_scalar(inits, zp_t.name).reshape(())) if zp_t is not None else 0.0  # type: ignore[union-attr]
    lo, hi = _INT_RANGES[dtype]
    s = float(np.float32(scale.reshape(())))
    return (lo - zp) * s, (hi - zp) * s


class _FloatRewriter:
    """Builds the float version of a set of layers (see the module docstring)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.graph = model.graph
        self.inits = {t.name: t for t in self.graph.initializer}
        self.prod = producers(model)
        self.dq_of = {n.output[0]: n for n in self.graph.node if n.op_type == "DequantizeLinear"}
        self.made: dict[str, str] = {}  # DQ output -> its float replacement
        self.pending: list[onnx.NodeProto] = []
        self.float_tensors: set[str] = {i.name for i in self.graph.input if i.name not in self.inits}
        self.non_negative: set[str] = set()  # float tensors known to be >= 0

    def const(self, name: str, value: np.floating) -> onnx.NodeProto:
        """A scalar as a ``Constant`` node, not an initializer: compilers that
        import initializers as run-time weights fold only constants into the
        kernel (a Clip with weight bounds ran as separate max/min kernels)."""
        return helper.make_node("Constant", [], [name], name=name, value=numpy_helper.from_array(np.asarray(value), name))

    def _init(self, name: str, value: np.ndarray) -> str:
        if name not in self.inits:
            t = numpy_helper.from_array(np.asarray(value), name)
            self.graph.initializer.append(t)
            self.inits[name] = t
        return name

    def float_source(self, name: str) -> bool:
        """True when ``name`` (a DQ output) dequantizes a constant or a Q of a float-computed tensor."""
        dq = self.dq_of.get(name)
        if dq is None:
            return name in self.float_tensors or name in self.inits
        if dq.input[0] in self.inits:
            return True
        q = self.prod.get(dq.input[0])
        return q is not None and q.op_type == "QuantizeLinear" and q.input[0] in self.float_tensors

    def replacement(self, name: str) -> str:
        """The float tensor a float node reads instead of the DQ output ``name``."""
        if name in self.made:
            return self.made[name]
        dq = self.dq_of[name]
        new = name
        if dq.input[0] in self.inits:
            value = _dequantized(dq, self.inits)
            if value is not None:
                new = self._init(f"{name}__ek_fp32", value)
        else:
            # One float value per quantized tensor, however many DequantizeLinear
            # nodes read it (a QDQ model may have one per consumer).
            q = self.prod.get(dq.input[0])
            key = f"{dq.input[0]}\0{dq.input[1]}"
            if key in self.made:
                new = self.made[key]
            elif q is not None and q.op_type == "QuantizeLinear" and q.input[0] in self.float_tensors:
                new = self._clip(q, f"{name}__ek_fp32")
            else:
                new = self._explicit_dequantize(dq, f"{name}__ek_fp32")
            if new != name:
                self.made[key] = new
        self.made[name] = new
        return new

    def note_signs(self, node: onnx.NodeProto) -> None:
        """Records ``node``'s outputs as non-negative when they provably are."""
        acts = [i for i in node.input if i and i not in self.inits]
        consts = [numpy_helper.to_array(self.inits[i]) for i in node.input if i in self.inits]
        if node.op_type in _NON_NEGATIVE_OPS or (
            node.op_type in _SIGN_PRESERVING_OPS and acts and all(i in self.non_negative for i in acts)
            and (node.op_type not in ("Mul", "Add") or all(np.all(c >= 0) for c in consts))
        ):
            self.non_negative.update(node.output)

    def float_edge(self, q: onnx.NodeProto) -> tuple[float, float] | None:
        """The ``Clip`` bounds a float consumer reads ``q``'s float input through; None: read it as it is.

        A lower bound of exactly 0 is an activation the quantizer folded into
        the zero point; any other range is calibration (module docstring). A
        model input's range is calibration whatever its bounds (no activation
        can have been folded into it).
        """
        bounds = _clip_range(q, self.inits)
        if bounds is None or bounds[0] != 0.0 or q.input[0] in self.non_negative or q.input[0] not in self.prod:
            return None
        return bounds

    def _clip(self, q: onnx.NodeProto, out: str) -> str:
        bounds = self.float_edge(q)
        if bounds is None:
            return q.input[0]
        lo, hi = self.const(f"{out}__lo", np.float32(bounds[0])), self.const(f"{out}__hi", np.float32(bounds[1]))
        self.pending += [lo, hi, helper.make_node("Clip", [q.input[0], lo.output[0], hi.output[0]], [out], name=out)]
        self.non_negative.add(out)
        return out

    def _explicit_dequantize(self, dq: onnx.NodeProto, out: str) -> str:
        scale = _scalar(self.inits, dq.input[1])
        zp_name = dq.input[2] if len(dq.input) > 2 else ""
        zp = _scalar(self.inits, zp_name) if zp_name else np.zeros(())
        if scale is None or zp is None:
            return dq.output[0]  # per-axis activation quantization: left as written
        cast = helper.make_node("Cast", [dq.input[0]], [f"{out}__cast"], name=f"{out}__cast", to=TensorProto.FLOAT)
        zp_f = self.const(f"{out}__zp", np.float32(zp.reshape(())))
        sc_f = self.const(f"{out}__scale", np.float32(scale.reshape(())))
        sub = helper.make_node("Sub", [cast.output[0], zp_f.output[0]], [f"{out}__sub"], name=f"{out}__sub")
        mul = helper.make_node("Mul", [sub.output[0], sc_f.output[0]], [out], name=out)
        self.pending += [cast, zp_f, sc_f, sub, mul]
        return out


def float_layers(model: onnx.ModelProto, layers: Iterable[str]) -> onnx.ModelProto:
    """A copy of the QDQ ``model`` with ``layers`` (node names) computing in float.

    See the module docstring for the rules. Unknown names are ignored; a copy
    is returned even when nothing changes.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    chosen = set(layers)
    if not chosen:
        return out
    rw = _FloatRewriter(out)
    graph = out.graph
    nodes: list[onnx.NodeProto] = []
    for node in list(graph.node):
        if node.op_type in QDQ_OPS:
            nodes.append(node)
            continue
        acts = [i for i in node.input if i and i not in rw.inits]
        is_float = node.name in chosen or (
            node.op_type in PASS_THROUGH_OPS and any(i in rw.dq_of for i in acts) and all(rw.float_source(i) for i in acts)
        )
        if is_float:
            for k, name in enumerate(node.input):
                if name in rw.dq_of:
                    node.input[k] = rw.replacement(name)
            nodes += rw.pending
            rw.pending = []
            rw.float_tensors.update(node.output)
            rw.note_signs(node)
        elif all(i in rw.float_tensors for i in acts):
            rw.float_tensors.update(node.output)  # float compute between float layers (Relu, Softmax, ...)
            rw.note_signs(node)
        nodes.append(node)
    # A model output dequantized from a float-computed tensor: the float value.
    outputs = {o.name for o in graph.output}
    final: list[onnx.NodeProto] = []
    for node in nodes:
        q = rw.prod.get(node.input[0]) if node.op_type == "DequantizeLinear" and node.output[0] in outputs else None
        if q is not None and q.op_type == "QuantizeLinear" and q.input[0] in rw.float_tensors and _clip_range(q, rw.inits):
            bounds = rw.float_edge(q)
            if bounds is None:  # the float value as it is (an Identity keeps the output's name; no kernel)
                node = helper.make_node("Identity", [q.input[0]], [node.output[0]], name=node.name)
            else:
                lo = rw.const(f"{node.output[0]}__ek_lo", np.float32(bounds[0]))
                hi = rw.const(f"{node.output[0]}__ek_hi", np.float32(bounds[1]))
                node = helper.make_node("Clip", [q.input[0], lo.output[0], hi.output[0]], [node.output[0]], name=node.name)
                final += [lo, hi]
        final.append(node)
    del graph.node[:]
    graph.node.extend(final)
    remove_dead_qdq(out)
    return out


def float_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """The fp32 model of the same graph: every quantized layer in float."""
    return float_layers(model, quantized_nodes(model))


# --------------------------------------------------------------------------- #
# One layer as a model of its own
# --------------------------------------------------------------------------- #


def _value_infos(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    g = model.graph
    return {v.name: v for v in [*g.input, *g.value_info, *g.output]}


def layer_subgraph(model: onnx.ModelProto, name: str) -> onnx.ModelProto | None:
    """The quantized layer ``name`` alone, as an int8-in/int8-out QDQ model.

    The model reads the int8 tensors the layer's ``DequantizeLinear`` nodes
    read (float tensors the layer reads directly stay float inputs) and
    returns its output ``QuantizeLinear``'s int8 tensor, with the layer's
    activation (Relu, Clip) in between. Timing it with the layer int8 and
    with :func:`float_layers` applied to it gives the cost of one layer in
    each precision, conversions at its boundary included.

    Returns None when the layer's output is not quantized (nothing to choose)
    or a shape is unknown. ``model`` needs inferred shapes (``value_info``).
    """
    g = model.graph
    by_name = {n.name: n for n in g.node}
    node = by_name.get(name)
    if node is None:
        return None
    inits = {t.name: t for t in g.initializer}
    infos = _value_infos(model)
    prod = producers(model)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    body = [node]
    tail = node
    while True:
        cons = consumers.get(tail.output[0], []) if tail.output else []
        if len(cons) != 1:
            return None
        nxt = cons[0]
        if nxt.op_type == "QuantizeLinear":
            body.append(nxt)
            break
        if nxt.op_type not in _ACTIVATIONS or any(i and i not in inits and i != tail.output[0] for i in nxt.input):
            return None
        body.append(nxt)
        tail = nxt

    sub_nodes: list[onnx.NodeProto] = []
    inputs: list[onnx.ValueInfoProto] = []
    needed: set[str] = set()
    for i in node.input:
        if not i:
            continue
        if i in inits:
            needed.add(i)
            continue
        dq = prod.get(i)
        if dq is not None and dq.op_type == "DequantizeLinear":
            sub_nodes.append(dq)
            src = dq.input[0]
            needed.update(x for x in dq.input[1:] if x)
            if src in inits:
                needed.add(src)
            elif src not in {v.name for v in inputs}:
                if src not in infos:
                    return None
                inputs.append(infos[src])
        elif i not in {v.name for v in inputs}:
            if i not in infos:
                return None
            inputs.append(infos[i])
    for n in body:
        needed.update(x for x in n.input if x in inits)
    q = body[-1]
    # Scales or zero points fed at run time (graph inputs, as ONNX's
    # QLinearMatMul tests have them): the layer cannot be cut out alone.
    if any(x not in inits for x in needed) or any(x and x not in inits for x in q.input[1:]):
        return None
    if q.output[0] not in infos:
        return None
    sub_nodes += body
    graph = helper.make_graph(
        sub_nodes, f"layer_{name}", inputs, [infos[q.output[0]]],
        initializer=[inits[n] for n in sorted(needed)],
    )  # fmt: skip
    sub = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    for shape in [*inputs, infos[q.output[0]]]:
        dims = shape.type.tensor_type.shape.dim
        if not dims and shape.type.tensor_type.elem_type == 0:
            return None
        if any(not d.HasField("dim_value") for d in dims):
            return None
    return sub
