"""Unrolling ``Loop`` and ``Scan`` whose number of iterations is known at compile time.

TVM 0.27's Relax importer converts neither. With static shapes a ``Scan``
runs as many times as its scan inputs are long, and a ``Loop`` whose trip
count is a constant and whose condition stays true runs that many times; the
rules here copy the body once per iteration into the main graph (body values
renamed per iteration, the iteration number a constant), thread the
loop-carried values from one copy to the next, and stack the per-iteration
scan outputs with ``Unsqueeze`` + ``Concat``. This is how the standard's own
``LinearAttention`` and ``Range`` functions (``Scan``/``Loop`` bodies) compile.

Refused, naming the attribute: a trip count or condition computed at run
time, a body that computes its own condition, zero iterations, and more than
:data:`MAX_ITERATIONS` of them (the graph grows with each copy).
"""

from __future__ import annotations

import logging
import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgekit.frontend.expand import copy_node
from edgekit.frontend.rule_context import Context, Rewrite, Rule, attr

__all__ = ["UNROLL_RULES", "MAX_ITERATIONS"]

logger = logging.getLogger(__name__)

#: Most iterations unrolled (each one is a copy of the body).
MAX_ITERATIONS = 256


class _Body:
    """Copies of one loop body, each with its values renamed."""

    def __init__(self, graph: onnx.GraphProto, prefix: str) -> None:
        self.graph = graph
        self.prefix = prefix
        self.local = {vi.name for vi in graph.input} | {i.name for i in graph.initializer}
        self.local |= {o for n in graph.node for o in n.output if o}
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def copy(self, it: int, bound: dict[str, str]) -> list[str]:
        """Appends iteration ``it`` with body inputs renamed per ``bound``;
        returns the names of its outputs."""
        tag = f"{self.prefix}it{it}_"

        def rename(name: str) -> str:
            if not name or name not in self.local:
                return name  # an outer-scope value
            return bound.get(name) or tag + name

        for init in self.graph.initializer:
            new = onnx.TensorProto()
            new.CopyFrom(init)
            new.name = rename(init.name)
            self.inits.append(new)
        self.nodes.extend(copy_node(n, rename, {}, tag) for n in self.graph.node)
        return [rename(o.name) for o in self.graph.output]

    def constant(self, value: np.ndarray, name: str) -> str:
        self.inits.append(numpy_helper.from_array(value, self.prefix + name))
        return self.prefix + name

    def stack(self, parts: list[str], axis: int, out: str) -> None:
        """``out`` = the ``parts`` stacked along a new ``axis``."""
        axes = self.constant(np.array([axis], np.int64), f"stack_axis_{out}")
        names = []
        for i, part in enumerate(parts):
            names.append(f"{self.prefix}{out}_u{i}")
            self.nodes.append(helper.make_node("Unsqueeze", [part, axes], [names[-1]]))
        self.nodes.append(helper.make_node("Concat", names, [out], axis=axis))


def _count(value: np.ndarray | None, what: str) -> "int | str":
    if value is None:
        return f"{what} computed at run time"
    n = int(np.asarray(value).reshape(-1)[0])
    if n <= 0:
        return f"{what} of {n} (no iteration: the outputs would be empty)"
    if n > MAX_ITERATIONS:
        return f"{what} of {n} (more than {MAX_ITERATIONS} iterations are not unrolled)"
    return n


def _loop(node: onnx.NodeProto, ctx: Context) -> "Rewrite | str":
    body = attr(node, "body")
    trips = _count(ctx.const(node, 0) if node.input[0] else None, "a trip count")
    if isinstance(trips, str):
        return trips
    if len(node.input) > 1 and node.input[1]:
        cond = ctx.const(node, 1)
        if cond is None or not bool(np.asarray(cond).reshape(-1)[0]):
            return "a condition computed at run time or false"
    cond_in, cond_out = body.input[1].name, body.output[0].name
    passthrough = {cond_in} | {n.output[0] for n in body.node if n.op_type == "Identity" and n.input[0] == cond_in}
    if cond_out not in passthrough:
        return "a loop body that computes its own condition (the number of iterations depends on the data)"
    carried = len(node.input) - 2
    out = _Body(body, f"{node.output[0]}__loop_")
    true = out.constant(np.array(True), "true")
    state = list(node.input[2:])
    scans: list[list[str]] = [[] for _ in range(len(body.output) - 1 - carried)]
    for it in range(trips):
        bound = {body.input[0].name: out.constant(np.array(it, np.int64), f"iter{it}"), cond_in: true}
        bound.update({vi.name: v for vi, v in zip(body.input[2:], state)})
        outs = out.copy(it, bound)
        state = outs[1 : 1 + carried]
        for parts, name in zip(scans, outs[1 + carried :]):
            parts.append(name)
    for final, name in zip(state, node.output[:carried]):
        if name:
            out.nodes.append(helper.make_node("Identity", [final], [name]))
    for parts, name in zip(scans, node.output[carried:]):
        if name:
            out.stack(parts, 0, name)
    return Rewrite(out.nodes, out.inits)


def _scan(node: onnx.NodeProto, ctx: Context) -> "Rewrite | str":
    body = attr(node, "body")
    n_scan = int(attr(node, "num_scan_inputs"))
    n_state = len(node.input) - n_scan
    scan_inputs = node.input[n_state:]
    shapes = [ctx.shape(x) for x in scan_inputs]
    if any(s is None for s in shapes):
        return "scan inputs of unknown shape"
    in_axes = [a % len(s) for a, s in zip(attr(node, "scan_input_axes", [0] * n_scan), shapes)]
    in_dirs = list(attr(node, "scan_input_directions", [0] * n_scan))
    n_out = len(body.output) - n_state
    out_axes = list(attr(node, "scan_output_axes", [0] * n_out))
    out_dirs = list(attr(node, "scan_output_directions", [0] * n_out))
    lengths = {s[a] for s, a in zip(shapes, in_axes)}
    if len(lengths) != 1:
        return f"scan inputs of different lengths {sorted(lengths)}"
    trips = _count(np.array(lengths.pop()), "a sequence length")
    if isinstance(trips, str):
        return trips
    out = _Body(body, f"{node.output[0]}__scan_")
    state = list(node.input[:n_state])
    scans: list[list[str]] = [[] for _ in range(n_out)]
    for it in range(trips):
        bound = {vi.name: v for vi, v in zip(body.input[:n_state], state)}
        for k, (x, axis, rev) in enumerate(zip(scan_inputs, in_axes, in_dirs)):
            index = out.constant(np.array(trips - 1 - it if rev else it, np.int64), f"in{k}_at{it}")
            piece = f"{out.prefix}in{k}_it{it}"
            out.nodes.append(helper.make_node("Gather", [x, index], [piece], axis=axis))
            bound[body.input[n_state + k].name] = piece
        outs = out.copy(it, bound)
        state = outs[:n_state]
        for parts, name in zip(scans, outs[n_state:]):
            parts.append(name)
    for final, name in zip(state, node.output[:n_state]):
        if name:
            out.nodes.append(helper.make_node("Identity", [final], [name]))
    for k, (parts, name) in enumerate(zip(scans, node.output[n_state:])):
        if not name:
            continue
        rank = len(ctx.shape(name) or ()) or None
        axis = out_axes[k] % rank if rank and out_axes[k] < 0 else out_axes[k]
        out.stack(parts[::-1] if out_dirs[k] else parts, axis, name)
    return Rewrite(out.nodes, out.inits)


UNROLL_RULES: dict[str, Rule] = {"Loop": _loop, "Scan": _scan}
