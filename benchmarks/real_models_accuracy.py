"""Every real model the tests use, compiled for ``host`` with default options,
against onnxruntime (issue #20: within 1e-4 relative max error).

Error measure (one definition everywhere, :func:`edgekit.runtime.stats.max_relative_error`)::

    relative max error = max|a - b| / max|b|

over one output tensor of one sample, ``a`` from the compiled package,
``b`` from onnxruntime (CPU, default graph optimizations) on the *original*
model file with the same input. A row reports the largest value over its
samples and outputs.

Models (nothing downloaded):

* PP-OCR text detector, angle classifier and recognizer (``rapidocr`` wheel)
  on rendered text: a synthetic page of strokes for the detector, rendered
  words (``benchmarks/accuracy.py``) for the classifier and the recognizer;
* the bundled digits CNN (``edgekit.examples``) on its 16 test samples;
* the ONNX backend "light" models (onnx wheel) with the seeded He-scaled
  weights ``tests/build/test_host_compile.py`` gives them, final Softmax input
  exposed as an output;

each also on standard-normal input (what ``edgekit run`` feeds without
data). The ``ort spread`` column is onnxruntime's own: its default session
against the same model with graph optimizations off, the floor below which
a departure cannot be told from reordered float arithmetic. The ``float64``
columns compare edgekit and onnxruntime with the model evaluated in float64
(``onnx.reference`` on the model as :func:`~edgekit.frontend.loader.load_model`
prepares it -- opset 13 or later, where onnx.reference's opset-11
BatchNormalization disagrees with onnxruntime -- weights and input widened;
``--float64-samples`` of the realistic inputs): which of the two is nearer
the exact result. ``--exact-math``
adds a column with TVM's polynomial exp/erf/tanh/softmax replaced by libm
(a diagnosis: ``compile`` has no such option; the benchmark patches
:func:`edgekit.compiler.backends.llvm.relax_build.build_cpu`'s default).

Usage::

    nice -n 10 .venv/bin/python benchmarks/real_models_accuracy.py [--models det,rec] [--samples 8]
        [--exact-math] [--json out.json]

Exit status 1 when a model departs by more than ``--tolerance`` (1e-4).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import onnx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

logger = logging.getLogger("benchmarks.real_models_accuracy")

TOLERANCE = 1e-4


@dataclass
class Model:
    """One real model and its data.

    Attributes:
        name: Row name.
        model: The ONNX model as a user gives it (for the light models, with
            the tests' random weights).
        shapes: Static input shapes for ``compile``.
        data: Realistic input batches (first axis = samples), by input name.
        data_note: Where ``data`` comes from.
    """

    name: str
    model: onnx.ModelProto
    shapes: dict[str, tuple[int, ...]] | None
    data: dict[str, np.ndarray]
    data_note: str


@dataclass
class Row:
    name: str
    data_note: str
    realistic: float = float("nan")
    normal: float = float("nan")
    exact_math: float | None = None
    ort_spread: float = float("nan")
    edgekit_f64: float | None = None
    ort_f64: float | None = None
    worst_output: str = ""
    seconds: float = 0.0
    error: str = ""
    per_sample: list[float] = field(default_factory=list)


# --------------------------------------------------------------------------- models


def _rapidocr(file: str) -> Path:
    import rapidocr

    return Path(rapidocr.__file__).parent / "models" / file


def text_page(n: int, seed: int, size: int = 320) -> np.ndarray:
    """``n`` synthetic pages of dark strokes in rows (the detector's
    probability map reaches 1 on them), PP-OCR-normalized, NCHW."""
    rng = np.random.default_rng(seed)
    pages = []
    for _ in range(n):
        page = np.full((size, size, 3), float(rng.integers(200, 250)), np.float32)
        for row in range(20, size - 20, int(rng.integers(30, 48))):
            x0 = 10
            while x0 < size - 30:
                w, h = int(rng.integers(4, 14)), int(rng.integers(14, 24))
                ink = float(rng.integers(0, 60))
                page[row : row + h, x0 : x0 + w // 3] = ink
                page[row + h // 2 : row + h // 2 + 3, x0 : x0 + w] = ink
                x0 += w + int(rng.integers(3, 8))
        pages.append(((page / 255.0 - 0.5) / 0.5).transpose(2, 0, 1))
    return np.stack(pages).astype(np.float32)


def ppocr_det(samples: int) -> Model:
    path = _rapidocr("PP-OCRv6_det_small.onnx")
    return Model("PP-OCRv6 det (320x320)", onnx.load(str(path)), {"x": (1, 3, 320, 320)},
                 {"x": text_page(samples, seed=0)}, "synthetic text pages")


def ppocr_cls(samples: int) -> Model:
    from accuracy import rendered_lines

    path = _rapidocr("ch_ppocr_mobile_v2.0_cls_mobile.onnx")
    x, _ = rendered_lines(samples, seed=4, width=192, rotate=True)
    return Model("PP-OCR cls (48x192)", onnx.load(str(path)), {"x": (1, 3, 48, 192)}, {"x": x},
                 "rendered lines, half upside down")


def ppocr_rec(samples: int) -> Model:
    from accuracy import rendered_lines

    path = _rapidocr("PP-OCRv6_rec_small.onnx")
    x, _ = rendered_lines(samples, seed=2, width=320)
    return Model("PP-OCRv6 rec (48x320)", onnx.load(str(path)), {"x": (1, 3, 48, 320)}, {"x": x}, "rendered lines")


def digits(samples: int) -> Model:
    from edgekit.examples import example_inputs_path, example_model_path

    x = np.load(example_inputs_path())["input"][:samples]
    return Model("digits CNN (8x8)", onnx.load(str(example_model_path())), {"input": (1, 1, 8, 8)},
                 {"input": x}, "scikit-learn digits test split")


def light(name: str) -> Callable[[int], Model]:
    def make(samples: int) -> Model:
        from edgekit.frontend.loader import load_model

        path = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / f"light_{name}.onnx"
        prepared = load_model(path)
        sys.path.insert(0, str(REPO / "tests" / "build"))
        from test_host_compile import expose_logits, randomize_weights

        randomize_weights(prepared)
        expose_logits(prepared)
        return Model(f"{name} (onnx light, random weights)", prepared.model, None, {}, "-")

    return make


MODELS: dict[str, Callable[[int], Model]] = {
    "det": ppocr_det,
    "cls": ppocr_cls,
    "rec": ppocr_rec,
    "digits": digits,
    **{n: light(n) for n in ("bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50",
                             "shufflenet", "squeezenet", "vgg19", "zfnet512")},
}


# --------------------------------------------------------------------------- measuring


def _sessions(model: onnx.ModelProto) -> tuple[object, object]:
    import onnxruntime as ort

    blob = model.SerializeToString()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    plain = ort.SessionOptions()
    plain.log_severity_level = 3
    plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return (ort.InferenceSession(blob, opts, providers=["CPUExecutionProvider"]),
            ort.InferenceSession(blob, plain, providers=["CPUExecutionProvider"]))


def _normal(specs, samples: int, seed: int) -> dict[str, np.ndarray]:
    from edgekit.runtime.data import random_inputs

    runs = [random_inputs(specs, seed=seed + i) for i in range(samples)]
    return {k: np.concatenate([r[k] for r in runs]) for k in runs[0]}


def _errors(pkg: Path, data: dict[str, np.ndarray], sessions) -> tuple[list[float], list[float], str]:
    """Per-sample errors against onnxruntime, onnxruntime's own spread, and the worst output."""
    from edgekit.runtime.runner import run_package
    from edgekit.runtime.stats import max_relative_error

    ort_default, ort_plain = sessions
    names = [o.name for o in ort_default.get_outputs()]
    outs, _, _ = run_package(pkg, data)
    errors, spread, worst, worst_err = [], [], "", -1.0
    n = len(next(iter(data.values())))
    for i in range(n):
        feeds = {k: v[i : i + 1] for k, v in data.items()}
        ref = ort_default.run(names, feeds)
        plain = ort_plain.run(names, feeds)
        per = [max_relative_error(outs[i][name], r) for name, r in zip(names, ref)]
        errors.append(max(per))
        spread.append(max(max_relative_error(p, r) for p, r in zip(plain, ref)))
        if max(per) > worst_err:
            worst_err, worst = max(per), names[int(np.argmax(per))]
    return errors, spread, worst


def float64_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every float32 weight, value and Cast widened to float64
    (Resize's ``roi``/``scales`` stay float32, as the standard requires)."""
    from onnx import TensorProto, numpy_helper

    wide = onnx.ModelProto()
    wide.CopyFrom(model)
    graph = wide.graph
    keep = {n.input[i] for n in graph.node if n.op_type == "Resize" for i in (1, 2) if i < len(n.input)}

    def widen(t: onnx.TensorProto) -> None:
        if t.data_type == TensorProto.FLOAT and t.name not in keep:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64), t.name))

    for init in graph.initializer:
        widen(init)
    for vi in [*graph.input, *graph.output, *graph.value_info]:
        if vi.name not in keep and vi.type.tensor_type.elem_type == TensorProto.FLOAT:
            vi.type.tensor_type.elem_type = TensorProto.DOUBLE
    for node in graph.node:
        if any(o in keep for o in node.output):
            continue
        for a in node.attribute:
            if node.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT:
                a.i = TensorProto.DOUBLE
            elif a.type == onnx.AttributeProto.TENSOR:
                widen(a.t)
    return wide


