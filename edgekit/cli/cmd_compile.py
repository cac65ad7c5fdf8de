"""``edgekit compile``: compile an ONNX model for a board into a ``.ekpkg`` package."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from rich.table import Table

from edgekit.api.compile import compile_model
from edgekit.cli.render import StageProgress, add_json_flags, console, emit_result, err_console, format_bytes
from edgekit.compiler.backend import INT8_CHOICES, WEIGHT_STORAGE, CompileOptions
from edgekit.core.tensors import parse_input_shapes
from edgekit.package import Manifest

if TYPE_CHECKING:
    from edgekit.compiler.backends.aot_c.section import AotSection
    from edgekit.compiler.backends.llvm.int8_choice import Int8Choice

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compile",
        help="compile a model for a board into a .ekpkg package",
        description="Load MODEL, compile it through TVM for the board's target and write one package "
        "(manifest with SHA-256 of every member, the compiled code, the weights and the prepared ONNX).",
        epilog="example: edgekit compile model.onnx --board host -o model.ekpkg --input-shape input=1x3x224x224",
    )
    p.add_argument("model", metavar="MODEL", help="ONNX model file")
    p.add_argument("--board", required=True, help="board profile name (see `edgekit boards`)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.ekpkg", help="package file to write")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME=1x3x224x224",
                   help="static shape of an input (repeat per input)")
    p.add_argument("--tune", type=int, default=0, metavar="N",
                   help="tune with N MetaSchedule trials first (CPU boards with the TVM runtime, e.g. host; a remote "
                   "board is measured through --tracker; results are kept in the tuning database and reused, "
                   "see `edgekit tune`)")
    p.add_argument("--tracker", metavar="HOST:PORT",
                   help="with --tune: measure on a board registered with this TVM RPC tracker (see `edgekit tune`)")
    p.add_argument("--key", metavar="NAME",
                   help="with --tune --tracker: key the board's RPC servers use (default: the board name)")
    p.add_argument("--opt-level", type=int, default=3, choices=range(4), metavar="{0..3}", help="TVM optimisation level (default 3)")
    p.add_argument("--weight-storage", choices=WEIGHT_STORAGE, default="auto",
                   help="microcontroller (aot-c) boards: store each weight bitmask-sparse where that makes flash "
                   "smaller and it is decoded into RAM before use; auto (default) = sparse where smaller unless the "
                   "decode buffers overflow RAM, then dense; dense = never; sparse = where smaller, error if RAM does "
                   "not fit. Other boards keep weights dense and refuse 'sparse'")
    p.add_argument("--int8-choice", choices=INT8_CHOICES, default="auto",
                   help="CPU boards, int8 (QDQ) models: auto (default) times each quantized layer in int8 and fp32 "
                   "where the board's CPU is this machine's and keeps a layer in fp32 where that is faster, then "
                   "keeps the whole model in fp32 if its fp32 build is faster still (boards that cannot run here "
                   "stay int8, unmeasured); int8 = every quantized layer int8, nothing timed; fp32 = every quantized "
                   "layer fp32 (the fp32 build of the same graph, to bench both precisions on a board that cannot run "
                   "here)")
    p.add_argument("--int8-choice-budget", type=float, default=30.0, metavar="SECONDS",
                   help="with --int8-choice auto: seconds to spend timing single layers, largest first (default "
                   "30; 0 = only the whole-model comparison, which comes on top)")
    p.add_argument("--allow-unsupported", action="store_true",
                   help="skip edgekit's operator check and let TVM try anyway")
    p.add_argument("--boards-dir", action="append", default=[], metavar="DIR", help="extra folder of board/target TOML files")
    add_json_flags(p, "the package manifest")
    p.set_defaults(func=run)


def _weights_text(manifest: Manifest, aot: "AotSection | None") -> str:
    """Stored weight bytes, with the dense size when storage made them smaller."""
    stored = format_bytes((manifest.memory or {}).get("weight_bytes", 0))
    storage = aot.weight_storage if aot is not None else None
    if storage is None or not storage.sparse_tensors:
        return stored
    return (f"{stored} stored ({format_bytes(storage.dense_bytes)} dense; "
            f"{storage.sparse_tensors} of {len(storage.tensors)} tensors bitmask-sparse)")


def _ms_pair(a: float | None, b: float | None) -> tuple[str, str]:
    """Two times as text, told apart where they differ (:func:`ms_texts`); ``-`` for one not measured."""
    from edgekit.compiler.backends.llvm.int8_choice import ms_texts

    texts = iter(ms_texts([v for v in (a, b) if v is not None]))
    ta, tb = ("-" if v is None else next(texts) for v in (a, b))
    return ta, tb


def _speedup_words(choice: "Int8Choice") -> str:
    """What int8 bought on this board, from the whole-model times: ``int8
    1.76x faster than fp32``; empty when they were not measured."""
    t = choice.model_ms
    if not t.get("fp32") or not t.get("int8") or not t.get(choice.decision):
        return ""
    if choice.decision == "fp32":  # the whole-model guard: fp32 measured faster
        return f"int8 {t['int8'] / t['fp32']:.2f}x slower than fp32, so fp32 kept"
    return f"{choice.decision} {t['fp32'] / t[choice.decision]:.2f}x faster than fp32"


def _float_chain_rows(table: Table, manifest: Manifest, choice: "Int8Choice | None" = None) -> None:
    """Quantized chains the integer lowering left in float, grouped by why:
    an int8 model whose layers all stayed float compiles as slow as fp32,
    and the report should say so (a QOperator model from onnxruntime, uint8
    activations: "5 of 5 ... input is uint8"). Not the layers the int8/fp32
    choice put in fp32 on purpose: the manifest's lowering report is the
    compiled graph's, the fp32 one when the whole-model guard chose it."""
    if choice is not None and choice.decision == "fp32":
        return
    chosen = {c.node for c in choice.fp32_layers} if choice is not None else set()
    lowering = manifest.section("integer_lowering")
    total = len(lowering.get("kept_float", [])) + len(lowering.get("rewritten", []))
    kept = [c for c in lowering.get("kept_float", []) if isinstance(c, dict) and c.get("name") not in chosen]
    if not kept:
        return
    by_reason: dict[str, list[str]] = {}
    for chain in kept:
        by_reason.setdefault(str(chain.get("detail", "")), []).append(str(chain.get("name", "?")))
    for reason, names in list(by_reason.items())[:5]:
        shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        table.add_row("int8 in float", f"{len(names)} of {total} quantized chains ({shown}): {reason}")
    if any("uint8" in reason for reason in by_reason):
        table.add_row("", "quantize the fp32 model with int8 activations (`edgekit compress --quantize int8`) "
                      "to run these in int8")


