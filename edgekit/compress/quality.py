"""How much a quantized model differs from its fp32 original.

Everything here is measured by running both models in onnxruntime on the same
evaluation data:

* per model output: SQNR (dB), cosine similarity, max abs error and, for
  class-score outputs, top-1 agreement with the fp32 model;
* per layer: the same error statistics of every intermediate tensor, found by
  exposing the tensors as extra graph outputs of both models;
* weight bytes before and after.

Statistics are accumulated sample by sample, so evaluating a large model never
holds every activation of every sample in memory.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from edgekit.compress.calibration import Feeds
from edgekit.core.errors import QuantizationError

__all__ = [
    "OutputQuality",
    "LayerQuality",
    "Fallback",
    "FloatLayer",
    "QualityReport",
    "ErrorStats",
    "is_class_output",
    "run_outputs",
    "compare_outputs",
    "compare_run_outputs",
    "layer_errors",
    "weight_bytes",
    "initializer_bytes",
    "session",
    "exposing_session",
]

logger = logging.getLogger(__name__)

# Name suffix onnxruntime's QDQ writer gives the dequantized copy of a tensor
# (quant_utils.DEQUANT_OUTPUT_SUFFIX); consumers read that copy.
_DQ_SUFFIX = "_DequantizeLinear_Output"
_QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


# --------------------------------------------------------------------------- #
# Statistics
# --------------------------------------------------------------------------- #


class ErrorStats:
    """Running SQNR, cosine and max abs error between a reference and a test tensor."""

    def __init__(self) -> None:
        self.signal = 0.0
        self.noise = 0.0
        self.dot = 0.0
        self.test_energy = 0.0
        self.max_abs = 0.0
        self.argmax_equal = 0
        self.argmax_total = 0

    def update(self, ref: np.ndarray, test: np.ndarray, *, class_axis: bool = False) -> None:
        """Adds one sample.

        Products are summed by BLAS in the tensors' own precision (float32
        for float32 tensors: a relative error near 1e-6 per sample, far below
        what SQNR and cosine are read to) and accumulated in Python floats
        across samples; converting every tensor to float64 first made the
        per-layer report of a 10 MB recognizer take minutes.
        """
        dtype = np.float32 if np.asarray(ref).dtype == np.float32 and np.asarray(test).dtype == np.float32 else np.float64
        r = np.ascontiguousarray(ref, dtype=dtype).ravel()
        t = np.ascontiguousarray(test, dtype=dtype).ravel()
        if r.shape != t.shape:
            raise QuantizationError(
                f"reference and quantized tensors differ in size ({r.size} vs {t.size})",
                hint="This is an edgekit bug: the quantized model changed a tensor's shape; please report it.",
            )
        diff = r - t
        self.signal += float(r @ r)
        self.noise += float(diff @ diff)
        self.dot += float(r @ t)
        self.test_energy += float(t @ t)
        if diff.size:
            self.max_abs = max(self.max_abs, float(np.max(np.abs(diff))))
        if class_axis:
            ref_arr, test_arr = np.asarray(ref), np.asarray(test)
            self.argmax_equal += int(np.sum(ref_arr.argmax(axis=-1) == test_arr.argmax(axis=-1)))
            self.argmax_total += int(np.prod(ref_arr.shape[:-1], dtype=np.int64))

    @property
    def sqnr_db(self) -> float:
        """10·log10(signal energy / noise energy); ``inf`` when identical."""
        if self.noise == 0.0:
            return math.inf
        if self.signal == 0.0:
            return -math.inf
        return 10.0 * math.log10(self.signal / self.noise)

    @property
    def cosine(self) -> float:
        """Cosine similarity of the flattened tensors (1.0 when both are zero)."""
        denom = math.sqrt(self.signal) * math.sqrt(self.test_energy)
        if denom == 0.0:
            return 1.0 if self.signal == self.test_energy else 0.0
        return self.dot / denom

    @property
    def top1_agreement(self) -> float | None:
        """Percent of positions whose argmax over the last axis agrees."""
        if not self.argmax_total:
            return None
        return 100.0 * self.argmax_equal / self.argmax_total


def is_class_output(shape: Sequence[int]) -> bool:
    """Whether an output's last axis is taken to be a class/score axis.

    Rank-2 ``[batch, classes]`` and rank-3 ``[batch, positions, classes]``
    (sequence recognizers) outputs with at least two entries on the last axis
    are; higher ranks are feature maps and get SQNR/cosine only.
    """
    return len(shape) in (2, 3) and shape[-1] >= 2


# --------------------------------------------------------------------------- #
# Report
# --------------------------------------------------------------------------- #


def _finite(x: float | None) -> float | None:
    # JSON has no infinity; an infinite SQNR (identical tensors) is written as null.
    if x is None or not math.isfinite(x):
        return None
    return round(float(x), 6)


@dataclass
class OutputQuality:
    """Error of one model output against fp32.

    Attributes:
        name: Output name.
        sqnr_db: Signal-to-quantization-noise ratio in dB (``inf``: identical).
        cosine: Cosine similarity.
        max_abs_error: Largest absolute difference.
        top1_agreement: Percent of samples whose argmax agrees with fp32, for
            class outputs (see :func:`is_class_output`); else ``None``.
    """

    name: str
    sqnr_db: float
    cosine: float
    max_abs_error: float
    top1_agreement: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sqnr_db": _finite(self.sqnr_db),
            "cosine": _finite(self.cosine),
            "max_abs_error": _finite(self.max_abs_error),
            "top1_agreement": _finite(self.top1_agreement),
        }


@dataclass
class LayerQuality:
    """Error of one node's output tensor against fp32.

    Attributes:
        node: Node name in the fp32 model.
        op_type: Its operator.
        tensor: The output tensor compared.
        quantized: Whether the node reads dequantized (int8) inputs in the
            quantized model; ``False`` for layers kept in float.
        sqnr_db, cosine, max_abs_error: As in :class:`OutputQuality`.
    """

    node: str
    op_type: str
    tensor: str
    quantized: bool
    sqnr_db: float
    cosine: float
    max_abs_error: float

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "op_type": self.op_type,
            "tensor": self.tensor,
            "quantized": self.quantized,
            "sqnr_db": _finite(self.sqnr_db),
            "cosine": _finite(self.cosine),
            "max_abs_error": _finite(self.max_abs_error),
        }


@dataclass
class FloatLayer:
    """One layer accuracy control kept in float, and what it costs.

    Attributes:
        node: Node name.
        op_type: Its operator.
        sensitivity_sqnr_db: SQNR of its output when only it is quantized
            (what ranked it; lower = more harmful).
        macs: Multiply-accumulates it runs in float instead of int8.
        extra_weight_bytes: Weight bytes it adds (float32 instead of int8).
        extra_activation_bytes: Bytes its output activation adds to the
            arena when it is float32 instead of int8.
        buys_back: Percentage points of loss that keeping it in float saves,
            measured by putting it back in int8 (``None``: not measured, e.g.
            past the prune limit or the time budget).
        board: What keeping it in float costs on the chosen board, measured by
            compiling the model with and without it in int8
            (:func:`edgekit.api.payoff.measure_float_layers`):
            ``board``, ``latency_ms`` and ``cycles`` (the difference; negative
            when float is faster there), ``arena_bytes`` and ``flash_bytes``
            (the difference), ``simulated``; ``None`` without ``--board``.
    """

    node: str
    op_type: str
    sensitivity_sqnr_db: float | None
    macs: int
    extra_weight_bytes: int
    extra_activation_bytes: int
    buys_back: float | None = None
    board: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["sensitivity_sqnr_db"] = _finite(self.sensitivity_sqnr_db)
        data["buys_back"] = _finite(self.buys_back)
        return data


@dataclass
class Fallback:
    """What accuracy control did.

    Attributes:
        budget: The budget, e.g. ``{"max_drop": 1.0, "min_sqnr_db": None}``.
        drop_before: Loss (percentage points) of default quantization.
        drop_after: Loss with the fallback layers kept in float.
        met: Whether the final model meets the budget.
        layers: Nodes kept in float, most sensitive first.
        bytes_cost: Extra weight bytes the fallback costs.
        sensitivity: Per candidate node, the error its quantization adds on
            its own: ``sqnr_db`` of its output when only it is quantized, and
            its ``rank`` (0 = most harmful), from
            :func:`edgekit.compress.fallback.rank_layers`.
        float_layers: Each kept layer with its cost and what it buys back.
        evaluations: Whole-model evaluations the search ran.
        seconds: Wall-clock time of the whole quantization.
        stopped_early: The time budget (``max_time_s``) ended the search; the
            model is the best found by then.
        message: One line on the outcome, for people.
    """

    budget: dict[str, float | None]
    drop_before: float
    drop_after: float
    met: bool
    layers: list[str] = field(default_factory=list)
    bytes_cost: int = 0
    sensitivity: dict[str, dict[str, float | None]] = field(default_factory=dict)
    float_layers: list[FloatLayer] = field(default_factory=list)
    evaluations: int = 0
    seconds: float = 0.0
    stopped_early: bool = False
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["drop_before"] = _finite(self.drop_before)
        data["drop_after"] = _finite(self.drop_after)
        data["seconds"] = round(self.seconds, 3)
        data["sensitivity"] = {
            k: {m: _finite(v) for m, v in vals.items()} for k, vals in self.sensitivity.items()
        }
        data["float_layers"] = [f.to_json() for f in self.float_layers]
        return data


@dataclass
class QualityReport:
    """The quality report of one quantization.

    Attributes:
        outputs: Per model output error.
        layers: Per node error, in graph order.
        weight_bytes_before: Weight bytes of the fp32 model (:func:`weight_bytes`).
        weight_bytes_after: Weight bytes of the quantized model.
        initializer_bytes_before: Every initializer of the fp32 model.
        initializer_bytes_after: Every initializer of the quantized model,
            quantization parameters of activations and biases included.
        eval_samples: Number of model runs evaluated.
        eval_source: Where the evaluation data came from.
        metric_fp32: The user metric on the fp32 model, if one was given.
        metric_quantized: The user metric on the quantized model.
        fallback: What accuracy control did, if it ran.
        config: The :class:`~edgekit.compress.config.QuantConfig` as JSON.
    """

    outputs: list[OutputQuality]
    layers: list[LayerQuality]
    weight_bytes_before: int
    weight_bytes_after: int
    initializer_bytes_before: int
    initializer_bytes_after: int
    eval_samples: int
    eval_source: str
    metric_fp32: float | None = None
    metric_quantized: float | None = None
    fallback: Fallback | None = None
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def compression_ratio(self) -> float:
        """fp32 weight bytes / quantized weight bytes."""
        return self.weight_bytes_before / max(1, self.weight_bytes_after)

    @property
    def min_top1_agreement(self) -> float | None:
        """Lowest top-1 agreement over the class outputs, if any."""
        values = [o.top1_agreement for o in self.outputs if o.top1_agreement is not None]
        return min(values) if values else None

    def to_json(self) -> dict[str, Any]:
        """JSON form written by ``--report``."""
        return {
            "outputs": [o.to_json() for o in self.outputs],
            "layers": [layer.to_json() for layer in self.layers],
            "weight_bytes": {
                "before": self.weight_bytes_before,
                "after": self.weight_bytes_after,
                "ratio": round(self.compression_ratio, 4),
            },
            "initializer_bytes": {"before": self.initializer_bytes_before, "after": self.initializer_bytes_after},
            "eval_samples": self.eval_samples,
            "eval_source": self.eval_source,
            "metric": None
            if self.metric_fp32 is None
            else {"fp32": self.metric_fp32, "quantized": self.metric_quantized},
            "fallback": None if self.fallback is None else self.fallback.to_json(),
            "config": self.config,
        }


# --------------------------------------------------------------------------- #
# Running models
# --------------------------------------------------------------------------- #


def session(model: onnx.ModelProto, *, optimize: bool = True) -> ort.InferenceSession:
    """An onnxruntime CPU session; ``optimize=False`` runs the graph as
    written (QDQ reference semantics).

    Raises:
        QuantizationError: onnxruntime cannot load the model.
    """
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if not optimize:
        # Reference semantics: QDQ nodes run as written, nothing fused.
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise QuantizationError(
            f"onnxruntime cannot load the model ({str(exc).splitlines()[0][:300]})",
            hint="Check the model with `edgekit inspect`; if it loads there, please report this as an edgekit bug.",
        ) from None


def exposing_session(model: onnx.ModelProto, tensors: Iterable[str]) -> ort.InferenceSession:
    """A session running ``model`` as written with ``tensors`` (intermediate
    ones included) added to its outputs; ``model`` is not modified."""
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    existing = {o.name for o in exposed.graph.output}
    for name in tensors:
        if name not in existing:
            exposed.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return session(exposed, optimize=False)


def run_outputs(model: onnx.ModelProto, feeds: Iterable[Feeds]) -> list[list[np.ndarray]]:
    """Runs ``model`` once per feed dict; returns each run's outputs in graph order."""
    sess = session(model)
    return [sess.run(None, f) for f in feeds]


