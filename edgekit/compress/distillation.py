"""Knowledge distillation of a compressed model from its fp32 teacher (PyTorch).

With the optional training extra (``pip install edgekit[train]``),
:func:`distill` fine-tunes the student against the teacher's softened
outputs. ``onnx2torch`` would convert the graph, but it is one more
dependency for the handful of ops compressed CNNs use, and it does not write
back to ONNX; so a small interpreter runs the ONNX graph with torch ops
(weights as trainable parameters) and the trained weights are written back
into the same graph.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from edgekit.core.errors import ConfigError
from edgekit.compress.layer_recovery import LayerRecovery, RecoveryResult, check_data
from edgekit.compress.passes import finalize_model, initializer_arrays, run_tensors
from edgekit.frontend.rule_context import attr

__all__ = ["DistillConfig", "distill", "torch_available", "TORCH_OPS"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistillConfig:
    """Knowledge distillation of a compressed student from the fp32 teacher.

    Attributes:
        temperature: Softening temperature of both models' logits.
        alpha: Weight of the hard-label cross-entropy when labels are given
            (the soft-target loss gets ``1 - alpha``).
        epochs: Passes over the data.
        learning_rate: Adam step size.
        batch_size: Samples per step.
        seed: Seed of the batch order.
    """

    temperature: float = 4.0
    alpha: float = 0.5
    epochs: int = 20
    learning_rate: float = 1e-3
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.temperature, (int, float)) or self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature!r}", hint="E.g. 4.")
        if not isinstance(self.alpha, (int, float)) or not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"alpha must be in [0, 1], got {self.alpha!r}", hint="E.g. 0.5.")
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"DistillConfig.{name} must be a positive integer, got {v!r}", hint="E.g. 20.")
        if not isinstance(self.learning_rate, (int, float)) or self.learning_rate <= 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate!r}", hint="E.g. 1e-3.")


def torch_available() -> bool:
    """Whether PyTorch (the ``edgekit[train]`` extra) can be imported."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _require_torch():
    try:
        import torch
    except ImportError:
        raise ConfigError(
            "distillation needs PyTorch, which is not installed",
            hint="Install the training extra with `pip install edgekit[train]`, or use --recover refit.",
        ) from None
    return torch


def _pads(node: onnx.NodeProto, rank: int) -> list[int]:
    pads = list(attr(node, "pads", [0] * (2 * rank)))
    # torch's F.pad wants (left, right) pairs starting from the last axis.
    out: list[int] = []
    for axis in reversed(range(rank)):
        out += [pads[axis], pads[axis + rank]]
    return out


def _torch_ops() -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    def conv(node, x, w, b=None):
        rank = w.dim() - 2
        x = F.pad(x, _pads(node, rank))
        fn = F.conv2d if rank == 2 else F.conv1d
        stride = tuple(attr(node, "strides", [1] * rank))
        dilation = tuple(attr(node, "dilations", [1] * rank))
        return fn(x, w, b, stride=stride, dilation=dilation, groups=int(attr(node, "group", 1)))

    def pool(kind):
        def run(node, x):
            k = tuple(attr(node, "kernel_shape", []))
            x = F.pad(x, _pads(node, len(k)), value=float("-inf") if kind == "max" else 0.0)
            s = tuple(attr(node, "strides", [1] * len(k)))
            return F.max_pool2d(x, k, s) if kind == "max" else F.avg_pool2d(x, k, s)

        return run

    def gemm(node, a, b, c=None):
        a = a.t() if attr(node, "transA", 0) else a
        b = b.t() if attr(node, "transB", 0) else b
        y = float(attr(node, "alpha", 1.0)) * (a @ b)
        return y if c is None else y + float(attr(node, "beta", 1.0)) * c

    def bn(node, x, scale, bias, mean, var):
        return F.batch_norm(x, mean, var, scale, bias, training=False, eps=float(attr(node, "epsilon", 1e-5)))

    def reshape(node, x, shape):
        dims = [x.shape[i] if int(d) == 0 else int(d) for i, d in enumerate(shape.tolist())]
        return x.reshape(dims)

    def clip(node, x, lo=None, hi=None):
        return torch.clamp(x, None if lo is None else float(lo), None if hi is None else float(hi))

    def hardsigmoid(node, x):
        return torch.clamp(float(attr(node, "alpha", 0.2)) * x + float(attr(node, "beta", 0.5)), 0.0, 1.0)

    return {
        "Conv": conv,
        "Relu": lambda node, x: F.relu(x),
        "Sigmoid": lambda node, x: torch.sigmoid(x),
        "HardSigmoid": hardsigmoid,
        "HardSwish": lambda node, x: F.hardswish(x),
        "Clip": clip,
        "MaxPool": pool("max"),
        "AveragePool": pool("avg"),
        "GlobalAveragePool": lambda node, x: x.mean(dim=tuple(range(2, x.dim())), keepdim=True),
        "Flatten": lambda node, x: x.reshape(int(np.prod(x.shape[: int(attr(node, "axis", 1))])), -1),
        "Reshape": reshape,
        "Gemm": gemm,
        "MatMul": lambda node, a, b: a @ b,
        "Add": lambda node, a, b: a + b,
        "Sub": lambda node, a, b: a - b,
        "Mul": lambda node, a, b: a * b,
        "Div": lambda node, a, b: a / b,
        "BatchNormalization": bn,
        "Concat": lambda node, *xs: torch.cat(xs, dim=int(attr(node, "axis", 1))),
        "Softmax": lambda node, x: torch.softmax(x, dim=int(attr(node, "axis", -1))),
        "Identity": lambda node, x: x,
    }


