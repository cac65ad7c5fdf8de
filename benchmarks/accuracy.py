"""Accuracy of int8 quantization on real models with a real task metric:
edgekit's defaults and ``--max-drop`` side by side with NNCF's
``quantize`` and ``quantize_with_accuracy_control`` (issue #18).

Models ship in the ``rapidocr`` wheel (no download):

* ``ppocr-rec``: the PP-OCRv6 small text recognizer (48x320 input, CTC over
  18,710 symbols). Data: words, numbers and codes rendered with Pillow (its
  own font plus any TrueType fonts under /usr/share/fonts), blurred, with
  noise and varying contrast; the metric is exact match of the greedy CTC
  decoding with the rendered string.
* ``ppocr-cls``: the PP-OCR text-angle classifier (48x192): the same kind of
  rendered lines, half of them rotated by 180 degrees; the metric is top-1
  accuracy against the rotation.

Every model, edgekit's and NNCF's, is judged the same way: onnxruntime with
graph optimizations off, i.e. the QDQ graph as written (see
docs/quantization.md for why not onnxruntime's fused int8 kernels). NNCF's
accuracy control gets a validation function that runs that way too.

Columns: task accuracy (fp32 and int8) and drop in points, weight bytes
(edgekit's :func:`~edgekit.compress.quality.weight_bytes`), Conv/Gemm/MatMul
layers computing in float (a weighted layer is int8 when its first two
inputs come from DequantizeLinear), nodes edgekit's accuracy control kept in
float, and wall-clock time of the quantization call.

Usage (NNCF is the optional ``[nncf]`` extra)::

    nice -n 10 .venv/bin/python benchmarks/accuracy.py [--models ppocr-rec,ppocr-cls]
        [--eval-samples 200] [--calibration-samples 64] [--max-drop 0.5] [--no-nncf]
"""

from __future__ import annotations

import argparse
import glob
import logging
import platform
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
import onnxruntime as ort

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgekit.compress import QuantConfig, quantize  # noqa: E402
from edgekit.compress.quality import weight_bytes  # noqa: E402
from edgekit.frontend.loader import load_model  # noqa: E402

logger = logging.getLogger("benchmarks.accuracy")

WORDS = (
    "the quick brown fox jumps over lazy dog beautiful better than ugly explicit implicit simple complex "
    "complicated flat nested sparse dense readability counts special cases break rules although practicality "
    "beats purity errors should never pass silently unless explicitly silenced ambiguity refuse temptation "
    "guess obvious way namespaces honking great idea invoice total amount receipt station platform exit "
    "entrance warning danger voltage current battery charger keyboard monitor printer scanner window kitchen "
    "bedroom garden market"
).split()
_CODE_CHARS = list("ABCDEFGHJKLMNPRSTUVWXYZ0123456789")


# --------------------------------------------------------------------------- #
# Rendered text
# --------------------------------------------------------------------------- #


def _fonts() -> list[str | None]:
    """Pillow's own font (None) and the TrueType fonts this machine has."""
    return [None, *sorted(glob.glob("/usr/share/fonts/truetype/*/*.ttf"))]


def _text(rng: np.random.Generator) -> str:
    kind = int(rng.integers(0, 5))
    word = lambda: str(rng.choice(WORDS))  # noqa: E731
    if kind == 0:
        return f"{word()} {word()} {word()}"
    if kind == 1:
        return f"{word().capitalize()} {word()}"
    if kind == 2:
        return f"{rng.integers(0, 100000)}.{rng.integers(0, 100):02d}"
    if kind == 3:
        return "".join(rng.choice(_CODE_CHARS, int(rng.integers(5, 10))))
    return f"{word().upper()}-{rng.integers(10, 999)}"


def _render(text: str, rng: np.random.Generator, fonts: list[str | None]) -> "Image.Image":  # noqa: F821
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    size = int(rng.integers(18, 30))
    path = fonts[int(rng.integers(len(fonts)))]
    font = ImageFont.load_default(size) if path is None else ImageFont.truetype(path, size)
    left, top, right, bottom = font.getbbox(text)
    w, h = right - left + int(rng.integers(4, 16)), bottom - top + int(rng.integers(4, 20))
    bg = int(rng.integers(110, 256))
    fg = int(rng.integers(0, max(1, bg - 60)))
    img = Image.new("L", (w, h), bg)
    ImageDraw.Draw(img).text((int(rng.integers(1, 6)) - left, int(rng.integers(1, 8)) - top), text, fill=fg, font=font)
    img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 1.3))))
    noisy = np.asarray(img, dtype=np.float32) + rng.normal(0, float(rng.uniform(2, 14)), (h, w))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).convert("RGB")


