"""The int8 option of the advice for a model that does not fit an MCU board.

The compiler refuses a model whose planned arena exceeds the board's RAM and
plans the options it can without other layers (a smaller input, a split into
two packages; :func:`edgekit.compiler.backends.aot_c.memory.shrink_advice`).
Whether int8 activations would fit needs the quantizer, which the compiler
does not call: here the api quantizes the model, plans it with compile's own
planner, and puts that advice first, as ``compile`` and ``inspect`` print it.
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np

from edgekit.compiler.backends.aot_c.memory import (
    Advice,
    MemoryPlan,
    ShrinkContext,
    capitalized,
    fit_verdict,
    kib,
    shrink_advice,
)
from edgekit.core.errors import DoesNotFitError
from edgekit.core.profiles import Board, Target
from edgekit.frontend.loader import PreparedModel, load_model

__all__ = ["int8_advice", "all_advice", "with_int8_advice"]

logger = logging.getLogger(__name__)

#: Operators of a model that is already quantized: int8 is not a new option for it.
_QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul"}


def int8_advice(
    plan: MemoryPlan,
    board: Board,
    target: Target | None,
    replan: Callable[[PreparedModel], MemoryPlan],
    prepared: PreparedModel,
) -> Advice | None:
    """Quantizes ``prepared`` to int8 and plans it with ``replan``.

    Returns:
        The int8 option (capitalized, as the hint joins it), or ``None`` when
        the model is already quantized.
    """
    if {n.op_type for n in prepared.model.graph.node} & _QUANTIZED_OPS:
        return None
    from edgekit.compress.config import QuantConfig
    from edgekit.compress.quantize import quantize

    # Sizes do not depend on the calibration ranges, so random data plans the
    # same arena as the user's own calibration set would.
    rng = np.random.default_rng(0)
    calibration = {s.name: rng.standard_normal((4, *s.shape[1:])).astype(s.dtype) for s in prepared.inputs}
    try:
        quantized = quantize(prepared.model, QuantConfig.for_board(board, target), calibration, board=board)
        int8 = replan(load_model(quantized.model))
    except Exception as exc:  # advice is best effort: the refusal itself must still be reported
        logger.debug("int8 plan failed", exc_info=True)
        return capitalized(Advice("int8", f"int8: not checked ({getattr(exc, 'message', type(exc).__name__)})."))
    if int8.arena_bytes < plan.arena_bytes:
        return capitalized(Advice(
            "int8", f"int8 (`edgekit compress --quantize int8 --board {board.name}`, then compile that) plans an "
            f"arena of {kib(int8.arena_bytes)} ({fit_verdict(int8.arena_bytes, board)}).", int8.arena_bytes, True,
        ))  # fmt: skip
    floats = [t for t in int8.live_at_peak if t.dtype.startswith("float")]
    why = f"; {floats[0].describe()} stays float32 (a layer edgekit runs in float)" if floats else ""
    return capitalized(Advice("int8", f"int8 would not help: quantized, this model still plans an arena of "
                              f"{kib(int8.arena_bytes)}{why}.", int8.arena_bytes, False))  # fmt: skip


def all_advice(
    plan: MemoryPlan,
    board: Board,
    target: Target | None,
    replan: Callable[[PreparedModel], MemoryPlan],
    prepared: PreparedModel,
) -> list[Advice]:
    """Every option that could shrink the arena, int8 first, each planned with compile's planner."""
    first = int8_advice(plan, board, target, replan, prepared)
    return ([first] if first else []) + shrink_advice(plan, board, replan=replan, prepared=prepared)


def with_int8_advice(exc: DoesNotFitError) -> DoesNotFitError:
    """``exc`` with the int8 option added to its advice and hint.

    Returns ``exc`` itself when it was not refused for RAM before the build
    (no ``shrink`` context) or when the model is already quantized.
    """
    shrink: ShrinkContext | None = exc.fields.get("shrink")
    if shrink is None:
        return exc
    first = int8_advice(shrink.plan, shrink.board, shrink.target, shrink.replan, shrink.prepared)
    if first is None:
        return exc
    advice = [first.to_json(), *exc.fields.get("advice", [])]
    fields = {**exc.fields, "advice": advice, "shrink": None}
    return DoesNotFitError(exc.message, hint=" ".join(a["text"] for a in advice), **fields)
