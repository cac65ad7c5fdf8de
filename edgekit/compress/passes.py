"""The pass contract shared by the compression steps, and the pipeline that
chains them.

Every compression step (unstructured or N:M pruning, structured pruning,
low-rank factorization, recovery, quantization) is a :class:`CompressionPass`:
it takes an ONNX model and returns it with a ``modified`` flag
(:class:`PassResult`). :func:`run_pipeline` runs passes in order and records,
for each one, a :class:`CompressionStep` with parameters, MACs and weight
bytes before and after — so a report can say what each step actually bought.
Latency is not measured here (that needs the compile path and a board): the
caller fills :attr:`CompressionStep.latency_ms_before` / ``latency_ms_after``.

The module also holds the small graph helpers the compression modules share
(shapes, initializer arrays, batched onnxruntime runs with intermediate
tensors exposed).
"""

from __future__ import annotations

import logging
import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgekit.core.errors import ModelError
from edgekit.core.profiles import Board
from edgekit.frontend.analysis import analyze
from edgekit.frontend.loader import PreparedModel

__all__ = [
    "ModelStats",
    "PassContext",
    "PassResult",
    "CompressionPass",
    "CompressionStep",
    "PipelineResult",
    "run_pipeline",
    "model_stats",
    "output_fidelity",
    "tensor_shapes",
    "initializer_arrays",
    "run_tensors",
    "finalize_model",
]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- #
# Graph helpers
# --------------------------------------------------------------------------- #


def tensor_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Static shapes of every tensor shape inference can determine
    (initializers included); tensors with a symbolic dimension get -1 there."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as exc:  # a model onnx cannot infer still has initializer shapes
        logger.warning("shape inference failed (%s); using declared shapes only", exc)
        inferred = model
    shapes: dict[str, tuple[int, ...]] = {}
    g = inferred.graph
    for vi in [*g.input, *g.value_info, *g.output]:
        t = vi.type.tensor_type
        if not t.HasField("shape"):
            continue
        shapes[vi.name] = tuple(int(d.dim_value) if d.HasField("dim_value") else -1 for d in t.shape.dim)
    for init in g.initializer:
        shapes[init.name] = tuple(int(d) for d in init.dims)
    return shapes


