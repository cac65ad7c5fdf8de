"""How far float16 outputs of ONNX's node tests are from the expected values,
in float16 ulps, for edgekit (``host``) and for onnxruntime (issue #20:
justifies the conformance runner's float16 tolerance).

For every node test with a float16 output, the distance of each element is
``|got - expected| / spacing(expected)`` (``numpy.spacing`` of the float16
value: one unit in the last place; subnormals use the smallest normal's
spacing); a test's figure is its largest element. Tests edgekit refuses have
no edgekit figure.

Usage::

    nice -n 10 .venv/bin/python benchmarks/fp16_ulps.py [--doc docs/conformance.md] [--json out.json]
    .venv/bin/python benchmarks/fp16_ulps.py --from-json out.json --doc docs/conformance.md
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import conformance  # noqa: E402

#: float16 spacing at the smallest normal number (2^-14): the floor used for subnormals.
_SUBNORMAL_SPACING = float(np.spacing(np.float16(2.0**-14)))


def ulps(got: np.ndarray, expected: np.ndarray) -> float:
    """Largest distance of ``got`` from float16 ``expected``, in float16 ulps
    (finite elements; 0 where there are none)."""
    g, e = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    finite = np.isfinite(g) & np.isfinite(e)
    if not finite.any():
        return 0.0
    spacing = np.maximum(np.spacing(np.abs(expected.astype(np.float16))).astype(np.float64), _SUBNORMAL_SPACING)
    return float(np.max(np.abs(g - e)[finite] / spacing[finite]))


def _ort(case) -> float | None:
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(case.model.SerializeToString(), providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        return max(ulps(g, e) for ins, outs in conformance.data_sets(case)
                   for g, e in zip(sess.run(None, dict(zip(names, ins))), outs) if e.dtype == np.float16)
    except Exception:  # onnxruntime has no kernel: no figure
        return None


def _edgekit(case) -> float | None:
    from edgekit.compiler.driver import compile_model
    from edgekit.core.errors import EdgekitError
    from edgekit.runtime.runner import run_package

    sets = conformance.data_sets(case)
    first = sets[0][0]
    model, _, bound = conformance.bind_constants(case.model, first)
    shapes = {k: v for k, v in conformance.symbolic_input_shapes(case.model, first).items() if k not in bound}
    try:
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pkg = Path(tmp) / "m.ekpkg"
            compile_model(model, "host", pkg, input_shapes=shapes)
            worst = 0.0
            for ins, outs in sets:
                _, feeds, _ = conformance.bind_constants(case.model, ins)
                got, _, _ = run_package(pkg, {k: np.asarray(v)[None] for k, v in feeds.items()})
                values = [np.asarray(got[0][o.name]) for o in case.model.graph.output]
                worst = max([worst] + [ulps(g, e) for g, e in zip(values, outs)
                                       if e.dtype == np.float16 and g.shape == e.shape])
            return worst
    except EdgekitError:
        return None


def _bucket(v: float | None) -> str:
    if v is None:
        return "no figure"
    return next(label for limit, label in ((0.5, "0"), (1, "<= 1"), (2, "<= 2"), (4, "<= 4"), (8, "<= 8"))
                if v <= limit) if v <= 8 else "> 8"


def markdown(rows: list[dict]) -> str:
    order = ["0", "<= 1", "<= 2", "<= 4", "<= 8", "> 8", "no figure"]
    ek, ort = Counter(_bucket(r["edgekit"]) for r in rows), Counter(_bucket(r["ort"]) for r in rows)
    lines = ["### Float16 outputs, in ulps from the expected values", "",
             f"`benchmarks/fp16_ulps.py`: {len(rows)} node tests with a float16 output; each test's largest "
             "element distance (1 ulp = `numpy.spacing` of the float16 value).", "",
             "| ulps | edgekit (host) | onnxruntime |", "| --- | ---: | ---: |"]
    lines += [f"| {b} | {ek[b]} | {ort[b]} |" for b in order if ek[b] or ort[b]]
    over = [r for r in rows if r["edgekit"] is not None and r["edgekit"] > 2]
    lines += ["", "Over 2 ulps (beyond the runner's rtol 2^-9) in edgekit: "
              + (", ".join(f"{r['name']} ({r['edgekit']:.1f}; onnxruntime "
                           f"{'-' if r['ort'] is None else format(r['ort'], '.1f')})" for r in over) or "none") + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="regular expression on test names")
    parser.add_argument("--doc", help="write the table into the float16-ulps section of this file")
    parser.add_argument("--json", help="write the rows to this file")
    parser.add_argument("--from-json", help="only render the rows of an earlier --json run")
    args = parser.parse_args(argv)
    rows = json.loads(Path(args.from_json).read_text()) if args.from_json else []
    for case in [] if args.from_json else conformance.collect(args.only):
        outs = [o for _, expected in conformance.data_sets(case) for o in expected]
        if not any(isinstance(o, np.ndarray) and o.dtype == np.float16 for o in outs):
            continue
        rows.append({"name": case.name, "edgekit": _edgekit(case), "ort": _ort(case)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    text = markdown(rows)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    if args.doc:
        path = Path(args.doc)
        path.write_text(conformance.with_section(path.read_text(), "float16-ulps", text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