def float64_errors(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]] | None, pkg: Path,
                   data: dict[str, np.ndarray], samples: int, ort_default) -> tuple[float, float]:
    """Largest relative max error of edgekit and of onnxruntime against the
    float64 evaluation, over the first ``samples`` samples of ``data``."""
    from onnx.reference import ReferenceEvaluator

    from edgekit.runtime.runner import run_package
    from edgekit.runtime.stats import max_relative_error

    from edgekit.frontend.loader import load_model

    exact = ReferenceEvaluator(float64_model(load_model(model, shapes).model))
    names = [o.name for o in ort_default.get_outputs()]
    head = {k: v[:samples] for k, v in data.items()}
    outs, _, _ = run_package(pkg, head)
    ours, theirs = 0.0, 0.0
    for i in range(len(outs)):
        feeds = {k: v[i : i + 1] for k, v in head.items()}
        wide = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in feeds.items()}
        truth = exact.run(names, wide)
        ref = ort_default.run(names, feeds)
        ours = max(ours, *(max_relative_error(outs[i][n], t) for n, t in zip(names, truth)))
        theirs = max(theirs, *(max_relative_error(r, t) for r, t in zip(ref, truth)))
    return ours, theirs


@contextlib.contextmanager
def exact_math() -> Iterator[None]:
    """libm exp/erf/tanh/softmax instead of TVM's polynomials, for diagnosis."""
    from edgekit.compiler.backends.llvm import relax_build

    defaults = relax_build.build_cpu.__kwdefaults__
    saved = defaults["fast_math"]
    defaults["fast_math"] = False
    try:
        yield
    finally:
        defaults["fast_math"] = saved