def _int8_choice_rows(table: Table, choice: "Int8Choice | None") -> None:
    """The int8/fp32 choice: the decision, the whole-model times and every layer kept in fp32."""
    if choice is None:
        return
    from edgekit.compiler.backends.llvm.int8_choice import ms_texts

    times = ", ".join(f"{k} {v}" for k, v in zip(choice.model_ms, ms_texts(list(choice.model_ms.values()))))
    table.add_row("int8 choice", f"{choice.decision} ({choice.source}): {choice.reason}")
    if times:
        bought = _speedup_words(choice)
        table.add_row("", f"whole model: {times}{f' ({bought})' if bought else ''}; "
                      f"{choice.extra_seconds:.1f} s of compile time")
    if noise := choice.noise.in_words():  # load from other processes while timing
        table.add_row("", noise + (f"; {choice.noise.advice}" if choice.noise.advice else ""))
    if choice.source == "unknown":
        table.add_row("", "what int8 buys there is measured on the board: compile the model with --int8-choice fp32 "
                      "too and `edgekit bench` both packages with --port (an emulator's time is not the board's)")
    whole_fp32 = choice.decision == "fp32"
    if choice.source not in ("off", "unknown"):
        # With the whole model in fp32 every quantized layer is listed, timed
        # or not: count the timed ones, and nothing "stays int8" then.
        timed = sum(1 for c in choice.layers if c.int8_ms is not None and c.fp32_ms is not None)
        stay = "" if whole_fp32 else "; stay int8"
        table.add_row("", f"{timed} of {choice.candidates} quantized layers timed alone"
                      + (f", {choice.not_timed} not timed (budget{stay})" if choice.not_timed else "")
                      + (f", {choice.elementwise} elementwise (not timed alone{stay})" if choice.elementwise else ""))
    fp32_layers = choice.fp32_layers
    if whole_fp32 and choice.mode == "fp32":
        table.add_row("", f"all {len(fp32_layers)} quantized layers in fp32, as asked (--json lists them)")
        return
    if whole_fp32:  # one line, not one per layer with the same reason
        table.add_row("", f"all {len(fp32_layers)} quantized layers in fp32 (whole-model guard; --json lists them "
                      "with the times of those timed alone)")
        return
    for layer in fp32_layers[:20]:
        t8, t32 = _ms_pair(layer.int8_ms, layer.fp32_ms)
        table.add_row(f"  fp32 {layer.node}", f"{layer.op_type}: int8 {t8}, fp32 {t32} ({layer.source}); {layer.reason}")
    more = len(fp32_layers) - 20
    if more > 0:
        table.add_row("", f"... {more} more layers in fp32 (--json lists all)")


