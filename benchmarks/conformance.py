"""ONNX's own node conformance tests through edgekit (issue #20).

The onnx wheel generates its backend node tests in-process
(``onnx.backend.test.case.node.collect_testcases()``: a one-node model, its
inputs and the expected outputs; nothing is downloaded). Each test is
compiled for a board with :func:`edgekit.compiler.driver.compile_model`, run
with :func:`edgekit.runtime.runner.run_package` and classified:

``pass``
    every output has the expected shape and values (the test's own ``rtol``
    and ``atol``; NaNs must match);
``refused``
    edgekit raised a typed :class:`~edgekit.core.errors.EdgekitError` (the
    message is the cause shown in the table);
``wrong``
    a package was built and ran, but an output differs: a silent wrong answer;
``crash``
    any other exception, a dead worker or a timeout.

Each test runs in its own worker process, forked from a parent that has
already imported TVM and edgekit (so a crash or a hang ends one test, and a
test does not pay TVM's import). The same worker runs onnxruntime on the
original model, so the table can say how many of the tests onnxruntime passes
edgekit passes too.

Integer inputs that real models feed as constants (Reshape's shape, a
reduction's axes, Resize's scales, Pad's pads, ...) are bound to the test's
values before compiling (:data:`CONSTANT_INPUTS`); the table lists the tests
that were run that way.

Usage::

    nice -n 10 .venv/bin/python benchmarks/conformance.py --table docs/conformance.md --json out.json
    .venv/bin/python benchmarks/conformance.py --only 'test_layer_norm' -v
    .venv/bin/python benchmarks/conformance.py --sample 150 --seed 20
    nice -n 10 .venv/bin/python benchmarks/conformance.py --board rv32-mcu-sim --ops mcu --table docs/conformance-mcu.md

Exit status 1 when any test is ``wrong`` or ``crash``, else 0.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import re
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

#: (op type, input index) pairs that real models feed as compile-time
#: constants; a graph input in one of these slots is bound to the test's value.
CONSTANT_INPUTS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,), "Expand": (1,), "Tile": (1,), "ConstantOfShape": (0,),
    "Squeeze": (1,), "Unsqueeze": (1,), "Split": (1,), "TopK": (1,), "OneHot": (1, 2),
    "ReduceSum": (1,), "ReduceMean": (1,), "ReduceMax": (1,), "ReduceMin": (1,), "ReduceProd": (1,),
    "ReduceL1": (1,), "ReduceL2": (1,), "ReduceLogSum": (1,), "ReduceLogSumExp": (1,), "ReduceSumSquare": (1,),
    "Resize": (1, 2, 3), "Upsample": (1,), "Pad": (1, 2, 3), "Slice": (1, 2, 3, 4), "CumSum": (1,),
    "Range": (0, 1, 2), "Col2Im": (1, 2), "Clip": (1, 2), "Trilu": (1,), "CenterCropPad": (1,),
    "RotaryEmbedding": (1, 2, 3), "Attention": (3,), "DFT": (1, 2), "STFT": (1, 2, 3),
    "HammingWindow": (0,), "HannWindow": (0,), "BlackmanWindow": (0,), "MelWeightMatrix": (0, 1, 2, 3, 4),
    "ReverseSequence": (1,), "GridSample": (), "NonMaxSuppression": (2, 3, 4), "Dropout": (1, 2),
    "ScatterND": (), "GatherND": (), "LpPool": (), "Compress": (1,), "BitShift": (), "Loop": (0, 1),
}
#: Tests refused by design and left out of the onnxruntime comparison.
BY_DESIGN_DOMAINS = ("ai.onnx.ml", "ai.onnx.preview.training")
TRAINING_LOSS_OPS = {"SoftmaxCrossEntropyLoss", "NegativeLogLikelihoodLoss"}
STRING_OPS = {"StringNormalizer", "StringConcat", "StringSplit", "RegexFullMatch", "LabelEncoder"}

STATUSES = ("pass", "refused", "wrong", "crash")


def machine() -> str:
    """This machine's CPU and core count, and today's date, for the tables."""
    info = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    cpu = info.get("model name", "an unknown CPU") + (f" (family {info['cpu family']})" if "cpu family" in info else "")
    return f"{os.cpu_count()} cores of {cpu}, {time.strftime('%Y-%m-%d')}"
#: Relative tolerance for float16 outputs: 2^-9, two float16 ulps anywhere in a binade.
FLOAT16_RTOL = 2.0**-9


@dataclass
class CaseResult:
    """What one node test did."""

    name: str
    op: str
    status: str
    cause: str = ""
    detail: str = ""
    bound: list[str] = field(default_factory=list)
    ort_pass: bool | None = None
    by_design: str = ""
    seconds: float = 0.0


# --------------------------------------------------------------------------- cases


def collect(only: str | None = None) -> list[Any]:
    """The installed onnx's node test cases (sorted by name), optionally those
    whose name matches the regular expression ``only``."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        cases = [c for c in collect_testcases(None) if c.kind == "node" and c.model is not None]
    cases.sort(key=lambda c: c.name)
    if only:
        pattern = re.compile(only)
        cases = [c for c in cases if pattern.search(c.name)]
    return cases