def measure(case: Model, samples: int, seed: int, with_exact: bool, f64_samples: int, work: Path) -> Row:
    from edgekit.compiler.driver import compile_model
    from edgekit.package import open_package

    row = Row(case.name, case.data_note)
    started = time.perf_counter()
    pkg = work / "model.ekpkg"
    compile_model(case.model, "host", pkg, input_shapes=case.shapes)
    specs = open_package(pkg, board="host").inputs
    sessions = _sessions(case.model)
    normal = _normal(specs, samples, seed)
    spreads = []
    if case.data:
        errs, spread, row.worst_output = _errors(pkg, case.data, sessions)
        row.realistic, row.per_sample = max(errs), errs
        spreads += spread
    errs, spread, worst = _errors(pkg, normal, sessions)
    row.normal = max(errs)
    spreads += spread
    row.worst_output = row.worst_output or worst
    row.ort_spread = max(spreads)
    if f64_samples:
        row.edgekit_f64, row.ort_f64 = float64_errors(case.model, case.shapes, pkg, case.data or normal, f64_samples, sessions[0])
    if with_exact:
        with exact_math():
            compile_model(case.model, "host", pkg, input_shapes=case.shapes)
        data = case.data or normal
        row.exact_math = max(_errors(pkg, data, sessions)[0])
    row.seconds = time.perf_counter() - started
    return row


# --------------------------------------------------------------------------- report


def worst(row: Row) -> float:
    values = [v for v in (row.realistic, row.normal) if not np.isnan(v)]
    return max(values) if values else float("nan")


def _cell(value: float | None) -> str:
    return "-" if value is None or np.isnan(value) else f"{value:.1e}"


#: Above this, onnx.reference's float64 evaluation disagrees with onnxruntime
#: on the model itself (its LRN and some old-opset ops differ), so it is no reference.
_REFERENCE_DISAGREES = 1e-3


def _float64_cells(row: Row) -> list[str]:
    if row.ort_f64 is not None and row.ort_f64 > _REFERENCE_DISAGREES:
        return ["n/a", "n/a"]
    return [_cell(row.edgekit_f64), _cell(row.ort_f64)]


