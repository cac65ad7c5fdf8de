"""Host/accelerator schedule: which steps run in which order, and the host sub-graphs.

:func:`split_host_graph` orders the offloaded layers and the remaining ONNX
nodes into steps and cuts the host nodes into sub-graphs (one ONNX model per
run of consecutive host nodes; sub-graphs exchange int8 tensors, each with
its own copies of the DequantizeLinear nodes it reads). The executor
(:class:`~edgekit.runtime.npu.executor.HybridExecutor`) runs the steps.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any, Mapping

import onnx

from edgekit.npu.package import HostSegment

__all__ = ["split_host_graph"]


def _value_infos(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - fall back to what the model records
        inferred = model
    return {vi.name: vi for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]}


@dataclass
class _Units:
    """Host nodes and offloaded layers as one dependency graph.

    Attributes:
        units: ``("host", node)`` or ``("npu", layer_index)``.
        produced_by: Tensor -> the unit that writes it.
        deps: Per unit, the units it reads from.
        users: Per unit, the units that read it.
    """

    units: list[tuple[str, Any]]
    produced_by: dict[str, int]
    deps: list[set[int]]
    users: list[list[int]]


def _dependency_graph(layers: list[Any], host: list[onnx.NodeProto], inits: set[str]) -> _Units:
    units: list[tuple[str, Any]] = [("host", n) for n in host] + [("npu", k) for k in range(len(layers))]
    produced_by: dict[str, int] = {}
    needs: list[set[str]] = []
    for u, (kind, obj) in enumerate(units):
        if kind == "host":
            outs, ins = list(obj.output), [t for t in obj.input if t]
        else:
            outs, ins = [layers[obj].output], list(layers[obj].inputs)
        for t in outs:
            produced_by[t] = u
        needs.append({t for t in ins if t not in inits})
    deps = [{produced_by[t] for t in need if t in produced_by} for need in needs]
    users: list[list[int]] = [[] for _ in units]
    for u, ds in enumerate(deps):
        for d in ds:
            users[d].append(u)
    return _Units(units, produced_by, deps, users)


def _schedule(graph: _Units, layers: list[Any], order: Mapping[str, int]) -> list[int]:
    """The units in a topological order that follows the model's node order."""
    units, produced_by = graph.units, graph.produced_by

    def rank(u: int) -> int:
        kind, obj = units[u]
        if kind == "host" and obj.op_type == "QuantizeLinear" and obj.input[0] in produced_by:
            # Right after its producer: a run then never ends between a float op and its quantize.
            return rank(produced_by[obj.input[0]])
        return order[obj.name] if kind == "host" else min(order[n] for n in layers[obj].nodes if n in order)

    pending = [len(d) for d in graph.deps]
    heap = [(rank(u), u) for u in range(len(units)) if pending[u] == 0]
    heapq.heapify(heap)
    sequence: list[int] = []
    while heap:
        _, u = heapq.heappop(heap)
        sequence.append(u)
        for v in graph.users[u]:
            pending[v] -= 1
            if pending[v] == 0:
                heapq.heappush(heap, (rank(v), v))
    if len(sequence) != len(units):
        raise RuntimeError("host/accelerator schedule has a cycle")  # cannot happen for a valid ONNX DAG
    return sequence


def _host_runs(graph: _Units, sequence: list[int]) -> list[tuple[str, Any]]:
    """Runs of consecutive host nodes between accelerator layers, in schedule order."""
    plan: list[tuple[str, Any]] = []
    for u in sequence:
        kind, obj = graph.units[u]
        if kind == "host":
            if plan and plan[-1][0] == "host":
                plan[-1][1].append(obj)
            else:
                plan.append(("host", [obj]))
        else:
            plan.append(("npu", obj))
    return plan


def _run_reads(plan: list[tuple[str, Any]], layers: list[Any], by_output: Mapping[str, onnx.NodeProto], inits: set[str]) -> list[set[str]]:
    """What each step reads from outside itself.

    A run reading a DequantizeLinear output of another run gets its own copy
    of the DequantizeLinear (and of a Constant it reads): runs then exchange
    int8 tensors, not their float views -- a quarter of the bytes, and each
    run holds whole quantized chains, as an integer lowering of the run needs.
    """
    reads: list[set[str]] = []
    for kind, obj in plan:
        if kind == "npu":
            reads.append(set(layers[obj].inputs))
            continue
        _pull_dequantize(obj, by_output, inits)
        reads.append(_external_inputs(obj, inits))
    return reads