#: Op types the distillation interpreter runs (what compressed CNNs like the
#: digits CNN and the PP-OCR classifier use).
TORCH_OPS = (
    "Conv", "Relu", "Sigmoid", "HardSigmoid", "HardSwish", "Clip", "MaxPool", "AveragePool",
    "GlobalAveragePool", "Flatten", "Reshape", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div",
    "BatchNormalization", "Concat", "Softmax", "Identity",
)  # fmt: skip


def _torch_graph(model: onnx.ModelProto):
    """Builds a torch module that runs ``model``; float initializers that
    weighted ops read as weights become trainable parameters."""
    torch = _require_torch()
    unsupported = sorted({n.op_type for n in model.graph.node if n.op_type not in TORCH_OPS})
    if unsupported:
        raise ConfigError(
            f"distillation cannot run these ops in PyTorch: {', '.join(unsupported)}",
            hint="Use --recover refit (layer-wise least squares), which works on any graph.",
            ops=unsupported,
        )
    ops = _torch_ops()
    inits = initializer_arrays(model)
    trainable = {
        n.input[i]
        for n in model.graph.node
        if n.op_type in ("Conv", "Gemm", "MatMul", "BatchNormalization")
        for i in range(1, min(len(n.input), 3))
        if n.input[i] in inits and inits[n.input[i]].dtype == np.float32
    }

    class _Graph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.params = torch.nn.ParameterDict()
            self.keys: dict[str, str] = {}
            self.consts: dict[str, Any] = {}
            for name, arr in inits.items():
                if name in trainable:
                    key = f"p{len(self.keys)}"
                    self.keys[name] = key
                    self.params[key] = torch.nn.Parameter(torch.from_numpy(arr.copy()))
                else:
                    self.consts[name] = torch.from_numpy(np.array(arr))

        def forward(self, **feeds):
            env = dict(feeds)
            for name in self.consts:
                env[name] = self.consts[name]
            for name, key in self.keys.items():
                env[name] = self.params[key]
            for node in model.graph.node:
                args = [env[i] if i else None for i in node.input]
                env[node.output[0]] = ops[node.op_type](node, *args)
            return [env[o.name] for o in model.graph.output]

        def arrays(self) -> dict[str, np.ndarray]:
            return {name: self.params[key].detach().numpy().copy() for name, key in self.keys.items()}

    return _Graph()


def distill(
    student: onnx.ModelProto,
    teacher: onnx.ModelProto,
    data: Mapping[str, np.ndarray],
    labels: np.ndarray | None = None,
    config: DistillConfig | None = None,
) -> RecoveryResult:
    """Fine-tunes ``student`` against ``teacher``'s softened outputs (PyTorch).

    The loss is ``(1 - alpha) * T^2 * KL(softmax(t/T) || softmax(s/T))``
    plus ``alpha * cross_entropy(s, labels)`` when labels are given. The
    teacher runs in onnxruntime once; the student's graph runs in a small
    torch interpreter (:data:`TORCH_OPS`) and its trained weights are written
    back into the same ONNX graph.

    Args:
        student: The compressed model (first output: logits).
        teacher: The fp32 model.
        data: Training samples, one array per input, first axis = samples.
        labels: Integer class labels of ``data``, if known.
        config: Temperature, mixing weight and optimiser settings.

    Returns:
        A :class:`RecoveryResult` (one entry, node ``"*"``, with the final
        soft-target loss before and after).

    Raises:
        ConfigError: PyTorch is not installed, or the student uses an op the
            interpreter does not run (all such ops are listed).
        InputError: ``data`` lacks a model input.
    """
    cfg = config or DistillConfig()
    torch = _require_torch()
    check_data(student, data)
    net = _torch_graph(student)
    names = [i.name for i in student.graph.input]
    out_name = teacher.graph.output[0].name
    soft = torch.from_numpy(run_tensors(teacher, data, [out_name])[out_name].astype(np.float32))
    tensors = {k: torch.from_numpy(np.ascontiguousarray(data[k], dtype=np.float32)) for k in names}
    hard = None if labels is None else torch.from_numpy(np.asarray(labels, dtype=np.int64))
    n = soft.shape[0]
    temp = float(cfg.temperature)
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate)
    F = torch.nn.functional

    def loss_of(idx) -> Any:
        logits = net(**{k: v[idx] for k, v in tensors.items()})[0]
        kd = F.kl_div(F.log_softmax(logits / temp, dim=1), F.softmax(soft[idx] / temp, dim=1), reduction="batchmean")
        loss = kd * temp * temp
        if hard is not None:
            loss = (1.0 - cfg.alpha) * loss + cfg.alpha * F.cross_entropy(logits, hard[idx])
        return loss

    with torch.no_grad():
        before = float(loss_of(torch.arange(n)))
    for epoch in range(cfg.epochs):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, cfg.batch_size):
            opt.zero_grad()
            loss = loss_of(order[start : start + cfg.batch_size])
            loss.backward()
            opt.step()
        logger.debug("distillation epoch %d: last batch loss %.4f", epoch + 1, float(loss.detach()))
    with torch.no_grad():
        after = float(loss_of(torch.arange(n)))
    model = onnx.ModelProto()
    model.CopyFrom(student)
    trained = net.arrays()
    for init in model.graph.initializer:
        if init.name in trained:
            init.CopyFrom(numpy_helper.from_array(trained[init.name], init.name))
    model = finalize_model(model, what="distillation")
    logger.info("distillation: loss %.4f -> %.4f over %d epochs", before, after, cfg.epochs)
    return RecoveryResult(model, True, [LayerRecovery("*", "distill", before, after, True)])
