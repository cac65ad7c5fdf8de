"""One memory answer for ``inspect`` and ``compile`` on microcontroller boards.

``edgekit inspect --board`` and ``edgekit compile`` used to disagree: inspect
walked the ONNX graph (every node output a separate buffer, freed after its
last reader), compile planned the arena over the *fused* kernels TVM emits (a
Conv+PReLU is one kernel writing one buffer). On an MTCNN O-Net-shaped model
that was 529 KiB ("does not fit") against a 357.6 KiB arena.

This module runs compile's own front half — import, int8 offload, lowering to
kernel calls (:func:`lower_to_graph`, which :func:`edgekit.compiler.backends.aot_c.pipeline.compile_aot`
also calls) — and compile's own planner (:func:`edgekit.compiler.backends.aot_c.layout.layout_model`
over :func:`edgekit.compiler.backends.aot_c.plan.plan_arena`), but stops before the
kernel build. The result, a :class:`MemoryPlan`, is what inspect reports and
what compile checks the board against *before* building (issue 16 item 6).
The only thing the build adds is the kernels' workspaces (temporaries a fused
kernel keeps in TVM's workspace pool); the plan says so in its assumptions,
and compile checks again, with them, after the build.

When a model does not fit, :func:`shrink_advice` says what is largest and what
would shrink it *for this model*, each candidate planned with the same
planner: a smaller input, or splitting the model into two packages at the best
kernel boundary. The third option, int8 activations, needs the quantizer, which
the compiler does not call: the refusal carries a :class:`ShrinkContext` and
:mod:`edgekit.api.fit_advice` plans the quantized model and adds its advice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Sequence

import onnx

from edgekit.compiler.backends.aot_c.graph import AotGraph, extract_graph
from edgekit.compiler.backends.aot_c.layout import AotLayout, layout_model
from edgekit.compiler.backends.aot_c.plan import Buffer, plan_arena
from edgekit.compiler.firmware import firmware_spec
from edgekit.compiler.image_check import slot_capacity
from edgekit.compiler.backend import ProgressFn, no_progress
from edgekit.core.errors import DoesNotFitError, EdgekitError

if TYPE_CHECKING:
    from edgekit.core.profiles import Board, Target
    from edgekit.frontend.analysis import BoardFit
    from edgekit.frontend.loader import PreparedModel

__all__ = [
    "PLANNER",
    "PlannedTensor",
    "MemoryPlan",
    "lower_to_graph",
    "plan_graph",
    "plan_memory",
    "check_plan_fits",
    "board_fit",
    "arena_limit",
    "slot_upper_bound",
    "shrink_advice",
    "Advice",
    "ShrinkContext",
    "capitalized",
    "fit_verdict",
    "kib",
    "best_split",
]

logger = logging.getLogger(__name__)

#: How the arena is planned; printed by inspect and kept in the plan's JSON.
PLANNER = (
    "edgekit AOT arena planner: one arena for inputs, outputs and every fused kernel's output, "
    "greedy by size over kernel-call lifetimes (edgekit.compiler.backends.aot_c.plan), the plan compile uses"
)

#: Largest tensors named in a report or an error.
_SHOWN = 3


def kib(n: int) -> str:
    """``1536 B (1.5 KiB)``."""
    return f"{n} B ({n / 1024:.1f} KiB)"


@dataclass(frozen=True)
class PlannedTensor:
    """One buffer of the arena, described for a person.

    Attributes:
        name: Relax name (``alloc3``), ``ws<step>`` for a workspace, or the model input's name.
        shape: Static shape (empty for a workspace).
        dtype: Element type.
        nbytes: Bytes.
        kernel: Kernel call that writes it (``model input`` for an input).
        layers: ONNX nodes whose output has this shape, matched in graph
            order (a fused kernel covers several: ``Conv 'c1'``, ``PRelu 'p1'``).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    kernel: str
    layers: tuple[str, ...] = ()

    def describe(self) -> str:
        """``alloc 1x32x46x46 float32, 270,848 B (264.5 KiB), written by fused_conv2d_add_prelu (ONNX Conv 'c1', PRelu 'p1')``."""
        shape = "x".join(map(str, self.shape))
        what = f"{self.name} {shape} {self.dtype}".replace("  ", " ") if shape else self.name
        onnx_part = f" (ONNX {', '.join(self.layers)})" if self.layers else ""
        return f"{what}, {kib(self.nbytes)}, written by {self.kernel}{onnx_part}"

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "bytes": self.nbytes,
                "kernel": self.kernel, "onnx_layers": list(self.layers)}  # fmt: skip