def compare_outputs(
    model: onnx.ModelProto,
    reference: list[list[np.ndarray]],
    quantized: onnx.ModelProto,
    feeds: Sequence[Feeds],
) -> list[OutputQuality]:
    """Runs ``quantized`` and compares its outputs with ``reference``.

    The quantized model runs with onnxruntime's graph optimizations off, i.e.
    with the QDQ graph's reference semantics (float compute on dequantized
    values, requantized at every QuantizeLinear). With optimizations on,
    onnxruntime fuses QDQ groups into its own int8 kernels, whose x86 AVX2
    path without VNNI saturates 16-bit intermediate sums: on the digits CNN
    that cut output SQNR from 40 dB to 21 dB (8 dB with symmetric
    activations). That is a property of the host's kernels, not of the
    model, and edge targets compute int8 x int8 -> int32 exactly.

    Args:
        model: The fp32 model (for output names and shapes).
        reference: fp32 outputs of every run, as from :func:`run_outputs`.
        quantized: The quantized model.
        feeds: The runs' inputs (same order as ``reference``).
    """
    names = [o.name for o in model.graph.output]
    sess = session(quantized, optimize=False)
    return compare_run_outputs(names, reference, [sess.run(names, f) for f in feeds])


def compare_run_outputs(
    names: Sequence[str], reference: Sequence[Sequence[np.ndarray]], test: Sequence[Sequence[np.ndarray]]
) -> list[OutputQuality]:
    """Error statistics of ``test`` outputs against ``reference``, run by run
    (each a list of arrays in the order of ``names``)."""
    stats = [ErrorStats() for _ in names]
    for ref_outs, test_outs in zip(reference, test):
        for st, r, t in zip(stats, ref_outs, test_outs):
            st.update(r, t, class_axis=is_class_output(np.shape(r)))
    return [
        OutputQuality(n, st.sqnr_db, st.cosine, st.max_abs, st.top1_agreement) for n, st in zip(names, stats)
    ]