def _segment(model: onnx.ModelProto, nodes: list[onnx.NodeProto], outs: list[str], index: int,
             infos: Mapping[str, onnx.ValueInfoProto], inits: set[str]) -> HostSegment:
    """One run of host nodes as an ONNX model of its own."""
    g = model.graph
    ins = [t for t in _ordered_inputs(nodes) if t not in inits]
    used_inits = [init for init in g.initializer if any(init.name in n.input for n in nodes)]
    sub = onnx.helper.make_graph(
        nodes, f"host_{index}", [infos[t] for t in ins], [infos.get(t) or onnx.helper.make_empty_tensor_value_info(t) for t in outs], used_inits
    )
    seg_model = onnx.helper.make_model(sub, opset_imports=model.opset_import, ir_version=model.ir_version)
    return HostSegment(seg_model, ins, outs, [n.name for n in nodes])


def split_host_graph(model: onnx.ModelProto, layers: list[Any], host_nodes: list[str]) -> tuple[list[tuple[str, Any]], list[HostSegment]]:
    """Schedules layers and host nodes; returns the steps and the host segments.

    Args:
        model: The QDQ model (nodes named as :func:`~edgekit.compiler.backends.npu.partition.partition` named them).
        layers: The offloaded layers (``inputs``/``output``/``nodes`` attributes).
        host_nodes: Names of the nodes left to the host.

    Returns:
        ``steps``: ``("host", segment_index)`` or ``("npu", layer_index)`` in
        execution order, and the segments.
    """
    g = model.graph
    by_name = {n.name: n for n in g.node}
    inits = {i.name for i in g.initializer}
    host_set = set(host_nodes)
    graph = _dependency_graph(layers, [by_name[n] for n in host_nodes], inits)
    sequence = _schedule(graph, layers, {n.name: i for i, n in enumerate(g.node)})
    plan = _host_runs(graph, sequence)
    by_output = {t: n for n in g.node if n.name in host_set for t in n.output}
    reads = _run_reads(plan, layers, by_output, inits)

    infos = _value_infos(model)
    graph_outputs = {o.name for o in g.output}
    steps: list[tuple[str, Any]] = []
    segments: list[HostSegment] = []
    for i, (kind, obj) in enumerate(plan):
        if kind == "npu":
            steps.append(("npu", obj))
            continue
        wanted = set(graph_outputs).union(*(r for j, r in enumerate(reads) if j != i))
        nodes = _live_nodes(obj, wanted)
        outs = [t for n in nodes for t in n.output if t in wanted]
        if not outs:  # nothing downstream reads it (e.g. a DQ whose only user was offloaded)
            continue
        segments.append(_segment(model, nodes, outs, len(segments), infos, inits))
        steps.append(("host", len(segments) - 1))
    return steps, segments


_COPIED_OPS = ("DequantizeLinear", "Constant")


def _ordered_inputs(nodes: list[onnx.NodeProto]) -> list[str]:
    """Tensors ``nodes`` read that none of them produces, in first-use order, each once.

    Once even when one node reads a tensor twice (``Concat(x, x)``): a
    segment's graph input listed twice is two definitions of one name,
    which onnxruntime refuses to load.
    """
    produced = {t for n in nodes for t in n.output}
    return list(dict.fromkeys(t for n in nodes for t in n.input if t and t not in produced))


def _external_inputs(nodes: list[onnx.NodeProto], inits: set[str]) -> set[str]:
    return {t for t in _ordered_inputs(nodes) if t not in inits}


def _pull_dequantize(nodes: list[onnx.NodeProto], by_output: Mapping[str, onnx.NodeProto], inits: set[str]) -> None:
    """Prepends to ``nodes`` the DequantizeLinear/Constant host nodes whose outputs it reads from outside.

    In first-use order (not a set's), so a package's bytes do not depend on
    Python's string hashing (``PYTHONHASHSEED``).
    """
    while True:
        outside = [t for t in _ordered_inputs(nodes) if t not in inits]
        pulled = [by_output[t] for t in outside if t in by_output and by_output[t].op_type in _COPIED_OPS]
        if not pulled:
            return
        for node in pulled:
            if node not in nodes:
                nodes.insert(0, node)


def _live_nodes(nodes: list[onnx.NodeProto], wanted: set[str]) -> list[onnx.NodeProto]:
    """``nodes`` less those whose outputs neither a later node of the run nor ``wanted`` reads."""
    live: list[onnx.NodeProto] = []
    needed = set(wanted)
    for n in reversed(nodes):
        if any(t in needed for t in n.output):
            live.append(n)
            needed |= {t for t in n.input if t}
    return live[::-1]
