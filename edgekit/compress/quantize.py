"""int8 post-training quantization with a quality report and accuracy control.

:func:`quantize` wraps ``onnxruntime.quantization.quantize_static`` (its
calibrators and QDQ writer) and adds what it lacks:

* a typed :class:`~edgekit.compress.config.QuantConfig` instead of
  ``extra_options``;
* a :class:`~edgekit.compress.quality.QualityReport` measured on held-out data;
* accuracy control: when the budget (``max_drop`` / ``min_sqnr_db`` / a user
  metric) is missed, the fewest sensitive layers are kept in float.

Calibration runs once: its tensor ranges go to onnxruntime's calibration cache
and every later re-quantization during the sensitivity search reuses them
(only the excluded nodes change, the fp32 activations do not).

How layers are chosen (the "leave one layer float" search): each candidate
node is excluded alone and the model re-quantized and evaluated; candidates
are ranked by the loss that remains (lowest first, ties broken by output
SQNR); the top-ranked are kept in float one by one until the budget holds;
then each chosen layer is tried back in int8 and dropped from the float set
if the budget still holds. Leave-one-out measures the effect of a layer in the
real context of an otherwise quantized model, which catches layers whose error
only matters downstream; quantizing one layer at a time would measure error
that later layers may mask or amplify differently. It costs one quantization
and one evaluation per candidate, cheap with cached calibration ranges.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import onnx

from edgekit.compress.calibration import DataSource, Feeds, FeedsReader, load_arrays, make_feeds, split_holdout
from edgekit.compress.config import QuantConfig
from edgekit.compress.quality import (
    Fallback,
    OutputQuality,
    QualityReport,
    compare_outputs,
    initializer_bytes,
    is_class_output,
    layer_errors,
    run_outputs,
    weight_bytes,
)
from edgekit.core.errors import EdgekitError, ModelError, QuantizationError
from edgekit.core.files import temp_beside
from edgekit.core.profiles import Board, Target, get_board
from edgekit.frontend.loader import PreparedModel, load_model

__all__ = ["QuantResult", "Metric", "quantize", "write_model", "QUANTIZED_OPS"]

logger = logging.getLogger(__name__)

#: A user metric: takes a model, returns a score in [0, 1], higher is better
#: (e.g. top-1 accuracy against labels).
Metric = Callable[[onnx.ModelProto], float]

#: Operators that mark a model as already quantized.
QUANTIZED_OPS = frozenset(
    {
        "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
        "ConvInteger", "MatMulInteger", "QGemm", "QLinearAdd", "QLinearMul", "QLinearConcat",
        "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearSigmoid", "QLinearLeakyRelu",
        "QLinearSoftmax",
    }
)  # fmt: skip

# Operators that only move or select int8 values with their input's scale:
# keeping one of them in float alone cannot reduce error, so the search
# skips them as candidates.
_PASS_THROUGH_OPS = frozenset(
    {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Slice", "Split", "Gather",
     "GatherElements", "MaxPool", "Pad", "TopK", "Resize"}
)  # fmt: skip


@dataclass
class QuantResult:
    """What :func:`quantize` returns.

    Attributes:
        model: The quantized model in QDQ form (int8 weight initializers).
        report: Its quality report.
        fallback_layers: Nodes kept in float by accuracy control (not those
            excluded by the configuration).
    """

    model: onnx.ModelProto
    report: QualityReport
    fallback_layers: list[str]

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
            hint="Quantize the fp32 original instead; to compile a pre-quantized model, normalize it with "
            "edgekit.compress.normalize_qoperator.",
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
# The quantizer with cached calibration
# --------------------------------------------------------------------------- #


class _Quantizer:
    """Calls ``quantize_static`` with one calibration, many exclusion sets."""

    def __init__(self, model: onnx.ModelProto, config: QuantConfig, calibration: list[Feeds], workdir: Path) -> None:
        self.config = config
        self.calibration = calibration
        self.workdir = workdir
        # quantize_static rewrites a ModelProto passed to it (its initializers
        # become external data), so it always gets a file.
        self.fp32_path = workdir / "fp32.onnx"
        onnx.save(model, str(self.fp32_path))
        self.cache = workdir / "calibration.json"
        self.cache_ready = False
        self.calls = 0
        self._memo: dict[frozenset[str], onnx.ModelProto] = {}

    def __call__(self, excluded: Sequence[str]) -> onnx.ModelProto:
        key = frozenset(excluded)
        if key in self._memo:
            return self._memo[key]
        from onnxruntime.quantization import quantize_static

        self.calls += 1
        out = self.workdir / f"q{self.calls}.onnx"
        reader = None if self.cache_ready else FeedsReader(self.calibration)
        try:
            # onnxruntime's histogram calibrators print() progress; keep it off
            # stdout, where `--json` output goes.
            with _quiet_ort(), contextlib.redirect_stdout(io.StringIO()) as chatter:
                quantize_static(
                    str(self.fp32_path),
                    str(out),
                    reader,
                    nodes_to_exclude=sorted(key),
                    calibration_cache_path=str(self.cache),
                    **self.config.ort_kwargs(),
                )
        except EdgekitError:
            raise
        except Exception as exc:  # onnxruntime raises ValueError, RuntimeError, its own Fail
            raise QuantizationError(
                f"onnxruntime's quantizer failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
                hint="Try --exclude with the op type named above, or a different --calibration-method; "
                "run with --debug for the traceback.",
            ) from exc
        if chatter.getvalue().strip():
            logger.debug("onnxruntime: %s", chatter.getvalue().strip())
        self.cache_ready = True
        qmodel = onnx.load(str(out))
        out.unlink()
        self._memo[key] = qmodel
        return qmodel


def _quantized_candidates(qmodel: onnx.ModelProto, excluded: set[str]) -> list[str]:
    dq_outputs = {o for n in qmodel.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return [
        n.name
        for n in qmodel.graph.node
        if n.op_type not in QUANTIZED_OPS
        and n.op_type not in _PASS_THROUGH_OPS
        and n.name not in excluded
        and any(i in dq_outputs for i in n.input)
    ]


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

    def key(self) -> tuple[float, float]:
        return (round(self.drop, 9), -self.mean_sqnr)


class _Evaluator:
    def __init__(
        self,
        model: onnx.ModelProto,
        feeds: list[Feeds],
        config: QuantConfig,
        metric: Metric | None,
    ) -> None:
        self.model = model
        self.feeds = feeds
        self.config = config
        self.metric = metric
        self.reference = run_outputs(model, feeds)
        self.class_outputs = [is_class_output(np.shape(r)) for r in self.reference[0]]
        self.metric_fp32 = self._call_metric(model) if metric is not None else None
        if config.max_drop is not None and metric is None and not any(self.class_outputs):
            names = ", ".join(o.name for o in model.graph.output)
            raise QuantizationError(
                f"--max-drop is a top-1 agreement budget, but no output of the model ({names}) is a class-score output",
                hint="For outputs that are not class scores, give an SQNR budget with --min-sqnr DB "
                "(Python: QuantConfig(min_sqnr_db=...)), or pass metric= to edgekit.compress.quantize.",
            )

    def _call_metric(self, model: onnx.ModelProto) -> float:
        assert self.metric is not None
        value = self.metric(model)
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
        outputs = compare_outputs(self.model, self.reference, qmodel, self.feeds)
        metric_q = self._call_metric(qmodel) if self.metric is not None else None
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
# Search
# --------------------------------------------------------------------------- #


def _search(
    quantizer: _Quantizer,
    evaluate: _Evaluator,
    base_excluded: list[str],
    base_model: onnx.ModelProto,
    base_score: _Score,
    notify: Callable[[str], None],
) -> tuple[list[str], onnx.ModelProto, _Score, dict[str, dict[str, float | None]], bool]:
    """Finds few layers to keep in float; returns (layers, model, score, sensitivity, met)."""
    candidates = _quantized_candidates(base_model, set(base_excluded))
    sensitivity: dict[str, dict[str, float | None]] = {}
    scored: list[tuple[tuple[float, float], str]] = []
    for i, name in enumerate(candidates):
        notify(f"sensitivity {i + 1}/{len(candidates)}: keeping '{name}' in float")
        score = evaluate(quantizer([*base_excluded, name]))
        sensitivity[name] = {"drop": score.drop, "sqnr_db": None if math.isinf(score.worst_sqnr) else score.worst_sqnr}
        scored.append((score.key(), name))
    ranked = [name for _, name in sorted(scored)]

    chosen: list[str] = []
    model, score = base_model, base_score
    met = False
    for name in ranked:
        chosen.append(name)
        model = quantizer([*base_excluded, *chosen])
        score = evaluate(model)
        notify(f"{len(chosen)} layer(s) in float: loss {score.drop:.2f} points")
        if evaluate.meets(score):
            met = True
            break
    if met and len(chosen) > 1:
        # Backward pass: a layer picked early may be unnecessary once later
        # ones are in float.
        for name in list(chosen):
            trial = [c for c in chosen if c != name]
            trial_model = quantizer([*base_excluded, *trial])
            trial_score = evaluate(trial_model)
            if evaluate.meets(trial_score):
                chosen, model, score = trial, trial_model, trial_score
    return chosen, model, score, sensitivity, met


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
        eval_data: Evaluation data in the same form; ``None``: hold out
            ``config.eval_fraction`` of the calibration data.
        metric: ``metric(model) -> float`` in [0, 1], higher is better (e.g.
            accuracy with labels). With ``config.max_drop`` the budget is a
            fall of at most ``max_drop`` percentage points of this metric
            instead of top-1 agreement.
        board: Board (or board name) whose defaults apply when ``config`` is
            ``None``; recorded in the report either way.
        progress: Called with one-line progress messages.

    Returns:
        The :class:`QuantResult`. If the budget could not be met even with
        every candidate layer in float, ``report.fallback.met`` is ``False``.

    Raises:
        QuantizationError: the model is already quantized, an exclusion names
            nothing, the budget does not apply to the model, the metric
            misbehaves, or onnxruntime's quantizer fails.
        InputError: calibration or evaluation data do not fit the model.
        ModelError: the model cannot be loaded.
    """
    notify = progress or (lambda msg: logger.info("%s", msg))
    if calibration is None:
        raise QuantizationError(
            "static int8 quantization needs calibration data",
            hint="Pass --calibration CAL.npz (one array per model input, first axis = samples).",
        )
    brd, target = _resolve_board(board)
    if config is None:
        config = QuantConfig.for_board(brd, target)
    elif target is not None and target.codegen in ("aot-c", "npu") and not (config.per_channel and config.weight_symmetric):
        logger.warning(
            "board '%s' (%s) expects symmetric per-channel int8 weights; the configuration asks otherwise",
            brd.name if brd else "?", target.codegen,
        )  # fmt: skip

    prepared = _prepare(model)
    fp32 = prepared.model
    excluded = _resolve_excludes(fp32, config.exclude)

    feeds = make_feeds(load_arrays(calibration), prepared.inputs)
    if eval_data is not None:
        cal_feeds = feeds
        eval_feeds = make_feeds(load_arrays(eval_data, what="evaluation data"), prepared.inputs, what="evaluation data")
        eval_source = "evaluation data"
    else:
        cal_feeds, eval_feeds = split_holdout(feeds, config.eval_fraction, config.seed)
        eval_source = f"{config.eval_fraction:.0%} of the calibration data held out"
    if config.calibration_samples is not None:
        cal_feeds = cal_feeds[: config.calibration_samples]
    notify(f"calibrating on {len(cal_feeds)} sample(s), evaluating on {len(eval_feeds)}")

    with tempfile.TemporaryDirectory(prefix="edgekit-quant-") as tmp:
        quantizer = _Quantizer(fp32, config, cal_feeds, Path(tmp))
        evaluate = _Evaluator(fp32, eval_feeds, config, metric)
        qmodel = quantizer(excluded)
        score = evaluate(qmodel)
        notify(f"default int8: loss {score.drop:.2f} points, lowest output SQNR {min(o.sqnr_db for o in score.outputs):.1f} dB")

        fallback = None
        fallback_layers: list[str] = []
        if config.accuracy_controlled:
            budget = {"max_drop": config.max_drop, "min_sqnr_db": config.min_sqnr_db}
            if evaluate.meets(score):
                fallback = Fallback(budget, score.drop, score.drop, True)
            else:
                base_bytes = weight_bytes(qmodel)
                base_drop = score.drop
                fallback_layers, qmodel, score, sensitivity, met = _search(
                    quantizer, evaluate, excluded, qmodel, score, notify
                )
                fallback = Fallback(
                    budget,
                    base_drop,
                    score.drop,
                    met,
                    layers=fallback_layers,
                    bytes_cost=weight_bytes(qmodel) - base_bytes,
                    sensitivity=sensitivity,
                )
                if not met:
                    logger.warning(
                        "the budget is not met even with %d layer(s) in float (loss %.2f points)",
                        len(fallback_layers), score.drop,
                    )  # fmt: skip

        notify("measuring per-layer error")
        layers = layer_errors(fp32, qmodel, eval_feeds, progress=notify)

    try:
        onnx.checker.check_model(qmodel)
    except Exception as exc:
        raise QuantizationError(
            f"the quantized model fails the ONNX checker ({str(exc).splitlines()[0][:200]})",
            hint="Please report this as an edgekit bug, with the model if you can share it.",
        ) from None
    config_json = config.to_json()
    if brd is not None:
        config_json["board"] = brd.name
    report = QualityReport(
        outputs=score.outputs,
        layers=layers,
        weight_bytes_before=weight_bytes(fp32),
        weight_bytes_after=weight_bytes(qmodel),
        initializer_bytes_before=initializer_bytes(fp32),
        initializer_bytes_after=initializer_bytes(qmodel),
        eval_samples=len(eval_feeds),
        eval_source=eval_source,
        metric_fp32=evaluate.metric_fp32,
        metric_quantized=score.metric,
        fallback=fallback,
        config=config_json,
    )
    return QuantResult(qmodel, report, fallback_layers)