def run(args: argparse.Namespace) -> int:
    options = CompileOptions(
        opt_level=args.opt_level,
        allow_unsupported=args.allow_unsupported,
        tune_trials=args.tune,
        tune_tracker=args.tracker or "",
        tune_key=args.key or "",
        weight_storage=args.weight_storage,
        int8_choice=args.int8_choice,
        int8_choice_budget_s=args.int8_choice_budget,
    )
    shapes = parse_input_shapes(args.input_shape)
    quiet = bool(getattr(args, "quiet", False))
    with StageProgress(err_console, enabled=not quiet and not args.json) as progress:
        result = compile_model(args.model, args.board, args.output, input_shapes=shapes, options=options,
                               board_dirs=args.boards_dir, progress=progress)  # fmt: skip
    if emit_result(args, result.to_json()):
        return 0
    from edgekit.compiler.backends.aot_c.section import AotSection
    from edgekit.compiler.backends.llvm.int8_choice import Int8Choice

    manifest = result.manifest
    aot = AotSection.of(manifest)
    mem = manifest.memory or {}
    table = Table(title=f"compiled {manifest.model_name} for {manifest.board}", show_header=False)
    table.add_column("what")
    table.add_column("value")
    table.add_row("package", f"{args.output} ({format_bytes(result.package_bytes)})")
    table.add_row("target", f"{manifest.target} ({manifest.codegen}, runtime {manifest.runtime})")
    for kind, specs in (("input", manifest.inputs), ("output", manifest.outputs)):
        for spec in specs or ():
            table.add_row(f"{kind} {spec.name}", f"{'x'.join(map(str, spec.shape))} {spec.dtype}")
    table.add_row("arena", format_bytes(mem.get("arena_bytes", 0)))
    table.add_row("weights", _weights_text(manifest, aot))
    if mem.get("decode_scratch_bytes"):
        table.add_row("decode scratch", f"{format_bytes(mem['decode_scratch_bytes'])} (inside the arena)")
    for op in aot.float_ops if aot is not None else ():
        table.add_row(f"float op {op.step}", f"{op.kernel}: {format_bytes(op.float_bytes)} of float tensors, "
                      f"arena {format_bytes(op.arena_cost_bytes)} larger than with int8")  # fmt: skip
    choice = Int8Choice.of(manifest)
    _float_chain_rows(table, manifest, choice)
    _int8_choice_rows(table, choice)
    table.add_row("code", format_bytes(mem.get("code_bytes", 0)))
    table.add_row("time", f"{result.compile_seconds:.1f} s")
    console.print(table)
    return 0
