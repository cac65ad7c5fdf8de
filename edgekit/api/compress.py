"""``edgekit compress``: prune, factorize, recover and quantize a model, and
measure what each step bought on a board.

The call is a chain of steps. Each step takes the current model and returns
a new one plus a section of the report; the graph passes (pruning,
factorization, recovery) run first, then int8 quantization. A pre-quantized
(QOperator) model is first normalized to QDQ form. With a board, every
intermediate model is compiled and measured there
(:func:`edgekit.api.payoff.measure_payoff`). The output is written
atomically, and only when the steps met their goals.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import onnx

from edgekit.api.jsonio import write_json
from edgekit.api.metric import load_metric
from edgekit.api.payoff import measure_float_layers, measure_payoff, quiet_build_logs
from edgekit.api.progress import SILENT, Progress
from edgekit.compress import QuantConfig, normalize_qoperator, quantize, write_model
from edgekit.compress.calibration import load_arrays, shapes_from_data
from edgekit.compress.passes import CompressionPass, CompressionStep, PassContext, model_stats
from edgekit.compress.payoff import PayoffReport, run_staged
from edgekit.frontend.qoperator import is_qoperator_model
from edgekit.compress.recipe import load_recipe
from edgekit.compress.weight_bits import choose_weight_bits
from edgekit.core.errors import InputError, QuantizationError
from edgekit.core.profiles import Board, Target, load_profiles
from edgekit.frontend.loader import PreparedModel, load_model, read_onnx
from edgekit.report.outputs import write_compress_outputs

__all__ = ["CompressOptions", "CompressResult", "CompressionGoalError", "QuantizeRequest", "StepReport",
           "channel_multiple", "compress_model"]  # fmt: skip


@dataclass(frozen=True)
class QuantizeRequest:
    """int8 quantization (QDQ).

    Attributes:
        config: :class:`QuantConfig` fields that replace the board's defaults
            (``per_channel``, ``max_drop``, ``min_sqnr_db``, ``max_time_s``,
            ``exclude``, ``chain_ends_only``...; see :meth:`QuantConfig.for_board`).
        eval: Evaluation data (default: 20 % of the calibration data held out).
        metric: Accuracy for ``max_drop``: ``metric(outputs, data) -> float``
            in [0, 1], or its ``MODULE:FUNCTION`` name.
    """

    config: Mapping[str, Any] = field(default_factory=dict)
    eval: str | os.PathLike[str] | None = None
    metric: Callable[..., float] | str | None = None


@dataclass(frozen=True)
class CompressOptions:
    """What to do to the model.

    Attributes:
        input_shapes: Static input shapes by name (symbolic dimensions not
            given take their sizes from the calibration data).
        passes: Pruning, factorization and recovery passes, in order.
        recipe: A recipe file chaining the steps, instead of ``passes``.
        calibration: Data (one array per input, first axis = samples) for
            quantization, recovery and the passes' fidelity.
        quantize: Quantize to int8 after the passes.
        board: Use this board's quantization defaults and, with ``payoff``,
            measure what each step buys on it.
        payoff: Compile and measure the steps on ``board``.
        board_dirs: Extra folders of board/target profiles.
        reports: Report files to write; the extension picks the format
            (``.json``, ``.html``, ``.md``).
    """

    input_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    passes: Sequence[CompressionPass] = ()
    recipe: str | os.PathLike[str] | None = None
    calibration: str | os.PathLike[str] | None = None
    quantize: QuantizeRequest | None = None
    board: str | None = None
    payoff: bool = True
    board_dirs: Sequence[str | os.PathLike[str]] = ()
    reports: Sequence[str | os.PathLike[str]] = ()


@dataclass
class StepReport:
    """One step of the chain.

    Attributes:
        name: ``normalize_qoperator``, ``graph``, ``recipe`` or ``quantize``.
        section: The step's part of the JSON report.
        detail: The step's typed result: how many nodes of each op type
            normalization rewrote, or the quantization's
            :class:`edgekit.compress.quality.QualityReport`; ``None`` for
            graph passes (their rows are in ``section``).
    """

    name: str
    section: dict[str, Any]
    detail: Any = None


@dataclass
class CompressResult:
    """What compressing did.

    Attributes:
        model: The compressed model (the best one found, after a failure).
        output: The file written, or ``None`` (a failed goal).
        steps: Every step, in order.
        payoff: What the steps bought on the board, when measured.
        warnings: Steps that make the model slower or bigger on the board.
        document: The JSON report (``model``, ``output``, ``steps``,
            ``payoff``, ``warnings``).
        problem: Why a goal was missed ("" on success).
    """

    model: onnx.ModelProto
    output: Path | None
    steps: list[StepReport]
    payoff: PayoffReport | None
    warnings: list[str]
    document: dict[str, Any]
    problem: str = ""


class CompressionGoalError(QuantizationError):
    """``max_drop`` or ``min_sqnr_db`` could not be met. ``result`` holds
    every step's report (and the best model, written when the time budget
    ended the search)."""

    def __init__(self, message: str, *, hint: str, result: CompressResult) -> None:
        super().__init__(message, hint=hint, written=result.output is not None)
        self.result = result


@dataclass
class _Outcome:
    """What one step produced: the model, its report, whether it met its
    goal (``problem`` says why not), and each sub-step with its model."""

    model: onnx.ModelProto
    report: StepReport
    problem: str = ""
    write_anyway: bool = False
    stages: list[tuple[CompressionStep, onnx.ModelProto]] = field(default_factory=list)


@dataclass
class _Context:
    options: CompressOptions
    progress: Progress
    board: Board | None = None
    target: Target | None = None

    @property
    def measure(self) -> bool:
        return self.board is not None and self.options.payoff


def compress_model(
    model: str | os.PathLike[str],
    output: str | os.PathLike[str],
    options: CompressOptions,
    *,
    progress: Progress = SILENT,
) -> CompressResult:
    """Compresses ``model`` as ``options`` ask and writes it to ``output``.

    Example::

        options = CompressOptions(calibration="cal.npz", quantize=QuantizeRequest({"max_drop": 1.0}),
                                  board="rv32-mcu-sim", reports=["r.html"])
        result = compress_model("model.onnx", "model.int8.onnx", options)
        print(result.warnings)

    Raises:
        InputError: nothing to do, or options that need data or a goal.
        CompressionGoalError: a quantization goal was not met (the report
            files are written; ``output`` only when the time budget ended
            the search first).
        ModelError, ConfigError: from loading the model and the profiles.
    """
    ctx = _Context(options, progress)
    if options.board:
        profiles = load_profiles(options.board_dirs)
        ctx.board = profiles.board(options.board)
        ctx.target = profiles.target_of(ctx.board)
    prepared, reports = _load(model, options)
    steps = [fn for wanted, fn in ((options.passes or options.recipe, _graph_step), (options.quantize, _quantize_step))
             if wanted]  # fmt: skip
    if not steps and not reports:
        raise InputError("nothing to do", hint="Pass a compression, e.g. --quantize int8 --calibration CAL.npz.")
    original, stages = prepared.model, []
    outcome = None
    for fn in steps:
        outcome = fn(prepared, ctx)
        reports.append(outcome.report)
        stages += outcome.stages
        if outcome.problem:
            break
        prepared = PreparedModel(outcome.model, prepared.inputs, prepared.outputs, prepared.source,
                                 prepared.opset, prepared.notes)  # fmt: skip
    failed = outcome is not None and bool(outcome.problem)
    written = not failed or outcome.write_anyway
    payoff = _payoff(original, stages, model, ctx) if ctx.measure and stages and not failed else None
    result = _result(model, output if written else None, outcome.model if failed else prepared.model, reports, payoff)
    for path in options.reports:
        _write_report(path, result.document)
    if written:
        write_model(result.model, output)
    if failed:
        result.problem = outcome.problem
        raise CompressionGoalError(
            outcome.problem + (f"; the best model so far was written to {output}" if written
                               else f"; {output} was not written"),
            hint=("Give it more time (--max-time), or raise --max-drop." if written else
                  "Raise --max-drop (or lower --min-sqnr), add calibration data, or try --per-channel / "
                  "--calibration-method percentile."),
            result=result,
        )  # fmt: skip
    return result


def _result(model: str | os.PathLike[str], output: str | os.PathLike[str] | None, final: onnx.ModelProto,
            steps: list[StepReport], payoff: PayoffReport | None) -> CompressResult:  # fmt: skip
    document: dict[str, Any] = {"model": str(model), "output": None if output is None else str(output),
                                "steps": [s.section for s in steps]}  # fmt: skip
    warnings = payoff.warnings() if payoff is not None else []
    if payoff is not None:
        document["payoff"] = {k: v for k, v in payoff.to_json().items() if k not in ("rows", "packages")}
    document["warnings"] = warnings
    return CompressResult(final, None if output is None else Path(output), steps, payoff, warnings, document)


def _load(model: str | os.PathLike[str], options: CompressOptions) -> tuple[PreparedModel, list[StepReport]]:
    """The model, prepared for the steps; QOperator models normalized to QDQ first."""
    shapes = dict(options.input_shapes)
    raw = read_onnx(model)
    if options.calibration:
        # Symbolic input dimensions take their sizes from the calibration data.
        declared = {i.name: [d.dim_value if d.HasField("dim_value") else None for d in i.type.tensor_type.shape.dim]
                    for i in raw.graph.input if i.name not in shapes}  # fmt: skip
        shapes.update(shapes_from_data(declared, load_arrays(options.calibration)))
    if not is_qoperator_model(raw):
        prepared = load_model(raw, shapes)
        prepared.source = str(model)
        return prepared, []
    norm = normalize_qoperator(raw)
    # No onnxslim here: it would fold the int8 weights back into float constants.
    prepared = load_model(norm.model, shapes, simplify=False)
    return prepared, [StepReport("normalize_qoperator", {"step": "normalize_qoperator", "rewritten": norm.rewritten},
                                 norm.rewritten)]  # fmt: skip


def _graph_step(prepared: PreparedModel, ctx: _Context) -> _Outcome:
    options = ctx.options
    passes = list(load_recipe(options.recipe).steps) if options.recipe else list(options.passes)
    calibration = load_arrays(options.calibration) if options.calibration else None
    with ctx.progress.phase("compressing", total=len(passes)) as phase:
        context = PassContext(calibration=calibration, channel_multiple=channel_multiple(ctx.target),
                              board=ctx.board)
        result = run_staged(prepared.model, passes, context,
                            fidelity=calibration is not None,
                            progress=lambda name, done, total: phase.update(done, total, f"compressing: {name}"))
    name = "recipe" if options.recipe else "graph"
    return _Outcome(result.model, StepReport(name, {"step": name, **result.to_json()}),
                    stages=list(zip(result.steps, result.models[1:])))  # fmt: skip


def channel_multiple(target: Target | None) -> int:
    """Channel counts ``target``'s kernels take without padding: structured
    pruning's default ``round_to`` (:attr:`PassContext.channel_multiple`).

    On an x86 LLVM target, the input channels one int8 dot-product step
    reads (:func:`~edgekit.compiler.backends.llvm.intrin.dot_isa`: 4 for
    ``vpdpbusd``, 2 for AVX2's ``vpmaddwd``, 4 for its ``vpmaddubsw``, which
    the 7-bit weights such a board is quantized with by default take:
    :mod:`edgekit.compress.weight_bits`); another count is padded with a
    copy of the activations before each such layer (PP-OCR cls pruned 30 %,
    int8 on one Zen 5 core: 0.162 ms with round_to 4, 0.183 ms with 1, ten
    pad kernels more). Elsewhere 1: on the simulated MCU every channel costs
    (round_to 1 paid more there, BENCHMARKS.md), and nothing is measured for
    the others.
    """
    if target is None or target.codegen != "llvm":
        return 1
    from edgekit.compiler.backends.llvm.intrin import U8S8_256, dot_isa

    isa = dot_isa(target.tvm_target())
    if isa is None:
        return 1
    return U8S8_256.k if choose_weight_bits(target).bits == 7 else isa.k


def _quantize_step(prepared: PreparedModel, ctx: _Context) -> _Outcome:
    request, options = ctx.options.quantize, ctx.options
    assert request is not None
    if not options.calibration:
        raise InputError("--quantize int8 needs calibration data", hint="Add --calibration CAL.npz "
                         "(one array per model input, first axis = samples).")
    config = QuantConfig.for_board(None, ctx.target, **request.config)
    metric = load_metric(request.metric) if isinstance(request.metric, str) else request.metric
    if metric is not None and not config.accuracy_controlled:
        raise InputError("--metric sets what --max-drop measures", hint="Add --max-drop PCT.")
    if config.max_time_s is not None and not config.accuracy_controlled:
        raise InputError("--max-time limits accuracy control", hint="Add --max-drop PCT or --min-sqnr DB.")
    started = time.monotonic()
    with ctx.progress.phase("quantizing") as phase:
        result = quantize(prepared, config, options.calibration, eval_data=request.eval, metric=metric,
                          board=ctx.board, progress=phase.note)  # fmt: skip
    report, fb = result.report, result.report.fallback
    if fb is not None and fb.float_layers and ctx.measure and result.int8_model is not None:
        costs = _float_layer_costs(result, ctx)
        for layer in fb.float_layers:
            layer.board = costs.get(layer.node)
    step = CompressionStep("quantize", config.to_json(), True, model_stats(prepared.model), model_stats(result.model),
                           time.monotonic() - started)  # fmt: skip
    return _Outcome(result.model, StepReport("quantize", {"step": "quantize", **report.to_json()}, report),
                    "" if fb is None or fb.met else fb.message, write_anyway=fb is not None and fb.stopped_early,
                    stages=[(step, result.model)])  # fmt: skip


def _float_layer_costs(result: Any, ctx: _Context) -> dict[str, dict[str, Any]]:
    """What each layer accuracy control kept in float costs on the board."""
    assert ctx.board is not None
    with ctx.progress.phase(f"float layers on {ctx.options.board}") as phase, quiet_build_logs():
        return measure_float_layers(result.int8_model, result.reference, result.fallback_layers, ctx.board.name,
                                    board_dirs=ctx.options.board_dirs,
                                    progress=lambda what, done, total: phase.update(done, total,
                                                                                    f"float layers: {what}"))


def _payoff(original: onnx.ModelProto, stages: list[tuple[CompressionStep, onnx.ModelProto]],
            model: str | os.PathLike[str], ctx: _Context) -> PayoffReport:  # fmt: skip
    """Compiles the input model and the model after every step for the
    board and measures each."""
    board = ctx.options.board
    assert board is not None
    steps = [step for step, _ in stages]
    models = [original, *(m for _, m in stages)]
    with ctx.progress.phase(f"measuring on {board}") as phase, quiet_build_logs():
        return measure_payoff(steps, board, models=models, board_dirs=ctx.options.board_dirs,
                              model_name=Path(model).name,
                              progress=lambda what, done, total: phase.update(done, total, f"{board}: {what}"))


def _write_report(path: str | os.PathLike[str], document: dict[str, Any]) -> None:
    suffix = str(path).lower().rsplit(".", 1)[-1] if "." in str(path) else ""
    if suffix in ("html", "htm"):
        write_compress_outputs(document, html=path)
    elif suffix == "md":
        write_compress_outputs(document, markdown=path)
    else:
        write_json(path, document)
