"""int8 post-training quantization with a quality report and accuracy control.

:func:`quantize` wraps ``onnxruntime.quantization.quantize_static`` (its
calibrators and QDQ writer) and adds what it lacks:

* a typed :class:`~edgekit.compress.config.QuantConfig` instead of
  ``extra_options``;
* a :class:`~edgekit.compress.quality.QualityReport` measured on held-out data;
* accuracy control: when the budget (``max_drop`` / ``min_sqnr_db`` / a user
  metric) is missed, the fewest harmful layers are kept in float.

Accuracy control quantizes once. The layers are ranked in one pass by the
error each one's quantization adds on its own
(:func:`edgekit.compress.fallback.rank_layers`); then a search over that
ranking (:func:`edgekit.compress.search.search_fallback`: gallop, bisect,
prune) evaluates the whole model a handful of times, each time with the top
``k`` layers rewired to float in the QDQ graph
(:func:`edgekit.compress.fallback.keep_in_float`) instead of re-running the
quantizer. This is NNCF's ``quantize_with_accuracy_control`` design (rank,
then revert the top-ranked) with a cheaper ranking and a bisection instead of
one-by-one reverting.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import onnx

from edgekit.compress.calibration import (
    DataSource,
    Feeds,
    FeedsReader,
    holdout_indices,
    load_arrays,
    make_feeds,
    select_runs,
)
from edgekit.compress.chains import UnaryChain, chain_exclusions, unquantized_chains
from edgekit.compress.config import QuantConfig
from edgekit.compress.weight_bits import WeightBits, choose_weight_bits, weight_range
from edgekit.compress.fallback import LayerSensitivity, float_head, keep_in_float, quantized_nodes, rank_layers
from edgekit.compress.quality import (
    Fallback,
    FloatLayer,
    OutputQuality,
    QualityReport,
    compare_run_outputs,
    initializer_bytes,
    is_class_output,
    layer_errors,
    run_outputs,
    session,
    weight_bytes,
)
from edgekit.compress.search import Trial, format_duration, search_fallback
from edgekit.core.errors import EdgekitError, ModelError, QuantizationError
from edgekit.core.files import temp_beside
from edgekit.core.profiles import Board, Target, get_board
from edgekit.frontend.loader import PreparedModel, load_model

__all__ = ["QuantResult", "Metric", "quantize", "write_model", "QUANTIZED_OPS"]

logger = logging.getLogger(__name__)

#: A user metric: ``metric(outputs, data) -> float`` in [0, 1], higher is
#: better (e.g. accuracy against labels). ``outputs`` holds the model's
#: outputs on the evaluation data, one array per output name with the runs
#: stacked along the first axis; ``data`` holds every array of the evaluation
#: data (model inputs and extras such as ``labels``), cut to the same samples.
Metric = Callable[[dict[str, np.ndarray], dict[str, np.ndarray]], float]

#: Samples the layer ranking runs on (the first of the evaluation data).
RANKING_SAMPLES = 16
#: Samples the per-layer error table of the report runs on.
LAYER_REPORT_SAMPLES = 32
#: Calibration samples bias correction measures the mean shifts on.
BIAS_CORRECTION_SAMPLES = 64

#: Operators that mark a model as already quantized.
QUANTIZED_OPS = frozenset(
    {
        "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
        "ConvInteger", "MatMulInteger", "QGemm", "QLinearAdd", "QLinearMul", "QLinearConcat",
        "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearSigmoid", "QLinearLeakyRelu",
        "QLinearSoftmax",
    }
)  # fmt: skip

@dataclass
class QuantResult:
    """What :func:`quantize` returns.

    Attributes:
        model: The quantized model in QDQ form (int8 weight initializers).
        report: Its quality report.
        fallback_layers: Nodes kept in float by accuracy control (not those
            excluded by the configuration).
        int8_model: The model before accuracy control kept layers in float.
        reference: The fp32 model the layers kept in float take their
            weights from (the input model, or its SmoothQuant-ed copy).
    """

    model: onnx.ModelProto
    report: QualityReport
    fallback_layers: list[str]
    int8_model: onnx.ModelProto | None = None
    reference: onnx.ModelProto | None = None

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Writes the model atomically; returns the path."""
        return write_model(self.model, path)