@dataclass(frozen=True)
class MemoryPlan:
    """The memory a model needs on a microcontroller board, as compile plans it.

    Attributes:
        board: Board name.
        arena_bytes: The planned arena (activation RAM), as compile's ``memory.arena_bytes``.
        arena_bytes_without_reuse: Sum of all arena buffers.
        dense_arena_bytes: The arena with every weight dense (no decode buffers).
        weight_bytes: ``weights.bin`` as compile stores it.
        dense_weight_bytes: ``weights.bin`` with every weight dense.
        weight_storage: ``dense`` or ``sparse`` (some weights bitmask-sparse).
        kernel_calls: Kernel calls of one inference.
        peak_step: Kernel call at which the most bytes are alive.
        peak_kernel: Name of that kernel.
        live_at_peak: The buffers alive at ``peak_step``, largest first.
        assumptions: What the plan does not know before the build.
        planner: :data:`PLANNER`.
    """

    board: str
    arena_bytes: int
    arena_bytes_without_reuse: int
    dense_arena_bytes: int
    weight_bytes: int
    dense_weight_bytes: int
    weight_storage: str
    kernel_calls: int
    peak_step: int
    peak_kernel: str
    live_at_peak: tuple[PlannedTensor, ...]
    assumptions: tuple[str, ...] = ()
    planner: str = PLANNER
    buffers: tuple[Buffer, ...] = field(default=(), repr=False, compare=False)
    last_use: dict[str, int] = field(default_factory=dict, repr=False, compare=False)
    kernels: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        """The ``memory_plan`` object of ``inspect --json``."""
        return {
            "planner": self.planner,
            "assumptions": list(self.assumptions),
            "board": self.board,
            "arena_bytes": self.arena_bytes,
            "arena_bytes_without_reuse": self.arena_bytes_without_reuse,
            "dense_arena_bytes": self.dense_arena_bytes,
            "weight_bytes": self.weight_bytes,
            "dense_weight_bytes": self.dense_weight_bytes,
            "weight_storage": self.weight_storage,
            "kernel_calls": self.kernel_calls,
            "peak_step": self.peak_step,
            "peak_kernel": self.peak_kernel,
            "live_at_peak": [t.to_json() for t in self.live_at_peak],
        }


# --------------------------------------------------------------------------- #
# The front half of compile
# --------------------------------------------------------------------------- #


def lower_to_graph(
    prepared: "PreparedModel",
    tvm_target: Any,
    *,
    opt_level: int = 3,
    fast_math: bool = True,
    int8_kernels: bool = True,
    progress: ProgressFn = no_progress,
) -> tuple[Any, AotGraph]:
    """Imports ``prepared`` into Relax and lowers it to kernel calls (no kernel build).

    Returns:
        ``(lowered module, graph)``; the graph's ``extern_source`` is set when
        int8 layers run on edgekit's C kernels.
    """
    from edgekit.compiler.backends.aot_c.lower import import_model, lower_for_aot
    from edgekit.compiler.backends.aot_c.nn import (
        kernel_source,
        offload_int8,
        uses_dsp,
        uses_neon,
        uses_rv64,
        uses_rvv,
        uses_sdot,
    )

    progress("import", "importing into TVM Relax")
    mod = import_model(prepared)
    progress("lower", "lowering to kernel calls")
    if int8_kernels:
        mod, _ = offload_int8(mod, tvm_target)
    lowered = lower_for_aot(mod, tvm_target, opt_level, fast_math=fast_math)
    graph = extract_graph(lowered)
    if graph.extern_names():
        graph.extern_source = kernel_source(uses_dsp(tvm_target), uses_neon(tvm_target), uses_rv64(tvm_target),
                                            uses_sdot(tvm_target), uses_rvv(tvm_target))
    return lowered, graph


# --------------------------------------------------------------------------- #
# Describing a plan
# --------------------------------------------------------------------------- #


