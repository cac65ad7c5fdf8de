"""Layer-wise accuracy recovery after pruning or factorization (numpy).

Two methods that need no training framework, only onnxruntime (with
intermediate tensors exposed) and numpy:

* :func:`bias_correction`: shift each layer's bias by the mean difference
  between the fp32 teacher's output and the compressed student's.
* :func:`least_squares_refit`: layer-wise reconstruction. Going through the
  layers in graph order, refit each layer's weights and bias by ridge least
  squares so that, fed the *student's* own input activations (which already
  carry the upstream pruning error), it reproduces the *teacher's* output of
  that layer on calibration data. Pruned input channels are thereby
  compensated by the channels that remain.

Layers are matched between teacher and student by output tensor name (both
pruning and factorization keep those names); channels removed by structured
pruning are matched through ``channel_maps``. Both methods report what they
did as a :class:`RecoveryResult`, as :func:`edgekit.compress.distillation.distill`
does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import onnx
from numpy.lib.stride_tricks import sliding_window_view
from onnx import numpy_helper

from edgekit.core.errors import ConfigError, InputError
from edgekit.compress.passes import finalize_model, initializer_arrays, run_tensors
from edgekit.frontend.rule_context import attr

__all__ = [
    "RecoveryConfig",
    "LayerRecovery",
    "RecoveryResult",
    "least_squares_refit",
    "bias_correction",
    "im2col",
    "check_data",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecoveryConfig:
    """How layer-wise recovery fits.

    Attributes:
        ridge: Ridge penalty relative to the mean diagonal of ``A^T A``
            (keeps the fit stable when channels are nearly collinear).
        max_rows: At most this many rows (samples x output pixels) per layer
            enter the least-squares fit; more are subsampled.
        layers: Only these node names (empty: every layer that matches one of
            the teacher's).
        seed: Seed of the row subsampling.
    """

    ridge: float = 1e-4
    max_rows: int = 200_000
    layers: tuple[str, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.ridge, (int, float)) or self.ridge < 0:
            raise ConfigError(f"ridge must be >= 0, got {self.ridge!r}", hint="E.g. 1e-4.")
        if not isinstance(self.max_rows, int) or self.max_rows < 1:
            raise ConfigError(f"max_rows must be a positive integer, got {self.max_rows!r}", hint="E.g. 200000.")
        if isinstance(self.layers, str):
            raise ConfigError("RecoveryConfig.layers must be a list of node names", hint='E.g. ("conv2",).')
        object.__setattr__(self, "layers", tuple(self.layers))


@dataclass(frozen=True)
class LayerRecovery:
    """One layer's reconstruction error (``||student - teacher||^2 /
    ||teacher||^2`` of its output on calibration data) before and after.

    Attributes:
        node: Node name.
        method: ``refit`` or ``bias``.
        error_before: Relative squared error before.
        error_after: Relative squared error after (equal to before when not applied).
        applied: Whether the new weights were kept.
        reason: Why not, when not.
    """

    node: str
    method: str
    error_before: float
    error_after: float
    applied: bool
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {"node": self.node, "method": self.method, "error_before": round(self.error_before, 8),
                "error_after": round(self.error_after, 8), "applied": self.applied, "reason": self.reason}  # fmt: skip


@dataclass
class RecoveryResult:
    """What the recovery functions return."""

    model: onnx.ModelProto
    modified: bool
    layers: list[LayerRecovery] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {"applied": sum(lay.applied for lay in self.layers), "layers": [lay.to_json() for lay in self.layers]}


# --------------------------------------------------------------------------- #
# Layer algebra
# --------------------------------------------------------------------------- #


def im2col(
    x: np.ndarray,
    kernel: tuple[int, int],
    strides: tuple[int, int] = (1, 1),
    pads: tuple[int, int, int, int] = (0, 0, 0, 0),
    dilations: tuple[int, int] = (1, 1),
) -> np.ndarray:
    """Patches of an NCHW tensor for a 2-D convolution.

    Returns:
        ``[N, Ho, Wo, C, kh, kw]`` so that ``reshape(N*Ho*Wo, C*kh*kw)``
        matches ``weight.reshape(O, C*kh*kw)`` (ONNX ``pads`` order: top,
        left, bottom, right).
    """
    kh, kw = kernel
    sh, sw = strides
    dh, dw = dilations
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    win = sliding_window_view(xp, (span_h, span_w), axis=(2, 3))[..., ::dh, ::dw]  # N C H' W' kh kw
    win = win[:, :, ::sh, ::sw]
    return win.transpose(0, 2, 3, 1, 4, 5)


class _Layer:
    """A Conv / Gemm / MatMul with constant weights, as ``y = A @ W + b``."""

    def __init__(self, node: onnx.NodeProto, inits: dict[str, np.ndarray]) -> None:
        self.node = node
        self.op = node.op_type
        self.weight = inits[node.input[1]]
        self.bias_name = node.input[2] if len(node.input) > 2 and node.input[2] else ""
        self.bias = inits.get(self.bias_name) if self.bias_name else None
        self.group = int(attr(node, "group", 1))
        self.depthwise = (
            self.op == "Conv" and self.group > 1 and self.weight.shape[1] == 1 and self.group == self.weight.shape[0]
        )

    @staticmethod
    def supported(node: onnx.NodeProto, inits: Mapping[str, np.ndarray]) -> str:
        """"" when the layer can be refit, else why not."""
        if node.domain not in ("", "ai.onnx") or len(node.input) < 2 or node.input[1] not in inits:
            return "weight is not a constant"
        w = inits[node.input[1]]
        if node.op_type == "Conv":
            if w.ndim != 4:
                return "only 2-D convolutions are refit"
            if attr(node, "auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
                return "auto_pad convolutions are not refit"
            group = int(attr(node, "group", 1))
            if group != 1 and not (w.shape[1] == 1 and group == w.shape[0]):
                return "grouped convolutions are not refit"
            if len(node.input) > 2 and node.input[2] and node.input[2] not in inits:
                return "bias is not a constant"
            return ""
        if node.op_type == "Gemm":
            if attr(node, "transA", 0) or w.ndim != 2:
                return "Gemm with transA is not refit"
            if len(node.input) > 2 and node.input[2] and node.input[2] not in inits:
                return "bias is not a constant"
            return ""
        if node.op_type == "MatMul":
            return "" if w.ndim == 2 else "batched MatMul weights are not refit"
        return "not a weighted layer"

    def design(self, x: np.ndarray) -> np.ndarray:
        """Rows of inputs: ``[rows, features]`` (per group for depthwise:
        ``[C, rows, kh*kw]``)."""
        if self.op == "Conv":
            kh, kw = self.weight.shape[2:]
            cols = im2col(
                x,
                (kh, kw),
                tuple(attr(self.node, "strides", [1, 1])),
                tuple(attr(self.node, "pads", [0, 0, 0, 0])),
                tuple(attr(self.node, "dilations", [1, 1])),
            )
            n, ho, wo, c = cols.shape[:4]
            if self.depthwise:
                return cols.reshape(n * ho * wo, c, kh * kw).transpose(1, 0, 2)
            return cols.reshape(n * ho * wo, -1)
        return x.reshape(-1, x.shape[-1])

    def targets(self, y: np.ndarray) -> np.ndarray:
        """Outputs as ``[rows, out]`` matching :meth:`design`."""
        if self.op == "Conv":
            return y.transpose(0, 2, 3, 1).reshape(-1, y.shape[1])
        return y.reshape(-1, y.shape[-1])

    def matrix(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Current weights as ``W [features, out]`` and effective bias ``[out]``."""
        w = self.weight.astype(np.float64)
        if self.op == "Conv":
            w = w.reshape(w.shape[0], -1) if self.depthwise else w.reshape(w.shape[0], -1).T
            b = None if self.bias is None else self.bias.astype(np.float64)
            return w, b
        if self.op == "Gemm":
            alpha, beta = float(attr(self.node, "alpha", 1.0)), float(attr(self.node, "beta", 1.0))
            w = (w.T if attr(self.node, "transB", 0) else w) * alpha
            b = None
            if self.bias is not None and self.bias.size in (w.shape[1], 1):
                b = np.broadcast_to(self.bias.astype(np.float64).reshape(-1), (w.shape[1],)) * beta
            return w, b
        return w, None

    def has_free_bias(self) -> bool:
        """Whether a bias can be fitted (present or addable)."""
        if self.op == "MatMul":
            return False
        if self.op == "Gemm" and self.bias is not None:
            return self.bias.size == self.weight.shape[0 if attr(self.node, "transB", 0) else 1]
        return True

    def export(self, w: np.ndarray, b: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """Inverse of :meth:`matrix`: arrays in the node's own layouts."""
        dtype = self.weight.dtype
        if self.op == "Conv":
            shape = self.weight.shape
            new_w = w.reshape(shape) if self.depthwise else w.T.reshape(shape)
            return new_w.astype(dtype), None if b is None else b.astype(dtype)
        if self.op == "Gemm":
            alpha, beta = float(attr(self.node, "alpha", 1.0)), float(attr(self.node, "beta", 1.0))
            new_w = w / alpha
            new_w = new_w.T if attr(self.node, "transB", 0) else new_w
            new_b = None
            if b is not None:
                shape = self.bias.shape if self.bias is not None else (w.shape[1],)
                new_b = (b / (beta if self.bias is not None else 1.0)).reshape(shape).astype(dtype)
            return new_w.astype(dtype), new_b
        return w.astype(dtype), None


def _ridge_solve(a: np.ndarray, y: np.ndarray, ridge: float, with_bias: bool) -> tuple[np.ndarray, np.ndarray | None]:
    if with_bias:
        a = np.concatenate([a, np.ones((a.shape[0], 1))], axis=1)
    gram = a.T @ a
    reg = ridge * float(np.mean(np.diag(gram))) if gram.size else 0.0
    diag = np.full(gram.shape[0], reg)
    if with_bias:
        diag[-1] = 0.0  # the bias is not penalised
    sol = np.linalg.solve(gram + np.diag(diag), a.T @ y)
    return (sol[:-1], sol[-1]) if with_bias else (sol, None)


def _rel_error(pred: np.ndarray, y: np.ndarray) -> float:
    denom = float(np.sum(y * y)) or 1.0
    return float(np.sum((pred - y) ** 2)) / denom


# --------------------------------------------------------------------------- #
# The layer loop
# --------------------------------------------------------------------------- #


def _targets(
    student: onnx.ModelProto, teacher: onnx.ModelProto, layers: tuple[str, ...]
) -> tuple[list[onnx.NodeProto], list[LayerRecovery]]:
    teacher_outputs = {o for n in teacher.graph.node for o in n.output}
    inits = initializer_arrays(student)
    chosen, skipped = [], []
    names = {n.name for n in student.graph.node}
    unknown = set(layers) - names
    if unknown:
        raise ConfigError(
            f"recovery: layers names no node: {', '.join(sorted(unknown))}",
            hint="Use node names of the compressed model (`edgekit inspect OUT.onnx --json`).",
        )
    for node in student.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or (layers and node.name not in layers):
            continue
        why = _Layer.supported(node, inits)
        if not why and node.output[0] not in teacher_outputs:
            why = "no layer of the teacher has this output"
        if why:
            if node.op_type != "MatMul" or node.input[1] in inits:
                skipped.append(LayerRecovery(node.name, "", 0.0, 0.0, False, why))
            continue
        chosen.append(node)
    return chosen, skipped


def _teacher_targets(
    teacher: onnx.ModelProto,
    data: Mapping[str, np.ndarray],
    names: list[str],
    channel_maps: Mapping[str, tuple[int, np.ndarray]],
) -> dict[str, np.ndarray]:
    acts = run_tensors(teacher, data, names)
    for name in names:
        if name in channel_maps:
            axis, kept = channel_maps[name]
            acts[name] = np.take(acts[name], kept, axis=axis)
    return acts


def _write(model: onnx.ModelProto, node_name: str, w: np.ndarray, b: np.ndarray | None) -> None:
    """Writes a layer's new weight and bias, giving them fresh initializers
    when another node shares the old ones."""
    node = next(n for n in model.graph.node if n.name == node_name)
    inits = {i.name: i for i in model.graph.initializer}
    uses: dict[str, int] = {}
    for n in model.graph.node:
        for name in n.input:
            uses[name] = uses.get(name, 0) + 1

    def put(slot: int, arr: np.ndarray, base: str) -> None:
        name = node.input[slot] if slot < len(node.input) else ""
        if name and uses.get(name, 0) == 1:
            inits[name].CopyFrom(numpy_helper.from_array(arr, name))
            return
        new = f"{base}_recovered"
        k = 1
        while new in inits:
            new, k = f"{base}_recovered{k}", k + 1
        model.graph.initializer.append(numpy_helper.from_array(arr, new))
        inits[new] = model.graph.initializer[-1]
        if slot < len(node.input):
            node.input[slot] = new
        else:
            node.input.append(new)

    put(1, w, node.input[1])
    if b is not None:
        put(2, b, node.input[2] if len(node.input) > 2 and node.input[2] else f"{node.name}.bias")


def check_data(student: onnx.ModelProto, data: Mapping[str, np.ndarray]) -> None:
    """Raises :class:`InputError` naming every input of ``student`` that ``data`` lacks."""
    missing = [i.name for i in student.graph.input if i.name not in data]
    if missing:
        raise InputError(
            f"recovery: calibration data lacks the model input(s) {', '.join(missing)}",
            hint="Pass one array per model input, keyed by name, first axis = samples.",
        )


def _recover(
    student: onnx.ModelProto,
    teacher: onnx.ModelProto,
    data: Mapping[str, np.ndarray],
    channel_maps: Mapping[str, tuple[int, np.ndarray]] | None,
    config: RecoveryConfig,
    method: str,
) -> RecoveryResult:
    check_data(student, data)
    nodes, report = _targets(student, teacher, config.layers)
    if not nodes:
        return RecoveryResult(student, False, report)
    maps = dict(channel_maps or {})
    targets = _teacher_targets(teacher, data, [n.output[0] for n in nodes], maps)
    model = onnx.ModelProto()
    model.CopyFrom(student)
    rng = np.random.default_rng(config.seed)
    modified = False
    for node in nodes:
        inits = initializer_arrays(model)
        current = next(n for n in model.graph.node if n.name == node.name)
        layer = _Layer(current, inits)
        acts = run_tensors(model, data, [current.input[0], current.output[0]])
        x, y_student = acts[current.input[0]], acts[current.output[0]]
        y_teacher = targets[current.output[0]]
        if y_teacher.shape != y_student.shape:
            why = f"teacher output {y_teacher.shape} does not match {y_student.shape}"
            report.append(LayerRecovery(node.name, method, 0.0, 0.0, False, why))
            continue
        ys, yt = layer.targets(y_student).astype(np.float64), layer.targets(y_teacher).astype(np.float64)
        before = _rel_error(ys, yt)
        w, b = layer.matrix()
        if method == "bias":
            if not layer.has_free_bias():
                report.append(LayerRecovery(node.name, method, before, before, False, "layer has no bias to correct"))
                continue
            shift = (yt - ys).mean(axis=0)
            b_new = (np.zeros(yt.shape[1]) if b is None else b) + shift
            w_new = w
            after = _rel_error(ys + shift, yt)
        else:
            a = layer.design(x.astype(np.float64))
            rows = a.shape[-2]
            pick = np.sort(rng.choice(rows, config.max_rows, replace=False)) if rows > config.max_rows else slice(None)
            with_bias = layer.has_free_bias()
            if layer.depthwise:
                w_new = np.empty_like(w)
                b_new = np.empty(w.shape[0])
                for c in range(w.shape[0]):
                    wc, bc = _ridge_solve(a[c][pick], yt[pick, c], config.ridge, True)
                    w_new[c], b_new[c] = wc, bc
                pred = np.einsum("crk,ck->rc", a, w_new) + b_new
            else:
                w_new, b_new = _ridge_solve(a[pick], yt[pick], config.ridge, with_bias)
                pred = a @ w_new + (0.0 if b_new is None else b_new)
            after = _rel_error(pred, yt)
        if not after < before:
            report.append(LayerRecovery(node.name, method, before, before, False, "the fit did not reduce the error"))
            continue
        new_w, new_b = layer.export(w_new, b_new)
        _write(model, node.name, new_w, new_b)
        modified = True
        report.append(LayerRecovery(node.name, method, before, after, True))
        logger.debug("%s %s: relative error %.4g -> %.4g", method, node.name, before, after)
    if modified:
        model = finalize_model(model, what=f"recovery ({method})")
    return RecoveryResult(model if modified else student, modified, report)


def least_squares_refit(
    student: onnx.ModelProto,
    teacher: onnx.ModelProto,
    data: Mapping[str, np.ndarray],
    channel_maps: Mapping[str, tuple[int, np.ndarray]] | None = None,
    config: RecoveryConfig | None = None,
) -> RecoveryResult:
    """Refits each layer of ``student`` to reproduce ``teacher``'s output of
    that layer from the student's own inputs (ridge least squares).

    A layer keeps its new weights only when they lower its reconstruction
    error on ``data``.

    Args:
        student: The compressed model.
        teacher: The fp32 model it came from.
        data: Calibration samples, one array per input, first axis = samples.
        channel_maps: From structured pruning: tensor -> (axis, kept channels).
        config: Ridge penalty, row budget, layer selection.

    Returns:
        The :class:`RecoveryResult` with per-layer errors before and after.

    Raises:
        InputError: ``data`` lacks a model input.
        ConfigError: ``config.layers`` names an unknown node.
    """
    return _recover(student, teacher, data, channel_maps, config or RecoveryConfig(), "refit")


def bias_correction(
    student: onnx.ModelProto,
    teacher: onnx.ModelProto,
    data: Mapping[str, np.ndarray],
    channel_maps: Mapping[str, tuple[int, np.ndarray]] | None = None,
    config: RecoveryConfig | None = None,
) -> RecoveryResult:
    """Shifts each layer's bias by the mean teacher-minus-student difference
    of its output on ``data`` (layers in graph order, so later layers see
    corrected inputs). Arguments as :func:`least_squares_refit`."""
    return _recover(student, teacher, data, channel_maps, config or RecoveryConfig(), "bias")
