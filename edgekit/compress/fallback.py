"""Keeping layers of a QDQ model in float, and ranking layers by the error
their quantization adds.

Both work on the QDQ model that onnxruntime's quantizer wrote for the whole
model plus the fp32 original, so accuracy control quantizes once:

* :func:`keep_in_float` rewires chosen nodes of the QDQ model to their fp32
  inputs and weights (graph surgery, milliseconds), where re-running the
  quantizer with an exclusion list took seconds to minutes per candidate set
  on a 10 MB model. A node kept in float reads the float tensor that fed its
  input ``QuantizeLinear`` and its fp32 weights; its own output keeps the
  quantization its consumers asked for. A Q/DQ pair nobody reads any more is
  removed.
* :func:`rank_layers` measures, in one pass over a few samples, how much
  error each quantized node adds *on its own*: a shadow copy of the node reads
  the fp32 model's inputs through the same Q/DQ (scale, zero point) as in the
  QDQ model and the dequantized int8 weights, and its output is compared with
  the fp32 node's (SQNR). This is the error that keeping the node in float
  removes, so nodes are ranked by it, worst first (the idea of onnxruntime's
  ``qdq_loss_debug``; NNCF ranks by re-evaluating the model per layer, which
  costs one model evaluation per layer).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import onnx
from onnx import helper

from edgekit.compress.calibration import Feeds
from edgekit.compress.quality import ErrorStats, exposing_session
from edgekit.frontend.qdq_graph import PASS_THROUGH_OPS, QDQ_OPS, producers, quantized_nodes, remove_dead_qdq

__all__ = [
    "LayerSensitivity",
    "quantized_nodes",
    "keep_in_float",
    "float_head",
    "rank_layers",
    "shadow_model",
    "SHADOW_SUFFIX",
    "PASS_THROUGH_OPS",
]

logger = logging.getLogger(__name__)

_QDQ = QDQ_OPS

_SHADOW = "__ek_shadow"
#: Suffix of a shadow node's outputs (see :func:`shadow_model`).
SHADOW_SUFFIX = _SHADOW


@dataclass(frozen=True)
class LayerSensitivity:
    """The error one node's quantization adds on its own.

    Attributes:
        node: Node name.
        op_type: Its operator.
        sqnr_db: SQNR of its output computed from quantized inputs and weights
            against the fp32 output (``inf``: no error).
        rank: Position in the ranking, 0 = worst.
    """

    node: str
    op_type: str
    sqnr_db: float
    rank: int

    def to_json(self) -> dict[str, object]:
        return {
            "node": self.node,
            "op_type": self.op_type,
            "sqnr_db": None if not math.isfinite(self.sqnr_db) else round(self.sqnr_db, 3),
            "rank": self.rank,
        }


#: Operators whose int8 version needs weights; the head rule keeps their
#: weights int8 and only leaves their output in float.
_WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


def float_head(qmodel: onnx.ModelProto, fp32: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Leaves what produces the model's outputs in float: a graph output is
    not requantized to int8, and a weightless last op (Softmax, Sigmoid, an
    Add) computes in float on its producer's float output.

    int8 logits of a classifier with thousands of classes tie in the argmax
    (256 levels), and an int8 Softmax rounds every small probability to 0;
    an integer target dequantizes its outputs anyway, so the float head costs
    one small op. Returns the model and the nodes made float.
    """
    prod = producers(qmodel)
    heads: list[str] = []
    floats: list[str] = []
    last: list[str] = []
    for out in qmodel.graph.output:
        node = prod.get(out.name)
        if node is not None and node.op_type == "DequantizeLinear":
            q = prod.get(node.input[0])
            node = prod.get(q.input[0]) if q is not None and q.op_type == "QuantizeLinear" else None
        if node is None or node.op_type in _QDQ:
            continue
        last.append(node.name)
        while node is not None and node.op_type in PASS_THROUGH_OPS:
            floats.append(node.name)  # data movement after the head: float too
            node = prod.get(node.input[0]) if node.input else None
            if node is not None and node.op_type == "DequantizeLinear":
                q = prod.get(node.input[0])
                node = prod.get(q.input[0]) if q is not None and q.op_type == "QuantizeLinear" else None
        if node is None or node.op_type in _QDQ or node.name in heads:
            continue
        heads.append(node.name)
        if node.op_type not in _WEIGHTED_OPS:
            floats.append(node.name)
    model = keep_in_float(qmodel, fp32, floats, outputs_of=[*heads, *last])
    return model, heads


def _rewired(node: onnx.NodeProto, name: str, inputs: Sequence[str], outputs: Sequence[str]) -> onnx.NodeProto:
    """A copy of ``node`` (attributes kept) with a new name, inputs and outputs."""
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    copy.name = name
    del copy.input[:]
    copy.input.extend(inputs)
    del copy.output[:]
    copy.output.extend(outputs)
    return copy


