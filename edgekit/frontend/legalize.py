"""Making a prepared model safe for TVM's ONNX importer: never a silent wrong answer.

Runs the rules, a table keyed by op type, on every node of the main graph:

* :mod:`edgekit.frontend.importer_fixes` — operator/attribute combinations
  TVM 0.27's importer converts wrongly (ONNX's node conformance tests find
  them; docs/conformance.md) are **expanded** into their ONNX function body
  (:mod:`edgekit.frontend.expand`), **rewritten** into operators that import
  correctly, or **refused** naming the node, the op and the attribute;
* :mod:`edgekit.frontend.staged_reductions` — long float sums are computed
  in stages, as accurately as onnxruntime's;
* :mod:`edgekit.frontend.unroll` — ``Loop``/``Scan`` with a number of
  iterations known at compile time are unrolled.

Operators TVM has no converter for but the standard defines as a function
(Attention, RotaryEmbedding, Celu, CenterCropPad, ...) are expanded too. The
whole model is checked first and every refusal is reported in one error.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING

import onnx
from onnx import helper

from edgekit.core.errors import UnsupportedOpsError
from edgekit.frontend.expand import expand_node, function_body, has_function
from edgekit.frontend.importer_fixes import IMPORTER_RULES
from edgekit.frontend.rule_context import EXPAND, Rewrite, Rule, attr, build_context
from edgekit.frontend.staged_reductions import ACCURACY_RULES
from edgekit.frontend.unroll import UNROLL_RULES

if TYPE_CHECKING:
    from edgekit.frontend.loader import PreparedModel

__all__ = ["legalize", "legalize_counted", "legalize_prepared", "RULES", "UNSUPPORTED_DTYPES"]

logger = logging.getLogger(__name__)

_T = onnx.TensorProto
#: Element types no backend compiles (sub-byte and 8-bit floats).
UNSUPPORTED_DTYPES = {
    getattr(_T, n): n
    for n in ("INT4", "UINT4", "INT2", "UINT2", "FLOAT4E2M1", "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2",
              "FLOAT8E5M2FNUZ", "FLOAT8E8M0", "STRING", "COMPLEX64", "COMPLEX128")
    if hasattr(_T, n)
}
#: Rounds of expansion (a function body may hold further function ops).
_MAX_ROUNDS = 4


def _merged_rules() -> dict[str, Rule]:
    tables = (IMPORTER_RULES, ACCURACY_RULES, UNROLL_RULES)
    both = sorted(op for i, t in enumerate(tables) for u in tables[i + 1 :] for op in set(t) & set(u))
    if both:
        raise RuntimeError(f"two legalization rules for {both}")
    return {op: rule for t in tables for op, rule in t.items()}


#: Every rule, by op type.
RULES: dict[str, Rule] = _merged_rules()
#: What a rewrite is called in the notes, where not "rewritten".
_ACTIONS = {**{op: "staged" for op in ACCURACY_RULES}, **{op: "unrolled" for op in UNROLL_RULES}}


def _dtype_problems(model: onnx.ModelProto) -> list[str]:
    graph = model.graph
    found = []
    for vi in [*graph.input, *graph.output, *graph.value_info]:
        if vi.type.tensor_type.elem_type in UNSUPPORTED_DTYPES:
            found.append(f"value '{vi.name}' of type {UNSUPPORTED_DTYPES[vi.type.tensor_type.elem_type]}")
    for init in graph.initializer:
        if init.data_type in UNSUPPORTED_DTYPES:
            found.append(f"weight '{init.name}' of type {UNSUPPORTED_DTYPES[init.data_type]}")
    for vi in [*graph.input, *graph.output]:
        kind = vi.type.WhichOneof("value")
        if kind != "tensor_type":
            found.append(f"value '{vi.name}' of {kind.replace('_type', '')} type (only tensors are compiled)")
    for node in graph.node:
        to = attr(node, "to")
        if node.op_type == "Cast" and to in UNSUPPORTED_DTYPES:
            found.append(f"Cast node '{node.name or node.output[0]}' to {UNSUPPORTED_DTYPES[to]}")
    return found


def _empty_values(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """``(op type, description)`` of each node output whose static shape has a zero-size axis."""
    graph = model.graph
    dims = {vi.name: vi.type.tensor_type.shape.dim for vi in [*graph.value_info, *graph.output]
            if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape")}
    found = []
    for node in graph.node:
        for out in node.output:
            shape = dims.get(out)
            if shape is not None and any(d.HasField("dim_value") and d.dim_value == 0 for d in shape):
                text = "x".join(str(d.dim_value) if d.HasField("dim_value") else d.dim_param or "?" for d in shape)
                found.append((node.op_type, f"{node.op_type} node '{node.name or node.output[0]}' output '{out}' (shape {text})"))
    return found


def legalize(model: onnx.ModelProto, opset: int, supported: set[str]) -> tuple[onnx.ModelProto, list[str]]:
    """Applies :data:`RULES` and expands function ops TVM cannot convert.

    Args:
        model: A prepared model (static shapes, inferred value_info).
        opset: Its default-domain opset.
        supported: Op types the importer converts.

    Returns:
        The model (a new one where something changed) and notes saying what changed.

    Raises:
        UnsupportedOpsError: listing every node refused, with op and attribute; or
            every value with no elements.
    """
    model, done = legalize_counted(model, opset, supported)
    if not done:
        return model, []
    return model, ["front end: " + ", ".join(f"{n} {op} {action}" for (op, action), n in sorted(done.items()))]


def legalize_counted(
    model: onnx.ModelProto, opset: int, supported: set[str]
) -> tuple[onnx.ModelProto, Counter[tuple[str, str]]]:
    """:func:`legalize`, saying what changed as counts of ``(op type, action)``
    (action ``expanded``, ``rewritten`` or ``staged``; a node staged twice
    counts twice)."""
    from edgekit.frontend.loader import refold

    dtype_problems = _dtype_problems(model)
    if dtype_problems:
        raise UnsupportedOpsError(
            "values of types that are not compiled: " + "; ".join(dtype_problems[:6])
            + (f" (+{len(dtype_problems) - 6} more)" if len(dtype_problems) > 6 else ""),
            hint="Export those values as tensors of a byte-sized type (float32, float16, int8, int64, ...); "
            "sequences, optionals, strings, 4-bit and 8-bit float types are not compiled.",
            ops=["dtype"],
        )
    empty = _empty_values(model)
    if empty:
        raise UnsupportedOpsError(
            f"{len(empty)} value(s) would have no elements: " + "; ".join(text for _, text in empty[:6])
            + (f" (+{len(empty) - 6} more)" if len(empty) > 6 else ""),
            hint="edgekit compiles tensors of at least one element (kernels and memory plans are static): "
            "re-export the model without the empty value (a zero-size split, slice or shape), "
            "or give its inputs shapes that make it non-empty.",
            ops=sorted({op for op, _ in empty}),
        )
    done: Counter[tuple[str, str]] = Counter()
    for round_ in range(_MAX_ROUNDS):
        ctx = build_context(model, opset)
        refusals: list[tuple[str, str, str]] = []
        new_nodes: list[onnx.NodeProto] = []
        new_inits: list[onnx.TensorProto] = []
        changed = False
        for index, node in enumerate(model.graph.node):
            default_domain = node.domain in ("", "ai.onnx")
            rule = RULES.get(node.op_type) if default_domain else None
            verdict = rule(node, ctx) if rule else None
            if verdict is None and default_domain and node.op_type not in supported and has_function(node.op_type, opset):
                verdict = EXPAND
            if verdict is None:
                new_nodes.append(node)
                continue
            label = node.name or node.output[0]
            if isinstance(verdict, Rewrite):
                new_nodes.extend(verdict.nodes)
                new_inits.extend(verdict.initializers)
                done[node.op_type, _ACTIONS.get(node.op_type, "rewritten")] += 1
                changed = True
            elif verdict == EXPAND:
                types = [ctx.types.get(i) for i in node.input if i]
                body = function_body(node, opset, [t for t in types if t is not None]) if all(types) else None
                if body is None:
                    if node.op_type in supported and node.op_type not in ("Attention",):
                        refusals.append((node.op_type, label, "attributes TVM converts wrongly, and no ONNX function body for them"))
                    else:
                        new_nodes.append(node)  # left to the unsupported-op check
                    continue
                new_nodes.extend(expand_node(node, body, f"{label}__{node.op_type}_{round_}_{index}_", opset))
                _merge_opsets(model, body)
                done[node.op_type, "expanded"] += 1
                changed = True
            else:
                refusals.append((node.op_type, label, str(verdict)))
                new_nodes.append(node)
        if refusals:
            listing = "; ".join(f"{op} node '{name}': {why}" for op, name, why in refusals[:8])
            more = f" (+{len(refusals) - 8} more)" if len(refusals) > 8 else ""
            raise UnsupportedOpsError(
                f"{len(refusals)} node(s) use operator/attribute combinations TVM compiles wrongly or not at all: "
                f"{listing}{more}",
                hint="Re-export those nodes with supported attributes, or run the model with onnxruntime; "
                "docs/conformance.md lists what is refused and why.",
                ops=sorted({op for op, _, _ in refusals}),
            )
        if not changed:
            break
        out = onnx.ModelProto()
        out.CopyFrom(model)
        del out.graph.node[:]
        out.graph.node.extend(new_nodes)
        out.graph.initializer.extend(new_inits)
        model = refold(out)
    return model, done


def _merge_opsets(model: onnx.ModelProto, body: onnx.FunctionProto) -> None:
    have = {o.domain: o for o in model.opset_import}
    for imp in body.opset_import:
        if imp.domain in ("", "ai.onnx"):
            continue
        if imp.domain not in have:
            model.opset_import.append(helper.make_opsetid(imp.domain, imp.version))


def legalize_prepared(prepared: "PreparedModel") -> None:
    """:func:`legalize` on a prepared model, in place, once (the notes say what changed)."""
    if prepared.legalized:
        return
    from edgekit.frontend.support import tvm_supported_ops

    model, notes = legalize(prepared.model, prepared.opset, tvm_supported_ops())
    prepared.model = model
    prepared.notes.extend(notes)
    prepared.legalized = True