def _float_tensors(model: onnx.ModelProto) -> dict[str, int]:
    """Element types of every value the shape inference knows."""
    types = {}
    for vi in [*model.graph.value_info, *model.graph.output, *model.graph.input]:
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    return types


def _expose(model: onnx.ModelProto, tensors: Sequence[str], elem_types: dict[str, int]) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    existing = {o.name for o in out.graph.output}
    for name in tensors:
        if name not in existing:
            out.graph.output.append(helper.make_tensor_value_info(name, elem_types[name], None))
    return out


def layer_errors(
    model: onnx.ModelProto,
    quantized: onnx.ModelProto,
    feeds: Sequence[Feeds],
    progress: Callable[[str], None] | None = None,
) -> list[LayerQuality]:
    """Compares every float node output of ``model`` with its counterpart in
    ``quantized`` (the dequantized copy, which is what the next layer reads).

    Both models run with onnxruntime's graph optimizations off, so every
    exposed tensor holds exactly what the graph says.
    """
    inferred = onnx.shape_inference.infer_shapes(model)
    types = _float_tensors(inferred)
    qnames = {o for n in quantized.graph.node for o in n.output}
    quantized_nodes = _nodes_reading_dequantized(quantized)
    pairs: list[tuple[onnx.NodeProto, str, str]] = []
    for node in model.graph.node:
        for out in node.output:
            if types.get(out) not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE):
                continue
            counterpart = out + _DQ_SUFFIX if out + _DQ_SUFFIX in qnames else out
            if counterpart in qnames:
                pairs.append((node, out, counterpart))
    if not pairs:
        return []
    qtypes = {**_float_tensors(onnx.shape_inference.infer_shapes(quantized)), **{p[2]: types[p[1]] for p in pairs}}
    ref_model = _expose(model, [p[1] for p in pairs], types)
    test_model = _expose(quantized, [p[2] for p in pairs], qtypes)
    ref_sess = session(ref_model, optimize=False)
    test_sess = session(test_model, optimize=False)
    ref_names = [p[1] for p in pairs]
    test_names = [p[2] for p in pairs]
    stats = [ErrorStats() for _ in pairs]
    for i, f in enumerate(feeds):
        refs = ref_sess.run(ref_names, f)
        tests = test_sess.run(test_names, f)
        for st, r, t in zip(stats, refs, tests):
            st.update(r, t)
        if progress and (i + 1) % 100 == 0:
            progress(f"per-layer error: {i + 1}/{len(feeds)} samples")
    return [
        LayerQuality(
            node=node.name,
            op_type=node.op_type,
            tensor=out,
            # Either the node computes on dequantized inputs, or its output
            # is requantized (a Relu folded into the previous layer's output
            # quantization has no node of its own any more).
            quantized=node.name in quantized_nodes or counterpart != out,
            sqnr_db=st.sqnr_db,
            cosine=st.cosine,
            max_abs_error=st.max_abs,
        )
        for (node, out, counterpart), st in zip(pairs, stats)
    ]


