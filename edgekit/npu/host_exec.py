"""End-to-end execution: host sub-graphs on the CPU, offloaded layers on the accelerator.

:func:`split_host_graph` orders the offloaded layers and the remaining ONNX
nodes into steps and cuts the host nodes into sub-graphs (one ONNX model per
run of consecutive host nodes; sub-graphs exchange int8 tensors, each with
its own copies of the DequantizeLinear nodes it reads). :class:`HybridExecutor` runs the steps: host
sub-graphs with onnxruntime (on a board this is the TVM-compiled host
code), accelerator layers through :class:`~edgekit.npu.driver.NpuDriver`.
Tensors passed between two accelerator layers stay in accelerator DRAM;
only those the host reads are converted (NHWC padded <-> ONNX layout), and
that conversion is counted as host time.
"""

from __future__ import annotations

import heapq
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import onnx

from edgekit.core.errors import InputError
from edgekit.npu.codegen import TensorPlace
from edgekit.npu.driver import NpuDriver

__all__ = ["HostSegment", "split_host_graph", "HybridExecutor", "StepTiming"]

logger = logging.getLogger(__name__)


@dataclass
class HostSegment:
    """A run of host nodes as one ONNX model."""

    model: onnx.ModelProto
    inputs: list[str]
    outputs: list[str]
    nodes: list[str]


def _value_infos(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - fall back to what the model records
        inferred = model
    return {vi.name: vi for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]}


def split_host_graph(model: onnx.ModelProto, layers: list[Any], host_nodes: list[str]) -> tuple[list[tuple[str, Any]], list[HostSegment]]:
    """Schedules layers and host nodes; returns the steps and the host segments.

    Args:
        model: The QDQ model (nodes named as :func:`~edgekit.npu.partition.partition` named them).
        layers: The offloaded layers (``inputs``/``output``/``nodes`` attributes).
        host_nodes: Names of the nodes left to the host.

    Returns:
        ``steps``: ``("host", segment_index)`` or ``("npu", layer_index)`` in
        execution order, and the segments.
    """
    g = model.graph
    order = {n.name: i for i, n in enumerate(g.node)}
    by_name = {n.name: n for n in g.node}
    inits = {i.name for i in g.initializer}
    host_set = set(host_nodes)
    units: list[tuple[str, Any]] = [("host", by_name[n]) for n in host_nodes] + [("npu", k) for k in range(len(layers))]
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

    def rank(u: int) -> int:
        kind, obj = units[u]
        if kind == "host" and obj.op_type == "QuantizeLinear" and obj.input[0] in produced_by:
            # Right after its producer: a run then never ends between a float op and its quantize.
            return rank(produced_by[obj.input[0]])
        return order[obj.name] if kind == "host" else min(order[n] for n in layers[obj].nodes if n in order)

    pending = [len(d) for d in deps]
    heap = [(rank(u), u) for u in range(len(units)) if pending[u] == 0]
    heapq.heapify(heap)
    sequence: list[int] = []
    while heap:
        _, u = heapq.heappop(heap)
        sequence.append(u)
        for v in users[u]:
            pending[v] -= 1
            if pending[v] == 0:
                heapq.heappush(heap, (rank(v), v))
    if len(sequence) != len(units):
        raise RuntimeError("host/accelerator schedule has a cycle")  # cannot happen for a valid ONNX DAG

    # Runs of consecutive host nodes between accelerator layers, in schedule order.
    plan: list[tuple[str, Any]] = []
    for u in sequence:
        kind, obj = units[u]
        if kind == "host":
            if plan and plan[-1][0] == "host":
                plan[-1][1].append(obj)
            else:
                plan.append(("host", [obj]))
        else:
            plan.append(("npu", obj))
    # A run reading a DequantizeLinear output of another run gets its own copy
    # of the DequantizeLinear (and of a Constant it reads): runs then exchange
    # int8 tensors, not their float views -- a quarter of the bytes, and each
    # run holds whole quantized chains, as an integer lowering of the run needs.
    by_output = {t: n for n in g.node if n.name in host_set for t in n.output}
    reads: list[set[str]] = []
    for kind, obj in plan:
        if kind == "npu":
            reads.append(set(layers[obj].inputs))
            continue
        _pull_dequantize(obj, by_output, inits)
        reads.append(_external_inputs(obj, inits))

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
        ins = [t for t in _ordered_inputs(nodes) if t not in inits]
        used_inits = [init for init in g.initializer if any(init.name in n.input for n in nodes)]
        sub = onnx.helper.make_graph(
            nodes, f"host_{len(segments)}", [infos[t] for t in ins], [infos.get(t) or onnx.helper.make_empty_tensor_value_info(t) for t in outs], used_inits
        )
        seg_model = onnx.helper.make_model(sub, opset_imports=model.opset_import, ir_version=model.ir_version)
        segments.append(HostSegment(seg_model, ins, outs, [n.name for n in nodes]))
        steps.append(("host", len(segments) - 1))
    return steps, segments


