"""``edgekit compress``: prune, factorize, recover and quantize a model.

The command is a chain of steps. Each step takes the current model and
returns a new one plus a section of the report; steps run in the order of
:data:`STEPS` when their flags are given. A pre-quantized (QOperator) model is
first normalized to QDQ form. The output is written atomically.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import onnx
from rich import box
from rich.table import Table

from edgekit.cli.progress import Activity, activity_for
from edgekit.cli.render import add_json_flags, console, emit_result, err_console, json_to_stdout, write_json
from edgekit.compress import CALIBRATION_METHODS, QuantConfig, normalize_qoperator, quantize, write_model
from edgekit.compress.calibration import load_arrays, shapes_from_data
from edgekit.compress.passes import CompressionPass, CompressionStep, PassContext, model_stats
from edgekit.compress.payoff import PayoffReport, measure_float_layers, measure_payoff, run_staged
from edgekit.compress.recipe import STEP_TYPES, load_recipe
from edgekit.frontend.qoperator import is_qoperator_model
from edgekit.compress.quality import QualityReport
from edgekit.core.errors import InputError, QuantizationError
from edgekit.core.profiles import load_profiles
from edgekit.core.tensors import parse_input_shapes
from edgekit.frontend.loader import PreparedModel, load_model, read_onnx
from edgekit.report.outputs import write_compress_outputs

__all__ = ["add_parser", "run", "StepResult", "STEPS"]

#: Layers shown in the per-layer table (the worst by SQNR) before "... N more".
_MAX_LAYERS_SHOWN = 15


@dataclass
class StepResult:
    """What one compression step produced.

    Attributes:
        model: The model after the step.
        section: The step's part of the JSON report.
        render: Prints the step's tables (not called with ``--json``).
        ok: False when the step could not meet its goal (the model is then
            not written, unless ``write_anyway``).
        problem: Why not, when ``ok`` is False.
        write_anyway: Write the model even though ``ok`` is False (the best
            model found before ``--max-time`` ran out).
        stages: Each sub-step's record and the model after it, in order
            (what ``--board`` compiles and measures).
    """

    model: onnx.ModelProto
    section: dict[str, Any]
    render: Callable[[], None] = lambda: None
    ok: bool = True
    problem: str = ""
    write_anyway: bool = False
    stages: list[tuple[CompressionStep, onnx.ModelProto]] = field(default_factory=list)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compress",
        help="prune, factorize and quantize a model, with a quality report",
        description="Compress an ONNX model. --quantize int8 writes a QDQ model (int8 weights and activations) "
        "calibrated on CAL.npz and reports its error against fp32; --max-drop keeps the most sensitive layers "
        "in float until the budget holds. A pre-quantized QOperator model is normalized to QDQ.",
        epilog="examples:\n"
        "  edgekit compress model.onnx -o model.int8.onnx --quantize int8 --calibration cal.npz\n"
        "  edgekit compress model.onnx -o m.int8.onnx --quantize int8 --calibration cal.npz "
        "--max-drop 1 --report r.json\n"
        "  edgekit compress model.onnx -o m.int8.onnx --quantize int8 --calibration cal.npz "
        "--min-sqnr 30 --report r.html\n"
        "  edgekit compress model.onnx -o m.int8.onnx --quantize int8 --calibration cal.npz --eval eval.npz "
        "--metric my_metrics.py:accuracy --max-drop 0.5 --max-time 300\n"
        "  edgekit compress qoperator.onnx -o qdq.onnx\n"
        "  edgekit compress model.onnx -o small.onnx --prune-structured 0.3 --recover refit --calibration cal.npz\n"
        "  edgekit compress model.onnx -o small.onnx --recipe recipe.toml --calibration cal.npz\n"
        "gates: --max-drop and --min-sqnr are budgets; when they cannot be met the model is not written and the "
        "exit code is 2 (the report is still written). When --max-time ends the search first, the best model "
        "found so far is written; the exit code is 2 if it misses the budget.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="MODEL", help="the .onnx file")
    p.add_argument("-o", "--output", required=True, metavar="OUT.onnx", help="where to write the compressed model")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME=SHAPE",
                   help="static shape of an input, e.g. data=1x3x224x224 (repeat per input)")
    p.add_argument("--board", metavar="B", help="use this board's quantization defaults and report what each step "
                   "buys on it: compiled latency (cycles on simulated MCUs, wall clock on the host), arena and "
                   "weights + code against the fp32 model, with a warning for a step that makes it slower or bigger")
    p.add_argument("--no-payoff", action="store_true",
                   help="with --board: only take its quantization defaults, do not compile and measure the steps")
    p.add_argument("--boards-dir", action="append", default=[], metavar="DIR",
                   help="extra folder of board/target TOML files")
    p.add_argument("--report", action="append", default=[], metavar="R.json|R.html|R.md",
                   help="write the quality report; the extension picks the format: .json, .html (self-contained, "
                   "with plots) or .md (repeat for several)")
    add_json_flags(p, "the report")

    g = p.add_argument_group("pruning, factorization and recovery (run before quantization, in this order)")
    g.add_argument("--prune-structured", type=float, metavar="RATIO",
                   help="remove this fraction of channels/filters (a smaller, valid model with fewer MACs)")
    g.add_argument("--prune-criterion", choices=["l1", "l2", "bn"], help="channel importance (default l1)")
    g.add_argument("--prune-round-to", type=int, metavar="N",
                   help="keep channel counts multiples of N (vector-friendly; see docs/payoff.md)")
    g.add_argument("--prune-unstructured", type=float, metavar="RATIO",
                   help="zero this fraction of weights by magnitude (first/last layers excluded)")
    g.add_argument("--prune-scope", choices=["global", "layer"], help="unstructured threshold per model or per layer")
    g.add_argument("--prune-nm", metavar="N:M", help="N:M sparsity along the reduction axis, e.g. 2:4")
    g.add_argument("--low-rank", choices=["svd", "tucker", "auto"],
                   help="factorize Gemm/MatMul (SVD) and Conv (Tucker-2) where it saves MACs")
    g.add_argument("--rank-energy", type=float, metavar="E", help="singular-value energy kept (default 0.9)")
    g.add_argument("--recover", choices=["refit", "bias", "distill"],
                   help="recover accuracy against the original model on the calibration data "
                   "(least-squares refit, bias correction, or distillation with the [train] extra)")
    g.add_argument("--recipe", metavar="FILE", help="a TOML/YAML recipe chaining the steps (docs/pruning.md); "
                   "instead of the flags above")

    q = p.add_argument_group("int8 quantization")
    q.add_argument("--quantize", choices=["int8"], help="quantize weights and activations to int8 (QDQ)")
    q.add_argument("--calibration", metavar="CAL.npz",
                   help="calibration data: one array per model input, first axis = samples")
    _pair(q, "per_channel", "--per-channel", "--per-tensor", "one weight scale per output channel (default)",
          "one weight scale per tensor")
    _pair(q, "weight_symmetric", "--weight-symmetric", "--weight-asymmetric",
          "weight zero points fixed at 0 (default)", "weight zero points from the data")
    _pair(q, "activation_symmetric", "--activation-symmetric", "--activation-asymmetric",
          "activation zero points fixed at 0", "activation zero points from the data (default)")
    q.add_argument("--float-head", action="store_true", default=None,
                   help="leave the model's outputs unquantized and a last Softmax/Sigmoid in float")
    q.add_argument("--calibration-method", choices=CALIBRATION_METHODS, help="how activation ranges are found "
                   "(default auto: per tensor, the one of minmax/percentile/entropy with the smallest expected int8 "
                   "error)")
    q.add_argument("--percentile", type=float, metavar="P", help="percentile kept by --calibration-method "
                   "percentile or auto (default 99.999)")
    _pair(q, "bias_correction", "--bias-correction", "--no-bias-correction",
          "subtract the mean shift int8 adds to each Conv/Gemm output from its bias",
          "leave biases as quantized (default)")
    _pair(q, "smooth_quant", "--smooth-quant", "--no-smooth-quant",
          "move outlier channels of MatMul/Gemm inputs into the weights where a LayerNorm absorbs the division",
          "no scale migration")
    q.add_argument("--calibration-samples", type=int, metavar="N", help="use at most N calibration samples")
    q.add_argument("--exclude", nargs="+", action="extend", default=[], metavar="NODE_OR_OPTYPE",
                   help="node names or op types to leave in float")
    q.add_argument("--max-drop", type=float, metavar="PCT",
                   help="allowed fall of top-1 agreement with fp32, in percentage points; layers fall back "
                   "to float until it holds")
    q.add_argument("--min-sqnr", type=float, metavar="DB",
                   help="budget for outputs that are not class scores: lowest allowed SQNR in dB")
    q.add_argument("--eval", metavar="EVAL.npz",
                   help="evaluation data (default: 20%% of the calibration data held out); may hold extra arrays "
                   "such as labels for --metric")
    q.add_argument("--metric", metavar="MODULE:FUNCTION",
                   help="accuracy for --max-drop: a Python function metric(outputs, data) -> float in [0, 1] "
                   "(outputs: one array per model output, runs stacked on the first axis; data: every array of "
                   "the evaluation data, labels included); MODULE is an importable module or a .py file")
    q.add_argument("--max-time", type=float, metavar="SECONDS",
                   help="time budget of --max-drop/--min-sqnr: stop searching then and keep the best model so far")
    p.set_defaults(func=run)


def _pair(group: argparse._ArgumentGroup, dest: str, on: str, off: str, on_help: str, off_help: str) -> None:
    ex = group.add_mutually_exclusive_group()
    ex.add_argument(on, dest=dest, action="store_true", default=None, help=on_help)
    ex.add_argument(off, dest=dest, action="store_false", default=None, help=off_help)


_QUANT_FLAGS = ("calibration", "calibration_method", "percentile", "calibration_samples", "max_drop",
                "min_sqnr", "eval", "per_channel", "weight_symmetric", "activation_symmetric", "metric",
                "max_time", "float_head", "bias_correction", "smooth_quant")  # fmt: skip


def _quant_config(args: argparse.Namespace, target: Any) -> QuantConfig:
    overrides: dict[str, Any] = {}
    for flag, fld in (("per_channel", "per_channel"), ("weight_symmetric", "weight_symmetric"),
                      ("activation_symmetric", "activation_symmetric"), ("calibration_method", "calibration_method"),
                      ("percentile", "percentile"), ("calibration_samples", "calibration_samples"),
                      ("max_drop", "max_drop"), ("min_sqnr", "min_sqnr_db"), ("max_time", "max_time_s"),
                      ("float_head", "float_head"), ("bias_correction", "bias_correction"),
                      ("smooth_quant", "smooth_quant")):  # fmt: skip
        value = getattr(args, flag)
        if value is not None:
            overrides[fld] = value
    if args.exclude:
        overrides["exclude"] = tuple(args.exclude)
    return QuantConfig.for_board(None, target, **overrides)


# --------------------------------------------------------------------------- #
# Steps
# --------------------------------------------------------------------------- #


def load_metric(spec: str) -> Callable[..., float]:
    """Resolves ``MODULE:FUNCTION`` (``MODULE`` importable, from the current
    folder too, or a ``.py`` file) to the function.

    Raises:
        InputError: the spec is malformed, the module or function is missing,
            or it is not callable.
    """
    module_name, sep, func_name = spec.rpartition(":")
    if not sep or not module_name or not func_name:
        raise InputError(f"--metric '{spec}' is not MODULE:FUNCTION",
                         hint="Write e.g. --metric my_metrics:accuracy or --metric path/to/metrics.py:accuracy.")
    try:
        if module_name.endswith(".py") or "/" in module_name:
            path = Path(module_name)
            if not path.is_file():
                raise InputError(f"--metric: file '{path}' does not exist", hint="Check the path of the .py file.")
            module_spec = importlib.util.spec_from_file_location(f"edgekit_user_metric_{path.stem}", path)
            assert module_spec is not None and module_spec.loader is not None
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            added = "" not in sys.path
            if added:
                sys.path.insert(0, "")  # the current folder, as `python -m` would
            try:
                module = importlib.import_module(module_name)
            finally:
                if added:
                    sys.path.remove("")
    except InputError:
        raise
    except Exception as exc:  # ImportError, or anything the user's module raises on import
        raise InputError(f"--metric: cannot import '{module_name}' ({type(exc).__name__}: {exc})",
                         hint="Run from the folder that holds the module, or give the .py file's path.") from exc
    func = getattr(module, func_name, None)
    if not callable(func):
        found = ", ".join(n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))) or "none"
        raise InputError(f"--metric: '{module_name}' has no function '{func_name}'",
                         hint=f"Functions there: {found}.")
    return func


def _step_quantize(prepared: PreparedModel, args: argparse.Namespace, ctx: dict[str, Any]) -> StepResult:
    if not args.calibration:
        raise InputError("--quantize int8 needs calibration data", hint="Add --calibration CAL.npz "
                         "(one array per model input, first axis = samples).")
    config = _quant_config(args, ctx.get("target"))
    metric = load_metric(args.metric) if args.metric else None
    if metric is not None and not config.accuracy_controlled:
        raise InputError("--metric sets what --max-drop measures", hint="Add --max-drop PCT.")
    if args.max_time is not None and not config.accuracy_controlled:
        raise InputError("--max-time limits accuracy control", hint="Add --max-drop PCT or --min-sqnr DB.")
    started = time.monotonic()
    with activity_for(args, "quantizing") as act:
        result = quantize(prepared, config, args.calibration, eval_data=args.eval, metric=metric,
                          board=ctx.get("board"), progress=_notifier(args, act, "quantizing"))  # fmt: skip
    report = result.report
    fb = report.fallback
    if fb is not None and fb.float_layers and args.board and not args.no_payoff and result.int8_model is not None:
        costs = _float_layer_costs(result, args)
        for layer in fb.float_layers:
            layer.board = costs.get(layer.node)
    ok = fb is None or fb.met
    problem = ""
    if fb is not None and not fb.met:
        problem = fb.message
    step = CompressionStep("quantize", config.to_json(), True, model_stats(prepared.model), model_stats(result.model),
                           time.monotonic() - started)  # fmt: skip
    return StepResult(result.model, {"step": "quantize", **report.to_json()}, lambda: _render_quant(report), ok,
                      problem, write_anyway=fb is not None and fb.stopped_early, stages=[(step, result.model)])


def _float_layer_costs(result: Any, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """What each layer accuracy control kept in float costs on ``--board``."""
    with activity_for(args, f"float layers on {args.board}") as act, _quiet_logs(args, _BUILD_LOGGERS):
        return measure_float_layers(result.int8_model, result.reference, result.fallback_layers, args.board,
                                    board_dirs=args.boards_dir,
                                    progress=lambda what, done, total: act.update(done, total,
                                                                                  f"float layers: {what}"))


def _notifier(args: argparse.Namespace, act: Activity, what: str) -> Callable[[str], None] | None:
    """Progress lines on stderr, also shown beside the progress bar; none
    with ``--json`` on stdout or ``-q``."""
    if getattr(args, "quiet", False) or json_to_stdout(args):
        return None

    def notify(msg: str) -> None:
        err_console.print(msg, highlight=False)
        act.update(0, description=f"{what}: {msg[:60]}")

    return notify


_GRAPH_FLAGS = ("prune_structured", "prune_unstructured", "prune_nm", "low_rank", "recover")


def _graph_passes(args: argparse.Namespace) -> list[CompressionPass]:
    """The pruning / factorization / recovery passes the flags (or recipe) ask for."""
    flagged = [f for f in _GRAPH_FLAGS if getattr(args, f) is not None]
    if args.recipe:
        if flagged or args.quantize:
            raise InputError(
                "--recipe replaces the step flags", hint="Put every step in the recipe, or use flags without --recipe."
            )
        return list(load_recipe(args.recipe).steps)
    passes: list[CompressionPass] = []
    if args.prune_structured is not None:
        params: dict[str, Any] = {"ratio": args.prune_structured}
        if args.prune_criterion:
            params["criterion"] = args.prune_criterion
        if args.prune_round_to:
            params["round_to"] = args.prune_round_to
        passes.append(STEP_TYPES.get("prune-structured")(params, "--prune-structured"))
    if args.prune_unstructured is not None:
        params = {"sparsity": args.prune_unstructured}
        if args.prune_scope:
            params["scope"] = args.prune_scope
        passes.append(STEP_TYPES.get("prune")(params, "--prune-unstructured"))
    if args.prune_nm:
        passes.append(STEP_TYPES.get("prune-nm")({"pattern": args.prune_nm}, "--prune-nm"))
    if args.low_rank:
        params = {"method": args.low_rank}
        if args.rank_energy is not None:
            params["rank_energy"] = args.rank_energy
        passes.append(STEP_TYPES.get("low-rank")(params, "--low-rank"))
    if args.recover:
        if not args.calibration:
            raise InputError("--recover needs data to fit on", hint="Add --calibration CAL.npz.")
        passes.append(STEP_TYPES.get("recover")({"method": args.recover}, "--recover"))
    return passes


def _step_graph(prepared: PreparedModel, args: argparse.Namespace, ctx: dict[str, Any]) -> StepResult:
    passes = _graph_passes(args)
    calibration = load_arrays(args.calibration) if args.calibration else None
    with activity_for(args, "compressing", total=len(passes)) as act:
        result = run_staged(prepared.model, passes, PassContext(calibration=calibration),
                            fidelity=calibration is not None,
                            progress=lambda name, done, total: act.update(done, total, f"compressing: {name}"))
    section = {"step": "recipe" if args.recipe else "graph", **result.to_json()}
    return StepResult(result.model, section, lambda: _render_graph(section),
                      stages=list(zip(result.steps, result.models[1:])))


def _wants_graph(args: argparse.Namespace) -> bool:
    return bool(args.recipe) or any(getattr(args, f) is not None for f in _GRAPH_FLAGS)


#: The steps, in the order they run: (name, is it requested?, step function).
STEPS: list[tuple[str, Callable[[argparse.Namespace], bool], Callable[..., StepResult]]] = [
    ("graph", _wants_graph, _step_graph),
    ("quantize", lambda a: a.quantize == "int8", _step_quantize),
]


def _write_reports(paths: list[str], document: dict[str, Any]) -> None:
    for path in paths:
        suffix = path.lower().rsplit(".", 1)[-1] if "." in path else ""
        if suffix in ("html", "htm"):
            write_compress_outputs(document, html=path)
        elif suffix == "md":
            write_compress_outputs(document, markdown=path)
        else:
            write_json(path, document)


def run(args: argparse.Namespace) -> int:
    if args.quantize is None:
        shared = ("calibration",) if _wants_graph(args) else ()
        stray = [f"--{f.replace('_', '-')}" for f in _QUANT_FLAGS if getattr(args, f) is not None and f not in shared]
        if args.exclude:
            stray.append("--exclude")
        if stray:
            raise InputError(f"these options need --quantize int8: {', '.join(stray)}", hint="Add --quantize int8, or drop them.")
    shapes = parse_input_shapes(args.input_shape)
    ctx: dict[str, Any] = {}
    if args.board:
        profiles = load_profiles(args.boards_dir)
        ctx["board"] = profiles.board(args.board)
        ctx["target"] = profiles.target_of(ctx["board"])

    sections: list[dict[str, Any]] = []
    renders: list[Callable[[], None]] = []
    raw = read_onnx(args.model)
    if args.calibration:
        # Symbolic input dimensions take their sizes from the calibration data.
        declared = {i.name: [d.dim_value if d.HasField("dim_value") else None for d in i.type.tensor_type.shape.dim]
                    for i in raw.graph.input if i.name not in shapes}
        shapes.update(shapes_from_data(declared, load_arrays(args.calibration)))
    if is_qoperator_model(raw):
        norm = normalize_qoperator(raw)
        sections.append({"step": "normalize_qoperator", "rewritten": norm.rewritten})
        renders.append(lambda: console.print(
            "normalized to QDQ: " + ", ".join(f"{c} {op}" for op, c in sorted(norm.rewritten.items()))))
        # No onnxslim here: it would fold the int8 weights back into float constants.
        prepared = load_model(norm.model, shapes, simplify=False)
    else:
        prepared = load_model(raw, shapes)
        prepared.source = args.model

    steps = [(name, fn) for name, wanted, fn in STEPS if wanted(args)]
    if not steps and not sections:
        raise InputError("nothing to do", hint="Pass a compression, e.g. --quantize int8 --calibration CAL.npz.")
    failure = ""
    original = prepared.model
    stages: list[tuple[CompressionStep, onnx.ModelProto]] = []
    for _, fn in steps:
        outcome = fn(prepared, args, ctx)
        sections.append(outcome.section)
        renders.append(outcome.render)
        stages += outcome.stages
        if not outcome.ok:
            failure = outcome.problem
            break
        prepared = PreparedModel(outcome.model, prepared.inputs, prepared.outputs, prepared.source,
                                 prepared.opset, prepared.notes)

    written = not failure or outcome.write_anyway
    document: dict[str, Any] = {"model": args.model, "output": args.output if written else None, "steps": sections}
    if args.board and not args.no_payoff and stages and not failure:
        payoff = _board_payoff(original, stages, args)
        document["payoff"] = {k: v for k, v in payoff.to_json().items() if k not in ("rows", "packages")}
        document["warnings"] = payoff.warnings()
        renders.append(lambda: _render_payoff(payoff))
    else:
        document["warnings"] = []
    _write_reports(args.report, document)
    if failure:
        if written:
            write_model(outcome.model, args.output)
        if not args.json:
            for r in renders:
                r()
        raise QuantizationError(
            failure + (f"; the best model so far was written to {args.output}" if written
                       else f"; {args.output} was not written"),
            hint=("Give it more time (--max-time), or raise --max-drop." if written else
                  "Raise --max-drop (or lower --min-sqnr), add calibration data, or try --per-channel / "
                  "--calibration-method percentile."),
        )
    write_model(prepared.model, args.output)
    if emit_result(args, document):
        return 0
    for r in renders:
        r()
    for warning in document["warnings"]:
        err_console.print(f"[bold yellow]warning:[/] {warning}", highlight=False)
    err_console.print(f"wrote {args.output}" + (f" and {', '.join(args.report)}" if args.report else ""))
    return 0


#: Loggers whose per-compile lines (kernels built, arena plan) belong to
#: ``edgekit compile``; the payoff's compiles keep them at warning level.
_BUILD_LOGGERS = ("edgekit.compiler", "edgekit.runtime", "edgekit.sim", "edgekit.npu")


@contextlib.contextmanager
def _quiet_logs(args: argparse.Namespace, names: tuple[str, ...]) -> Iterator[None]:
    """Raises ``names`` to WARNING for the block, unless ``--debug``."""
    loggers = [logging.getLogger(n) for n in names]
    saved = [lg.level for lg in loggers]
    if not getattr(args, "debug", False):
        for lg in loggers:
            lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, saved):
            lg.setLevel(level)


def _board_payoff(original: onnx.ModelProto, stages: list[tuple[CompressionStep, onnx.ModelProto]],
                  args: argparse.Namespace) -> PayoffReport:  # fmt: skip
    """Compiles the input model and the model after every step for
    ``--board`` and measures each (:func:`edgekit.compress.payoff.measure_payoff`)."""
    steps = [step for step, _ in stages]
    models = [original, *(model for _, model in stages)]
    with activity_for(args, f"measuring on {args.board}") as act, _quiet_logs(args, _BUILD_LOGGERS):
        return measure_payoff(steps, args.board, models=models, board_dirs=args.boards_dir,
                              model_name=Path(args.model).name,
                              progress=lambda what, done, total: act.update(done, total, f"{args.board}: {what}"))


# --------------------------------------------------------------------------- #
# Rendering
# --------------------------------------------------------------------------- #


def _db(x: float) -> str:
    return "identical" if math.isinf(x) and x > 0 else f"{x:.1f}"


def _render_graph(section: dict[str, Any]) -> None:
    tbl = Table(title="compression steps")
    for col in ("step", "params", "MACs", "weight bytes", "fidelity vs original"):
        tbl.add_column(col, justify="left" if col == "step" else "right")
    for step in section.get("steps", []):
        before, after = step.get("before", {}), step.get("after", {})
        fid = step.get("fidelity") or {}
        parts = []
        if fid.get("sqnr_db") is not None:
            parts.append(f"SQNR {fid['sqnr_db']:.1f} dB")
        if fid.get("top1_agreement") is not None:
            parts.append(f"top-1 {fid['top1_agreement']:.1f}%")
        fid_text = ", ".join(parts) or "-"
        tbl.add_row(
            str(step.get("step")),
            f"{before.get('params', 0):,} -> {after.get('params', 0):,}",
            f"{before.get('macs', 0):,} -> {after.get('macs', 0):,}",
            f"{before.get('weight_bytes', 0):,} -> {after.get('weight_bytes', 0):,}",
            fid_text,
        )
    console.print(tbl)


def _render_quant(report: QualityReport) -> None:
    out = Table(title=f"int8 vs fp32 on {report.eval_samples} samples ({report.eval_source})")
    for col in ("output", "SQNR dB", "cosine", "max abs err", "top-1 agreement"):
        out.add_column(col, justify="left" if col == "output" else "right")
    for o in report.outputs:
        agree = "-" if o.top1_agreement is None else f"{o.top1_agreement:.2f}%"
        out.add_row(o.name, _db(o.sqnr_db), f"{o.cosine:.5f}", f"{o.max_abs_error:.4g}", agree)
    console.print(out)
    if report.metric_fp32 is not None:
        console.print(f"metric: fp32 {report.metric_fp32:.4f}, int8 {report.metric_quantized:.4f}")

    layers = sorted(report.layers, key=lambda layer: layer.sqnr_db)[:_MAX_LAYERS_SHOWN]
    if layers:
        shown = {id(layer) for layer in layers}
        worst = f"the {len(layers)} worst, " if len(layers) < len(report.layers) else ""
        tbl = Table(title=f"per-layer error ({worst}in graph order)")
        for col in ("node", "op", "int8", "SQNR dB", "cosine", "max abs err"):
            tbl.add_column(col, justify="left" if col in ("node", "op") else "right")
        for layer in [la for la in report.layers if id(la) in shown]:
            tbl.add_row(layer.node, layer.op_type, "yes" if layer.quantized else "float", _db(layer.sqnr_db),
                        f"{layer.cosine:.5f}", f"{layer.max_abs_error:.4g}")
        console.print(tbl)
        if len(report.layers) > len(layers):
            console.print(f"... and {len(report.layers) - len(layers)} more layers (see --report)")
    console.print(
        f"weight bytes: {report.weight_bytes_before:,} -> {report.weight_bytes_after:,} "
        f"({report.compression_ratio:.2f}x smaller)"
    )
    fb = report.fallback
    if fb is not None:
        if fb.float_layers:
            measured = next((f.board for f in fb.float_layers if f.board), None)
            where = f"; cost on {measured['board']}" if measured else ""
            tbl = Table(title=f"layers kept in float ({fb.evaluations} evaluations, {fb.seconds:.0f} s{where}); "
                        "SQNR: dB of the layer quantized alone; buys: points it buys back",
                        box=box.SIMPLE_HEAD, padding=(0, 1))
            board_cols = [("+cycles" if measured["simulated"] else "+latency"), "+arena B"] if measured else []
            for col in ("node", "op", "SQNR", "MACs", "+wt B", "+act B", *board_cols, "buys"):
                if col == "node":
                    tbl.add_column(col, min_width=8, overflow="fold")
                else:
                    tbl.add_column(col, justify="left" if col == "op" else "right", no_wrap=True)
            for f in fb.float_layers:
                sens = "-" if f.sensitivity_sqnr_db is None else _db(f.sensitivity_sqnr_db)
                buys = "not measured" if f.buys_back is None else f"{f.buys_back:.2f}"
                board = [_board_cost(f.board), "-" if not f.board or f.board["arena_bytes"] is None
                         else f"{f.board['arena_bytes']:+,.0f}"] if measured else []  # fmt: skip
                tbl.add_row(f.node, f.op_type, sens, f"{f.macs:,}", f"{f.extra_weight_bytes:,}",
                            f"{f.extra_activation_bytes:,}", *board, buys)
            console.print(tbl)
        console.print(f"accuracy control: {fb.message}")


def _render_payoff(report: PayoffReport) -> None:
    tbl = Table(title=f"on {report.board}, step by step against fp32", box=box.SIMPLE_HEAD)
    for col in ("step", "cycles" if report.simulated else "latency", "vs fp32", "arena", "weights+code"):
        tbl.add_column(col, justify="left" if col == "step" else "right", no_wrap=col != "step")
    for row in report.summary():
        name = "all steps" if row["step"] == "chain" else row["step"]
        if row["error"] and row["flash_bytes"] is None:
            tbl.add_row(name, row["error"], "", "", "")
            continue
        if row["error"]:  # compiled, but could not run here
            lat = row["error"]
        elif row["cycles"] is not None:
            lat = f"{row['cycles'] / 1e6:.3g} M" if row["cycles"] >= 1e6 else f"{row['cycles'] / 1e3:.3g} k"
        else:
            lat = "-" if row["latency_ms"] is None else f"{row['latency_ms']:.3g} ms"
        speedup = row["speedup_vs_fp32"]
        if speedup is None or row["step"] == "fp32":
            vs = "-"
        elif abs(speedup - 1.0) < 0.005:
            vs = "same"
        else:
            vs = f"{speedup:.2f}x faster" if speedup > 1.0 else f"{1 / speedup:.2f}x slower"
        tbl.add_row(name, lat, vs, _sized(row["arena_bytes"], row["arena_vs_fp32"]),
                    _sized(row["flash_bytes"], row["flash_vs_fp32"]))
    console.print(tbl)
    console.print(report.timing, highlight=False)


def _sized(n: int | None, ratio: float | None) -> str:
    if n is None:
        return "-"
    text = f"{n / 1024:.1f} KiB"
    return text if ratio is None or abs(ratio - 1.0) < 0.005 else f"{text} {100 * (ratio - 1):+.0f}%"


def _board_cost(cost: dict[str, Any] | None) -> str:
    """A float layer's latency cost on the board: ``+994 k`` (cycles), ``+0.05 ms``."""
    if not cost or cost.get("error"):
        return "-" if not cost else str(cost["error"])[:40]
    if cost.get("cycles") is not None:
        return f"{cost['cycles'] / 1e3:+,.0f} k"
    return "-" if cost.get("latency_ms") is None else f"{cost['latency_ms']:+.3g} ms"
