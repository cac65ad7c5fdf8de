"""The ``aot`` section of a microcontroller package's manifest (see :mod:`edgekit.package.sections`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from edgekit.package.sections import Section, SectionReader

__all__ = ["AotSection", "FloatOp", "FloatTensor", "StoredTensor", "WeightStorage"]


def _records(r: SectionReader, name: str, parse: Any) -> tuple[Any, ...]:
    """A list of objects under ``name``, each parsed by ``parse(data, where)``."""
    items = r.get(name, list, [])
    return tuple(parse(item, r.where) for item in items)


@dataclass(frozen=True)
class StoredTensor:
    """One weight in ``weights.bin`` (``aot.weight_storage.tensors[]``).

    Attributes:
        name, dtype, shape: The constant (TVM dtype string, static shape).
        encoding: ``dense`` or ``bitmask``.
        offset: Byte offset in ``weights.bin``.
        dense_bytes, stored_bytes: Its size dense, and as stored (without alignment padding).
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    encoding: str
    offset: int
    dense_bytes: int
    stored_bytes: int

    @classmethod
    def from_json(cls, data: Any, where: str = "package") -> StoredTensor:
        r = SectionReader(data, "aot.weight_storage.tensors[]", where)
        return cls(r.get("name", str), r.get("dtype", str), r.ints("shape"), r.get("encoding", str),
                   r.get("offset", int), r.get("dense_bytes", int), r.get("stored_bytes", int))  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape), "encoding": self.encoding,
                "offset": self.offset, "dense_bytes": self.dense_bytes, "stored_bytes": self.stored_bytes}  # fmt: skip


@dataclass(frozen=True)
class WeightStorage:
    """How the weights are stored (``aot.weight_storage``; docs/aot.md).

    Attributes:
        mode: The ``weight_storage`` option (``auto``, ``dense``, ``sparse``).
        dense_bytes: ``weights.bin`` if every weight were dense.
        stored_bytes: ``weights.bin`` as stored.
        sparse_tensors: Weights stored bitmask-sparse.
        decode_scratch_bytes: Peak of the decoded sparse weights inside the arena.
        arena_bytes_dense: The arena with every weight dense.
        note: Why ``auto`` chose what it chose ("" otherwise).
        tensors: Every weight, in blob order.
    """

    mode: str
    dense_bytes: int
    stored_bytes: int
    sparse_tensors: int
    decode_scratch_bytes: int
    arena_bytes_dense: int
    note: str = ""
    tensors: tuple[StoredTensor, ...] = ()

    @classmethod
    def from_json(cls, data: Any, where: str = "package") -> WeightStorage:
        r = SectionReader(data, "aot.weight_storage", where)
        return cls(r.get("mode", str), r.get("dense_bytes", int), r.get("stored_bytes", int),
                   r.get("sparse_tensors", int), r.get("decode_scratch_bytes", int, 0),
                   r.get("arena_bytes_dense", int, 0), r.get("note", str, ""),
                   _records(r, "tensors", StoredTensor.from_json))  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "dense_bytes": self.dense_bytes, "stored_bytes": self.stored_bytes,
                "sparse_tensors": self.sparse_tensors, "decode_scratch_bytes": self.decode_scratch_bytes,
                "arena_bytes_dense": self.arena_bytes_dense, "note": self.note,
                "tensors": [t.to_json() for t in self.tensors]}  # fmt: skip


@dataclass(frozen=True)
class FloatTensor:
    """A float activation a kernel call reads or writes (``aot.float_ops[].tensors[]``)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    bytes: int

    @classmethod
    def from_json(cls, data: Any, where: str = "package") -> FloatTensor:
        r = SectionReader(data, "aot.float_ops[].tensors[]", where)
        return cls(r.get("name", str), r.get("dtype", str), r.ints("shape"), r.get("bytes", int))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape), "bytes": self.bytes}


@dataclass(frozen=True)
class FloatOp:
    """A kernel call of an int8 model that still touches float activations (``aot.float_ops[]``).

    Attributes:
        step: Its index among the kernel calls.
        kernel: The function called.
        tensors: Its float tensors.
        float_bytes: Their bytes.
        arena_cost_bytes: How much smaller the arena would be were they int8.
    """

    step: int
    kernel: str
    tensors: tuple[FloatTensor, ...]
    float_bytes: int
    arena_cost_bytes: int

    @classmethod
    def from_json(cls, data: Any, where: str = "package") -> FloatOp:
        r = SectionReader(data, "aot.float_ops[]", where)
        return cls(r.get("step", int), r.get("kernel", str), _records(r, "tensors", FloatTensor.from_json),
                   r.get("float_bytes", int), r.get("arena_cost_bytes", int))  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "kernel": self.kernel, "tensors": [t.to_json() for t in self.tensors],
                "float_bytes": self.float_bytes, "arena_cost_bytes": self.arena_cost_bytes}  # fmt: skip


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
        weight_storage: How the weights are stored (``None`` in packages
            from before sparse storage).
        float_ops: Kernel calls of an int8 model that still touch float
            activations, with their arena cost.
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
    weight_storage: WeightStorage | None = None
    float_ops: tuple[FloatOp, ...] = ()

    @classmethod
    def from_json(cls, data: Any, *, where: str = "package") -> AotSection:
        r = SectionReader(data, cls.KEY, where)
        storage = r.get("weight_storage", dict, None)
        return cls(
            model_c=r.get("model_c", str, cls.model_c), model_h=r.get("model_h", str, cls.model_h),
            kernels=r.get("kernels", str, cls.kernels), weights=r.get("weights", str, cls.weights),
            firmware=r.get("firmware", str, None, optional=True), alignment=r.get("alignment", int, 0),
            kernel_calls=r.get("kernel_calls", int, 0), int8_c_kernel_calls=r.get("int8_c_kernel_calls", int, 0),
            arena_bytes_without_reuse=r.get("arena_bytes_without_reuse", int, 0),
            code_bytes_measured=r.get("code_bytes_measured", bool, False),
            kernel_imports=r.strings("kernel_imports", ()), input_offsets=r.ints("input_offsets", ()),
            output_offsets=r.ints("output_offsets", ()),
            weight_storage=WeightStorage.from_json(storage, where) if storage is not None else None,
            float_ops=_records(r, "float_ops", FloatOp.from_json),
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
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
        }
        if self.weight_storage is not None:
            out["weight_storage"] = self.weight_storage.to_json()
        out["float_ops"] = [op.to_json() for op in self.float_ops]
        return out