_COPIED_OPS = ("DequantizeLinear", "Constant")


def _ordered_inputs(nodes: list[onnx.NodeProto]) -> list[str]:
    """Tensors ``nodes`` read that none of them produces, in first-use order."""
    produced = {t for n in nodes for t in n.output}
    ins: list[str] = []
    for n in nodes:
        ins += [t for t in n.input if t and t not in produced and t not in ins]
    return ins


def _external_inputs(nodes: list[onnx.NodeProto], inits: set[str]) -> set[str]:
    return {t for t in _ordered_inputs(nodes) if t not in inits}


def _pull_dequantize(nodes: list[onnx.NodeProto], by_output: Mapping[str, onnx.NodeProto], inits: set[str]) -> None:
    """Prepends to ``nodes`` the DequantizeLinear/Constant host nodes whose outputs it reads from outside."""
    while True:
        pulled = [by_output[t] for t in _external_inputs(nodes, inits) if t in by_output and by_output[t].op_type in _COPIED_OPS]
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


@dataclass
class StepTiming:
    """One executed step."""

    kind: str
    name: str
    host_ms: float = 0.0
    cycles: int = 0
    stats: Any = None


@dataclass
class HybridExecutor:
    """Runs a compiled model: host segments with onnxruntime, layers on the NPU.

    Args:
        steps: From :func:`split_host_graph` (``("host", i)`` / ``("npu", k)``).
        segments: Host sub-graphs.
        layer_programs: Per layer: (name, program address, instruction count, inputs, output).
        tensors: Accelerator DRAM placement of every tensor a layer touches.
        driver: The accelerator driver.
        inputs, outputs: Model input/output names.
        stats_source: Optional callable returning the detailed stats of the last program (simulator only).
    """

    steps: list[tuple[str, int]]
    segments: list[HostSegment]
    layer_programs: list[tuple[str, int, int, tuple[str, ...], str]]
    tensors: Mapping[str, TensorPlace]
    driver: NpuDriver
    inputs: list[str]
    outputs: list[str]
    stats_source: Any = None
    _sessions: list[Any] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        # Keep onnxruntime from fusing Q/DQ pairs: the host must compute exactly what the graph says.
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        self._sessions = [
            ort.InferenceSession(seg.model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"]) for seg in self.segments
        ]
        host_reads: set[str] = set(self.outputs)
        for seg in self.segments:
            host_reads |= set(seg.inputs)
        self._host_reads = host_reads

    def run(self, feeds: Mapping[str, np.ndarray], *, trace: bool = False) -> tuple[dict[str, np.ndarray], list[StepTiming]]:
        """Runs one inference; returns the outputs and the per-step timings.

        Args:
            feeds: One array per model input.
            trace: Return every tensor a step produced (host sub-graph
                outputs and each accelerator layer's output, read back from
                accelerator DRAM), not only the model outputs: for comparing
                the package tensor by tensor with another compile.
        """
        missing = [n for n in self.inputs if n not in feeds]
        if missing:
            raise InputError(f"missing input(s): {', '.join(missing)}", hint="Give one array per model input.")
        env: dict[str, np.ndarray] = {n: np.asarray(feeds[n]) for n in self.inputs}
        in_dram: set[str] = set()
        timings: list[StepTiming] = []
        for kind, index in self.steps:
            if kind == "host":
                seg, sess = self.segments[index], self._sessions[index]
                t0 = time.perf_counter()
                result = sess.run(seg.outputs, {n: env[n] for n in seg.inputs})
                env.update(zip(seg.outputs, result))
                timings.append(StepTiming("host", f"host_{index}", (time.perf_counter() - t0) * 1e3))
                continue
            name, addr, count, ins, out = self.layer_programs[index]
            t0 = time.perf_counter()
            for t in ins:
                if t not in in_dram:
                    place = self.tensors[t]
                    self.driver.mem.write(place.addr, place.pack(env[t]))
                    in_dram.add(t)
            upload_ms = (time.perf_counter() - t0) * 1e3
            cpl = self.driver.run(addr, count)
            in_dram.add(out)
            t1 = time.perf_counter()
            if trace or out in self._host_reads:
                place = self.tensors[out]
                env[out] = place.unpack(self.driver.mem.read(place.addr, place.nbytes))
            download_ms = (time.perf_counter() - t1) * 1e3
            stats = self.stats_source() if self.stats_source is not None else None
            timings.append(StepTiming("npu", name, upload_ms + download_ms, cpl.cycles, stats))
        return (env if trace else {n: env[n] for n in self.outputs}), timings