def _to_input(img: "Image.Image", width: int) -> np.ndarray:  # noqa: F821
    """PP-OCR preprocessing: height 48 keeping the aspect ratio, at most
    ``width`` wide, scaled to [-1, 1], zero-padded on the right."""
    from PIL import Image

    w = min(width, int(np.ceil(48 * img.width / img.height)))
    x = np.asarray(img.resize((w, 48), Image.BILINEAR), dtype=np.float32).transpose(2, 0, 1) / 255.0
    out = np.zeros((3, 48, width), np.float32)
    out[:, :, :w] = (x - 0.5) / 0.5
    return out


def rendered_lines(n: int, seed: int, width: int, *, rotate: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rendered text lines as model inputs and their labels (the text,
    or with ``rotate`` the rotation class: 1 = upside down)."""
    rng = np.random.default_rng(seed)
    fonts = _fonts()
    xs, labels = [], []
    for i in range(n):
        text = _text(rng)
        img = _render(text, rng, fonts)
        if rotate:
            flip = i % 2
            img = img.rotate(180) if flip else img
            labels.append(flip)
        else:
            labels.append(text)
        xs.append(_to_input(img, width))
    return np.stack(xs), np.array(labels)


# --------------------------------------------------------------------------- #
# Models and metrics
# --------------------------------------------------------------------------- #


@dataclass
class Case:
    """One model with its data and task metric.

    Attributes:
        name: Row name.
        fp32: The prepared fp32 model (static shapes).
        calibration: Calibration arrays.
        evaluation: Evaluation arrays, ``labels`` included.
        metric: ``metric(outputs, data) -> float`` as edgekit's ``--metric`` takes it.
        note: Where the data comes from.
    """

    name: str
    fp32: onnx.ModelProto
    calibration: dict[str, np.ndarray]
    evaluation: dict[str, np.ndarray]
    metric: Callable[[dict[str, np.ndarray], dict[str, np.ndarray]], float]
    note: str


def _rapidocr_model(file: str) -> Path:
    import rapidocr

    return Path(rapidocr.__file__).parent / "models" / file


class CtcExactMatch:
    """Exact match of greedy CTC decoding with the label strings.

    Args:
        characters: The model's symbol list without the blank (index 0).
    """

    def __init__(self, characters: list[str]) -> None:
        self.symbols = ["", *characters]

    def decode(self, logits: np.ndarray) -> list[str]:
        texts = []
        for seq in np.asarray(logits).argmax(-1):
            keep = np.ones(len(seq), bool)
            keep[1:] = seq[1:] != seq[:-1]
            texts.append("".join(self.symbols[i] for i in seq[keep & (seq != 0)]))
        return texts

    def __call__(self, outputs: dict[str, np.ndarray], data: dict[str, np.ndarray]) -> float:
        (logits,) = outputs.values()
        return float(np.mean([p == str(t) for p, t in zip(self.decode(logits), data["labels"])]))


def top1(outputs: dict[str, np.ndarray], data: dict[str, np.ndarray]) -> float:
    """Top-1 accuracy of the first output against ``labels``."""
    scores = next(iter(outputs.values()))
    return float(np.mean(scores.reshape(len(scores), -1).argmax(-1) == data["labels"]))


def rec_case(calibration_samples: int, eval_samples: int) -> Case:
    path = _rapidocr_model("PP-OCRv6_rec_small.onnx")
    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    characters = [*meta["character"].splitlines(), " "]
    x_cal, _ = rendered_lines(calibration_samples, seed=1, width=320)
    x_ev, labels = rendered_lines(eval_samples, seed=2, width=320)
    return Case(
        "ppocr-rec (PP-OCRv6 small)",
        load_model(str(path), {"x": (1, 3, 48, 320)}).model,
        {"x": x_cal},
        {"x": x_ev, "labels": labels},
        CtcExactMatch(characters),
        f"rendered lines, exact match after CTC decoding ({calibration_samples} calibration / {eval_samples} eval)",
    )


def cls_case(calibration_samples: int, eval_samples: int) -> Case:
    path = _rapidocr_model("ch_ppocr_mobile_v2.0_cls_mobile.onnx")
    x_cal, _ = rendered_lines(calibration_samples, seed=3, width=192, rotate=True)
    x_ev, labels = rendered_lines(eval_samples, seed=4, width=192, rotate=True)
    return Case(
        "ppocr-cls (text angle)",
        load_model(str(path), {"x": (1, 3, 48, 192)}).model,
        {"x": x_cal},
        {"x": x_ev, "labels": labels.astype(np.int64)},
        top1,
        f"rendered lines, half rotated 180 degrees, top-1 ({calibration_samples} / {eval_samples})",
    )


CASES: dict[str, Callable[[int, int], Case]] = {"ppocr-rec": rec_case, "ppocr-cls": cls_case}


# --------------------------------------------------------------------------- #
# Measurement
# --------------------------------------------------------------------------- #


def _as_written(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def task_metric(case: Case, model: onnx.ModelProto) -> float:
    """The case's metric on the evaluation data, the QDQ graph run as written."""
    sess = _as_written(model)
    names = [o.name for o in sess.get_outputs()]
    x = case.evaluation["x"]
    runs = [sess.run(names, {"x": x[i : i + 1]}) for i in range(len(x))]
    outputs = {n: np.concatenate([r[k] for r in runs]) for k, n in enumerate(names)}
    return case.metric(outputs, case.evaluation)


def float_weighted_layers(model: onnx.ModelProto) -> int:
    """Conv/Gemm/MatMul nodes whose first two inputs are not both dequantized."""
    dq = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return sum(
        1
        for n in model.graph.node
        if n.op_type in ("Conv", "Gemm", "MatMul") and not all(i in dq for i in n.input[:2])
    )


def _row(case: Case, tool: str, model: onnx.ModelProto, seconds: float, fp32_acc: float, **extra: Any) -> dict[str, Any]:
    acc = task_metric(case, model)
    row = {
        "model": case.name,
        "tool": tool,
        "accuracy_fp32": 100 * fp32_acc,
        "accuracy_int8": 100 * acc,
        "drop": 100 * (fp32_acc - acc),
        "weight_bytes_fp32": weight_bytes(case.fp32),
        "weight_bytes_int8": weight_bytes(model),
        "float_weighted_layers": float_weighted_layers(model),
        "seconds": seconds,
        **extra,
    }
    logger.warning("%s / %s: %.2f%% -> %.2f%% (drop %.2f), %d float weighted layers, %.0f s", case.name, tool,
                   row["accuracy_fp32"], row["accuracy_int8"], row["drop"], row["float_weighted_layers"], seconds)
    return row


def run_edgekit(case: Case, fp32_acc: float, max_drop: float | None) -> dict[str, Any]:
    t0 = time.perf_counter()
    result = quantize(case.fp32, QuantConfig(max_drop=max_drop), case.calibration, eval_data=case.evaluation,
                      metric=case.metric if max_drop is not None else None,
                      progress=lambda m: logger.info("  %s", m))  # fmt: skip
    seconds = time.perf_counter() - t0
    fb = result.report.fallback
    tool = "edgekit defaults" if max_drop is None else f"edgekit --max-drop {max_drop:g}"
    return _row(case, tool, result.model, seconds, fp32_acc,
                kept_in_float=None if fb is None else len(fb.layers),
                evaluations=None if fb is None else fb.evaluations)  # fmt: skip


def _nncf_dataset(arrays: dict[str, np.ndarray]) -> Any:
    import nncf

    x = arrays["x"]
    return nncf.Dataset([{"x": x[i : i + 1]} for i in range(len(x))])


def run_nncf(case: Case, fp32_acc: float, max_drop: float | None) -> dict[str, Any]:
    import nncf

    calibration = _nncf_dataset(case.calibration)
    t0 = time.perf_counter()
    if max_drop is None:
        model = nncf.quantize(case.fp32, calibration, subset_size=len(case.calibration["x"]))
        tool = "NNCF quantize (defaults)"
    else:
        x = case.evaluation["x"]
        validation = nncf.Dataset(list(range(len(x))))

        def validate(model: Any, indices: Any) -> float:
            # Judged like edgekit's models: the QDQ graph as written.
            proto = model if isinstance(model, onnx.ModelProto) else model.model
            idx = list(indices)
            sub = {"x": x[idx], "labels": case.evaluation["labels"][idx]}
            sess = _as_written(proto)
            names = [o.name for o in sess.get_outputs()]
            runs = [sess.run(names, {"x": sub["x"][i : i + 1]}) for i in range(len(idx))]
            return case.metric({n: np.concatenate([r[k] for r in runs]) for k, n in enumerate(names)}, sub)

        model = nncf.quantize_with_accuracy_control(
            case.fp32, calibration, validation, validate, max_drop=max_drop / 100,
            drop_type=nncf.DropType.ABSOLUTE, subset_size=len(case.calibration["x"]),
        )  # fmt: skip
        tool = f"NNCF accuracy control (max_drop {max_drop / 100:g})"
    return _row(case, tool, model, time.perf_counter() - t0, fp32_acc)


def measure(case: Case, max_drop: float, with_nncf: bool) -> list[dict[str, Any]]:
    fp32_acc = task_metric(case, case.fp32)
    rows = [run_edgekit(case, fp32_acc, None), run_edgekit(case, fp32_acc, max_drop)]
    if with_nncf:
        rows += [run_nncf(case, fp32_acc, None), run_nncf(case, fp32_acc, max_drop)]
    return rows


# --------------------------------------------------------------------------- #
# Table
# --------------------------------------------------------------------------- #


def cpu_name() -> str:
    """The CPU model and its vector extensions, from /proc/cpuinfo."""
    name, flags = platform.processor() or platform.machine(), ""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return name
    for line in text.splitlines():
        if line.startswith("model name") and ":" in line:
            name = line.split(":", 1)[1].strip()
        if line.startswith("flags") and ":" in line:
            wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "fma")
            flags = " ".join(f for f in line.split(":", 1)[1].split() if f in wanted)
            break
    return f"{name} ({flags})" if flags else name


