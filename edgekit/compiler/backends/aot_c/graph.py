"""The lowered Relax ``main`` as a flat list of kernel calls over tensors.

:func:`extract_graph` walks ``main`` after :func:`edgekit.compiler.backends.aot_c.lower.lower_for_aot`
and records, for every tensor, where its bytes come from (a model input, an
arena allocation, a weight constant, or a view of another tensor) and, for
every kernel call, which tensors it takes in argument order. Nothing here
decides addresses: :mod:`edgekit.compiler.backends.aot_c.plan` does.

The walk is hand-written because TVM 0.27 has no executor left that turns
``main`` into a static schedule (the AOT executor was removed with microTVM).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekit.core.errors import CompileError

__all__ = ["TensorInfo", "KernelCall", "AotGraph", "extract_graph", "ALLOC_OPS", "VIEW_OPS"]

logger = logging.getLogger(__name__)

#: Relax ops that allocate a fresh tensor (placed in the arena by the planner).
ALLOC_OPS = ("relax.builtin.alloc_tensor",)
#: Relax ops that reinterpret a tensor's bytes with another shape.
VIEW_OPS = ("relax.reshape", "relax.memory.view")


@dataclass
class TensorInfo:
    """One tensor ``main`` touches.

    Attributes:
        index: Position in :attr:`AotGraph.tensors`.
        name: Relax variable name (for comments in the generated C).
        shape: Static shape.
        dtype: TVM dtype string (``float32``, ``int8``...).
        kind: ``input``, ``arena``, ``weight`` or ``view``.
        base: For a view, the index of the tensor whose bytes it shares.
        input_index: For an input, its position among the model inputs.
        value: For a weight, its data.
    """

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    kind: str
    base: int = -1
    input_index: int = -1
    value: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        """Bytes of the tensor's data."""
        bits = _dtype_bits(self.dtype)
        return int(np.prod(self.shape, dtype=np.int64)) * max(bits // 8, 1)


@dataclass
class KernelCall:
    """One destination-passing call of a fused PrimFunc, or of a C kernel
    (``extern``: a symbol defined in ``model.c``, see :mod:`edgekit.compiler.backends.aot_c.nn`)."""

    func: str
    args: list[int]
    extern: bool = False


@dataclass
class AotGraph:
    """``main`` as tensors and an ordered list of kernel calls.

    Attributes:
        tensors: Every tensor, inputs first in model order.
        calls: Kernel calls in execution order.
        inputs: Tensor index of each model input.
        outputs: Tensor index of each model output (may be a view).
        extern_source: C text that defines the ``extern`` calls' kernels
            (appended to ``model.c``; set by the backend that chose them).
    """

    tensors: list[TensorInfo] = field(default_factory=list)
    calls: list[KernelCall] = field(default_factory=list)
    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)
    extern_source: str = ""

    def root(self, index: int) -> int:
        """Index of the tensor that owns the bytes of ``index`` (follows views)."""
        while self.tensors[index].kind == "view":
            index = self.tensors[index].base
        return index

    def kernel_names(self) -> list[str]:
        """Names of the PrimFuncs ``main`` calls, each once, in first-call order."""
        return list(dict.fromkeys(c.func for c in self.calls if not c.extern))

    def extern_names(self) -> list[str]:
        """Names of the C kernels ``main`` calls, each once."""
        return list(dict.fromkeys(c.func for c in self.calls if c.extern))

    def weights(self) -> list[TensorInfo]:
        """The weight tensors, in first-use order."""
        return [t for t in self.tensors if t.kind == "weight"]


def _dtype_bits(dtype: str) -> int:
    if dtype == "bool":
        return 8
    digits = "".join(ch for ch in dtype if ch.isdigit())
    if not digits:
        raise CompileError(f"tensor dtype '{dtype}' has no bit width", hint="Report the model; this is a bug.")
    return int(digits)


def _key(obj: Any) -> int:
    # Relax Var overloads comparison operators, so dictionaries key on the
    # object handle instead of the object.
    return int(obj.__chandle__())


def _static_shape(ty: Any, what: str) -> tuple[int, ...]:
    from tvm import relax

    shape = getattr(ty, "shape", None)
    if not isinstance(shape, relax.ShapeExpr):
        raise CompileError(
            f"{what} has no static shape ({ty})",
            hint="Give every input a fixed shape with --input-shape NAME=1x3x224x224.",
        )
    dims = []
    for v in shape.values:
        try:
            dims.append(int(v))
        except (TypeError, ValueError):
            raise CompileError(
                f"{what} has a symbolic dimension ({ty})",
                hint="Give every input a fixed shape with --input-shape NAME=1x3x224x224.",
            ) from None
    return tuple(dims)