def _onnx_layers(graph: AotGraph, model: onnx.ModelProto) -> dict[int, tuple[str, ...]]:
    """Arena tensor index -> the ONNX nodes it stands for, matched by output shape.

    Relax names its buffers ``alloc<N>``; the ONNX names are gone after
    fusion. The tensors are taken in the order kernels write them, and each
    claims the first run of consecutive unclaimed ONNX nodes (graph order)
    whose output has its shape: a fused Conv+PReLU claims both.
    """
    from edgekit.frontend.analysis import ShapeTable

    shapes = ShapeTable(model.graph)
    nodes = [(n, shapes.shape.get(n.output[0]) if n.output else None) for n in model.graph.node]
    claimed = [False] * len(nodes)
    written: list[int] = []
    for call in graph.calls:
        dest = graph.root(call.args[-1]) if call.args else -1
        if dest >= 0 and graph.tensors[dest].kind == "arena" and dest not in written:
            written.append(dest)
    out: dict[int, tuple[str, ...]] = {}
    for index in written:
        shape = graph.tensors[index].shape
        start = next((i for i, (n, s) in enumerate(nodes) if not claimed[i] and s == shape), None)
        if start is None:
            continue
        run = []
        i = start
        while i < len(nodes) and nodes[i][1] == shape and not claimed[i]:
            claimed[i] = True
            node = nodes[i][0]
            run.append(f"{node.op_type} '{node.name or node.output[0]}'")
            i += 1
        out[index] = tuple(run)
    return out


def _writers(graph: AotGraph) -> dict[int, str]:
    """Root tensor index -> the kernel that writes it (its destination argument)."""
    out: dict[int, str] = {}
    for call in graph.calls:
        if call.args:
            out.setdefault(graph.root(call.args[-1]), call.func)
    return out


def _live_bytes(buffers: Sequence[Buffer], step: int) -> int:
    return sum(b.size for b in buffers if b.first <= step <= b.last)


def _describe(graph: AotGraph, buffers: Sequence[Buffer], step: int, model: onnx.ModelProto) -> tuple[PlannedTensor, ...]:
    layers = _onnx_layers(graph, model)
    writers = _writers(graph)
    live = sorted((b for b in buffers if b.first <= step <= b.last and b.size), key=lambda b: (-b.size, b.name))
    out = []
    for b in live:
        if b.name.startswith("ws"):
            out.append(PlannedTensor(b.name, (), "", b.size, f"workspace of {graph.calls[int(b.name[2:])].func}"))
            continue
        t = graph.tensors[int(b.name[1:])]
        if t.kind == "input":
            out.append(PlannedTensor(t.name, t.shape, t.dtype, b.size, "the model input"))
        elif t.kind == "weight":
            out.append(PlannedTensor(t.name, t.shape, t.dtype, b.size, "the decoder of a sparse weight"))
        else:
            out.append(PlannedTensor(t.name, t.shape, t.dtype, b.size, writers.get(t.index, "?"), layers.get(t.index, ())))
    return tuple(out)


def plan_graph(
    graph: AotGraph,
    prepared: "PreparedModel",
    board: "Board",
    *,
    weight_storage: str = "auto",
    workspace: dict[str, int] | None = None,
) -> MemoryPlan:
    """Plans the arena and the weights of a lowered graph exactly as compile does.

    Args:
        graph: From :func:`lower_to_graph`.
        prepared: The model (for ONNX names in the description).
        board: The board (its RAM decides ``auto`` weight storage).
        weight_storage: ``auto``, ``dense`` or ``sparse``, as ``compile --weight-storage``.
        workspace: Kernel workspaces if the kernels were built; ``None``
            before the build (then 0, said in the assumptions).
    """
    measured = workspace is not None
    ws = dict(workspace or {})
    layout: AotLayout = layout_model(graph, ws, sparse_weights=weight_storage != "dense")
    ram = board.memory.ram_bytes
    if weight_storage == "auto" and layout.decoded and ram and layout.arena_bytes > ram:
        layout = layout_model(graph, ws, sparse_weights=False)  # what compile's auto mode falls back to
    buffers = layout.buffers
    last_use: dict[str, int] = {}
    for step, call in enumerate(graph.calls):
        for arg in call.args:
            last_use[f"t{graph.root(arg)}"] = step
    steps = range(-1, len(graph.calls) + 1)
    peak_step = max(steps, key=lambda s: (_live_bytes(buffers, s), -s))
    assumptions = [
        "weights stay in flash (read in place); only activations, model inputs/outputs, kernel workspaces "
        "and decoded sparse weights use the arena",
    ]
    inputs_kept = any(b.last >= len(graph.calls) for b in buffers if b.name in {f"t{i}" for i in graph.inputs})
    assumptions.append(
        "model inputs stay in the arena for the whole run" if inputs_kept
        else "a model input's bytes are reused after its last reader (the host writes inputs before every run)"
    )
    if not measured:
        assumptions.append(
            "kernel workspaces are not counted: only the kernel build measures them (compile checks again "
            "with them; most fused kernels need none)"
        )
    return MemoryPlan(
        board=board.name,
        arena_bytes=layout.arena_bytes,
        arena_bytes_without_reuse=layout.plan.total_bytes,
        dense_arena_bytes=layout.dense_arena_bytes,
        weight_bytes=layout.weight_bytes,
        dense_weight_bytes=layout.dense_weight_bytes,
        weight_storage="sparse" if layout.decoded else "dense",
        kernel_calls=len(graph.calls),
        peak_step=peak_step,
        peak_kernel=graph.calls[peak_step].func if 0 <= peak_step < len(graph.calls) else "(between runs)",
        live_at_peak=_describe(graph, buffers, peak_step, prepared.model),
        assumptions=tuple(assumptions),
        buffers=tuple(buffers),
        last_use=last_use,
        kernels=tuple(c.func for c in graph.calls),
    )


