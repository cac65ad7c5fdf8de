"""ONNX's node conformance tests as a gate on the host (issue #20).

A fixed, seeded sample of the installed onnx wheel's node tests (generated
in-process, nothing downloaded) goes through ``benchmarks/conformance.py``:
compile for ``host``, run, compare with the expected outputs. A test may be
refused with a typed error; it may never return a wrong result or crash. The
full table is docs/conformance.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tvm")
pytest.importorskip("onnxruntime")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "conformance.py"
#: Size and seed of the sample (fixed so a failure reproduces with
#: ``benchmarks/conformance.py --sample 160 --seed 20``).
SAMPLE, SEED = 160, 20
#: Per-test limit. The sample took 95 s on 2 cores at load average 10
#: (2026-12-06; one LinearAttention test, its Scan unrolled, is 19 s of it).
TIMEOUT_S = 60
#: Bound on the whole run, a hang guard only: tests check behaviour, not wall
#: time (the sample took 95-144 s on 2 cores at load average 10-14).
HANG_S = 1500


@pytest.fixture(scope="module")
def conformance(script_module):
    with script_module(SCRIPT, "edgekit_conformance") as module:
        yield module


@pytest.mark.slow
def test_seeded_sample_has_no_wrong_result_and_no_crash(conformance, tmp_path: Path) -> None:
    # The runner forks its workers, which is only safe before TVM's thread
    # pool has run in the process (a forked child of a suite that already ran
    # models spins on the dead pool until its timeout): run it as the script,
    # in a fresh interpreter, exactly as the docs reproduce it.
    out = tmp_path / "sample.json"
    command = [sys.executable, str(SCRIPT), "--sample", str(SAMPLE), "--seed", str(SEED), "--no-reference",
               "--timeout", str(TIMEOUT_S), "--json", str(out)]  # fmt: skip
    subprocess.run(command, check=False, capture_output=True, timeout=HANG_S)
    saved = json.loads(out.read_text())
    results = [conformance.CaseResult(**r) for r in saved["results"]]
    bad = [f"{r.status} {r.name}: {r.detail or r.cause}" for r in results if r.status in ("wrong", "crash")]
    assert not bad, "\n".join(bad)
    summary = conformance.summarize(results)
    assert summary["tests"] == SAMPLE >= 150
    # Most of the sample compiles: a regression that refuses everything fails too.
    assert summary["pass"] >= 0.6 * SAMPLE, summary


def test_classification_of_outputs(conformance) -> None:
    e = [np.array([1.0, np.nan], np.float32)]
    assert conformance.compare(e, [np.array([1.0005, np.nan])], 1e-3, 1e-7) == ""
    assert "NaN" in conformance.compare(e, [np.array([1.0, 2.0])], 1e-3, 1e-7)
    assert "shape" in conformance.compare(e, [np.zeros(3)], 1e-3, 1e-7)
    assert "values differ" in conformance.compare([np.array([1, 2])], [np.array([1, 3])], 0, 0)
    assert conformance.compare([np.float32(2.0)], [np.array(2.0)], 1e-3, 1e-7) == ""


def test_constant_inputs_are_bound_and_reported(conformance) -> None:
    from onnx import TensorProto, helper

    node = helper.make_node("Reshape", ["x", "shape"], ["y"])
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 2])],
    )
    model = helper.make_model(graph)
    bound_model, feeds, bound = conformance.bind_constants(model, [np.zeros((2, 3), np.float32), np.array([3, 2])])
    assert bound == ["shape"] and list(feeds) == ["x"]
    assert [i.name for i in bound_model.graph.input] == ["x"]
    assert [i.name for i in bound_model.graph.initializer] == ["shape"]


@pytest.mark.slow
def test_ppocr_detector_matches_onnxruntime(tmp_path: Path) -> None:
    """PP-OCR's DB text detector at 320x320, default options, on a synthetic
    page of dark strokes (its probability map reaches 1): within 1e-4."""
    rapidocr = pytest.importorskip("rapidocr")
    import onnxruntime as ort

    from edgekit.compiler.driver import compile_model
    from edgekit.runtime.runner import run_package
    from edgekit.runtime.stats import max_relative_error

    path = Path(rapidocr.__file__).parent / "models" / "PP-OCRv6_det_small.onnx"
    if not path.exists():
        pytest.skip(f"rapidocr wheel has no {path.name}")
    rng = np.random.default_rng(0)
    page = np.full((320, 320, 3), 235, np.float32)
    for row in range(20, 300, 40):
        x0 = 10
        while x0 < 290:
            w, h = int(rng.integers(4, 14)), int(rng.integers(14, 24))
            page[row:row + h, x0:x0 + w // 3] = 20
            page[row + h // 2:row + h // 2 + 3, x0:x0 + w] = 20
            x0 += w + int(rng.integers(3, 8))
    x = ((page / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)[None].astype(np.float32)
    pkg = tmp_path / "det.ekpkg"
    compile_model(path, "host", pkg, input_shapes={"x": (1, 3, 320, 320)})
    outs, _, _ = run_package(pkg, {"x": x})
    (got,) = outs[0].values()
    (ref,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert ref.max() > 0.9  # the page does activate the detector
    assert max_relative_error(got, ref) <= 1e-4


def test_refusal_causes_name_op_and_attribute(conformance) -> None:
    detail = ("2 node(s) use attributes that would compile to wrong results: Resize node 'Y': antialias=1; "
              "RoiAlign node 'z': mode=max. Re-export those nodes with supported attributes")
    assert conformance.refined_cause("unsupported op: Resize", detail) == (
        "refused attribute: Resize: antialias=N; RoiAlign: mode=max")
    types = "values of types that are not compiled: value 'y' of type INT4; Cast node 'y' to INT4"
    assert conformance.refined_cause("x", types) == "value types not compiled: INT4"


@pytest.mark.slow
def test_ppocr_recognizer_matches_onnxruntime(tmp_path: Path) -> None:
    """PP-OCRv6's text recognizer (18,710-class softmax over 40 steps), default
    options, standard-normal input: within 1e-4 (1.02e-4 was reported for it in
    issue #20; measured here 3.4e-5 before long reductions were staged, 7.5e-6
    after, onnxruntime's own spread 7.6e-6: benchmarks/real_models_accuracy.py)."""
    rapidocr = pytest.importorskip("rapidocr")
    import onnxruntime as ort

    from edgekit.compiler.driver import compile_model
    from edgekit.runtime.runner import run_package
    from edgekit.runtime.stats import max_relative_error

    path = Path(rapidocr.__file__).parent / "models" / "PP-OCRv6_rec_small.onnx"
    if not path.exists():
        pytest.skip(f"rapidocr wheel has no {path.name}")
    x = np.random.default_rng(0).standard_normal((2, 3, 48, 320)).astype(np.float32)
    pkg = tmp_path / "rec.ekpkg"
    compile_model(path, "host", pkg, input_shapes={"x": (1, 3, 48, 320)})
    outs, _, _ = run_package(pkg, {"x": x})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for i, out in enumerate(outs):
        (got,) = out.values()
        (ref,) = session.run(None, {"x": x[i : i + 1]})
        assert max_relative_error(got, ref) <= 1e-4