def _as_arrays(values: Sequence[Any]) -> list[Any]:
    """Test data as numpy arrays (some tests store TensorProtos)."""
    from onnx import TensorProto, numpy_helper

    return [numpy_helper.to_array(v) if isinstance(v, TensorProto)
            else np.asarray(v) if isinstance(v, np.generic) else v for v in values]


def data_sets(case: Any) -> list[tuple[list[Any], list[Any]]]:
    """``(inputs, expected outputs)`` pairs of a test, as numpy arrays."""
    return [(_as_arrays(ins), _as_arrays(outs)) for ins, outs in case.data_sets]


#: The operators microcontroller models use (``--ops mcu``).
MCU_OPS = ("Conv", "Gemm", "MatMul", "Relu", "Clip", "Add", "Mul", "MaxPool", "AveragePool", "GlobalAveragePool",
           "Reshape", "Flatten", "Concat", "Softmax", "Sigmoid", "HardSigmoid", "HardSwish", "QuantizeLinear",
           "DequantizeLinear")


def of_ops(cases: Sequence[Any], ops: Iterable[str]) -> list[Any]:
    """The cases about one of ``ops`` (an expanded test counts for the op it expands)."""
    wanted = set(ops)
    ops_by_name = {c.name: op_of(c) for c in cases if "_expanded" not in c.name}
    return [c for c in cases if op_of(c, ops_by_name) in wanted]


def sample(cases: Sequence[Any], n: int, seed: int) -> list[Any]:
    """A fixed, seeded sample of ``n`` cases (all of them when ``n`` is larger)."""
    if n >= len(cases):
        return list(cases)
    picked = random.Random(seed).sample(range(len(cases)), n)
    return [cases[i] for i in sorted(picked)]


def op_of(case: Any, ops_by_name: dict[str, str] | None = None) -> str:
    """The operator a test is about: its node's type, or for an expanded
    function test (many nodes) the operator of the test it expands."""
    nodes = case.model.graph.node
    if "_expanded" in case.name and ops_by_name:
        base = case.name.split("_expanded")[0]
        if base in ops_by_name:
            return ops_by_name[base]
    if not nodes:
        return "?"
    node = nodes[-1] if len(nodes) > 1 else nodes[0]
    domain = node.domain if node.domain not in ("", "ai.onnx") else ""
    return f"{domain}::{node.op_type}" if domain else node.op_type


def by_design(case: Any, op: str) -> str:
    """Why a test is refused by design ('' when it is not)."""
    import onnx

    domains = {n.domain for n in case.model.graph.node}
    if any(d in BY_DESIGN_DOMAINS for d in domains) or op.startswith(BY_DESIGN_DOMAINS):
        return "ai.onnx.ml / training domain"
    if op in TRAINING_LOSS_OPS or "cross_entropy" in case.name or case.name.startswith("test_nllloss"):
        return "training loss"
    values = list(case.model.graph.input) + list(case.model.graph.output)
    if op in STRING_OPS or any(v.type.tensor_type.elem_type == onnx.TensorProto.STRING for v in values):
        return "string tensors"
    return ""