def markdown(rows: list[Row], tolerance: float, with_exact: bool) -> str:
    head = ("| model | data | realistic data | standard normal | ort spread | edgekit vs float64 | ort vs float64 |"
            + (" libm exp (diagnosis) |" if with_exact else ""))
    lines = [head, "|" + " --- |" * 2 + " ---: |" * (6 if with_exact else 5)]
    for r in rows:
        if r.error:
            lines.append(f"| {r.name} | {r.data_note} | failed: {r.error} | | | | |" + (" |" if with_exact else ""))
            continue
        cells = [r.name, r.data_note, "-" if np.isnan(r.realistic) else f"{r.realistic:.1e}", f"{r.normal:.1e}",
                 f"{r.ort_spread:.1e}", *_float64_cells(r)]
        if with_exact:
            cells.append(_cell(r.exact_math))
        lines.append("| " + " | ".join(cells) + " |")
    ok = sum(1 for r in rows if not r.error and worst(r) <= tolerance)
    lines.append("")
    lines.append(f"{ok} of {len(rows)} models within {tolerance:g}. n/a: onnx.reference's float64 evaluation differs "
                 f"from onnxruntime by more than {_REFERENCE_DISAGREES:g} on the model itself, so it is no reference.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of: " + ", ".join(MODELS))
    parser.add_argument("--samples", type=int, default=8, help="samples of each kind of input per model")
    parser.add_argument("--seed", type=int, default=0, help="seed of the standard-normal inputs")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE)
    parser.add_argument("--exact-math", action="store_true", help="also measure with libm exp/erf/tanh/softmax")
    parser.add_argument("--float64-samples", type=int, default=2,
                        help="samples compared with a float64 evaluation (0 = none; about 10 s each for the detector)")
    parser.add_argument("--json", help="write the rows to this file")
    parser.add_argument("--doc", help="write the table into the real-models section of this file (docs/conformance.md)")
    parser.add_argument("--from-json", help="only render the table from the rows of an earlier --json run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    if args.from_json:
        rows = [Row(**r) for r in json.loads(Path(args.from_json).read_text())]
        return _report(rows, args)
    rows = []
    for key in args.models.split(","):
        case = MODELS[key](args.samples)
        with tempfile.TemporaryDirectory(prefix="edgekit-acc-") as tmp:
            try:
                row = measure(case, args.samples, args.seed, args.exact_math, args.float64_samples, Path(tmp))
            except Exception as exc:  # a failure is a row of the table, not the end of the run
                row = Row(case.name, case.data_note, error=f"{type(exc).__name__}: {exc}"[:200])
        print(f"{row.name}: realistic {row.realistic:.2e} normal {row.normal:.2e} spread {row.ort_spread:.2e} "
              f"exact {row.exact_math} f64 {row.edgekit_f64}/{row.ort_f64} worst output {row.worst_output} ({row.seconds:.0f} s)", file=sys.stderr)
        rows.append(row)
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=1))
    return _report(rows, args)


def _report(rows: list[Row], args: argparse.Namespace) -> int:
    table = markdown(rows, args.tolerance, args.exact_math or any(r.exact_math is not None for r in rows))
    print(table)
    if args.doc:
        from conformance import with_section

        path = Path(args.doc)
        path.write_text(with_section(path.read_text(), "real-models", DOC_HEAD.format(date=date.today()) + table + "\n"))
    bad = [r for r in rows if r.error or not worst(r) <= args.tolerance]
    return 1 if bad else 0


#: The text above the table in docs/conformance.md.
DOC_HEAD = """## Real models against onnxruntime

Every real model the tests use, compiled for `host` with default options
(`benchmarks/real_models_accuracy.py --samples 8 --float64-samples 1 --doc docs/conformance.md`,
{date}, AMD EPYC Zen 5, 2 shared cores). **Relative max error** is
`max|a - b| / max|b|` over one output of one sample (`a` edgekit, `b`
onnxruntime's CPU provider on the original model; one definition in the code,
`edgekit.runtime.stats.max_relative_error`); each cell is the largest over 8
samples and all outputs. *ort spread* is onnxruntime against itself with its
graph optimizations off; the float64 columns compare both with the model
evaluated in float64 (`onnx.reference`, one realistic sample). The light
models carry the tests' seeded random weights.

What departed: PP-OCRv6's detector was 7.3e-5 from onnxruntime and 7.0e-5
from the float64 result where onnxruntime is 5.7e-6. Compiling each node of
the model alone against float64 found the op: `ReduceMean` over 80x80 feature
maps (its squeeze-and-excitation blocks), 4.2e-5 from float64 where
onnxruntime is 6.9e-6; TVM sums the 6,400 values in one float32 loop.
Reducing one axis at a time (`edgekit/frontend/staged_reductions.py`) brought
the detector to 1.2e-5 and the recognizer from 2.1e-5 to 8.6e-6, both within
onnxruntime's own spread. TVM's polynomial exp/erf (on by default) is not the
cause: with libm instead the figures are the same to two digits.

"""


if __name__ == "__main__":
    sys.exit(main())