def _nodes_reading_dequantized(model: onnx.ModelProto) -> set[str]:
    dq_outputs = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return {
        n.name
        for n in model.graph.node
        if n.op_type not in _QDQ_OPS and any(i in dq_outputs for i in n.input)
    }


# --------------------------------------------------------------------------- #
# Sizes
# --------------------------------------------------------------------------- #


def _nbytes(t: onnx.TensorProto) -> int:
    if t.data_location == onnx.TensorProto.EXTERNAL:
        length = {e.key: e.value for e in t.external_data}.get("length")
        if length:
            return int(length)
    itemsize = helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    return int(np.prod(t.dims, dtype=np.int64)) * itemsize


def initializer_bytes(model: onnx.ModelProto) -> int:
    """Bytes of every initializer of the main graph."""
    return sum(_nbytes(t) for t in model.graph.initializer)


def weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the model's parameters as stored.

    * A constant fed to a ``DequantizeLinear`` is a quantized parameter: its
      own bytes count. For 8-bit data (weights) its scale and zero point count
      too, since they are needed to rebuild the weight. For 32-bit data
      (biases) they do not: onnxruntime writes the bias scale as
      ``input_scale * weight_scale`` and a zero zero point, both derived, and
      an integer kernel stores neither.
    * Scales and zero points of activation ``QuantizeLinear``/``DequantizeLinear``
      pairs are not parameters and do not count.
    * Every other initializer counts in full (float weights of layers kept in
      float, shape constants).

    :attr:`QualityReport.initializer_bytes_after` has the plain total.
    """
    inits = {t.name: t for t in model.graph.initializer}
    counted: set[str] = set()
    qparams: set[str] = set()
    for node in model.graph.node:
        if node.op_type not in _QDQ_OPS:
            continue
        qparams.update(node.input[1:])
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            data = inits[node.input[0]]
            counted.add(data.name)
            if data.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT4,
                                  onnx.TensorProto.UINT4):  # fmt: skip
                counted.update(i for i in node.input[1:] if i in inits)
    total = sum(_nbytes(inits[n]) for n in counted)
    total += sum(_nbytes(t) for name, t in inits.items() if name not in counted and name not in qparams)
    return total
