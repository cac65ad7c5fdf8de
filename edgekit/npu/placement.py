"""Where an activation tensor lives in accelerator DRAM (:class:`TensorPlace`).

The backend's code generator places tensors; the executor that runs a
package packs inputs into and unpacks outputs from those places.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

__all__ = ["TensorPlace", "ALIGN", "align"]

#: Alignment of every DRAM region (an AXI burst boundary).
ALIGN = 64


def align(n: int) -> int:
    """``n`` rounded up to :data:`ALIGN`."""
    return -(-n // ALIGN) * ALIGN


@dataclass
class TensorPlace:
    """An activation tensor in accelerator DRAM (NHWC, padded channels).

    Attributes:
        shape: ``(C, H, W)`` as the layers see it.
        onnx_shape: The tensor's shape in the ONNX model.
        layout: ``nchw`` or ``rows`` (``[..., K]`` seen as ``(K, 1, rows)``).
    """

    name: str
    addr: int
    shape: tuple[int, int, int]
    cpad: int
    onnx_shape: tuple[int, ...]
    layout: str

    @property
    def nbytes(self) -> int:
        return self.shape[1] * self.shape[2] * self.cpad

    def pack(self, array: np.ndarray) -> bytes:
        """ONNX-layout int8 array -> DRAM bytes."""
        c, h, w = self.shape
        a = np.asarray(array, dtype=np.int8)
        hwc = a.reshape(c, h, w).transpose(1, 2, 0) if self.layout == "nchw" else a.reshape(h * w, c).reshape(h, w, c)
        out = np.zeros((h, w, self.cpad), dtype=np.int8)
        out[:, :, :c] = hwc
        return out.tobytes()

    def unpack(self, data: bytes) -> np.ndarray:
        """DRAM bytes -> ONNX-layout int8 array."""
        c, h, w = self.shape
        hwc = np.frombuffer(data, dtype=np.int8, count=self.nbytes).reshape(h, w, self.cpad)[:, :, :c]
        if self.layout == "nchw":
            return np.ascontiguousarray(hwc.transpose(2, 0, 1)).reshape(self.onnx_shape)
        return np.ascontiguousarray(hwc).reshape(self.onnx_shape)

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "addr": self.addr, "shape": list(self.shape), "cpad": self.cpad,
                "onnx_shape": list(self.onnx_shape), "layout": self.layout}  # fmt: skip

    @classmethod
    def from_json(cls, d: Mapping[str, object]) -> "TensorPlace":
        return cls(str(d["name"]), int(d["addr"]), tuple(d["shape"]), int(d["cpad"]), tuple(d["onnx_shape"]), str(d["layout"]))  # type: ignore[arg-type]