def bind_constants(model: Any, inputs: Sequence[np.ndarray]) -> tuple[Any, dict[str, np.ndarray], list[str]]:
    """Turns graph inputs in :data:`CONSTANT_INPUTS` slots into initializers.

    Returns the new model, the feeds of the inputs left, and the bound names.
    """
    import onnx
    from onnx import numpy_helper

    names = [i.name for i in model.graph.input]
    values = dict(zip(names, inputs))
    slots = set()
    for node in model.graph.node:
        for idx in CONSTANT_INPUTS.get(node.op_type, ()):
            if idx < len(node.input) and node.input[idx]:
                slots.add(node.input[idx])
    bound = [n for n in names if n in slots and n in values and isinstance(values[n], np.ndarray)]
    if not bound:
        return model, values, []
    out = onnx.ModelProto()
    out.CopyFrom(model)
    keep = [i for i in out.graph.input if i.name not in bound]
    del out.graph.input[:]
    out.graph.input.extend(keep)
    for n in bound:
        out.graph.initializer.append(numpy_helper.from_array(np.asarray(values[n]), n))
    return out, {k: v for k, v in values.items() if k not in bound}, bound


def symbolic_input_shapes(model: Any, inputs: Sequence[Any]) -> dict[str, tuple[int, ...]]:
    """``--input-shape`` values, taken from the test's data, for the inputs
    whose declared shape is not fully static (what a user would pass)."""
    values = dict(zip([i.name for i in model.graph.input], inputs))
    shapes = {}
    for inp in model.graph.input:
        t = inp.type.tensor_type
        static = t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim)
        if not static and isinstance(values.get(inp.name), np.ndarray) and values[inp.name].ndim:
            shapes[inp.name] = tuple(int(d) for d in values[inp.name].shape)
    return shapes


def compare(expected: Sequence[Any], got: Sequence[Any], rtol: float, atol: float) -> str:
    """'' when every output matches, else what differs first."""
    if len(expected) != len(got):
        return f"{len(got)} outputs, expected {len(expected)}"
    for i, (e, g) in enumerate(zip(expected, got)):
        if isinstance(e, np.generic):
            e = np.asarray(e)
        if not isinstance(e, np.ndarray):
            return f"output {i}: expected a {type(e).__name__}, not a tensor"
        g = np.asarray(g)
        if g.shape != e.shape:
            return f"output {i}: shape {g.shape}, expected {e.shape}"
        if e.dtype.kind in "biuSUO" or g.dtype.kind in "bSUO":
            if not np.array_equal(e, g.astype(e.dtype) if g.dtype != e.dtype else g):
                return f"output {i}: values differ ({int(np.sum(e != g))} of {e.size})"
            continue
        if e.dtype == np.float16:
            # A float32 result that differs from the reference's in its last
            # bits can round to the neighbouring float16 (1 ulp), and the
            # reference itself was rounded once (up to 1 more): 2 ulps, 2^-10
            # to 2^-9 relative, while the tests' rtol 1e-3 admits 1 ulp at
            # the top of a binade. benchmarks/fp16_ulps.py measures both
            # edgekit and onnxruntime at 2 ulps or less on every test.
            rtol = max(rtol, FLOAT16_RTOL)
        e64, g64 = e.astype(np.float64), g.astype(np.float64)
        if not np.allclose(g64, e64, rtol=rtol, atol=atol, equal_nan=True):
            nan = np.isnan(g64) != np.isnan(e64)
            if nan.any():
                return f"output {i}: NaN where a number is expected or back ({int(nan.sum())} of {e.size})"
            inf = np.isinf(g64) | np.isinf(e64)
            if (inf & (g64 != e64)).any():
                return f"output {i}: infinities differ ({int((inf & (g64 != e64)).sum())} of {e.size})"
            with np.errstate(all="ignore"):
                err = np.nanmax(np.abs(g64 - e64)) if e.size else 0.0
            return f"output {i}: max abs error {err:.3g} (rtol {rtol:g}, atol {atol:g})"
    return ""


