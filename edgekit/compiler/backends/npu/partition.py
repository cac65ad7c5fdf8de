"""Finds the int8 layers of a QDQ model the accelerator can run.

A layer is a chain ``DequantizeLinear -> Conv|Gemm|MatMul|Add [-> Relu|Clip]
-> QuantizeLinear`` with int8 activations and constant, symmetric int8
weights, optionally followed by ``DequantizeLinear -> Relu|Clip ->
QuantizeLinear`` (onnxruntime's quantizer leaves a ReLU as its own
quantized step). Everything else stays on the host, and every node gets a
:class:`Placement` with the reason, so ``inspect`` can say why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from edgekit.compiler.backends.npu.section import PartitionSummary, Placement
from edgekit.core.fixedpoint import dequantize_ref, quantize_multiplier, quantize_multipliers_common, quantize_ref
from edgekit.npu.layers import AddLayer, ConvLayer, NpuLayer, Requant, apply_requant

__all__ = ["Placement", "Partition", "partition", "HOST", "NPU"]

logger = logging.getLogger(__name__)

HOST, NPU = "host", "npu"

_POOL_OPS = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"}
_ACT_OPS = {"Relu", "Clip"}


@dataclass
class Partition:
    """The result of :func:`partition`.

    Attributes:
        layers: Accelerator layers in model order.
        placements: One entry per compute node (Q/DQ nodes excluded).
        host_nodes: Names of the nodes left for the host, in model order.
        total_macs: MACs of every Conv/Gemm/MatMul in the model.
    """

    layers: list[NpuLayer]
    placements: list[Placement]
    host_nodes: list[str]
    total_macs: int
    absorbed: set[str] = field(default_factory=set)

    @property
    def offloaded_macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def offloaded_macs_fraction(self) -> float:
        return self.offloaded_macs / self.total_macs if self.total_macs else 0.0

    def record(self) -> PartitionSummary:
        """What the manifest's ``npu.partition`` records."""
        return PartitionSummary(len(self.layers), self.offloaded_macs, self.total_macs, self.offloaded_macs_fraction,
                                tuple(self.placements))  # fmt: skip

    def summary(self) -> dict[str, Any]:
        """JSON form for ``inspect --board``, the plan and package manifests."""
        return self.record().to_json()


class _Graph:
    """Producer/consumer index and constant lookup of an ONNX graph."""

    def __init__(self, model: onnx.ModelProto) -> None:
        try:
            model = onnx.shape_inference.infer_shapes(model)
        except Exception:  # noqa: BLE001 - shapes then come from what the model recorded
            logger.debug("shape inference failed; using recorded shapes")
        self.graph = model.graph
        self.inits = {i.name: i for i in self.graph.initializer}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.graph.node:
            for out in node.output:
                self.producer[out] = node
            for inp in node.input:
                if inp:
                    self.consumers.setdefault(inp, []).append(node)
        self.outputs = {o.name for o in self.graph.output}
        self.types: dict[str, tuple[int, tuple[int, ...]]] = {}
        for vi in [*self.graph.input, *self.graph.value_info, *self.graph.output]:
            t = vi.type.tensor_type
            dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
            self.types[vi.name] = (t.elem_type, dims)
        for name, init in self.inits.items():
            self.types[name] = (init.data_type, tuple(init.dims))

    def const(self, name: str) -> np.ndarray | None:
        init = self.inits.get(name)
        return None if init is None else numpy_helper.to_array(init)

    def shape(self, name: str) -> tuple[int, ...] | None:
        entry = self.types.get(name)
        if entry is None or any(d < 0 for d in entry[1]):
            return None
        return entry[1]

    def only_consumer(self, tensor: str) -> onnx.NodeProto | None:
        users = self.consumers.get(tensor, [])
        if len(users) != 1 or tensor in self.outputs:
            return None
        return users[0]


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


class _Reject(Exception):
    """A node cannot be offloaded; the message is the reason."""


@dataclass
class _Q:
    """A quantized tensor seen through a DequantizeLinear/QuantizeLinear node."""

    node: onnx.NodeProto
    tensor: str  # the int8 tensor
    scale: np.ndarray
    zero_point: np.ndarray
    axis: int


