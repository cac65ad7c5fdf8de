"""``edgekit inspect``: what a model is and whether it fits a board — MACs,
parameters, memory, operators, the compiler front end's verdict, a
microcontroller's arena plan and an accelerator's offload."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edgekit.core.profiles import Board, load_profiles
from edgekit.frontend.analysis import ModelReport, analyze
from edgekit.frontend.compile_check import FrontEndCheck, check_frontend
from edgekit.frontend.loader import PreparedModel, load_model

__all__ = ["InspectResult", "inspect_model"]


@dataclass
class InspectResult:
    """A model's report.

    Attributes:
        report: MACs, parameters, weight bytes, peak activations, ops, layers,
            and the fit on the board (``report.fits``).
        frontend: Whether TVM's ONNX importer takes the model as edgekit
            prepares it, and what the preparation changed.
        plan: On a microcontroller board: the compiler's own arena plan
            (``None`` elsewhere).
        advice: When that plan does not fit: what would shrink it.
        ram_for_arena: Bytes of RAM the arena may use on the board, and why.
        npu: On an accelerator board: which layers run on it.
    """

    report: ModelReport
    frontend: FrontEndCheck
    plan: Any = None
    advice: list[Any] = field(default_factory=list)
    ram_for_arena: tuple[int | None, str] = (None, "")
    npu: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON form (``edgekit inspect --json``)."""
        data = self.report.to_json()
        data["frontend"] = self.frontend.to_json()
        if self.plan is not None:
            limit, note = self.ram_for_arena
            data["memory_plan"] = {**self.plan.to_json(), "ram_for_arena_bytes": limit, "ram_for_arena": note,
                                   "advice": [a.to_json() for a in self.advice]}  # fmt: skip
        if self.npu is not None:
            data["npu"] = self.npu
        return data


def inspect_model(
    model: str | os.PathLike[str],
    *,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    board: str | None = None,
    board_dirs: Iterable[str | os.PathLike[str]] = (),
) -> InspectResult:
    """Loads ``model`` as edgekit compiles it and reports on it, on ``board``
    when given.

    Example::

        result = inspect_model("model.onnx", board="stm32h7")
        print(result.report.macs, result.report.fits.ram_ok)

    Raises:
        BoardNotFoundError: an unknown board (checked before the model loads).
        ModelError: the model cannot be read or prepared.
    """
    dirs = list(board_dirs)
    # Resolve the board before loading: a typo should not cost a model load.
    profile = load_profiles(dirs).board(board) if board else None
    prepared = load_model(model, input_shapes or {})
    result = InspectResult(analyze(prepared, profile),
                           check_frontend(prepared))  # on a copy, before the memory plan legalizes `prepared` in place
    if profile is None:
        return result
    _memory_plan(result, prepared, profile, dirs)
    result.npu = _npu_offload(prepared, profile, dirs)
    return result


def _memory_plan(result: InspectResult, prepared: PreparedModel, board: Board, board_dirs: list[Any]) -> None:
    """On a microcontroller board, compile's own arena plan (no kernel build) and,
    when it does not fit, what would shrink it (each option planned the same way)."""
    target = load_profiles(board_dirs).target_of(board)
    if target.codegen != "aot-c":
        return
    from edgekit.api.fit_advice import all_advice
    from edgekit.compiler.backends.aot_c.memory import arena_limit, board_fit, plan_memory

    plan = plan_memory(prepared, board, target)
    result.plan = plan
    result.ram_for_arena = arena_limit(board)
    limit = result.ram_for_arena[0]  # the board's RAM less the firmware's stack, as compile checks it
    if limit and plan.arena_bytes > limit:
        result.advice = all_advice(plan, board, target, lambda other: plan_memory(other, board, target), prepared)
    result.report.fits = board_fit(plan, board)


def _npu_offload(prepared: PreparedModel, board: Board, board_dirs: list[Any]) -> dict[str, Any] | None:
    if board.npu is None or load_profiles(board_dirs).target_of(board).codegen != "npu":
        return None
    from edgekit.compiler.backends.npu.partition import partition

    return partition(prepared.model).summary()