# --------------------------------------------------------------------------- one test


def _ort_passes(case: Any) -> bool:
    try:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 4
        sess = ort.InferenceSession(case.model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        for inputs, expected in data_sets(case):
            names = [i.name for i in sess.get_inputs()]
            got = sess.run(None, dict(zip(names, inputs)))
            if compare(expected, got, case.rtol, case.atol):
                return False
        return True
    except Exception:
        return False


def refined_cause(cause: str, detail: str) -> str:
    """A finer label for edgekit's own refusals, read off the message: the
    op and attribute refused, or the value types not compiled."""
    if "would compile to wrong results:" in detail or "compiles wrongly or not at all:" in detail:
        found = sorted({f"{op}: {re.sub(r'[0-9.]+', 'N', why.strip())[:60]}"
                        for op, why in re.findall(r"(\w+) node '[^']*': ([^;]+?)(?:;|\. Re-export|$)", detail)})
        return "refused attribute: " + "; ".join(found) if found else cause
    if detail.startswith("values of types that are not compiled"):
        kinds = sorted(set(re.findall(r"(?:of type |of |to )([A-Z0-9]+|sequence|optional|map)\b", detail)))
        return "value types not compiled: " + ", ".join(kinds)
    return cause


def cause_of(exc: BaseException) -> str:
    """A short, stable label for why a test was refused or crashed."""
    from edgekit.core.errors import UnsupportedOpsError

    if isinstance(exc, UnsupportedOpsError) and exc.fields.get("ops") and (
        "compiles wrongly or not at all" in exc.message or exc.message.startswith("values of types")
    ):
        return refined_cause("", str(exc))
    if isinstance(exc, UnsupportedOpsError):
        return "unsupported op: " + ", ".join(exc.fields.get("ops", []) or ["?"])
    text = str(getattr(exc, "message", exc)).splitlines()[0] if str(exc) else type(exc).__name__
    text = re.sub(r"'[^']*'", "'…'", text)
    text = re.sub(r"\d+", "N", text)
    return f"{type(exc).__name__}: {text[:110]}"


def run_case(case: Any, board: str = "host", *, reference: bool = True) -> CaseResult:
    """Compiles and runs one test in this process and classifies it."""
    from edgekit.compiler.backend import CompileOptions
    from edgekit.compiler.driver import compile_model
    from edgekit.core.errors import EdgekitError
    from edgekit.runtime.runner import run_package

    op = op_of(case)
    result = CaseResult(case.name, op, "crash", by_design=by_design(case, op))
    started = time.perf_counter()
    if reference:
        result.ort_pass = _ort_passes(case)
    try:
        with tempfile.TemporaryDirectory(prefix="ek-conf-") as tmp:
            first_inputs = data_sets(case)[0][0]
            model, _, bound = bind_constants(case.model, first_inputs)
            result.bound = bound
            pkg = Path(tmp) / "m.ekpkg"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # int8 pinned: the test's expected outputs are the op's own
                # semantics, not a timing-dependent int8/fp32 choice.
                compile_model(model, board, pkg, input_shapes={
                    k: v for k, v in symbolic_input_shapes(case.model, first_inputs).items() if k not in bound},
                    options=CompileOptions(int8_choice="int8"))
            problem = ""
            for inputs, expected in data_sets(case):
                _, feeds, _ = bind_constants(case.model, inputs)
                outs, _, _ = run_package(pkg, {k: np.asarray(v)[None] for k, v in feeds.items()}, board=board)
                names = [o.name for o in case.model.graph.output]
                got = [np.asarray(outs[0][n]) for n in names]
                problem = compare(expected, got, case.rtol, case.atol)
                if problem:
                    break
            result.status, result.detail = ("wrong", problem) if problem else ("pass", "")
    except EdgekitError as exc:
        result.status, result.cause, result.detail = "refused", cause_of(exc), str(exc)[:400]
    except Exception as exc:  # an untyped failure is what this gate looks for
        result.status, result.cause = "crash", cause_of(exc)
        result.detail = "".join(traceback.format_exception_only(type(exc), exc))[-400:]
    result.seconds = round(time.perf_counter() - started, 3)
    return result


def _worker(cases: Sequence[Any], board: str, reference: bool, conn: Any) -> None:
    """Runs the cases whose indices arrive on ``conn``, one at a time."""
    # TVM's importer prints to stdout; the report is the parent's.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    import logging

    logging.disable(logging.WARNING)
    while True:
        try:
            index = conn.recv()
        except EOFError:
            return
        if index is None:
            return
        conn.send(asdict(run_case(cases[index], board, reference=reference)))


class _Slot:
    """One worker process and the test it is running."""

    def __init__(self, ctx: Any, cases: Sequence[Any], board: str, reference: bool) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(cases, board, reference, child), daemon=True)
        self.proc.start()
        child.close()
        self.index: int | None = None
        self.started = 0.0

    def give(self, index: int) -> None:
        self.index, self.started = index, time.monotonic()
        self.conn.send(index)

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.proc.kill()
        else:
            try:
                self.conn.send(None)
            except OSError:
                pass
        self.proc.join(timeout=10)
        self.conn.close()


