"""The ``aot`` section of a microcontroller package's manifest (see :mod:`edgekit.package.sections`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from edgekit.package.sections import Section, SectionReader

__all__ = ["AotSection"]


@dataclass(frozen=True)
class AotSection(Section):
    """``aot``: the members of an ``aot-c`` package and what the build measured.

    Older packages lack the later keys; they read as the defaults below.

    Attributes:
        model_c, model_h, kernels, weights: The members holding ``model.c``,
            ``model.h``, the kernels' object file and the weights blob.
        firmware: The linked firmware image member, or ``None`` when the
            board has no firmware port.
        alignment: Alignment (bytes) of every arena buffer.
        kernel_calls: Kernel calls per inference.
        int8_c_kernel_calls: How many of them go to edgekit's hand-written int8 C kernels.
        arena_bytes_without_reuse: The arena if no buffer shared memory.
        code_bytes_measured: ``code_bytes`` was measured from the linked image.
        kernel_imports: Symbols the kernels need from outside.
        input_offsets, output_offsets: Arena offsets of the inputs and outputs.
        weight_storage: How the weights are stored (mode, dense and stored
            bytes, every tensor's encoding; docs/package-format.md), as JSON.
        float_ops: Kernel calls of an int8 model that still touch float
            activations, with their arena cost, as JSON.
    """

    KEY: ClassVar[str] = "aot"

    model_c: str = "model/model.c"
    model_h: str = "model/model.h"
    kernels: str = "model/kernels.o"
    weights: str = "weights.bin"
    firmware: str | None = None
    alignment: int = 0
    kernel_calls: int = 0
    int8_c_kernel_calls: int = 0
    arena_bytes_without_reuse: int = 0
    code_bytes_measured: bool = False
    kernel_imports: tuple[str, ...] = ()
    input_offsets: tuple[int, ...] = ()
    output_offsets: tuple[int, ...] = ()
    weight_storage: Mapping[str, Any] = field(default_factory=dict)
    float_ops: tuple[Mapping[str, Any], ...] = ()

    @classmethod
    def from_json(cls, data: Any, *, where: str = "package") -> AotSection:
        r = SectionReader(data, cls.KEY, where)
        float_ops = r.get("float_ops", list, [])
        if not all(isinstance(op, dict) for op in float_ops):
            r.bad("aot.float_ops", "a list of objects")
        return cls(
            model_c=r.get("model_c", str, cls.model_c), model_h=r.get("model_h", str, cls.model_h),
            kernels=r.get("kernels", str, cls.kernels), weights=r.get("weights", str, cls.weights),
            firmware=r.get("firmware", str, None, optional=True), alignment=r.get("alignment", int, 0),
            kernel_calls=r.get("kernel_calls", int, 0), int8_c_kernel_calls=r.get("int8_c_kernel_calls", int, 0),
            arena_bytes_without_reuse=r.get("arena_bytes_without_reuse", int, 0),
            code_bytes_measured=r.get("code_bytes_measured", bool, False),
            kernel_imports=r.strings("kernel_imports", ()), input_offsets=r.ints("input_offsets", ()),
            output_offsets=r.ints("output_offsets", ()), weight_storage=r.get("weight_storage", dict, {}),
            float_ops=tuple(float_ops),
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {
            "model_c": self.model_c,
            "model_h": self.model_h,
            "kernels": self.kernels,
            "weights": self.weights,
            "firmware": self.firmware,
            "alignment": self.alignment,
            "kernel_calls": self.kernel_calls,
            "int8_c_kernel_calls": self.int8_c_kernel_calls,
            "arena_bytes_without_reuse": self.arena_bytes_without_reuse,
            "code_bytes_measured": self.code_bytes_measured,
            "kernel_imports": list(self.kernel_imports),
            "input_offsets": list(self.input_offsets),
            "output_offsets": list(self.output_offsets),
            "weight_storage": dict(self.weight_storage),
            "float_ops": [dict(op) for op in self.float_ops],
        }
