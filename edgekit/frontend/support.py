"""Which ONNX operators the TVM importer handles, checked over the whole model.

The check runs before import so a user sees *every* unsupported operator in
one error instead of fixing them one failed compile at a time.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterator

import onnx

from edgekit.core.errors import UnsupportedOpsError

__all__ = ["tvm_supported_ops", "unsupported_ops", "check_supported", "walk_nodes"]

# The importer handles these itself instead of through its converter table.
_HANDLED_BY_IMPORTER = {"Constant", "If"}


def tvm_supported_ops() -> set[str]:
    """Operator types TVM's Relax ONNX importer can convert."""
    from tvm.relax.frontend.onnx import onnx_frontend

    return set(onnx_frontend._get_convert_map()) | _HANDLED_BY_IMPORTER


def walk_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of ``graph`` and of its subgraphs (If/Loop/Scan bodies)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from walk_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from walk_nodes(g)


def unsupported_ops(model: onnx.ModelProto, supported: set[str] | None = None) -> dict[str, list[str]]:
    """Maps each unsupported op type (``domain::Op`` for custom domains) to the
    names of the nodes that use it."""
    supported = tvm_supported_ops() if supported is None else supported
    found: dict[str, list[str]] = {}
    for node in walk_nodes(model.graph):
        known_domain = node.domain in ("", "ai.onnx", "com.microsoft")
        if known_domain and node.op_type in supported:
            continue
        key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
        found.setdefault(key, []).append(node.name or f"<{node.op_type} #{len(found.get(key, []))}>")
    return found


def check_supported(model: onnx.ModelProto, supported: set[str] | None = None) -> None:
    """Raises :class:`UnsupportedOpsError` listing every unsupported op at once."""
    bad = unsupported_ops(model, supported)
    if not bad:
        return
    counts = Counter({k: len(v) for k, v in bad.items()})
    listing = ", ".join(f"{op} (x{n}, e.g. node '{bad[op][0]}')" for op, n in counts.most_common())
    raise UnsupportedOpsError(
        f"{len(bad)} operator type(s) cannot be compiled: {listing}",
        hint="Replace them in the exporter, or run the model with onnxruntime; "
        "`edgekit inspect` lists all ops with their counts.",
        ops=sorted(bad),
    )