def keep_in_float(
    qmodel: onnx.ModelProto, fp32: onnx.ModelProto, nodes: Sequence[str], *, outputs_of: Sequence[str] = ()
) -> onnx.ModelProto:
    """A copy of ``qmodel`` with ``nodes`` computing in float.

    Each named node reads, input by input, what the same node reads in the
    fp32 model, where that tensor exists in the QDQ model (an fp32 weight is
    copied in); an input whose float tensor the quantizer folded away (a Relu
    merged into its producer's output quantization) stays dequantized. Q/DQ
    nodes and initializers that nothing reads any more are removed.

    Args:
        qmodel: The QDQ model (not modified).
        fp32: The fp32 model it was quantized from (same node names).
        nodes: Names of the nodes to keep in float; unknown names are ignored.
        outputs_of: Further nodes whose model outputs only (not their inputs
            or weights) are left unquantized.
    """
    out = onnx.ModelProto()
    out.CopyFrom(qmodel)
    if not nodes and not outputs_of:
        return out
    wanted = _with_pass_through_producers(qmodel, set(nodes))
    fnodes = {n.name: n for n in fp32.graph.node if n.name in wanted}
    finits = {t.name: t for t in fp32.graph.initializer}
    graph = out.graph
    have_inits = {t.name for t in graph.initializer}
    dq_outputs = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    float_tensors = {i.name for i in graph.input} | {o for n in graph.node if n.op_type not in _QDQ for o in n.output}
    folded = _folded_activations(qmodel, fp32)
    # Tensors that hold a pre-activation value under the activation's name,
    # by that name, with their activation node, unless the producer is being
    # restored to float (then the activation comes back after it).
    pre_activation = {n.output[0]: folded[n.name] for n in graph.node if n.name in folded and n.name not in wanted}
    activated: dict[str, str] = {}
    act_nodes: list[tuple[str, onnx.NodeProto]] = []

    def float_value(name: str) -> str:
        act = pre_activation.get(name)
        if act is None:
            return name
        if name not in activated:
            copy = _rewired(act, f"{act.name}__ek_float", [name, *act.input[1:]], [f"{name}__ek_float"])
            activated[name] = copy.output[0]
            act_nodes.append((name, copy))
        return activated[name]
    for node in graph.node:
        fnode = fnodes.get(node.name)
        if fnode is None or len(fnode.input) != len(node.input):
            continue
        for k, (qin, fin) in enumerate(zip(list(node.input), fnode.input)):
            if not fin or (qin == fin and fin not in dq_outputs):
                continue
            if fin in finits:
                # onnxruntime may name a bias's DequantizeLinear output after
                # the fp32 initializer; the float copy then needs a name of its own.
                name = fin if fin not in dq_outputs else f"{fin}__ek_float"
                if name not in have_inits:
                    init = onnx.TensorProto()
                    init.CopyFrom(finits[fin])
                    init.name = name
                    graph.initializer.append(init)
                    have_inits.add(name)
                node.input[k] = name
            elif fin in float_tensors:
                node.input[k] = float_value(fin)
    # A restored producer whose Relu/Clip the quantizer folded into its
    # output quantization needs the activation back.
    restored: list[tuple[int, onnx.NodeProto]] = []
    for k, node in enumerate(graph.node):
        fnode = fnodes.get(node.name)
        act = folded.get(node.name)
        if fnode is not None and act is not None:
            node.output[0] = fnode.output[0]
            restored.append((k + 1, act))
    producer_pos = {o: k for k, n in enumerate(graph.node) for o in n.output}
    restored += [(producer_pos[src] + 1, copy) for src, copy in act_nodes]
    restored.sort(key=lambda item: item[0])
    for k, act in reversed(restored):
        graph.node.insert(k, act)
        for name in act.input:
            if name in finits and name not in have_inits:
                graph.initializer.append(finits[name])
                have_inits.add(name)
    # A graph output quantized only because its producer was: the float node
    # now gives the output in float (the DQ becomes an Identity of the float
    # tensor, so the output keeps its name).
    prod = producers(out)
    names = {n.name for n in graph.node if n.name in wanted or n.name in outputs_of}
    for k, node in enumerate(graph.node):
        if node.op_type != "DequantizeLinear" or node.output[0] not in {o.name for o in graph.output}:
            continue
        q = prod.get(node.input[0])
        src = prod.get(q.input[0]) if q is not None and q.op_type == "QuantizeLinear" else None
        if src is not None and src.name in names:
            graph.node[k].CopyFrom(helper.make_node("Identity", [q.input[0]], [node.output[0]], name=node.name))
    remove_dead_qdq(out)
    return out