def write_model(model: onnx.ModelProto, path: str | os.PathLike[str]) -> Path:
    """Writes ``model`` to ``path`` through a temporary file in the same
    folder and ``os.replace``, so a crash never leaves half a model behind.

    Raises:
        ModelError: the folder does not exist or is not writable.
    """
    dest = Path(path)
    if not dest.parent.is_dir():
        raise ModelError(f"output folder '{dest.parent}' does not exist", hint="Create it or choose another -o path.")
    fd, tmp = temp_beside(dest)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(model.SerializeToString())
        os.replace(tmp, dest)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise ModelError(f"cannot write '{dest}' ({exc.strerror})", hint="Check the path and permissions.") from None
    return dest


# --------------------------------------------------------------------------- #
# Preparation
# --------------------------------------------------------------------------- #


def _prepare(model: PreparedModel | str | os.PathLike[str] | onnx.ModelProto) -> PreparedModel:
    prepared = model if isinstance(model, PreparedModel) else load_model(model)
    already = sorted({n.op_type for n in prepared.model.graph.node if n.op_type in QUANTIZED_OPS})
    if already:
        raise QuantizationError(
            f"the model is already quantized (it contains {', '.join(already)})",
            hint="Quantize the fp32 original instead, or compile this model as it is: `edgekit compile` takes "
            "QDQ models and normalizes QOperator ones (QLinearConv, QGemm ...) itself.",
            ops=already,
        )
    proto = onnx.ModelProto()
    proto.CopyFrom(prepared.model)
    # onnxruntime selects nodes to exclude by name; give unnamed ones a name.
    counts = Counter(n.name for n in proto.graph.node)
    names: set[str] = set(counts)
    for i, node in enumerate(proto.graph.node):
        if not node.name or counts[node.name] > 1:
            base = f"{node.op_type}_{i}"
            node.name = base if base not in names else f"{base}_{id(node)}"
            names.add(node.name)
    return PreparedModel(
        proto, prepared.inputs, prepared.outputs, prepared.source, prepared.opset, list(prepared.notes)
    )


def _resolve_excludes(model: onnx.ModelProto, exclude: Sequence[str]) -> list[str]:
    node_names = [n.name for n in model.graph.node]
    op_types = {n.op_type for n in model.graph.node}
    unknown = [e for e in exclude if e not in op_types and e not in node_names]
    if unknown:
        raise QuantizationError(
            f"--exclude names no node or op type of the model: {', '.join(unknown)}",
            hint=f"Op types in the model: {', '.join(sorted(op_types))}. "
            "Node names are listed by `edgekit inspect MODEL --json`.",
            unknown=unknown,
        )
    wanted = set(exclude)
    return [n.name for n in model.graph.node if n.name in wanted or n.op_type in wanted]


def _resolve_board(board: Board | str | None) -> tuple[Board | None, Target | None]:
    if board is None:
        return None, None
    if isinstance(board, Board):
        from edgekit.core.profiles import load_profiles

        return board, load_profiles().target_of(board)
    return get_board(board)


class _DropOrtAdvice(logging.Filter):
    """onnxruntime logs a pre-processing suggestion on the root logger for
    every call; edgekit's loader already did that preparation."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Please consider")


@contextlib.contextmanager
def _quiet_ort() -> Iterator[None]:
    flt = _DropOrtAdvice()
    root = logging.getLogger()
    root.addFilter(flt)
    try:
        yield
    finally:
        root.removeFilter(flt)


# --------------------------------------------------------------------------- #
# The quantizer
# --------------------------------------------------------------------------- #


def _quantize_static(
    model: onnx.ModelProto, config: QuantConfig, calibration: list[Feeds], excluded: Sequence[str]
) -> onnx.ModelProto:
    """Calibrates and quantizes once with onnxruntime's ``quantize_static``."""
    from onnxruntime.quantization import quantize_static

    with tempfile.TemporaryDirectory(prefix="edgekit-quant-") as tmp:
        # quantize_static rewrites a ModelProto passed to it (its initializers
        # become external data), so it always gets a file.
        src, out = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, str(src))
        cache = {}
        if config.calibration_method == "auto":
            cache["calibration_cache_path"] = _auto_ranges_cache(model, src, config, calibration, Path(tmp))
        try:
            # onnxruntime's histogram calibrators print() progress; keep it off
            # stdout, where `--json` output goes.
            with _quiet_ort(), contextlib.redirect_stdout(io.StringIO()) as chatter:
                quantize_static(
                    str(src),
                    str(out),
                    FeedsReader(calibration),
                    nodes_to_exclude=sorted(excluded),
                    **config.ort_kwargs(),
                    **cache,
                )
        except EdgekitError:
            raise
        except Exception as exc:  # onnxruntime raises ValueError, RuntimeError, its own Fail
            raise QuantizationError(
                f"onnxruntime's quantizer failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
                hint="Try --exclude with the op type named above, or a different --calibration-method; "
                "run with --debug for the traceback.",
            ) from exc
        qmodel = onnx.load(str(out))
    if chatter.getvalue().strip():
        logger.debug("onnxruntime: %s", chatter.getvalue().strip())
    return qmodel


