"""``edgekit compress``: prune, factorize, recover and quantize a model.

Parses the flags into :class:`edgekit.api.compress.CompressOptions`, calls
:func:`edgekit.api.compress.compress_model` and renders what it returns
(:mod:`edgekit.cli.render_compress`).
"""

from __future__ import annotations

import argparse
from typing import Any

from rich.markup import escape

from edgekit.api.compress import CompressionGoalError, CompressOptions, QuantizeRequest, compress_model
from edgekit.cli.progress import CliProgress
from edgekit.cli.render import add_json_flags, emit_result, err_console
from edgekit.cli.render_compress import render_result
from edgekit.compress import CALIBRATION_METHODS
from edgekit.compress.passes import CompressionPass
from edgekit.compress.recipe import STEP_TYPES
from edgekit.core.errors import InputError
from edgekit.core.tensors import parse_input_shapes

__all__ = ["add_parser", "run"]


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
    _add_graph_flags(p)
    _add_quant_flags(p)
    p.set_defaults(func=run)


def _add_graph_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("pruning, factorization and recovery (run before quantization, in this order)")
    g.add_argument("--prune-structured", type=float, metavar="RATIO",
                   help="remove this fraction of channels/filters (a smaller, valid model with fewer MACs)")
    g.add_argument("--prune-criterion", choices=["l1", "l2", "bn"], help="channel importance (default l1)")
    g.add_argument("--prune-round-to", type=int, metavar="N",
                   help="keep channel counts multiples of N (default: with --board, what its kernels read per "
                   "step, e.g. 4 on x86 CPUs; else 1; see docs/pruning.md)")
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


def _add_quant_flags(p: argparse.ArgumentParser) -> None:
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
    _pair(q, "chain_ends_only", "--chain-ends-only", "--no-chain-ends-only",
          "round elementwise chains of one tensor (hard-swish, GELU, SiLU) to int8 at their ends only (default)",
          "let onnxruntime's quantizer round inside them too (the graph before 2026-12-06)")
    q.add_argument("--weight-bits", choices=["auto", "8", "7"],
                   help="bits of the int8 weights: 7 ([-64, 64]) lets AVX2 CPUs without VNNI use vpmaddubsw; "
                   "auto (default) picks 7 only for such a --board, else 8")
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


def _pair(group: argparse._ArgumentGroup, dest: str, on: str, off: str, on_help: str, off_help: str) -> None:
    ex = group.add_mutually_exclusive_group()
    ex.add_argument(on, dest=dest, action="store_true", default=None, help=on_help)
    ex.add_argument(off, dest=dest, action="store_false", default=None, help=off_help)


_QUANT_FLAGS = ("calibration", "calibration_method", "percentile", "calibration_samples", "max_drop",
                "min_sqnr", "eval", "per_channel", "weight_symmetric", "activation_symmetric", "metric",
                "max_time", "float_head", "bias_correction", "smooth_quant", "chain_ends_only",
                "weight_bits")  # fmt: skip


def _quant_request(args: argparse.Namespace) -> QuantizeRequest:
    """The quantization flags as :class:`QuantConfig` fields over the board's defaults."""
    overrides: dict[str, Any] = {}
    for flag, fld in (("per_channel", "per_channel"), ("weight_symmetric", "weight_symmetric"),
                      ("activation_symmetric", "activation_symmetric"), ("calibration_method", "calibration_method"),
                      ("percentile", "percentile"), ("calibration_samples", "calibration_samples"),
                      ("max_drop", "max_drop"), ("min_sqnr", "min_sqnr_db"), ("max_time", "max_time_s"),
                      ("float_head", "float_head"), ("bias_correction", "bias_correction"),
                      ("smooth_quant", "smooth_quant"), ("chain_ends_only", "chain_ends_only")):  # fmt: skip
        value = getattr(args, flag)
        if value is not None:
            overrides[fld] = value
    if args.weight_bits is not None:
        overrides["weight_bits"] = args.weight_bits if args.weight_bits == "auto" else int(args.weight_bits)
    if args.exclude:
        overrides["exclude"] = tuple(args.exclude)
    return QuantizeRequest(overrides, eval=args.eval, metric=args.metric)


_GRAPH_FLAGS = ("prune_structured", "prune_unstructured", "prune_nm", "low_rank", "recover")


def _graph_passes(args: argparse.Namespace) -> list[CompressionPass]:
    """The pruning / factorization / recovery passes the flags (or recipe) ask for."""
    if args.recipe:
        return []  # compress_model reads the recipe
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


def _wants_graph(args: argparse.Namespace) -> bool:
    return bool(args.recipe) or any(getattr(args, f) is not None for f in _GRAPH_FLAGS)


def _check_flags(args: argparse.Namespace) -> None:
    """Flags that need another flag, or exclude one."""
    if args.quantize is None:
        shared = ("calibration",) if _wants_graph(args) else ()
        stray = [f"--{f.replace('_', '-')}" for f in _QUANT_FLAGS if getattr(args, f) is not None and f not in shared]
        if args.exclude:
            stray.append("--exclude")
        if stray:
            raise InputError(f"these options need --quantize int8: {', '.join(stray)}", hint="Add --quantize int8, or drop them.")
    if args.recipe and (args.quantize or any(getattr(args, f) is not None for f in _GRAPH_FLAGS)):
        raise InputError(
            "--recipe replaces the step flags", hint="Put every step in the recipe, or use flags without --recipe."
        )


def run(args: argparse.Namespace) -> int:
    _check_flags(args)
    options = CompressOptions(
        input_shapes=parse_input_shapes(args.input_shape),
        passes=_graph_passes(args),
        recipe=args.recipe,
        calibration=args.calibration,
        quantize=_quant_request(args) if args.quantize == "int8" else None,
        board=args.board,
        payoff=not args.no_payoff,
        board_dirs=tuple(args.boards_dir),
        reports=tuple(args.report),
    )
    try:
        result = compress_model(args.model, args.output, options, progress=CliProgress(args))
    except CompressionGoalError as exc:
        if not args.json:
            render_result(exc.result)
        raise
    if emit_result(args, result.document):
        return 0
    render_result(result)
    for warning in result.warnings:
        err_console.print(f"[bold yellow]warning:[/] {escape(warning)}", highlight=False)
    err_console.print(f"wrote {args.output}" + (f" and {', '.join(args.report)}" if args.report else ""))
    return 0