def _qparams(g: _Graph, node: onnx.NodeProto, tensor: str) -> _Q:
    scale = g.const(node.input[1])
    if scale is None:
        raise _Reject(f"scale of {node.name or node.op_type} is not a constant")
    if len(node.input) > 2 and node.input[2]:
        zp = g.const(node.input[2])
        if zp is None:
            raise _Reject(f"zero point of {node.name or node.op_type} is not a constant")
    else:
        zp = np.zeros(scale.shape, dtype=np.uint8)  # ONNX default: uint8
    if zp.dtype != np.int8 and zp.dtype != np.int32:
        raise _Reject(f"tensor '{tensor}' is {zp.dtype} (the array computes int8); quantize with int8 activations (QuantConfig.for_board)")
    axis = int(_attrs(node).get("axis", 1))
    return _Q(node, tensor, scale.astype(np.float64), zp.astype(np.int64), axis)


def _dq_input(g: _Graph, tensor: str, what: str) -> _Q:
    node = g.producer.get(tensor)
    if node is None or node.op_type != "DequantizeLinear":
        raise _Reject(f"{what} is not int8-quantized (no DequantizeLinear); quantize the model with `edgekit compress --quantize int8`")
    q = _qparams(g, node, node.input[0])
    if q.scale.size != 1:
        raise _Reject(f"{what} has per-channel activation scales")
    return q


def _weight(g: _Graph, tensor: str, channel_axis: int) -> tuple[np.ndarray, np.ndarray, onnx.NodeProto]:
    node = g.producer.get(tensor)
    if node is None or node.op_type != "DequantizeLinear":
        raise _Reject("weights are not int8-quantized constants")
    w = g.const(node.input[0])
    if w is None:
        raise _Reject("weights are not constant")
    q = _qparams(g, node, node.input[0])
    if w.dtype != np.int8:
        raise _Reject(f"weights are {w.dtype}, not int8")
    if np.any(q.zero_point != 0):
        raise _Reject("weights are asymmetric (non-zero weight zero point); quantize with symmetric weights")
    scale = q.scale.reshape(-1)
    if scale.size != 1 and (q.axis % w.ndim) != channel_axis % w.ndim:
        raise _Reject("weight scales are not per output channel")
    return w, scale, node