def plan_memory(
    prepared: "PreparedModel",
    board: "Board",
    target: "Target",
    *,
    weight_storage: str = "auto",
    opt_level: int = 3,
    int8_kernels: bool = True,
) -> MemoryPlan:
    """Plans ``prepared`` for an ``aot-c`` board without building kernels (what inspect runs).

    The model goes through compile's own legalization, import and lowering
    first, so the plan is compile's plan (less the kernel workspaces).

    Raises:
        CompileError: when TVM cannot import or lower the model.
    """
    from edgekit.frontend.legalize import legalize_prepared

    legalize_prepared(prepared)
    _, graph = lower_to_graph(prepared, target.tvm_target(), opt_level=opt_level, int8_kernels=int8_kernels)
    return plan_graph(graph, prepared, board, weight_storage=weight_storage)


# --------------------------------------------------------------------------- #
# Fit check and advice
# --------------------------------------------------------------------------- #


def slot_upper_bound(board: "Board") -> int:
    """The most one weights slot could hold if the firmware took no flash at all (0: flash not limited)."""
    flash = board.memory.flash_bytes
    return slot_capacity(0, flash) if flash else 0


def arena_limit(board: "Board") -> tuple[int, str]:
    """The most RAM the arena could get on ``board`` (0: not limited), and why.

    With a firmware image described in ``firmware_stubs`` that is the RAM the
    image links into (the board's, or one bank of several) less the stack
    its linker script reserves; the agent's own ``.data``/``.bss`` come off
    it too, but are only known after linking.

    Raises:
        ConfigError: the firmware's stack takes all of the board's RAM.
    """
    ram = board.memory.ram_bytes
    spec = firmware_spec(board)
    if spec is None or not ram:
        return ram, f"RAM {kib(ram)}"
    limit = spec.arena_ram(ram)
    linked = min(r for r in (ram, spec.ram_bytes) if r)
    bank = "" if linked == ram else f" (the bank the firmware links into, of the board's {kib(ram)})"
    return limit, f"{kib(limit)} of RAM for the arena (RAM {kib(linked)}{bank} less the firmware's {spec.stack_bytes} B stack)"


def board_fit(plan: MemoryPlan, board: "Board") -> "BoardFit":
    """The plan as inspect's fit table: the arena against RAM, the weights
    against one weights slot (what compile checks before the build)."""
    from edgekit.frontend.analysis import BoardFit

    return BoardFit(
        board=board.name,
        ram_bytes=arena_limit(board)[0],
        flash_bytes=slot_upper_bound(board),
        needed_ram=plan.arena_bytes,
        needed_flash=plan.weight_bytes,
        planner=plan.planner,
        ram_label="RAM (planned arena)",
        flash_label="flash (weights, one of two slots)",
    )