def _folded_activations(qmodel: onnx.ModelProto, fp32: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    """Nodes whose Relu/Clip onnxruntime folded into their output
    quantization, with the fp32 activation node: such a node writes the
    activation's tensor name, but its float value is the pre-activation."""
    fnodes = {n.name: n for n in fp32.graph.node}
    f_consumers: dict[str, list[onnx.NodeProto]] = {}
    for fn in fp32.graph.node:
        for i in fn.input:
            f_consumers.setdefault(i, []).append(fn)
    q_names = {n.name for n in qmodel.graph.node}
    folded: dict[str, onnx.NodeProto] = {}
    for qn in qmodel.graph.node:
        fn = fnodes.get(qn.name)
        if fn is not None and qn.output and fn.output and qn.output[0] != fn.output[0]:
            act = next((c for c in f_consumers.get(fn.output[0], [])
                        if c.output and c.output[0] == qn.output[0] and c.name not in q_names), None)
            if act is not None:
                folded[qn.name] = act
    return folded


def _with_pass_through_producers(qmodel: onnx.ModelProto, nodes: set[str]) -> set[str]:
    """``nodes`` plus the data-movement nodes (Reshape, Transpose, ...) that
    feed them from dequantized tensors, transitively: a float node behind a
    quantized Transpose would still read int8-rounded values."""
    prod = producers(qmodel)
    dq_outputs = {o for n in qmodel.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    by_name = {n.name: n for n in qmodel.graph.node}
    out = set(nodes)
    todo = [by_name[n] for n in nodes if n in by_name]
    while todo:
        node = todo.pop()
        for name in node.input:
            p = prod.get(name)
            if p is not None and p.op_type == "DequantizeLinear":
                q = prod.get(p.input[0])  # the QuantizeLinear, then what it quantizes
                p = prod.get(q.input[0]) if q is not None and q.op_type == "QuantizeLinear" else None
            if (p is not None and p.op_type in PASS_THROUGH_OPS and p.name not in out
                    and any(i in dq_outputs for i in p.input)):
                out.add(p.name)
                todo.append(p)
    return out


class _ShadowGraph:
    """The fp32 model that shadow nodes are added to, and what they copy from
    the QDQ model: its Q/DQ nodes, quantization parameters and int8 weights."""

    def __init__(self, qmodel: onnx.ModelProto, fp32: onnx.ModelProto) -> None:
        self.model = onnx.ModelProto()
        self.model.CopyFrom(fp32)
        graph = self.model.graph
        self.qprod = producers(qmodel)
        self.qinits = {t.name: t for t in qmodel.graph.initializer}
        self.have_inits = {t.name for t in graph.initializer}
        self.float_tensors = {i.name for i in graph.input} | {o for n in graph.node for o in n.output} | self.have_inits
        self.made: dict[str, str] = {}  # shadow tensor for a (quantized) input, by QDQ output name
        self.new_nodes: list[onnx.NodeProto] = []

    def need_init(self, name: str) -> None:
        """Copies initializer ``name`` of the QDQ model when the fp32 model lacks it."""
        if name and name not in self.have_inits and name in self.qinits:
            self.model.graph.initializer.append(self.qinits[name])
            self.have_inits.add(name)

    def copy_qdq(self, node: onnx.NodeProto, source: str, out_name: str) -> str:
        """A copy of a QuantizeLinear or DequantizeLinear ``node`` (same
        parameters and attributes) that reads ``source``; returns ``out_name``."""
        for name in node.input[1:]:
            self.need_init(name)
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        self.new_nodes.append(helper.make_node(node.op_type, [source, *node.input[1:]], [out_name], name=out_name,
                                               **attrs))  # fmt: skip
        return out_name

    def shadow_input(self, qin: str, fin: str, name: str) -> str:
        """What the shadow of node ``name`` reads for its QDQ input ``qin``
        (``fin`` in the fp32 model): the fp32 tensor through a copy of the
        same Q/DQ, the dequantized int8 weight, or the fp32 tensor itself."""
        dq = self.qprod.get(qin)
        if not qin or dq is None or dq.op_type != "DequantizeLinear":
            if fin not in self.float_tensors:
                self.need_init(qin)
            return fin if fin in self.float_tensors else qin
        if qin not in self.made:
            q = self.qprod.get(dq.input[0])
            if dq.input[0] in self.qinits:  # a quantized weight or bias
                self.need_init(dq.input[0])
                self.made[qin] = self.copy_qdq(dq, dq.input[0], f"{dq.output[0]}{_SHADOW}")
            elif q is not None and q.op_type == "QuantizeLinear" and fin in self.float_tensors:
                q_out = self.copy_qdq(q, fin, f"{q.output[0]}{_SHADOW}{name}")
                self.made[qin] = self.copy_qdq(dq, q_out, f"{dq.output[0]}{_SHADOW}{name}")
            else:
                self.made[qin] = fin
        return self.made[qin]


def _graph_output_qdq(
    qmodel: onnx.ModelProto, qprod: dict[str, onnx.NodeProto]
) -> dict[str, tuple[onnx.NodeProto, onnx.NodeProto]]:
    """The Q/DQ pair in front of each graph output of the QDQ model, by the
    tensor it quantizes."""
    graph_outputs = {o.name for o in qmodel.graph.output}
    found: dict[str, tuple[onnx.NodeProto, onnx.NodeProto]] = {}
    for node in qmodel.graph.node:
        if node.op_type == "DequantizeLinear" and node.output[0] in graph_outputs:
            q = qprod.get(node.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                found[q.input[0]] = (q, node)
    return found


def shadow_model(
    qmodel: onnx.ModelProto, fp32: onnx.ModelProto, candidates: Sequence[str]
) -> tuple[onnx.ModelProto, list[tuple[str, str, str]]]:
    """The fp32 model plus one shadow node per candidate that reads quantized
    copies of the fp32 inputs; returns it and (node, fp32 tensor, shadow tensor).

    The shadow of a node's output ``o`` is ``o + SHADOW_SUFFIX`` (before any
    activation the quantizer folded in; the pairs compare after it)."""
    shadows = _ShadowGraph(qmodel, fp32)
    fnodes = {n.name: n for n in fp32.graph.node}
    folded = _folded_activations(qmodel, fp32)
    output_qdq = _graph_output_qdq(qmodel, shadows.qprod)
    pairs: list[tuple[str, str, str]] = []
    for name in candidates:
        qnode = next((n for n in qmodel.graph.node if n.name == name), None)
        fnode = fnodes.get(name)
        if qnode is None or fnode is None or len(qnode.input) != len(fnode.input) or not fnode.output:
            continue
        inputs = [shadows.shadow_input(qin, fin, name) for qin, fin in zip(qnode.input, fnode.input)]
        outs = [f"{o}{_SHADOW}" if o else "" for o in qnode.output]
        shadows.new_nodes.append(_rewired(qnode, f"{name}{_SHADOW}", inputs, outs))
        compared, reference = outs[0], fnode.output[0]
        act = folded.get(name)
        if act is not None:
            # The quantizer folded this node's Relu/Clip into its output
            # quantization: compare after the activation, as the consumers
            # see it (a dead channel with a huge negative pre-activation
            # would otherwise hide every other channel's error).
            act_copy = _rewired(act, f"{act.name}{_SHADOW}act_{name}", [compared, *act.input[1:]],
                                [f"{act.output[0]}{_SHADOW}act_{name}"])  # fmt: skip
            shadows.new_nodes.append(act_copy)
            compared, reference = act_copy.output[0], act.output[0]
        out_qdq = output_qdq.get(qnode.output[0]) if qnode.output else None
        if out_qdq is not None:  # keeping the node in float also removes this output's Q/DQ
            oq, odq = out_qdq
            q_out = shadows.copy_qdq(oq, compared, f"{oq.output[0]}{_SHADOW}")
            compared = shadows.copy_qdq(odq, q_out, f"{odq.output[0]}{_SHADOW}out")
        pairs.append((name, reference, compared))
    shadows.model.graph.node.extend(shadows.new_nodes)
    return shadows.model, pairs


def rank_layers(
    qmodel: onnx.ModelProto,
    fp32: onnx.ModelProto,
    feeds: Sequence[Feeds],
    candidates: Sequence[str],
    progress: Callable[[str], None] | None = None,
) -> list[LayerSensitivity]:
    """Ranks ``candidates`` by the error their quantization adds alone, worst
    first, from one run of a shadow model per sample.

    Args:
        qmodel: The QDQ model.
        fp32: The fp32 model it came from.
        feeds: Samples to measure on (a few dozen are plenty).
        candidates: Node names, e.g. from :func:`quantized_nodes`.
        progress: Called with one-line progress messages.
    """
    if not candidates or not feeds:
        return []
    shadow, pairs = shadow_model(qmodel, fp32, candidates)
    tensors = sorted({t for _, ref, test in pairs for t in (ref, test)})
    sess = exposing_session(shadow, tensors)
    stats = {name: ErrorStats() for name, _, _ in pairs}
    for i, f in enumerate(feeds):
        values = dict(zip(tensors, sess.run(tensors, f)))
        for name, ref, test in pairs:
            stats[name].update(values[ref], values[test])
        if progress and (i + 1) % 16 == 0:
            progress(f"layer ranking: {i + 1}/{len(feeds)} samples")
    ops = {n.name: n.op_type for n in qmodel.graph.node}
    order = sorted(stats, key=lambda n: stats[n].sqnr_db)
    return [LayerSensitivity(n, ops.get(n, "?"), stats[n].sqnr_db, k) for k, n in enumerate(order)]
