"""Ending a classifier's graph at its logits instead of its final Softmax.

int8 comparisons (edgekit's integer build against onnxruntime's QDQ graph) are
made in the output's quantization steps; a float Softmax after the last
quantized layer turns those steps into probabilities that say little about
int8 agreement. :func:`end_at_logits` removes the graph's last Softmax when
nothing but reshapes follows it, so the model's output is the logits.
"""

from __future__ import annotations

import onnx

__all__ = ["end_at_logits"]

_RESHAPES = ("Reshape", "Flatten", "Identity")


def end_at_logits(model: onnx.ModelProto) -> bool:
    """Removes ``model``'s final Softmax in place; returns whether it did.

    A Softmax followed by anything other than Reshape/Flatten/Identity is
    left alone (its output is not the graph's end); reshapes after it now
    reshape the logits, and a graph output named after the probabilities is
    renamed to the logits.
    """
    graph = model.graph
    found = [i for i, n in enumerate(graph.node) if n.op_type == "Softmax"]
    if not found:
        return False
    node = graph.node[found[-1]]
    tail = graph.node[found[-1] + 1 :]
    if any(n.op_type not in _RESHAPES for n in tail):
        return False
    for later in tail:
        for k, name in enumerate(later.input):
            if name == node.output[0]:
                later.input[k] = node.input[0]
    for out in graph.output:
        if out.name == node.output[0]:
            out.name = node.input[0]
    del graph.node[found[-1]]
    return True