def run_all(
    cases: Sequence[Any], board: str = "host", *, jobs: int = 2, timeout: float = 120.0,
    reference: bool = True, verbose: bool = False,
) -> list[CaseResult]:
    """Runs every case in worker processes, ``jobs`` at a time.

    Workers are forked after TVM and edgekit are imported (so a test does not
    pay the import) but before TVM has run anything (its thread pool does not
    survive a fork). A worker that dies or passes ``timeout`` seconds on one
    test is killed and replaced; that test is a ``crash``.
    """
    import onnxruntime  # noqa: F401
    import tvm  # noqa: F401

    import edgekit.compiler.backends.llvm.relax_build  # noqa: F401
    import edgekit.compiler.driver  # noqa: F401
    import edgekit.runtime.runner  # noqa: F401

    ctx = multiprocessing.get_context("fork")
    ops_by_name = {c.name: op_of(c) for c in cases if "_expanded" not in c.name}
    pending = list(range(len(cases)))
    results: list[CaseResult] = []

    def record(index: int, data: dict[str, Any] | None, cause: str) -> None:
        case = cases[index]
        op = op_of(case, ops_by_name)
        if data is None:
            data = asdict(CaseResult(case.name, op, "crash", cause, by_design=by_design(case, op)))
        data["op"] = op
        res = CaseResult(**data)
        results.append(res)
        if verbose:
            print(f"{len(results):5d}/{len(cases)} {res.status:7s} {res.name} {res.cause} {res.detail[:200]}", flush=True)

    slots = [_Slot(ctx, cases, board, reference) for _ in range(max(1, jobs))]
    try:
        for slot in slots:
            if pending:
                slot.give(pending.pop(0))
        while any(slot.index is not None for slot in slots):
            time.sleep(0.01)
            for i, slot in enumerate(slots):
                if slot.index is None:
                    continue
                data, cause = None, ""
                if slot.conn.poll():
                    try:
                        data = slot.conn.recv()
                    except (EOFError, OSError):
                        cause = f"worker died (exit code {slot.proc.exitcode})"
                elif not slot.proc.is_alive():
                    cause = f"worker died (exit code {slot.proc.exitcode})"
                elif time.monotonic() - slot.started > timeout:
                    cause = f"timeout after {timeout:g} s"
                else:
                    continue
                record(slot.index, data, cause)
                slot.index = None
                if data is None:  # the worker is dead or stuck: replace it
                    slot.stop(kill=True)
                    slot = slots[i] = _Slot(ctx, cases, board, reference)
                if pending:
                    slot.give(pending.pop(0))
    finally:
        for slot in slots:
            slot.stop(kill=slot.index is not None)
    results.sort(key=lambda r: r.name)
    return results


# --------------------------------------------------------------------------- report