def initializer_arrays(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Initializers of the main graph as numpy arrays, by name."""
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def finalize_model(model: onnx.ModelProto, *, what: str) -> onnx.ModelProto:
    """Drops unused initializers, re-infers shapes and runs the full checker.

    Raises:
        ModelError: the rewritten model is invalid (an edgekit bug).
    """
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    keep = [i for i in model.graph.initializer if i.name in used]
    if len(keep) != len(model.graph.initializer):
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)
    del model.graph.value_info[:]
    # Old models (IR < 4) list initializers as inputs; the loader drops those
    # inputs, which only a newer IR version allows. Raise it to the version the
    # opsets need.
    try:
        model.ir_version = max(model.ir_version, helper.find_min_ir_version_for(list(model.opset_import)))
    except Exception:  # an opset this onnx does not know: leave the version alone
        pass
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise ModelError(
            f"{what} produced an invalid model ({str(exc).splitlines()[0][:300]})",
            hint="This is an edgekit bug; exclude the offending layer with exclude=[...] and please report it.",
        ) from None
    return model


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # fall back to float for everything not declared
        inferred = model
    g = inferred.graph
    return {vi.name: vi.type.tensor_type.elem_type for vi in [*g.input, *g.value_info, *g.output]}


def _dynamic_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.value_info[:]
    for vi in [*out.graph.input, *out.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if len(dims):
            dims[0].Clear()
            dims[0].dim_param = "batch"
    return out


def _session(model: onnx.ModelProto, *, quiet: bool = False):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    # The dynamic-batch attempt may fail by design; its errors are not news.
    opts.log_severity_level = 4 if quiet else 3
    # The machines edgekit runs on in CI are small; one thread keeps runs
    # reproducible and polite.
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def run_tensors(
    model: onnx.ModelProto,
    data: Mapping[str, np.ndarray],
    names: Sequence[str] | None = None,
    *,
    batch_size: int = 256,
) -> dict[str, np.ndarray]:
    """Runs ``model`` in onnxruntime on all samples of ``data`` and returns
    the requested tensors (graph outputs or intermediates), concatenated over
    samples.

    Intermediate tensors are exposed as extra graph outputs. The model runs
    with a symbolic batch axis when it allows one (much faster than one run
    per sample); a model whose graph fixes the batch (e.g. a Reshape to
    ``[1, -1]``) falls back to its own static batch.

    Args:
        model: The model.
        data: One array per graph input, first axis = samples.
        names: Tensors to return; ``None``: the graph outputs.
        batch_size: Samples per run when the batch is dynamic.

    Returns:
        Arrays by tensor name, first axis = samples.
    """
    wanted = list(names) if names is not None else [o.name for o in model.graph.output]
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    have = {o.name for o in exposed.graph.output}
    missing = [name for name in wanted if name not in have]
    if missing:
        types = _elem_types(model)
        for name in missing:
            exposed.graph.output.append(
                helper.make_tensor_value_info(name, types.get(name, onnx.TensorProto.FLOAT), None)
            )
    input_names = [i.name for i in model.graph.input]
    n = len(next(iter(data.values())))
    results: dict[str, list[np.ndarray]] = {k: [] for k in wanted}
    try:
        sess = _session(_dynamic_batch(exposed), quiet=True)
        step = batch_size
        for start in range(0, n, step):
            out = sess.run(wanted, {k: np.asarray(data[k][start : start + step]) for k in input_names})
            for k, v in zip(wanted, out):
                results[k].append(v)
    except Exception as exc:  # the graph fixes its batch: run at its own size
        logger.debug("dynamic-batch run failed (%s); running at the static batch", str(exc)[:200])
        results = {k: [] for k in wanted}
        sess = _session(exposed)
        dims = model.graph.input[0].type.tensor_type.shape.dim
        step = int(dims[0].dim_value) if len(dims) and dims[0].dim_value > 0 else 1
        for start in range(0, n - step + 1, step):
            out = sess.run(wanted, {k: np.asarray(data[k][start : start + step]) for k in input_names})
            for k, v in zip(wanted, out):
                results[k].append(v)
    return {k: np.concatenate(v, axis=0) for k, v in results.items()}


# --------------------------------------------------------------------------- #
# Stats and fidelity
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class ModelStats:
    """Size and work of a model, from :func:`edgekit.frontend.analysis.analyze`.

    Attributes:
        params: Weight elements.
        macs: Multiply-accumulates of one inference.
        weight_bytes: Bytes of the weights as stored (dense).
    """

    params: int
    macs: int
    weight_bytes: int

    def to_json(self) -> dict[str, int]:
        """JSON form."""
        return {"params": self.params, "macs": self.macs, "weight_bytes": self.weight_bytes}


def model_stats(model: onnx.ModelProto) -> ModelStats:
    """Parameters, MACs and weight bytes of ``model``."""
    report = analyze(PreparedModel(model=model, inputs=[], outputs=[]))
    return ModelStats(params=report.params, macs=report.macs, weight_bytes=report.weight_bytes)


def output_fidelity(
    reference: onnx.ModelProto, model: onnx.ModelProto, data: Mapping[str, np.ndarray]
) -> dict[str, Any]:
    """How closely ``model`` reproduces ``reference`` on ``data``.

    Returns:
        ``sqnr_db`` (over all outputs; ``None`` when identical), ``cosine``,
        and ``top1_agreement`` in percent when the first output looks like
        class scores (rank 2, at least two columns).
    """
    ref = run_tensors(reference, data)
    out = run_tensors(model, data)
    signal = noise = dot = energy = 0.0
    for name, r in ref.items():
        r64 = r.astype(np.float64).ravel()
        t64 = out[name].astype(np.float64).ravel()
        signal += float(r64 @ r64)
        noise += float((r64 - t64) @ (r64 - t64))
        dot += float(r64 @ t64)
        energy += float(t64 @ t64)
    sqnr = None if noise == 0.0 else (10.0 * math.log10(signal / noise) if signal > 0 else None)
    cosine = dot / math.sqrt(signal * energy) if signal > 0 and energy > 0 else 1.0
    result: dict[str, Any] = {"sqnr_db": sqnr, "cosine": cosine}
    first = reference.graph.output[0].name
    r0 = ref[first]
    if r0.ndim == 2 and r0.shape[1] >= 2:
        result["top1_agreement"] = 100.0 * float(np.mean(r0.argmax(1) == out[first].argmax(1)))
    return result


# --------------------------------------------------------------------------- #
# The pass contract
# --------------------------------------------------------------------------- #


@dataclass
class PassContext:
    """What passes of one pipeline share.

    Attributes:
        teacher: The fp32 model the pipeline started from (recovery fits the
            compressed model back to it).
        calibration: Calibration samples, one array per model input, first
            axis = samples (recovery, quantization, fidelity).
        labels: Labels of the calibration samples, when known (distillation).
        channel_maps: Tensor name -> (axis, kept channel indices) for tensors
            structured pruning narrowed; recovery reads it to match the
            compressed model's channels to the teacher's.
        channel_multiple: Channel counts the board's kernels take without
            padding (4 where x86 int8 dot products read 4 input channels per
            step); structured pruning keeps multiples of it unless its
            ``round_to`` says otherwise. 1 when no board is known.
        board: The board compressed for, if any (the quantize step decides
            ``weight_bits = auto`` for its CPU).
    """

    teacher: onnx.ModelProto | None = None
    calibration: dict[str, np.ndarray] | None = None
    labels: np.ndarray | None = None
    channel_maps: dict[str, tuple[int, np.ndarray]] = field(default_factory=dict)
    channel_multiple: int = 1
    board: Board | None = None


@dataclass
class PassResult:
    """What a pass returns.

    Attributes:
        model: The model after the pass (the input model when nothing changed).
        modified: Whether the pass changed the model.
        details: The pass's own JSON-able report (per-layer sparsity, ranks...).
        notes: Human-readable remarks (layers skipped and why).
    """

    model: onnx.ModelProto
    modified: bool
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class CompressionPass(ABC):
    """One compression step: takes a model, returns it with a ``modified`` flag.

    Subclasses set :attr:`name` (the recipe step type) and implement
    :meth:`run`. Passes never modify the model they are given.
    """

    #: Step type, as written in recipes (``prune-structured``, ``low-rank``...).
    name: str = ""

    @abstractmethod
    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        """Applies the step to ``model``."""

    def describe(self) -> dict[str, Any]:
        """The step's configuration, for reports (JSON-able)."""
        return {}


@dataclass
class CompressionStep:
    """The record of one step of a pipeline: what it cost and what it bought.

    Attributes:
        name: Step type.
        config: The step's configuration.
        modified: Whether the step changed the model.
        before: Stats of the model the step received.
        after: Stats of the model it returned.
        seconds: Wall time of the step.
        details: The pass's own report.
        notes: Remarks (skipped layers and why).
        fidelity: Output fidelity against the pipeline's fp32 teacher after
            this step (``sqnr_db``, ``cosine``, ``top1_agreement``), when
            calibration data was given.
        accuracy: Task accuracy after the step, filled by a caller that has
            labels and a metric.
        latency_ms_before: Compiled latency before the step on the chosen
            board, filled by a caller with the compile path.
        latency_ms_after: Compiled latency after the step, likewise.
    """

    name: str
    config: dict[str, Any]
    modified: bool
    before: ModelStats
    after: ModelStats
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    fidelity: dict[str, Any] | None = None
    accuracy: float | None = None
    latency_ms_before: float | None = None
    latency_ms_after: float | None = None

    @staticmethod
    def _ratio(before: float, after: float) -> float:
        return 0.0 if before == 0 else 1.0 - after / before

    @property
    def macs_reduction(self) -> float:
        """Fraction of MACs removed (negative when the step added MACs)."""
        return self._ratio(self.before.macs, self.after.macs)

    @property
    def params_reduction(self) -> float:
        """Fraction of parameters removed."""
        return self._ratio(self.before.params, self.after.params)

    @property
    def weight_bytes_reduction(self) -> float:
        """Fraction of dense weight bytes removed."""
        return self._ratio(self.before.weight_bytes, self.after.weight_bytes)

    @property
    def latency_speedup(self) -> float | None:
        """``latency_before / latency_after`` once both are filled in."""
        if not self.latency_ms_before or not self.latency_ms_after:
            return None
        return self.latency_ms_before / self.latency_ms_after

    def to_json(self) -> dict[str, Any]:
        """JSON form for ``--report``."""
        return {
            "step": self.name,
            "config": self.config,
            "modified": self.modified,
            "before": self.before.to_json(),
            "after": self.after.to_json(),
            "macs_reduction": round(self.macs_reduction, 6),
            "params_reduction": round(self.params_reduction, 6),
            "weight_bytes_reduction": round(self.weight_bytes_reduction, 6),
            "latency_ms_before": self.latency_ms_before,
            "latency_ms_after": self.latency_ms_after,
            "fidelity": self.fidelity,
            "accuracy": self.accuracy,
            "seconds": round(self.seconds, 3),
            "details": self.details,
            "notes": self.notes,
        }


@dataclass
class PipelineResult:
    """The compressed model and one :class:`CompressionStep` per step."""

    model: onnx.ModelProto
    steps: list[CompressionStep]

    @property
    def modified(self) -> bool:
        """Whether any step changed the model."""
        return any(s.modified for s in self.steps)

    def chain(self) -> CompressionStep | None:
        """The whole chain as one step (first ``before`` to last ``after``)."""
        if not self.steps:
            return None
        first, last = self.steps[0], self.steps[-1]
        return CompressionStep(
            name="chain",
            config={"steps": [s.name for s in self.steps]},
            modified=self.modified,
            before=first.before,
            after=last.after,
            seconds=sum(s.seconds for s in self.steps),
            fidelity=last.fidelity,
            accuracy=last.accuracy,
            latency_ms_before=first.latency_ms_before,
            latency_ms_after=last.latency_ms_after,
        )

    def to_json(self) -> dict[str, Any]:
        """JSON form: ``steps`` and ``chain``."""
        chain = self.chain()
        return {"steps": [s.to_json() for s in self.steps], "chain": chain.to_json() if chain else None}


def run_pipeline(
    model: onnx.ModelProto,
    passes: Iterable[CompressionPass],
    ctx: PassContext | None = None,
    *,
    fidelity: bool = True,
) -> PipelineResult:
    """Runs ``passes`` in order, recording a :class:`CompressionStep` each.

    Args:
        model: The fp32 model (becomes ``ctx.teacher`` when that is unset).
        passes: The steps.
        ctx: Shared context (calibration data, labels); a fresh one if None.
        fidelity: Measure output fidelity against the teacher after each
            step (needs ``ctx.calibration``).

    Returns:
        The :class:`PipelineResult`.
    """
    ctx = ctx or PassContext()
    if ctx.teacher is None:
        ctx.teacher = model
    current = model
    current_stats = model_stats(current)
    steps: list[CompressionStep] = []
    for p in passes:
        start = time.perf_counter()
        result = p.run(current, ctx)
        elapsed = time.perf_counter() - start
        after_stats = model_stats(result.model) if result.modified else current_stats
        fid = None
        if fidelity and ctx.calibration is not None:
            fid = output_fidelity(ctx.teacher, result.model, ctx.calibration)
        step = CompressionStep(
            name=p.name,
            config=p.describe(),
            modified=result.modified,
            before=current_stats,
            after=after_stats,
            seconds=elapsed,
            details=result.details,
            notes=list(result.notes),
            fidelity=fid,
        )
        logger.info(
            "%s: params %d -> %d, MACs %d -> %d%s",
            p.name, step.before.params, step.after.params, step.before.macs, step.after.macs,
            "" if result.modified else " (model unchanged)",
        )  # fmt: skip
        steps.append(step)
        current, current_stats = result.model, after_stats
    return PipelineResult(model=current, steps=steps)