def check_plan_fits(
    plan: MemoryPlan,
    board: "Board",
    target: "Target | None" = None,
    *,
    replan: Callable[["PreparedModel"], MemoryPlan] | None = None,
    prepared: "PreparedModel | None" = None,
) -> None:
    """Refuses, before any kernel is built, a plan that cannot fit ``board``.

    RAM: the arena (without workspaces, which only add, and with weights
    dense, which needs the least) must fit :func:`arena_limit`. Flash: the weights must fit one weights slot even if the firmware
    took no flash at all (the device keeps two slots, verify-then-commit; the
    exact slot is checked on the linked image). Both are lower bounds of
    what the build needs, so nothing that could fit is refused.

    Args:
        plan: From :func:`plan_graph`.
        board: The board.
        target: Its target (for the int8 advice the api adds).
        replan: Plans another version of the model (for :func:`shrink_advice`);
            without it the error names the largest tensors only.
        prepared: The model, for the advice.

    Raises:
        DoesNotFitError: with the numbers, the largest tensors and what would
            shrink them; when RAM is short and ``replan`` and ``prepared`` are
            given, its ``shrink`` field is a :class:`ShrinkContext` (for the
            api's int8 advice).
    """
    ram, ram_text = arena_limit(board)
    slot = slot_upper_bound(board)
    # With every weight dense the arena is smallest; whether sparse weights'
    # decode buffers still fit is compile's storage choice after the build.
    arena = min(plan.arena_bytes, plan.dense_arena_bytes)
    problems = []
    ram_short = bool(ram and arena > ram)
    if ram_short:
        problems.append(f"arena {kib(arena)} > {ram_text}")
    if slot and plan.weight_bytes > slot:
        problems.append(
            f"the weights ({kib(plan.weight_bytes)}) do not fit a weights slot: the device keeps two slots "
            f"(verify-then-commit) in {kib(board.memory.flash_bytes)} of flash, so even with no firmware one "
            f"holds at most {kib(slot)}"
        )
    if not problems:
        return
    advice = shrink_advice(plan, board, replan=replan, prepared=prepared) if ram_short else []
    shrink = ShrinkContext(plan, board, target, prepared, replan) if ram_short and replan and prepared else None
    largest = "; ".join(t.describe() for t in plan.live_at_peak[:_SHOWN])
    message = f"the model does not fit board '{board.name}' (planned before the build): {'; '.join(problems)}"
    if ram_short:
        message += f". Largest tensors alive at kernel {plan.peak_step + 1} of {plan.kernel_calls} ({plan.peak_kernel}): {largest}"
    hint = " ".join(a.text for a in advice) if advice else (
        "Shrink the weights: quantize to int8 (`edgekit compress --quantize int8`), prune with "
        "--weight-storage auto, or pick a board with more flash."
    )
    raise DoesNotFitError(
        message,
        hint=hint,
        board=board.name,
        arena_bytes=arena,
        weight_bytes=plan.weight_bytes,
        ram_bytes=ram,
        flash_bytes=board.memory.flash_bytes,
        slot_bytes_at_most=slot,
        largest=[t.to_json() for t in plan.live_at_peak[:_SHOWN]],
        advice=[a.to_json() for a in advice],
        before_build=True,
        shrink=shrink,
    )


@dataclass(frozen=True)
class ShrinkContext:
    """What planning another version of a refused model needs (the ``shrink``
    field of :func:`check_plan_fits`'s error).

    Attributes:
        plan: The plan that does not fit.
        board: The board.
        target: Its target (the int8 defaults of its code generator).
        prepared: The model as compile planned it.
        replan: Plans another version of the model with compile's options.
    """

    plan: MemoryPlan
    board: "Board"
    target: "Target | None"
    prepared: "PreparedModel"
    replan: Callable[["PreparedModel"], MemoryPlan]


def best_split(plan: MemoryPlan) -> tuple[int, int, int] | None:
    """The kernel boundary that best splits the model into two packages run one after the other.

    Part A runs kernel calls ``0..s`` and hands every tensor still needed to
    part B (through the host); B starts with those tensors as its inputs.
    Each part plans its own arena with the same planner. Model inputs and
    outputs live only as long as a kernel reads them (the whole-model plan
    keeps them to the end of the run for the host).

    Returns:
        ``(s, arena of A, arena of B)`` for the ``s`` minimising the larger of
        the two, or ``None`` if the model has fewer than two kernel calls.
    """
    n = plan.kernel_calls
    if n < 2:
        return None
    buffers = [replace(b, first=max(b.first, 0), last=plan.last_use.get(b.name, b.last)) for b in plan.buffers]
    best: tuple[int, int, int] | None = None
    for s in range(n - 1):
        part_a = [replace(b, last=min(b.last, s)) for b in buffers if b.first <= s]
        part_b = [replace(b, first=max(b.first, s + 1)) for b in buffers if b.last > s]
        a = plan_arena(part_a).arena_bytes
        b = plan_arena(part_b).arena_bytes
        if best is None or max(a, b) < max(best[1], best[2]):
            best = (s, a, b)
    return best