def _bias(g: _Graph, tensor: str, s_acc: np.ndarray, oc: int) -> tuple[np.ndarray, list[onnx.NodeProto]]:
    """Bias in accumulator units (int64), and the DQ node that produced it."""
    node = g.producer.get(tensor)
    if node is not None and node.op_type == "DequantizeLinear":
        b = g.const(node.input[0])
        scale = g.const(node.input[1])
        zp = g.const(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(1)
        if b is None or scale is None or zp is None:
            raise _Reject("bias is not constant")
        real = (b.astype(np.float64) - zp.astype(np.float64)) * scale.astype(np.float64)
        exact = scale.astype(np.float32) == (s_acc.astype(np.float32) if s_acc.size > 1 else np.float32(s_acc.item()))
        if b.dtype == np.int32 and np.all(exact) and np.all(zp == 0):
            return np.broadcast_to(b.astype(np.int64), (oc,)).copy(), [node]
        return np.rint(real / s_acc).astype(np.int64) * np.ones(oc, dtype=np.int64), [node]
    b = g.const(tensor)
    if b is None:
        raise _Reject("bias is not constant")
    return np.rint(b.astype(np.float64) / s_acc).astype(np.int64) * np.ones(oc, dtype=np.int64), []


def _clip_bounds(g: _Graph, node: onnx.NodeProto) -> tuple[float, float]:
    if node.op_type == "Relu":
        return 0.0, np.inf
    attrs = _attrs(node)
    lo, hi = float(attrs.get("min", -np.inf)), float(attrs.get("max", np.inf))
    if len(node.input) > 1 and node.input[1]:
        v = g.const(node.input[1])
        if v is None:
            raise _Reject("Clip bounds are not constant")
        lo = float(v)
    if len(node.input) > 2 and node.input[2]:
        v = g.const(node.input[2])
        if v is None:
            raise _Reject("Clip bounds are not constant")
        hi = float(v)
    return lo, hi


def _quantized_bounds(lo: float, hi: float, scale: float, zp: int) -> tuple[int, int]:
    qlo = -128 if not np.isfinite(lo) else max(-128, int(np.rint(np.float32(lo) / np.float32(scale))) + zp)
    qhi = 127 if not np.isfinite(hi) else min(127, int(np.rint(np.float32(hi) / np.float32(scale))) + zp)
    return qlo, qhi


@dataclass
class _Tail:
    """The quantized output chain after a compute node."""

    nodes: list[onnx.NodeProto]
    out: _Q
    lo: int
    hi: int
    stage2: tuple[float, int, int, int, int, bool] | None  # (M, zin, zout, lo, hi, relu)


def _tail(g: _Graph, tensor: str) -> _Tail:
    nodes: list[onnx.NodeProto] = []
    nxt = g.only_consumer(tensor)
    bounds = (-np.inf, np.inf)
    if nxt is not None and nxt.op_type in _ACT_OPS:
        bounds = _clip_bounds(g, nxt)
        nodes.append(nxt)
        nxt = g.only_consumer(nxt.output[0])
    if nxt is None or nxt.op_type != "QuantizeLinear":
        raise _Reject("output is not re-quantized to int8 (no single QuantizeLinear follows)")
    q = _qparams(g, nxt, nxt.output[0])
    if q.scale.size != 1:
        raise _Reject("output has per-channel scales")
    nodes.append(nxt)
    zp = int(q.zero_point.reshape(-1)[0])
    lo, hi = _quantized_bounds(*bounds, float(q.scale.item()), zp)
    tail = _Tail(nodes, q, lo, hi, None)
    # Q -> DQ -> Relu|Clip -> Q: fold the quantized activation as a second stage.
    dq = g.only_consumer(q.node.output[0])
    act = g.only_consumer(dq.output[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
    if dq is None or act is None or act.op_type not in _ACT_OPS:
        return tail
    q2n = g.only_consumer(act.output[0])
    if q2n is None or q2n.op_type != "QuantizeLinear":
        return tail
    try:
        dq_q = _qparams(g, dq, dq.input[0])
        q2 = _qparams(g, q2n, q2n.output[0])
        bounds2 = _clip_bounds(g, act)
    except _Reject:
        return tail
    if dq_q.scale.size != 1 or q2.scale.size != 1 or not np.array_equal(dq_q.scale, q.scale) or not np.array_equal(dq_q.zero_point, q.zero_point):
        return tail
    z2 = int(q2.zero_point.reshape(-1)[0])
    lo2, hi2 = _quantized_bounds(*bounds2, float(q2.scale.item()), z2)
    m2 = float(q.scale.item()) / float(q2.scale.item())
    # ReLU before the rescale only when the activation's minimum is >= 0: a
    # Clip(-0.3, 0.3) keeps its negative half (it came out 0 when the ReLU was unconditional).
    stage2 = (m2, zp, z2, lo2, hi2, bounds2[0] >= 0)
    if not _stage_is_the_table(stage2, bounds2, float(q.scale.item()), float(q2.scale.item())):
        return tail  # the host's table then computes it, exactly
    tail.nodes += [dq, act, q2n]
    tail.out = q2
    tail.stage2 = stage2
    return tail


def _stage_is_the_table(stage2: tuple[float, int, int, int, int, bool], bounds: tuple[float, float], s1: float, s2: float) -> bool:
    """Whether the fixed-point second stage gives, for every int8 input, what
    the host integer compile's 256-entry table for ``Q(act(DQ(x)))`` gives
    (onnxruntime's float32 arithmetic, round half to even; compiler/integer/lut.py).

    Both round exact ties to even; they can still differ where float32
    carries a rescaled value across a half-way point that the exact
    fixed-point value does not reach (or the reverse): such an activation
    stays on the host rather than making the package inexact.
    """
    m2, zin, z2, lo2, hi2, relu = stage2
    xs = np.arange(-128, 128)
    real = np.clip(dequantize_ref(xs, s1, zin), np.float32(bounds[0]), np.float32(bounds[1])).astype(np.float32)
    table = quantize_ref(real, s2, z2).astype(np.int32)
    stage = Requant(quantize_multiplier(np.array([m2])), zin, relu, z2, lo2, hi2)
    return bool(np.array_equal(apply_requant(xs[:, None], stage)[:, 0], table))


def _stages(m1: np.ndarray, zout: int, lo: int, hi: int, stage2: tuple[float, int, int, int, int, bool] | None, oc: int) -> tuple[Requant, ...]:
    stages = [Requant(quantize_multiplier(np.broadcast_to(m1, (oc,)).copy()), 0, False, zout, lo, hi)]
    if stage2 is not None:
        m2, zin, z2, lo2, hi2, relu2 = stage2
        stages.append(Requant(quantize_multiplier(np.full(oc, m2)), zin, relu2, z2, lo2, hi2))
    return tuple(stages)


def _absorb_dq(g: _Graph, q: _Q, node: onnx.NodeProto) -> list[onnx.NodeProto]:
    """The activation DQ is removed from the host graph only if this layer is its sole user."""
    users = g.consumers.get(q.node.output[0], [])
    return [q.node] if all(u is node for u in users) and q.node.output[0] not in g.outputs else []


def _sole_users(g: _Graph, dqs: list[onnx.NodeProto], node: onnx.NodeProto) -> list[onnx.NodeProto]:
    """Constant DQ nodes only this layer reads (shared ones stay in the host graph too)."""
    return [d for d in dqs if all(u is node for u in g.consumers.get(d.output[0], [])) and d.output[0] not in g.outputs]


@dataclass
class _Geometry:
    """A Conv/Gemm/MatMul's weight and shapes as the array sees them (a matrix product is a 1x1 conv over rows)."""

    weight: np.ndarray
    s_w: np.ndarray
    wdq: onnx.NodeProto
    group: int
    strides: tuple[int, ...]
    dil: tuple[int, ...]
    pads: tuple[int, ...]
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    layout: str

    @property
    def oc(self) -> int:
        return int(self.weight.shape[0])


def _conv_geometry(g: _Graph, node: onnx.NodeProto, attrs: dict[str, Any], shape: tuple[int, ...]) -> _Geometry:
    if len(shape) != 4 or shape[0] != 1:
        raise _Reject(f"only 2-D convolutions with batch 1 are offloaded (input {list(shape)})")
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
        raise _Reject("auto_pad SAME is not supported; re-export with explicit pads")
    w, s_w, wdq = _weight(g, node.input[1], 0)
    if w.ndim != 4:
        raise _Reject("only 2-D convolutions are offloaded")
    _, c, h, wd = shape
    group = int(attrs.get("group", 1))
    oc = w.shape[0]
    if group != 1 and not (group == c == oc and w.shape[1] == 1):
        raise _Reject(f"grouped convolution (group={group}) other than depthwise is not mapped to the array")
    kh, kw = w.shape[2:]
    strides = tuple(attrs.get("strides", [1, 1]))
    dil = tuple(attrs.get("dilations", [1, 1]))
    p = list(attrs.get("pads", [0, 0, 0, 0]))
    pads = (p[0], p[1], p[2], p[3])
    oh = (h + p[0] + p[2] - dil[0] * (kh - 1) - 1) // strides[0] + 1
    ow = (wd + p[1] + p[3] - dil[1] * (kw - 1) - 1) // strides[1] + 1
    return _Geometry(w, s_w, wdq, group, strides, dil, pads, (c, h, wd), (oc, oh, ow), "nchw")


def _matrix_geometry(g: _Graph, node: onnx.NodeProto, attrs: dict[str, Any], shape: tuple[int, ...]) -> _Geometry:
    if node.op_type == "Gemm":
        if attrs.get("transA", 0) or float(attrs.get("alpha", 1.0)) != 1.0 or float(attrs.get("beta", 1.0)) != 1.0:
            raise _Reject("Gemm with transA, alpha or beta != 1 is not mapped")
        trans_b = int(attrs.get("transB", 0))
        w, s_w, wdq = _weight(g, node.input[1], 0 if trans_b else 1)
        w = w if trans_b else w.T
    else:
        w, s_w, wdq = _weight(g, node.input[1], 1)
        if w.ndim != 2:
            raise _Reject("MatMul with a non-2-D weight is not mapped")
        w = w.T
    if w.ndim != 2 or len(shape) < 2:
        raise _Reject("matrix operands must be 2-D weights")
    k = shape[-1]
    rows = int(np.prod(shape[:-1]))
    oc = w.shape[0]
    weight = np.ascontiguousarray(w).reshape(oc, k, 1, 1)
    return _Geometry(weight, s_w, wdq, 1, (1, 1), (1, 1), (0, 0, 0, 0), (k, 1, rows), (oc, 1, rows), "rows")


def _layer_bias(g: _Graph, node: onnx.NodeProto, geo: _Geometry, s_acc: np.ndarray, zx: int) -> tuple[np.ndarray, list[onnx.NodeProto]]:
    """The int32 bias in accumulator units with ``-zx * sum(w)`` folded in, and the bias nodes it absorbs."""
    oc, absorbed = geo.oc, []
    if len(node.input) > 2 and node.input[2]:
        bias, bnodes = _bias(g, node.input[2], s_acc if s_acc.size > 1 else np.float64(s_acc.item()), oc)
        absorbed = _sole_users(g, bnodes, node)
    else:
        bias = np.zeros(oc, dtype=np.int64)
    # Padding carries the zero point, so subtracting zx*sum(w) is exact at the borders too.
    bias = bias - zx * geo.weight.reshape(oc, -1).astype(np.int64).sum(axis=1)
    if np.any(np.abs(bias) >= 2**31):
        raise _Reject("bias does not fit int32")
    return bias, absorbed


def _conv_layer(g: _Graph, node: onnx.NodeProto) -> ConvLayer:
    attrs = _attrs(node)
    x = _dq_input(g, node.input[0], "the input")
    shape = g.shape(node.input[0])
    if shape is None:
        raise _Reject("input shape is not static")
    geo = (_conv_geometry if node.op_type == "Conv" else _matrix_geometry)(g, node, attrs, shape)
    extra = _sole_users(g, [geo.wdq], node)
    s_x, zx = float(x.scale.item()), int(x.zero_point.reshape(-1)[0])
    s_acc = s_x * geo.s_w
    bias, bias_nodes = _layer_bias(g, node, geo, s_acc, zx)
    extra += bias_nodes
    tail = _tail(g, node.output[0])
    zout = int(tail.out.zero_point.reshape(-1)[0]) if tail.stage2 is None else tail.stage2[1]
    s_y = _first_q_scale(g, tail)
    m1 = s_acc / s_y
    stages = _stages(m1, zout, tail.lo, tail.hi, tail.stage2, geo.oc)
    nodes = [*_absorb_dq(g, x, node), *extra, node, *tail.nodes]
    strides, pads, dil = geo.strides, geo.pads, geo.dil
    return ConvLayer(
        name=node.name or node.output[0],
        nodes=tuple(n.name for n in nodes),
        input=x.tensor,
        output=tail.out.node.output[0],
        in_shape=geo.in_shape,
        out_shape=geo.out_shape,
        weight=geo.weight.astype(np.int8),
        bias=bias.astype(np.int32),
        zx=zx,
        strides=(int(strides[0]), int(strides[1])),
        pads=(int(pads[0]), int(pads[1]), int(pads[2]), int(pads[3])),
        dilations=(int(dil[0]), int(dil[1])),
        group=geo.group,
        stages=stages,
        layout=geo.layout,
        op=node.op_type,
    )


def _first_q_scale(g: _Graph, tail: _Tail) -> float:
    """Scale of the QuantizeLinear right after the compute node (stage 1's output)."""
    for n in tail.nodes:
        if n.op_type == "QuantizeLinear":
            return float(g.const(n.input[1]).item())  # type: ignore[union-attr]
    raise _Reject("no QuantizeLinear")  # pragma: no cover - _tail guarantees one


def _add_layer(g: _Graph, node: onnx.NodeProto) -> AddLayer:
    a = _dq_input(g, node.input[0], "the first operand")
    b = _dq_input(g, node.input[1], "the second operand")
    if a.tensor in g.inits or b.tensor in g.inits:
        # The ALU adds two activation tensors in DRAM; a constant operand has
        # no activation address (found by fuzz/differential.py).
        raise _Reject("an operand is a constant (adds of a constant stay on the host)")
    sa, sb = g.shape(node.input[0]), g.shape(node.input[1])
    if sa is None or sa != sb:
        raise _Reject("operands differ in shape (broadcasting adds stay on the host)")
    if len(sa) == 4 and sa[0] == 1:
        shape, layout = (sa[1], sa[2], sa[3]), "nchw"
    elif len(sa) >= 2:
        shape, layout = (sa[-1], 1, int(np.prod(sa[:-1]))), "rows"
    else:
        raise _Reject(f"add of rank {len(sa)} is not mapped")
    tail = _tail(g, node.output[0])
    s_y = _first_q_scale(g, tail)
    common = quantize_multipliers_common([float(a.scale.item()) / s_y, float(b.scale.item()) / s_y])
    if int(common.shift[0]) < 1:
        raise _Reject("add rescale factors too large for the fixed-point ALU")
    zout = int(tail.out.zero_point.reshape(-1)[0]) if tail.stage2 is None else tail.stage2[1]
    stages: tuple[Requant, ...] = ()
    if tail.stage2 is not None:
        m2, zin, z2, lo2, hi2, relu2 = tail.stage2
        stages = (Requant(quantize_multiplier(np.full(shape[0], m2)), zin, relu2, z2, lo2, hi2),)
    nodes = [*_absorb_dq(g, a, node), *(_absorb_dq(g, b, node) if b.node is not a.node else []), node, *tail.nodes]
    return AddLayer(
        name=node.name or node.output[0],
        nodes=tuple(n.name for n in nodes),
        a=a.tensor,
        b=b.tensor,
        output=tail.out.node.output[0],
        shape=shape,
        za=int(a.zero_point.reshape(-1)[0]),
        zb=int(b.zero_point.reshape(-1)[0]),
        ma=int(common.multiplier[0]),
        mb=int(common.multiplier[1]),
        shift=int(common.shift[0]),
        zout=zout,
        lo=tail.lo,
        hi=tail.hi,
        stages=stages,
        layout=layout,
    )


def _node_macs(g: _Graph, node: onnx.NodeProto) -> int:
    if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2:
        return 0
    out = g.shape(node.output[0])
    w = g.shape(node.input[1])
    if out is None or w is None:
        return 0
    if node.op_type == "Conv":
        return int(np.prod(out) * np.prod(w[1:]))
    k = w[0] if node.op_type == "MatMul" or not _attrs(node).get("transB", 0) else w[1]
    return int(np.prod(out) * k)


def partition(model: onnx.ModelProto, force_host: Mapping[str, str] | None = None) -> Partition:
    """Splits a QDQ model into accelerator layers and host nodes.

    Args:
        model: A loaded QDQ model (static shapes).
        force_host: Node name -> reason, for layers a later stage refused
            (e.g. tiles that cannot fit the buffers).

    Returns:
        The :class:`Partition`.
    """
    force_host = dict(force_host or {})
    g = _Graph(model)
    for i, node in enumerate(g.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
    layers: list[NpuLayer] = []
    placements: list[Placement] = []
    absorbed: set[str] = set()
    total = 0
    reasons: dict[str, str] = {}
    for node in g.graph.node:
        macs = _node_macs(g, node)
        total += macs
        if node.op_type not in ("Conv", "Gemm", "MatMul", "Add") or node.name in absorbed:
            continue
        if node.name in force_host:
            reasons[node.name] = force_host[node.name]
            continue
        try:
            layer: NpuLayer = _conv_layer(g, node) if node.op_type != "Add" else _add_layer(g, node)
        except _Reject as exc:
            reasons[node.name] = str(exc)
            continue
        if absorbed.intersection(layer.nodes):
            reasons[node.name] = "overlaps another offloaded layer"
            continue
        layers.append(layer)
        absorbed.update(layer.nodes)
    layer_of = {n: layer.name for layer in layers for n in layer.nodes}
    for node in g.graph.node:
        macs = _node_macs(g, node)
        if node.name in layer_of:
            if node.op_type in ("Conv", "Gemm", "MatMul", "Add", "Relu", "Clip"):
                placements.append(Placement(node.name, node.op_type, NPU, "int8 layer mapped to the array", layer_of[node.name], macs))
            continue
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if node.name in reasons:
            reason = reasons[node.name]
        elif node.op_type in _POOL_OPS:
            reason = "pooling runs on the host CPU (the array has no pooling unit; it is memory-bound and cheap there)"
        elif node.op_type in _ACT_OPS:
            reason = "activation not fused into a preceding offloaded layer"
        else:
            reason = f"no accelerator mapping for {node.op_type}"
        placements.append(Placement(node.name, node.op_type, HOST, reason, "", macs))
    host_nodes = [n.name for n in g.graph.node if n.name not in absorbed]
    part = Partition(layers, placements, host_nodes, total, absorbed)
    logger.info("partition: %d layers offloaded, %.1f%% of MACs", len(layers), 100 * part.offloaded_macs_fraction)
    return part