def summarize(results: Iterable[CaseResult]) -> dict[str, Any]:
    """Counts by status, the onnxruntime comparison and refusal causes."""
    results = list(results)
    counts = Counter(r.status for r in results)
    gated = [r for r in results if not r.by_design]
    ort_ok = [r for r in gated if r.ort_pass]
    both = [r for r in ort_ok if r.status == "pass"]
    return {
        "tests": len(results),
        **{s: counts.get(s, 0) for s in STATUSES},
        "by_design": len(results) - len(gated),
        "ort_pass": len(ort_ok),
        "ort_pass_and_edgekit_pass": len(both),
        "pass_rate_of_ort_pass": round(len(both) / len(ort_ok), 4) if ort_ok else None,
        "bound_inputs": sum(1 for r in results if r.bound),
    }


def markdown(results: Sequence[CaseResult], board: str, seconds: float | None) -> str:
    """The table for docs/conformance.md."""
    import onnx
    import tvm

    s = summarize(results)
    rate = s["pass_rate_of_ort_pass"]
    lines = [
        f"# ONNX node conformance on `{board}`",
        "",
        f"Generated by `benchmarks/conformance.py` (onnx {onnx.__version__}, TVM {tvm.__version__}) "
        f"over all {s['tests']} node tests of the installed onnx wheel "
        "(`onnx.backend.test.case.node.collect_testcases()`, nothing downloaded)"
        + (f", in {seconds / 60:.0f} min on {machine()}" if seconds else "")
        + ". Each test was compiled with `compile_model(model, board)`, run with `run_package` "
        "and compared with the expected outputs at the test's own tolerances "
        "(rtol 1e-3, atol 1e-7 unless the test says otherwise; float16 outputs at rtol 2^-9, see below).",
        "",
        "| result | tests |",
        "| --- | ---: |",
        f"| pass | {s['pass']} |",
        f"| refused with a typed error | {s['refused']} |",
        f"| **wrong** (silent wrong answer) | **{s['wrong']}** |",
        f"| **crash** (untyped error, dead worker, timeout) | **{s['crash']}** |",
        f"| of which refused by design (ai.onnx.ml, training losses, strings) | {s['by_design']} |",
        "",
        f"Of the {s['ort_pass']} tests onnxruntime passes (refused-by-design tests left out), edgekit passes "
        f"{s['ort_pass_and_edgekit_pass']}" + (f" ({rate:.1%})." if rate is not None else "."),
        "",
        f"**Inputs bound to constants.** {s['bound_inputs']} tests feed, as graph inputs, integer "
        "tensors that real models give as constants (Reshape's `shape`, a reduction's `axes`, Resize's "
        "`scales`/`sizes`, Pad's `pads`, Slice's `starts`/`ends`, ...; the list is `CONSTANT_INPUTS` in "
        "the script). They were compiled with those inputs bound to the test's values, which the issue "
        "accepts as a way to run them; they are marked † below.",
        "",
    ]
    lines += [
        "**Refused by design.** Tests of the `ai.onnx.ml` and training domains, the training losses "
        "(SoftmaxCrossEntropyLoss, NegativeLogLikelihoodLoss) and string tensors are refused with a typed "
        "error and left out of the onnxruntime comparison.",
        "",
        "**Compress** takes its condition as a graph input in these tests; it is bound to a constant like "
        "the inputs above (a condition computed at run time would make the output size data-dependent, "
        "and is refused naming the node). **Loop**'s trip count and condition are bound the same way.",
        "",
        "**What edgekit does about TVM's importer** (`edgekit/frontend/legalize.py`, run before every "
        "import; `edgekit inspect` shows its result for a model): operators TVM converts wrongly for some "
        "attributes are expanded to their ONNX function body (standard Attention, LayerNormalization off "
        "the last axis or with Mean/InvStdDev used), rewritten (`importer_fixes.py`: ConvTranspose "
        "`output_shape`, IsInf with one sign, LpNormalization, Col2Im as a ConvTranspose, Compress with a "
        "constant condition, float Mod by an infinite divisor, ReduceMax/ReduceMin over all-infinite "
        "rows, float16 MatMul/Gemm/Conv/Softmax/Attention computed in float32) or refused naming node, op and attribute "
        "(the refusals below). Operators TVM lacks but the standard defines as a function "
        "(RotaryEmbedding, Celu, CenterCropPad, Swish, LinearAttention, ...) are expanded; Loop and Scan "
        "with an iteration count known at compile time are unrolled (`unroll.py`); float ReduceMean/"
        "ReduceSum over more than 256 elements on two or more axes are reduced axis by axis "
        "(`staged_reductions.py`, see *Real models*). Zero-size tensors are refused up front: an input "
        "with an empty axis (InputError naming input, shape and axis), a node output with no elements "
        "(naming node and output).",
        "",
        "**Float16 tolerance.** Float16 outputs are compared at rtol 2^-9, two float16 ulps anywhere in a "
        "binade (the tests' 1e-3 admits one ulp at the top of a binade): a float32 result that differs in its "
        "last bits rounds to the neighbouring float16, and the expected value was rounded once too. It was "
        "2^-8 (4 ulps) while edgekit's float16 Attention and Softmax ran in float16 (4 ulps from the "
        "reference where onnxruntime is 1); they now compute in float32 like float16 MatMul/Conv, and no "
        "test needs more than 2 ulps, in edgekit or onnxruntime (`benchmarks/fp16_ulps.py`):",
        "",
        "<!-- float16-ulps -->",
        "<!-- /float16-ulps -->",
        "",
        "The run on `rv32-mcu-sim` over the ops microcontroller models use is at the end of this page.",
        "",
        "<!-- real-models -->",
        "<!-- /real-models -->",
        "",
        "CI runs a seeded sample of 160 of these tests (`tests/build/test_onnx_conformance.py`; "
        "`benchmarks/conformance.py --sample 160 --seed 20` reproduces it) and fails on any wrong result "
        "or crash.",
        "",
    ]
    by_status: dict[str, list[CaseResult]] = defaultdict(list)
    for r in results:
        by_status[r.status].append(r)
    for status in ("wrong", "crash"):
        if by_status[status]:
            lines += [f"## {status}", "", "| test | op | what |", "| --- | --- | --- |"]
            for r in by_status[status]:
                lines.append(f"| {r.name} | {r.op} | {(r.detail or r.cause).splitlines()[0][:160]} |")
            lines.append("")
    lines += _cause_and_op_tables(results, "##")
    lines += ["", "## Tests run with inputs bound to constants (†)", ""]
    bound = [r for r in results if r.bound]
    lines += [", ".join(f"{r.name} ({'/'.join(r.bound)}: {r.status})" for r in bound) or "none", ""]
    return "\n".join(lines)