@dataclass(frozen=True)
class Advice:
    """One way to shrink the arena, planned for this model.

    Attributes:
        option: ``int8``, ``input`` or ``split``.
        text: A sentence for people, true for this model.
        arena_bytes: The arena the option plans (the larger part for a
            split), or ``None`` when it could not be planned.
        helps: Whether that arena is smaller than the current one.
    """

    option: str
    text: str
    arena_bytes: int | None = None
    helps: bool = False

    def to_json(self) -> dict[str, Any]:
        """JSON form (the ``advice`` field of the error, inspect's ``memory_plan.advice``)."""
        return {"option": self.option, "text": self.text, "arena_bytes": self.arena_bytes, "helps": self.helps}


def fit_verdict(arena: int, board: "Board") -> str:
    """``fits``, or how much RAM the arena may use on ``board``."""
    ram = arena_limit(board)[0]
    return "fits" if not ram or arena <= ram else f"still more than the {kib(ram)} of RAM for the arena"


def _input_advice(plan: MemoryPlan, board: "Board", replan: Callable, prepared: "PreparedModel") -> Advice | None:
    if len(prepared.inputs) != 1 or not prepared.source:
        return None
    spec = prepared.inputs[0]
    if len(spec.shape) != 4 or min(spec.shape[2:]) < 16:
        return None
    smaller = (*spec.shape[:2], spec.shape[2] // 2, spec.shape[3] // 2)
    from edgekit.frontend.loader import load_model

    text = "x".join(map(str, smaller))
    try:
        half = replan(load_model(prepared.source, {spec.name: smaller}))
    except EdgekitError:
        return Advice("input", f"a smaller input ({spec.name}={text}) is not possible: this model does not accept it.")
    return Advice("input", f"--input-shape {spec.name}={text} (half height and width) plans an arena of "
                  f"{kib(half.arena_bytes)} ({fit_verdict(half.arena_bytes, board)}).",
                  half.arena_bytes, half.arena_bytes < plan.arena_bytes)  # fmt: skip


def _split_advice(plan: MemoryPlan, board: "Board") -> Advice | None:
    split = best_split(plan)
    if split is None:
        return None
    s, a, b = split
    larger = max(a, b)
    if larger >= plan.arena_bytes * 0.9:
        return Advice("split", f"splitting the model into two packages would not help: the best split still "
                      f"plans an arena of {kib(larger)}.", larger, False)  # fmt: skip
    return Advice("split", f"splitting the model into two packages after kernel {s + 1} of {plan.kernel_calls} "
                  f"({plan_kernel(plan, s)}) plans arenas of {kib(a)} and {kib(b)} ({fit_verdict(larger, board)}; "
                  "edgekit does not split models itself).", larger, True)  # fmt: skip


def plan_kernel(plan: MemoryPlan, step: int) -> str:
    """Name of the kernel called at ``step``."""
    return plan.kernels[step] if 0 <= step < len(plan.kernels) else "?"


def shrink_advice(
    plan: MemoryPlan,
    board: "Board",
    *,
    replan: Callable[["PreparedModel"], MemoryPlan] | None = None,
    prepared: "PreparedModel | None" = None,
) -> list[Advice]:
    """What would shrink this model's arena, each option planned with the same planner.

    Args:
        plan: The plan that does not fit.
        board: The board.
        replan: Plans another version of the model; without it only the split is checked.
        prepared: The model (for the smaller input).

    Returns:
        One :class:`Advice` per option, true for this model (an option that
        does not shrink the arena says so). int8 is not among them: the
        quantizer is the api's to call (:mod:`edgekit.api.fit_advice`).
    """
    advice = []
    if replan is not None and prepared is not None:
        advice.append(_input_advice(plan, board, replan, prepared))
    advice.append(_split_advice(plan, board))
    return [capitalized(a) for a in advice if a is not None]


def capitalized(advice: Advice) -> Advice:
    """``advice`` with its sentence starting upper case (as the hint joins them)."""
    return replace(advice, text=advice.text[0].upper() + advice.text[1:])