def render(rows: list[dict[str, Any]], command: str, notes: list[str]) -> str:
    import os

    lines = [
        f"Command: `{command}`; CPU: {cpu_name()}, {os.cpu_count()} cores; onnxruntime {ort.__version__}"
        + (f"; nncf {_nncf_version()}" if _nncf_version() else "") + f"; date: {date.today()}.",
        "",
        "| model | quantizer | accuracy fp32 → int8 | drop (points) | weights fp32 → int8 B | shrink "
        "| Conv/Gemm/MatMul in float | kept in float by accuracy control | evaluations | time s |",
        "|---|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        kept = "-" if r.get("kept_in_float") is None else str(r["kept_in_float"])
        evals = "-" if r.get("evaluations") is None else str(r["evaluations"])
        lines.append(
            f"| {r['model']} | {r['tool']} | {r['accuracy_fp32']:.2f}% → {r['accuracy_int8']:.2f}% | {r['drop']:+.2f} "
            f"| {r['weight_bytes_fp32']:,} → {r['weight_bytes_int8']:,} "
            f"| {r['weight_bytes_fp32'] / max(1, r['weight_bytes_int8']):.2f}× | {r['float_weighted_layers']} "
            f"| {kept} | {evals} | {r['seconds']:.0f} |"
        )
    lines += ["", *notes]
    return "\n".join(lines)


def _nncf_version() -> str:
    try:
        import nncf
    except ImportError:
        return ""
    return str(nncf.__version__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(CASES), help="comma-separated subset of: " + ", ".join(CASES))
    parser.add_argument("--eval-samples", type=int, default=200)
    parser.add_argument("--calibration-samples", type=int, default=64)
    parser.add_argument("--max-drop", type=float, default=0.5, help="budget in points for both accuracy controls")
    parser.add_argument("--no-nncf", action="store_true", help="edgekit rows only")
    parser.add_argument("-v", "--verbose", action="store_true", help="show edgekit's progress lines")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    for name in ("nncf", "edgekit"):
        logging.getLogger(name).setLevel(logging.WARNING)
    names = args.models.split(",")
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    with_nncf = not args.no_nncf and bool(_nncf_version())
    rows: list[dict[str, Any]] = []
    notes = []
    for name in names:
        case = CASES[name](args.calibration_samples, args.eval_samples)
        notes.append(f"{case.name}: {case.note}.")
        rows += measure(case, args.max_drop, with_nncf)
    command = (f"nice -n 10 .venv/bin/python benchmarks/accuracy.py --models {args.models} --eval-samples "
               f"{args.eval_samples} --calibration-samples {args.calibration_samples} --max-drop {args.max_drop:g}"
               + (" --no-nncf" if args.no_nncf else ""))  # fmt: skip
    print(render(rows, command, notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