def _ort_quantized_ops() -> set[str]:
    """The op types ``quantize_static`` quantizes when none are named."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return set(QLinearOpsRegistry) | set(QDQRegistry)


def _chains(model: onnx.ModelProto, config: QuantConfig, excluded: Sequence[str],
            notify: Callable[[str], None]) -> list[UnaryChain]:  # fmt: skip
    """The elementwise chains to quantize at their ends only
    (``config.chain_ends_only``, :mod:`edgekit.compress.chains`)."""
    if not config.chain_ends_only:
        return []
    chains, nodes = chain_exclusions(model, _ort_quantized_ops(), excluded)
    if chains:
        notify(f"{len(chains)} elementwise chain(s) of one tensor ({len(nodes)} nodes) quantized at their ends only")
    return chains


def _auto_ranges_cache(model: onnx.ModelProto, src: Path, config: QuantConfig, calibration: list[Feeds],
                       folder: Path) -> str:  # fmt: skip
    """Per-tensor ranges (:func:`edgekit.compress.ranges.auto_ranges`) written
    as onnxruntime's calibration cache, which ``quantize_static`` then uses
    instead of calibrating again."""
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import TensorsData, save_tensors_data

    from edgekit.compress.config import DEFAULT_PERCENTILE
    from edgekit.compress.ranges import auto_ranges

    choice = auto_ranges(src, calibration, op_types=sorted(_ort_quantized_ops()),
                         percentile=float(config.percentile or DEFAULT_PERCENTILE),
                         symmetric=config.activation_symmetric,
                         keep_minmax=[o.name for o in model.graph.output])  # fmt: skip
    data = {name: (np.float32(lo), np.float32(hi)) for name, (lo, hi) in choice.ranges.items()}
    path = folder / "ranges.json"
    save_tensors_data(TensorsData(CalibrationMethod.MinMax, data), path)
    return str(path)


# --------------------------------------------------------------------------- #
# Budget
# --------------------------------------------------------------------------- #


@dataclass
class _Score:
    """Loss of one quantized model against fp32."""

    outputs: list[OutputQuality]
    drop: float  # percentage points (metric or top-1 agreement); 0 when neither applies
    worst_sqnr: float  # lowest SQNR over the outputs the SQNR budget covers (inf if none)
    mean_sqnr: float  # over all outputs, finite values capped, for tie-breaking
    metric: float | None


def _stack(runs: list[list[np.ndarray]], names: Sequence[str]) -> dict[str, np.ndarray]:
    """One array per output, runs stacked along the first axis."""
    out: dict[str, np.ndarray] = {}
    for k, name in enumerate(names):
        parts = [np.asarray(r[k]) for r in runs]
        out[name] = np.concatenate(parts, axis=0) if parts and parts[0].ndim else np.stack(parts)
    return out


class _Evaluator:
    """Runs a model on the evaluation data and scores it against fp32."""

    def __init__(
        self,
        model: onnx.ModelProto,
        feeds: list[Feeds],
        data: dict[str, np.ndarray],
        config: QuantConfig,
        metric: Metric | None,
    ) -> None:
        self.model = model
        self.feeds = feeds
        self.data = data
        self.config = config
        self.metric = metric
        self.names = [o.name for o in model.graph.output]
        self.reference = run_outputs(model, feeds)
        self.class_outputs = [is_class_output(np.shape(r)) for r in self.reference[0]]
        self.metric_fp32 = self._call_metric(self.reference) if metric is not None else None
        self.evaluations = 0
        if config.max_drop is not None and metric is None and not any(self.class_outputs):
            names = ", ".join(self.names)
            raise QuantizationError(
                f"--max-drop is a top-1 agreement budget, but no output of the model ({names}) is a class-score output",
                hint="Give a task metric with --metric module:function (Python: metric=), or for outputs that are "
                "not class scores an SQNR budget with --min-sqnr DB (Python: QuantConfig(min_sqnr_db=...)).",
            )

    def _call_metric(self, runs: list[list[np.ndarray]]) -> float:
        assert self.metric is not None
        try:
            value = self.metric(_stack(runs, self.names), dict(self.data))
        except EdgekitError:
            raise
        except Exception as exc:
            raise QuantizationError(
                f"the metric function raised {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}",
                hint="It is called as metric(outputs, data): outputs maps each model output name to an array with "
                "the runs stacked on the first axis; data holds every array of the evaluation data (labels "
                "included). Run with --debug for the traceback.",
            ) from exc
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not math.isfinite(value):
            raise QuantizationError(
                f"the metric function returned {value!r}, not a number",
                hint="Return a float in [0, 1], higher is better (e.g. top-1 accuracy).",
            )
        if not 0.0 <= float(value) <= 1.0:
            raise QuantizationError(
                f"the metric function returned {value}, outside [0, 1]",
                hint="Return a fraction in [0, 1] (e.g. accuracy 0.97, not 97); max_drop is in percentage points of it.",
            )
        return float(value)

    def __call__(self, qmodel: onnx.ModelProto) -> _Score:
        self.evaluations += 1
        sess = session(qmodel, optimize=False)
        runs = [sess.run(self.names, f) for f in self.feeds]
        outputs = compare_run_outputs(self.names, self.reference, runs)
        metric_q = self._call_metric(runs) if self.metric is not None else None
        if metric_q is not None and self.metric_fp32 is not None:
            drop = 100.0 * (self.metric_fp32 - metric_q)
        else:
            agreements = [o.top1_agreement for o in outputs if o.top1_agreement is not None]
            drop = 100.0 - min(agreements) if agreements else 0.0
        sqnr_covered = [o.sqnr_db for o, cls in zip(outputs, self.class_outputs) if not cls]
        finite = [min(o.sqnr_db, 200.0) for o in outputs]
        return _Score(
            outputs=outputs,
            drop=drop,
            worst_sqnr=min(sqnr_covered) if sqnr_covered else math.inf,
            mean_sqnr=float(np.mean(finite)) if finite else 0.0,
            metric=metric_q,
        )

    def meets(self, score: _Score) -> bool:
        if self.config.max_drop is not None and score.drop > self.config.max_drop + 1e-9:
            return False
        if self.config.min_sqnr_db is not None and score.worst_sqnr < self.config.min_sqnr_db:
            return False
        return True


# --------------------------------------------------------------------------- #
# Accuracy control
# --------------------------------------------------------------------------- #


def _float_layer_costs(
    fp32: onnx.ModelProto,
    layers: Sequence[str],
    ranking: dict[str, LayerSensitivity],
    buy_back: dict[str, float | None],
) -> list[FloatLayer]:
    """What each float layer costs: MACs in float, weight and activation bytes."""
    from edgekit.frontend.analysis import analyze
    from edgekit.compress.passes import tensor_shapes

    prepared = PreparedModel(fp32, [], [], None, 0, [])
    macs = {layer.name: layer.macs for layer in analyze(prepared).layers}
    shapes = tensor_shapes(fp32)
    inits = {t.name: t for t in fp32.graph.initializer}
    nodes = {n.name: n for n in fp32.graph.node}
    out = []
    for name in layers:
        node = nodes.get(name)
        if node is None:
            continue
        # int8 -> float32 weights: 3 more bytes per element; int32 biases do not grow.
        weights = sum(3 * math.prod(inits[i].dims) for i in node.input if i in inits and len(inits[i].dims) >= 2)
        out_shape = shapes.get(node.output[0]) if node.output else None
        act = 3 * math.prod(out_shape) if out_shape and all(d > 0 for d in out_shape) else 0
        sens = ranking.get(name)
        out.append(
            FloatLayer(
                node=name,
                op_type=node.op_type,
                sensitivity_sqnr_db=None if sens is None else sens.sqnr_db,
                macs=int(macs.get(name, 0)),
                extra_weight_bytes=int(weights),
                extra_activation_bytes=int(act),
                buys_back=buy_back.get(name),
            )
        )
    return out


def _accuracy_control(
    fp32: onnx.ModelProto,
    qmodel: onnx.ModelProto,
    score: _Score,
    evaluate: _Evaluator,
    excluded: Sequence[str],
    deadline: float | None,
    started: float,
    notify: Callable[[str], None],
) -> tuple[onnx.ModelProto, _Score, Fallback]:
    config = evaluate.config
    budget = {"max_drop": config.max_drop, "min_sqnr_db": config.min_sqnr_db}
    if evaluate.meets(score):
        return qmodel, score, Fallback(budget, score.drop, score.drop, True, evaluations=evaluate.evaluations,
                                       seconds=time.monotonic() - started,
                                       message=f"default int8 meets the budget (loss {score.drop:.2f} points)")
    candidates = quantized_nodes(qmodel, skip=excluded)
    ranking_feeds = evaluate.feeds[:RANKING_SAMPLES]
    notify(f"ranking {len(candidates)} quantized layers on {len(ranking_feeds)} sample(s)")
    ranked = rank_layers(qmodel, fp32, ranking_feeds, candidates, progress=notify)
    by_name = {r.node: r for r in ranked}
    if ranked:
        notify("most harmful: " + ", ".join(f"{r.node} ({r.sqnr_db:.1f} dB)" for r in ranked[:5]))

    def trial(layers: tuple[str, ...]) -> tuple[_Score, float, bool]:
        sc = evaluate(keep_in_float(qmodel, fp32, layers))
        return sc, sc.drop, evaluate.meets(sc)

    base = Trial((), score, score.drop, False)
    found = search_fallback([r.node for r in ranked], trial, base, deadline=deadline, notify=notify)
    best = found.best
    model = keep_in_float(qmodel, fp32, best.layers)
    final: _Score = best.score
    layers = list(best.layers)
    target = (f"budget {config.max_drop} points" if config.max_drop is not None else "") + (
        f"{' and ' if config.max_drop is not None else 'budget '}{config.min_sqnr_db} dB"
        if config.min_sqnr_db is not None else "")  # fmt: skip
    elapsed = time.monotonic() - started
    if found.stopped_early:
        gap = "" if best.met else f", {final.drop - (config.max_drop or 0.0):.2f} points over the budget"
        message = (
            f"stopped at the time limit ({format_duration(config.max_time_s or 0)}) after {len(found.trials) - 1} "
            f"candidate(s): the best model so far keeps {len(layers)} layer(s) in float and loses {final.drop:.2f} "
            f"points ({'meets' if best.met else 'misses'} the {target}{gap})"
        )
        logger.warning("%s", message)
    elif best.met:
        message = (f"{len(layers)} layer(s) kept in float: loss {score.drop:.2f} -> {final.drop:.2f} points "
                   f"({target}), {len(found.trials) - 1} candidate(s) evaluated in {format_duration(elapsed)}")
    else:
        message = (f"the {target} is not met even with all {len(ranked)} quantized layers in float "
                   f"(loss {final.drop:.2f} points)")
        logger.warning("%s", message)
    fallback = Fallback(
        budget,
        score.drop,
        final.drop,
        best.met,
        layers=layers,
        bytes_cost=weight_bytes(model) - weight_bytes(qmodel),
        sensitivity={r.node: {"sqnr_db": r.sqnr_db, "rank": float(r.rank)} for r in ranked},
        float_layers=_float_layer_costs(fp32, layers, by_name, found.buy_back),
        evaluations=evaluate.evaluations,
        seconds=elapsed,
        stopped_early=found.stopped_early,
        message=message,
    )
    return model, final, fallback


# --------------------------------------------------------------------------- #
# Entry point
# --------------------------------------------------------------------------- #


def quantize(
    model: PreparedModel | str | os.PathLike[str] | onnx.ModelProto,
    config: QuantConfig | None = None,
    calibration: DataSource | None = None,
    *,
    eval_data: DataSource | None = None,
    metric: Metric | None = None,
    board: Board | str | None = None,
    progress: Callable[[str], None] | None = None,
) -> QuantResult:
    """Quantizes a model to int8 (QDQ) and reports what it cost.

    Args:
        model: A prepared model, an ``.onnx`` path or a ``ModelProto`` (paths
            and protos go through :func:`edgekit.frontend.loader.load_model`).
        config: How to quantize; ``None``: :meth:`QuantConfig.for_board` of
            ``board`` (or the defaults without a board).
        calibration: ``.npz`` path or dict of arrays, one per model input,
            first axis = samples.
        eval_data: Evaluation data in the same form, plus any arrays the
            metric needs (e.g. ``labels``); ``None``: hold out
            ``config.eval_fraction`` of the calibration data (and of its
            extra arrays).
        metric: ``metric(outputs, data) -> float`` in [0, 1], higher is better
            (see :data:`Metric`). With ``config.max_drop`` the budget is a
            fall of at most ``max_drop`` percentage points of this metric
            instead of top-1 agreement.
        board: Board (or board name) whose defaults apply when ``config`` is
            ``None``; recorded in the report either way.
        progress: Called with one-line progress messages (one per evaluated
            candidate during accuracy control, with an ETA).

    Returns:
        The :class:`QuantResult`. If the budget could not be met even with
        every candidate layer in float, or ``config.max_time_s`` ran out
        first, ``report.fallback.met`` is ``False`` and the model is the best
        one found.

    Raises:
        QuantizationError: the model is already quantized, an exclusion names
            nothing, the budget does not apply to the model, the metric
            misbehaves, or onnxruntime's quantizer fails.
        InputError: calibration or evaluation data do not fit the model.
        ModelError: the model cannot be loaded.
    """
    started = time.monotonic()
    notify = progress or (lambda msg: logger.info("%s", msg))
    if calibration is None:
        raise QuantizationError(
            "static int8 quantization needs calibration data",
            hint="Pass --calibration CAL.npz (one array per model input, first axis = samples).",
        )
    config, brd, widths = _resolve_config(config, board)
    deadline = None if config.max_time_s is None else started + config.max_time_s

    prepared = _prepare(model)
    excluded = _resolve_excludes(prepared.model, config.exclude)
    data = _split_data(prepared, config, calibration, eval_data)
    notify(f"calibrating on {len(data.cal_feeds)} sample(s), evaluating on {len(data.eval_feeds)}; "
           f"{widths.bits}-bit weights {weight_range(widths.bits)} ({widths.reason})")
    fp32, qmodel = _quantize_graph(prepared.model, config, data.cal_feeds, excluded, started, notify)
    evaluate = _Evaluator(fp32, data.eval_feeds, data.eval_arrays, config, metric)
    score = evaluate(qmodel)
    notify(f"default int8: loss {score.drop:.2f} points, lowest output SQNR {min(o.sqnr_db for o in score.outputs):.1f} dB "
           f"[{format_duration(time.monotonic() - started)}]")

    fallback = None
    int8_model = qmodel
    if config.accuracy_controlled:
        qmodel, score, fallback = _accuracy_control(fp32, qmodel, score, evaluate, excluded, deadline, started, notify)
        notify(fallback.message)

    report_feeds = data.eval_feeds[:LAYER_REPORT_SAMPLES]
    notify(f"measuring per-layer error on {len(report_feeds)} sample(s)")
    layers = layer_errors(fp32, qmodel, report_feeds, progress=notify)
    _check(qmodel)
    config_json = config.to_json()
    config_json["weight_bits_reason"] = widths.reason
    if brd is not None:
        config_json["board"] = brd.name
    report = QualityReport(
        outputs=score.outputs,
        layers=layers,
        weight_bytes_before=weight_bytes(fp32),
        weight_bytes_after=weight_bytes(qmodel),
        initializer_bytes_before=initializer_bytes(fp32),
        initializer_bytes_after=initializer_bytes(qmodel),
        eval_samples=len(data.eval_feeds),
        eval_source=data.eval_source,
        metric_fp32=evaluate.metric_fp32,
        metric_quantized=score.metric,
        fallback=fallback,
        config=config_json,
    )
    return QuantResult(qmodel, report, list(fallback.layers) if fallback else [], int8_model, fp32)


# The weight layout the integer code of a target is built for: a configuration
# that departs from the target's declared value still runs, but is warned about.
_WEIGHT_CONVENTION = ("per_channel", "weight_symmetric")


def _resolve_config(config: QuantConfig | None, board: Board | str | None
                    ) -> tuple[QuantConfig, Board | None, WeightBits]:  # fmt: skip
    """The configuration to use (a board's defaults when none is given) with
    ``weight_bits`` decided for the board's CPU, the board, and why that width."""
    brd, target = _resolve_board(board)
    widths = choose_weight_bits(target, "auto" if config is None else config.weight_bits)
    if config is None:
        return QuantConfig.for_board(brd, target).replace(weight_bits=widths.bits), brd, widths
    config = config.replace(weight_bits=widths.bits)
    if target is None:
        return config, brd, widths
    differ = [f"{key} = {str(value).lower()}" for key, value in target.quantization.declared().items()
              if key in _WEIGHT_CONVENTION and getattr(config, key) != value]  # fmt: skip
    if differ:
        logger.warning(
            "board '%s' expects int8 weights with %s ([quantization] of %s); the configuration asks otherwise",
            brd.name if brd else "?", ", ".join(differ), target.source,
        )  # fmt: skip
    return config, brd, widths


@dataclass
class _Data:
    """Calibration and evaluation samples of one :func:`quantize` call."""

    cal_feeds: list[Feeds]
    eval_feeds: list[Feeds]
    eval_arrays: dict[str, np.ndarray]
    eval_source: str


def _split_data(prepared: PreparedModel, config: QuantConfig, calibration: DataSource,
                eval_data: DataSource | None) -> _Data:  # fmt: skip
    """Evaluation data as given, or held out of the calibration data."""
    cal_arrays = load_arrays(calibration)
    feeds = make_feeds(cal_arrays, prepared.inputs)
    if eval_data is not None:
        eval_arrays = load_arrays(eval_data, what="evaluation data")
        eval_feeds = make_feeds(eval_arrays, prepared.inputs, what="evaluation data")
        data = _Data(feeds, eval_feeds, eval_arrays, "evaluation data")
    else:
        cal_idx, eval_idx = holdout_indices(len(feeds), config.eval_fraction, config.seed)
        data = _Data([feeds[i] for i in cal_idx], [feeds[i] for i in eval_idx],
                     select_runs(cal_arrays, len(feeds), eval_idx),
                     f"{config.eval_fraction:.0%} of the calibration data held out")  # fmt: skip
    if config.calibration_samples is not None:
        data.cal_feeds = data.cal_feeds[: config.calibration_samples]
    return data


def _quantize_graph(fp32: onnx.ModelProto, config: QuantConfig, cal_feeds: list[Feeds], excluded: Sequence[str],
                    started: float, notify: Callable[[str], None]) -> tuple[onnx.ModelProto, onnx.ModelProto]:  # fmt: skip
    """The default int8 model (before accuracy control), and the fp32 model
    it stands for (SmoothQuant's copy when that is on)."""
    if config.smooth_quant:
        from edgekit.compress.smoothquant import smooth_quant

        # The smoothed model computes the same function; it is the reference
        # from here on, so keeping a layer in float takes its smoothed weights.
        fp32, smoothed = smooth_quant(fp32, cal_feeds, alpha=config.smooth_quant_alpha)
        notify(f"SmoothQuant: {len(smoothed)} MatMul/Gemm layer(s) smoothed"
               + "".join(f"; {s.node} outliers {s.outlier_ratio:.0f}x -> {s.outlier_ratio_after:.0f}x"
                         for s in smoothed[:3]))  # fmt: skip
    chains = _chains(fp32, config, excluded, notify)
    qmodel = _quantize_static(fp32, config, cal_feeds, [*excluded, *(n for c in chains for n in c.nodes)])
    for chain in unquantized_chains(qmodel, chains):
        logger.warning("the elementwise chain of %s (%s) stays float: its input was not quantized",
                       chain.source, ", ".join(chain.nodes))  # fmt: skip
    if config.bias_correction:
        from edgekit.compress.bias_correction import correct_biases

        qmodel, corrected = correct_biases(qmodel, fp32, cal_feeds[:BIAS_CORRECTION_SAMPLES])
        notify(f"bias correction: {len(corrected.layers)} layer(s) corrected "
               f"[{format_duration(time.monotonic() - started)}]")
    if config.float_head:
        qmodel, heads = float_head(qmodel, fp32)
        notify(f"float head: outputs of {', '.join(heads) or 'no node'} left in float")
    return fp32, qmodel


def _check(qmodel: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(qmodel)
    except Exception as exc:
        raise QuantizationError(
            f"the quantized model fails the ONNX checker ({str(exc).splitlines()[0][:200]})",
            hint="Please report this as an edgekit bug, with the model if you can share it.",
        ) from None
