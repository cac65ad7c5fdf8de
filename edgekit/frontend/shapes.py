"""Static shapes and element types of the values in an ONNX graph.

Its own module so that the loader (which rewrites ``auto_pad`` with it) and
the analysis (MAC counts, activation sizes) can both use it without importing
each other.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper

__all__ = ["ShapeTable", "ShapeUnknown"]

# Sub-byte element types numpy has no dtype for.
_ELEM_BITS_SPECIAL = {
    onnx.TensorProto.INT4: 4,
    onnx.TensorProto.UINT4: 4,
}
if hasattr(onnx.TensorProto, "FLOAT4E2M1"):
    _ELEM_BITS_SPECIAL[onnx.TensorProto.FLOAT4E2M1] = 4


class ShapeUnknown(Exception):
    """A handler needs a shape that shape inference did not provide."""


class ShapeTable:
    """Static shapes and element types of every named value in a graph.

    MAC handlers read operand shapes through :meth:`get`, which raises
    :class:`ShapeUnknown` for an unknown shape; the caller turns it into a
    warning and counts the node as 0 MACs.
    """

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.shape: dict[str, tuple[int, ...] | None] = {}
        self.elem: dict[str, int] = {}
        for init in graph.initializer:
            self.shape[init.name] = tuple(int(d) for d in init.dims)
            self.elem[init.name] = init.data_type
        for vi in [*graph.input, *graph.value_info, *graph.output]:
            if vi.name in self.shape and self.shape[vi.name] is not None:
                continue
            if not vi.type.HasField("tensor_type"):
                continue
            tt = vi.type.tensor_type
            self.elem[vi.name] = tt.elem_type
            if not tt.HasField("shape"):
                self.shape[vi.name] = None
                continue
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
            self.shape[vi.name] = tuple(dims) if all(d >= 0 for d in dims) else None

    def get(self, name: str) -> tuple[int, ...]:
        """The static shape of ``name``, or :class:`ShapeUnknown`."""
        shape = self.shape.get(name)
        if shape is None:
            raise ShapeUnknown(name)
        return shape

    def known(self, name: str) -> bool:
        """Whether ``name`` has a fully static shape."""
        return self.shape.get(name) is not None

    def nbytes(self, name: str) -> int | None:
        """Bytes of one tensor ``name``, or ``None`` if its shape or type is unknown."""
        shape = self.shape.get(name)
        bits = _elem_bits(self.elem.get(name, 0))
        if shape is None or bits is None:
            return None
        return (math.prod(shape) * bits + 7) // 8


def _elem_bits(elem_type: int) -> int | None:
    if elem_type in _ELEM_BITS_SPECIAL:
        return _ELEM_BITS_SPECIAL[elem_type]
    if elem_type in (onnx.TensorProto.UNDEFINED, onnx.TensorProto.STRING):
        return None
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).itemsize * 8
    except (KeyError, TypeError, ValueError):
        return None