def board_section(results: Sequence[CaseResult], board: str, seconds: float | None, ops: str) -> str:
    """A section of docs/conformance.md for a run on another board (``--section``)."""
    s = summarize(results)
    lines = [
        f"## On `{board}`" + (": the ops microcontroller models use" if ops == "mcu" else f": {ops}" if ops else ""),
        "",
        *([f"Every node test of {', '.join(MCU_OPS)} (and their expanded forms).", ""] if ops == "mcu" else []),
        f"`benchmarks/conformance.py --board {board}" + (f" --ops {ops}" if ops else "") + "`"
        + (f", {seconds / 60:.0f} min on {machine()}" if seconds else "") + f": {s['tests']} tests, "
        f"{s['pass']} pass, {s['refused']} refused with a typed error, **{s['wrong']} wrong**, "
        f"**{s['crash']} crash**; of the {s['ort_pass']} tests onnxruntime passes, edgekit passes "
        f"{s['ort_pass_and_edgekit_pass']}.", "",
    ]
    return "\n".join(lines + _cause_and_op_tables(results, "###")) + "\n"


def _cause_and_op_tables(results: Sequence[CaseResult], level: str) -> list[str]:
    lines: list[str] = []
    causes: dict[str, list[CaseResult]] = defaultdict(list)
    for r in results:
        if r.status == "refused":
            causes[refined_cause(r.cause, r.detail)].append(r)
    lines += [f"{level} Refusals by cause", "", "| cause | tests | ops |", "| --- | ---: | --- |"]
    for cause, rs in sorted(causes.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        ops = sorted({r.op for r in rs})
        shown = ", ".join(ops[:12]) + (f" (+{len(ops) - 12})" if len(ops) > 12 else "")
        lines.append(f"| {cause.replace('|', '/')} | {len(rs)} | {shown} |")
    lines.append("")
    per_op: dict[str, Counter] = defaultdict(Counter)
    for r in results:
        per_op[r.op][r.status] += 1
    lines += [f"{level} Per operator", "", "| op | pass | refused | wrong | crash |", "| --- | ---: | ---: | ---: | ---: |"]
    for op in sorted(per_op):
        c = per_op[op]
        lines.append(f"| {op} | {c['pass']} | {c['refused']} | {c['wrong']} | {c['crash']} |")
    return lines


def section(text: str, name: str) -> str:
    """What ``text`` holds between ``<!-- name -->`` and ``<!-- /name -->`` ('' if nothing)."""
    found = re.search(rf"<!-- {name} -->\n(.*?)<!-- /{name} -->", text, re.S)
    return found.group(1) if found else ""


def with_section(text: str, name: str, body: str) -> str:
    """``text`` with ``body`` between its ``name`` markers (appended with them where missing)."""
    begin, end = f"<!-- {name} -->\n", f"<!-- /{name} -->"
    if begin not in text:
        return text.rstrip("\n") + f"\n\n{begin}{body}{end}\n"
    return re.sub(rf"<!-- {name} -->\n.*?<!-- /{name} -->", lambda _: begin + body + end, text, flags=re.S)


#: Sections of docs/conformance.md that other scripts write (kept when the table is rewritten).
KEPT_SECTIONS = ("real-models", "float16-ulps", "mcu")


def _write(args: argparse.Namespace, results: Sequence[CaseResult], board: str, seconds: float | None) -> None:
    path = Path(args.table)
    if args.section:
        old = path.read_text() if path.exists() else ""
        path.write_text(with_section(old, args.section, board_section(results, board, seconds, args.ops or "")))
    else:
        write_table(path, markdown(results, board, seconds))


def write_table(path: Path, text: str) -> None:
    """Writes ``text`` to ``path``, keeping the :data:`KEPT_SECTIONS` the file already holds."""
    old = path.read_text() if path.exists() else ""
    for name in KEPT_SECTIONS:
        if section(old, name):
            text = with_section(text, name, section(old, name))
    path.write_text(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--board", default="host")
    parser.add_argument("--only", help="regular expression on test names")
    parser.add_argument("--ops", help="only the tests of these ops (comma-separated; 'mcu' = the ops MCU models use)")
    parser.add_argument("--sample", type=int, default=0, help="run a seeded sample of N tests")
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per test")
    parser.add_argument("--no-reference", action="store_true", help="skip onnxruntime")
    parser.add_argument("--json", help="write every result to this file")
    parser.add_argument("--table", help="write the markdown table to this file")
    parser.add_argument("--from-json", help="only render --table from the results of an earlier --json run")
    parser.add_argument("--section", help="with --table: write a short summary into this marked section of the file")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)

    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        results = [CaseResult(**r) for r in saved["results"]]
        if args.table:
            _write(args, results, saved.get("board", args.board), saved.get("seconds"))
        summary = summarize(results)
        print(json.dumps(summary))
        return 1 if summary["wrong"] or summary["crash"] else 0

    cases = collect(args.only)
    if args.ops:
        cases = of_ops(cases, MCU_OPS if args.ops == "mcu" else args.ops.split(","))
    if args.sample:
        cases = sample(cases, args.sample, args.seed)
    started = time.perf_counter()
    results = run_all(cases, args.board, jobs=args.jobs, timeout=args.timeout,
                      reference=not args.no_reference, verbose=args.verbose)
    seconds = time.perf_counter() - started
    summary = summarize(results)
    print(json.dumps(summary))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "board": args.board, "seconds": round(seconds),
                                               "results": [asdict(r) for r in results]}, indent=1))
    if args.table:
        _write(args, results, args.board, seconds)
    return 1 if summary["wrong"] or summary["crash"] else 0


if __name__ == "__main__":
    sys.exit(main())