class _Walker:
    def __init__(self) -> None:
        self.graph = AotGraph()
        self.by_var: dict[int, int] = {}
        self.by_const: dict[int, int] = {}
        self.tuples: dict[int, list[int]] = {}
        self.unsupported: list[str] = []

    def add(self, name: str, ty: Any, kind: str, **extra: Any) -> int:
        index = len(self.graph.tensors)
        shape = _static_shape(ty, f"tensor '{name}'")
        self.graph.tensors.append(TensorInfo(index, name, shape, str(ty.dtype), kind, **extra))
        return index

    def tensor_of(self, expr: Any) -> int:
        import tvm
        from tvm import relax

        if isinstance(expr, relax.Var):
            key = _key(expr)
            if key not in self.by_var:
                raise CompileError(
                    f"'{expr.name}' is used before it is defined in the lowered model",
                    hint="Report the model; this is a bug in edgekit's AOT emitter.",
                )
            return self.by_var[key]
        if isinstance(expr, tvm.ir.GenericConst):
            key = _key(expr)
            if key not in self.by_const:
                value = expr.value.numpy()
                self.by_const[key] = self.add(f"w{len(self.by_const)}", expr.ty, "weight", value=value)
            return self.by_const[key]
        raise CompileError(
            f"kernel argument of type {type(expr).__name__} is not supported by the AOT emitter",
            hint="Only static tensor arguments can be emitted; report the model.",
        )

    def binding(self, var: Any, value: Any, lowered: Any) -> None:
        import tvm
        from tvm import relax

        if isinstance(value, relax.Var):
            self.by_var[_key(var)] = self.tensor_of(value)
            return
        if isinstance(value, tvm.ir.GenericConst):
            self.by_var[_key(var)] = self.tensor_of(value)
            return
        if isinstance(value, relax.Tuple):
            self.tuples[_key(var)] = [self.tensor_of(f) for f in value.fields]
            return
        if isinstance(value, relax.TupleGetItem) and _key(value.tuple_value) in self.tuples:
            self.by_var[_key(var)] = self.tuples[_key(value.tuple_value)][int(value.index)]
            return
        if not isinstance(value, relax.Call):
            self.unsupported.append(f"{var.name} = {type(value).__name__}")
            return
        op = value.op
        if isinstance(op, relax.GlobalVar):
            func = lowered[op]
            if not isinstance(func, tvm.tirx.PrimFunc):
                self.unsupported.append(f"call of non-kernel function {op.name_hint}")
                return
            args = [self.tensor_of(a) for a in value.args]
            self.graph.calls.append(KernelCall(op.name_hint, args))
            return
        if isinstance(op, relax.ExternFunc):
            args = [self.tensor_of(a) for a in value.args]
            self.graph.calls.append(KernelCall(str(op.global_symbol), args, extern=True))
            return
        name = getattr(op, "name", type(op).__name__)
        if name in ALLOC_OPS:
            self.by_var[_key(var)] = self.add(var.name, var.ty, "arena")
            return
        if name in VIEW_OPS:
            base = self.tensor_of(value.args[0])
            view = self.add(var.name, var.ty, "view", base=base)
            if self.graph.tensors[view].nbytes > self.graph.tensors[self.graph.root(base)].nbytes:
                self.unsupported.append(f"{name} of '{var.name}' is larger than its base")
            self.by_var[_key(var)] = view
            return
        self.unsupported.append(name)


def extract_graph(lowered: Any) -> AotGraph:
    """Walks ``lowered["main"]`` into an :class:`AotGraph`.

    Raises:
        CompileError: listing every construct the emitter cannot place (all at
            once), or when an output is not computed by a kernel.
    """
    from tvm import relax

    main = lowered["main"]
    walker = _Walker()
    graph = walker.graph
    for i, param in enumerate(main.params):
        t = walker.add(param.name, param.ty, "input", input_index=i)
        walker.by_var[_key(param)] = t
        graph.inputs.append(t)

    body = main.body
    if not isinstance(body, relax.SeqExpr):
        raise CompileError("the lowered model has no body", hint="Report the model; this is a bug.")
    for block in body.blocks:
        for binding in block.bindings:
            if not isinstance(binding, relax.VarBinding):
                walker.unsupported.append(type(binding).__name__)
                continue
            walker.binding(binding.var, binding.value, lowered)
    if walker.unsupported:
        names = sorted(set(walker.unsupported))
        raise CompileError(
            f"the AOT C emitter cannot place: {', '.join(names)}",
            hint="These Relax constructs have no static C form yet; compile for a board with the llvm codegen, "
            "or report the model.",
            unsupported=names,
        )

    result = body.body
    if isinstance(result, relax.Tuple):
        outs = [walker.tensor_of(f) for f in result.fields]
    elif isinstance(result, relax.Var) and _key(result) in walker.tuples:
        outs = walker.tuples[_key(result)]
    else:
        outs = [walker.tensor_of(result)]
    for t in outs:
        kind = graph.tensors[graph.root(t)].kind
        if kind != "arena":
            raise CompileError(
                f"model output '{graph.tensors[t].name}' is a model {'input' if kind == 'input' else 'constant'}, "
                "not computed by a kernel",
                hint="Remove the pass-through output from the model before compiling for a microcontroller.",
            )
        graph.outputs.append(t)
    if not graph.calls:
        raise CompileError("the lowered model calls no kernels", hint="Check that the model computes something.")
    logger.info(
        "AOT graph: %d kernel calls, %d tensors (%d weights)",
        len(graph.calls),
        len(graph.tensors),
        len(graph.weights()),
    )
    return graph
