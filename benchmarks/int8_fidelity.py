"""int8 fidelity, tensor by tensor: edgekit's integer-only host build against onnxruntime's QDQ graph.

Issue #14's line: int8 outputs within 1 LSB of onnxruntime running the QDQ
graph as written on >= 99.9 % of elements. This script says where a model
stands and *why*. Each model is quantized as ``benchmarks/quantization.py``
does (default ``QuantConfig()``, same data), then every int8 activation (every
QuantizeLinear output) is compared two ways:

* **per layer**: every quantized layer -- the ops between the
  DequantizeLinear of its int8 inputs and its QuantizeLinear -- is cut out of
  the graph into a model of its own and fed the *reference's* int8 inputs, so
  a difference is that layer's arithmetic alone, not an inherited one;
* **end to end**: the whole model from its float input; differences propagate.

Engines: edgekit (``import_onnx`` + ``build_cpu`` for the host target, or
``--mcpu``) and onnxruntime's own int8 kernels (default graph optimizations:
QLinearConv, QGemm, ...). References: onnxruntime with optimizations off
(float32: the QDQ graph as written, the issue's reference) and a float64
evaluation of the same graph (``onnx.reference`` with DequantizeLinear and
QuantizeLinear in float64, so every layer's value is exact to ~1e-16 and only
the int8 rounding remains).

Every element where edgekit's per-layer output differs from onnxruntime's is
classified with the float64 value ``v`` of the layer (in LSB, zero point
included, before rounding):

* *float32 tie*: edgekit is ``round(v)`` and onnxruntime is not -- its
  float32 arithmetic carried the value across a half-way point;
* *near tie*: edgekit is not ``round(v)`` but ``v`` is within ``TIE_LSB`` of a
  half-way point (the error of a 32-bit requantization, or an exact tie);
* *real*: anything else -- a deviation of edgekit's arithmetic to fix.

Usage::

    .venv/bin/python benchmarks/int8_fidelity.py [--models ppocr-cls,ppocr-det,...] [--samples 4]
        [--mcpu znver5] [--json out.json] [--tensors 12] [--round-inside-chains]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from quantization import CASES, cpu_description, runnable_target  # noqa: E402

from edgekit.compress import QuantConfig, quantize  # noqa: E402

logger = logging.getLogger("benchmarks.int8_fidelity")

#: A value this close (in LSB) to a half-way point is a rounding tie for any
#: 32-bit arithmetic on int8 layers (float32's relative error, ~6e-8, times
#: values below 2**8 and a few roundings).
TIE_LSB = 1e-4


# --------------------------------------------------------------------------- #
# Graph surgery
# --------------------------------------------------------------------------- #


def _inferred(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    return {v.name: v for v in [*g.value_info, *g.input, *g.output]}


def quantized_tensors(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The QuantizeLinear nodes of activations, in graph order."""
    return [n for n in model.graph.node if n.op_type == "QuantizeLinear"]


def expose(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` with ``names`` (tensors it computes) added as graph outputs."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    info = _inferred(model)
    have = {o.name for o in out.graph.output}
    out.graph.output.extend(info[n] for n in names if n not in have)
    return out


@dataclass
class Layer:
    """One quantized layer cut out of the graph.

    Attributes:
        output: The QuantizeLinear output in the original graph.
        op: The op types between the layer's dequantized inputs and its quantize.
        inputs: Original int8 tensors the layer reads (fed from the reference).
        prefix: Prefix of this layer's tensors in the isolated model.
        pre: The float tensor the QuantizeLinear reads, as named in the isolated model.
    """

    output: str
    op: str
    inputs: list[str]
    prefix: str
    pre: str

    def name(self, tensor: str) -> str:
        return self.prefix + tensor


def isolate_layers(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[Layer]]:
    """One model holding every quantized layer as a separate component.

    Each component reads the int8 tensors its layer reads as *graph inputs*
    (``L<k>/<tensor>``), so it can be fed the reference's values, and writes its
    QuantizeLinear output (and, for the references, the float value before it).
    Weights are shared, not copied.
    """
    g = model.graph
    inits = {i.name for i in g.initializer}
    graph_inputs = {i.name for i in g.input} - inits
    producer = {o: n for n in g.node for o in n.output}
    info = _inferred(model)
    nodes: list[onnx.NodeProto] = []
    new_inputs: list[onnx.ValueInfoProto] = []
    shared_inputs: set[str] = set()
    outputs: list[onnx.ValueInfoProto] = []
    layers: list[Layer] = []
    for k, q in enumerate(quantized_tensors(model)):
        prefix = f"L{k}/"
        members: list[onnx.NodeProto] = []
        boundary: list[str] = []
        seen: set[str] = set()

        def walk(tensor: str) -> None:
            if not tensor or tensor in inits or tensor in seen:
                return
            seen.add(tensor)
            node = producer.get(tensor)
            if node is None:
                if tensor in graph_inputs and info[tensor].type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
                    shared_inputs.add(tensor)  # the model's float input, fed as is
                else:
                    boundary.append(tensor)
                return
            if node.op_type == "QuantizeLinear":
                boundary.append(tensor)  # an int8 activation: the reference's value is fed
                return
            if node not in members:
                members.append(node)
                for t in node.input:
                    walk(t)

        for t in q.input:
            walk(t)
        internal = {o for n in members for o in n.output} | set(boundary) | {q.output[0]}
        rename = lambda t: prefix + t if t in internal else t  # noqa: E731
        order = {id(n): i for i, n in enumerate(g.node)}
        for node in sorted(members, key=lambda n: order[id(n)]) + [q]:
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            copy.name = prefix + (node.name or node.output[0])
            copy.ClearField("input")
            copy.ClearField("output")
            copy.input.extend(rename(t) for t in node.input)
            copy.output.extend(rename(t) for t in node.output)
            nodes.append(copy)
        for t in boundary:
            vi = onnx.ValueInfoProto()
            vi.CopyFrom(info[t])
            vi.name = prefix + t
            new_inputs.append(vi)
        vi = onnx.ValueInfoProto()
        vi.CopyFrom(info[q.output[0]])
        vi.name = prefix + q.output[0]
        outputs.append(vi)
        ops = [n.op_type for n in members if n.op_type not in ("DequantizeLinear", "Constant")]
        layers.append(Layer(q.output[0], "+".join(dict.fromkeys(ops)) or "Quantize", boundary, prefix, rename(q.input[0])))
    inputs = [info[t.name] for t in g.input if t.name in shared_inputs] + new_inputs
    graph = helper.make_graph(nodes, f"{g.name}_layers", inputs, outputs, list(g.initializer))
    isolated = helper.make_model(graph, opset_imports=list(model.opset_import))
    isolated.ir_version = model.ir_version
    return isolated, layers


# --------------------------------------------------------------------------- #
# Engines
# --------------------------------------------------------------------------- #


def _ort(model: onnx.ModelProto, *, as_written: bool) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    if as_written:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def run_ort(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]], *, as_written: bool) -> list[dict[str, np.ndarray]]:
    session = _ort(model, as_written=as_written)
    names = [o.name for o in session.get_outputs()]
    return [dict(zip(names, session.run(names, f))) for f in feeds]


class DequantizeLinear(OpRun):
    """DequantizeLinear in float64 (per-tensor or per-axis)."""

    op_domain = ""

    def _run(self, x, x_scale, x_zero_point=None, axis=None, block_size=None, output_dtype=None):  # noqa: ANN001, ANN202
        axis = 1 if axis is None else axis
        shape = [1] * x.ndim
        scale = np.asarray(x_scale, dtype=np.float64)
        zero = np.zeros(scale.shape, np.float64) if x_zero_point is None else np.asarray(x_zero_point, np.float64)
        if scale.size > 1:
            shape[axis] = scale.size
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        return ((x.astype(np.float64) - zero) * scale,)


class QuantizeLinear(OpRun):
    """QuantizeLinear of a float64 value: round half to even, saturate (per-tensor)."""

    op_domain = ""

    def _run(self, x, y_scale, y_zero_point=None, axis=None, saturate=None, block_size=None, output_dtype=None, precision=None):  # noqa: ANN001, ANN202
        dtype = np.int8 if y_zero_point is None else y_zero_point.dtype
        info = np.iinfo(dtype)
        zero = 0.0 if y_zero_point is None else float(np.asarray(y_zero_point).reshape(-1)[0])
        v = np.rint(x.astype(np.float64) / float(np.asarray(y_scale).reshape(-1)[0])) + zero
        return (np.clip(v, info.min, info.max).astype(dtype),)


def run_float64(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]], names: list[str]) -> list[dict[str, np.ndarray]]:
    """The QDQ graph evaluated in float64 (exact up to ~1e-16): ``names`` of every sample."""
    wide = onnx.ModelProto()
    wide.CopyFrom(model)
    for init in wide.graph.initializer:  # float constants (6.0 of a hard-swish, ...) in float64, same values
        if init.data_type == onnx.TensorProto.FLOAT:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float64), init.name))
    ref = ReferenceEvaluator(wide, new_ops=[DequantizeLinear, QuantizeLinear])
    out = []
    for f in feeds:
        values = ref.run(None, f, intermediate=True)
        out.append({n: values[n] for n in names})
    return out


class Edgekit:
    """edgekit's host build of a model (the pipeline ``edgekit compile --board host`` runs)."""

    def __init__(self, model: onnx.ModelProto, mcpu: str | None) -> None:
        import tvm
        from tvm import relax

        from edgekit.compiler.backends.llvm.relax_build import build_cpu
        from edgekit.compiler.importer import import_onnx
        from edgekit.frontend.loader import load_model

        self.target = runnable_target(mcpu)
        prepared = load_model(model)
        self.inputs = [s.name for s in prepared.inputs]
        self.outputs = [s.name for s in prepared.outputs]
        mod, weights, self.lowering = import_onnx(prepared)
        t0 = time.perf_counter()
        built = build_cpu(mod, self.target, weights, num_threads=1)
        self.compile_s = time.perf_counter() - t0
        self._vm = relax.VirtualMachine(built.executable, tvm.cpu())
        self._params = list(built.params)
        self._tvm = tvm

    def run(self, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        tensor = self._tvm.runtime.tensor
        out = []
        for f in feeds:
            result = self._vm["main"](*[tensor(np.ascontiguousarray(f[n])) for n in self.inputs], *self._params)
            items = [result] if hasattr(result, "numpy") else [result[i] for i in range(len(result))]
            out.append({n: np.asarray(v.numpy()) for n, v in zip(self.outputs, items)})
        return out


# --------------------------------------------------------------------------- #
# Comparison
# --------------------------------------------------------------------------- #


@dataclass
class TensorFidelity:
    """One int8 tensor of one engine against one reference, over every sample."""

    tensor: str
    op: str
    elements: int = 0
    differ: int = 0
    over1: int = 0
    max_lsb: int = 0
    #: Per-layer classification of the differing elements (module docstring).
    float32_tie: int = 0
    near_tie: int = 0
    real: int = 0
    #: Up to a few differing elements: (class, value v in LSB, this engine, reference).
    examples: list[tuple[str, float, int, int]] = field(default_factory=list)

    @property
    def within1(self) -> float:
        return 1.0 - self.over1 / self.elements if self.elements else 1.0

    def add(self, got: np.ndarray, want: np.ndarray) -> np.ndarray:
        d = np.abs(got.astype(np.int32) - want.astype(np.int32))
        self.elements += d.size
        self.differ += int(np.count_nonzero(d))
        self.over1 += int(np.count_nonzero(d > 1))
        self.max_lsb = max(self.max_lsb, int(d.max(initial=0)))
        return d

    def classify(self, got: np.ndarray, want: np.ndarray, v: np.ndarray, lo: int, hi: int) -> None:
        """Sorts the elements where ``got`` != ``want`` (see the module docstring)."""
        diff = got.astype(np.int32) != want.astype(np.int32)
        if not diff.any():
            return
        exact = np.clip(np.rint(v[diff]), lo, hi)
        g, w, vv = got[diff].astype(np.float64), want[diff].astype(np.float64), v[diff]
        tie32 = (w != exact) & (g == exact)
        away = np.abs(np.abs(vv - np.floor(vv)) - 0.5)
        near = ~tie32 & (away <= TIE_LSB)
        real = ~tie32 & ~near
        self.float32_tie += int(tie32.sum())
        self.near_tie += int(near.sum())
        self.real += int(real.sum())
        kinds = np.where(real, "real", np.where(near, "near tie", "float32 tie"))
        for i in np.argsort(~real, kind="stable")[: max(0, 3 - len(self.examples))]:
            self.examples.append((str(kinds[i]), float(vv[i]), int(g[i]), int(w[i])))


def _qparams(model: onnx.ModelProto) -> dict[str, tuple[float, int, int, int]]:
    """Quantize output -> (scale, zero point, qmin, qmax)."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    out = {}
    for q in quantized_tensors(model):
        scale = float(inits[q.input[1]].reshape(-1)[0])
        zp = inits[q.input[2]] if len(q.input) > 2 and q.input[2] else np.zeros((), np.uint8)
        info = np.iinfo(zp.dtype)
        out[q.output[0]] = (scale, int(zp.reshape(-1)[0]), int(info.min), int(info.max))
    return out


def compare(
    layers: list[Layer],
    got: list[dict[str, np.ndarray]],
    want: list[dict[str, np.ndarray]],
    key: Any,
    *,
    exact: list[dict[str, np.ndarray]] | None = None,
    qparams: dict[str, tuple[float, int, int, int]] | None = None,
    pre: dict[str, str] | None = None,
) -> list[TensorFidelity]:
    """Per-tensor fidelity of ``got`` against ``want``; ``key(layer)`` names a tensor in both.

    With ``exact`` (float64 values before each QuantizeLinear, by ``pre[name]``)
    the differing elements are classified.
    """
    rows = []
    for layer in layers:
        row = TensorFidelity(layer.output, layer.op)
        name = key(layer)
        for i, (g, w) in enumerate(zip(got, want)):
            row.add(g[name], w[name])
            if exact is not None and qparams is not None and pre is not None:
                s, z, lo, hi = qparams[layer.output]
                row.classify(g[name], w[name], exact[i][pre[name]].astype(np.float64) / s + z, lo, hi)
        rows.append(row)
    return rows


@dataclass
class Summary:
    """All int8 tensors of one engine against one reference."""

    within1: float
    max_lsb: int
    elements: int
    differ: int
    output_within1: float
    output_max_lsb: int
    float32_tie: int = 0
    near_tie: int = 0
    real: int = 0


def summarize(rows: list[TensorFidelity], output: str) -> Summary:
    n = sum(r.elements for r in rows)
    last = next(r for r in rows if r.tensor == output)
    return Summary(
        within1=1.0 - sum(r.over1 for r in rows) / n,
        max_lsb=max(r.max_lsb for r in rows),
        elements=n,
        differ=sum(r.differ for r in rows),
        output_within1=last.within1,
        output_max_lsb=last.max_lsb,
        float32_tie=sum(r.float32_tie for r in rows),
        near_tie=sum(r.near_tie for r in rows),
        real=sum(r.real for r in rows),
    )


# --------------------------------------------------------------------------- #
# One model
# --------------------------------------------------------------------------- #


def _output_tensor(model: onnx.ModelProto) -> str:
    """The int8 tensor the model output dequantizes (the last QuantizeLinear on its path)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    node = producer.get(model.graph.output[0].name)
    while node is not None and node.op_type != "QuantizeLinear":
        node = producer.get(node.input[0])
    return node.output[0] if node is not None else quantized_tensors(model)[-1].output[0]


@dataclass
class Fidelity:
    """Every int8 tensor of one QDQ model, compared (:func:`fidelity`).

    Attributes:
        layers: The quantized layers, in graph order.
        output_tensor: The int8 tensor the model's output dequantizes.
        target: The TVM target edgekit compiled for.
        results: ``(engine, mode, reference)`` -> one row per int8 tensor;
            engine ``edgekit``, ``onnxruntime int8`` or ``onnxruntime float32``,
            mode ``per layer`` or ``end to end``, reference ``ort`` (the QDQ
            graph in onnxruntime, float32) or ``float64``.
    """

    layers: list[Layer]
    output_tensor: str
    target: str
    results: dict[tuple[str, str, str], list[TensorFidelity]]

    def summary(self) -> dict[str, dict[str, Any]]:
        """``"engine | mode | reference"`` -> :class:`Summary` as a dict."""
        return {" | ".join(k): asdict(summarize(v, self.output_tensor)) for k, v in self.results.items()}


def fidelity(qmodel: onnx.ModelProto, feeds: list[dict[str, np.ndarray]], mcpu: str | None = None, *,
             end_to_end: bool = True) -> Fidelity:  # fmt: skip
    """Compares every int8 tensor of ``qmodel`` per layer (and, with ``end_to_end``, through the whole model).

    Args:
        qmodel: A QDQ model (static shapes).
        feeds: Samples, each a dict of one-sample input arrays.
        mcpu: Compile edgekit for this LLVM CPU instead of the ``host`` board's target.
        end_to_end: Also build and run the whole model (one more edgekit build
            and a float64 evaluation of the whole graph).
    """
    qp = _qparams(qmodel)
    isolated, layers = isolate_layers(qmodel)
    q_names = [layer.output for layer in layers]
    # Per layer: each layer fed onnxruntime's own int8 inputs.
    ref32 = run_ort(expose(qmodel, q_names), feeds, as_written=True)
    layer_feeds = [{**f, **{layer.name(t): ref[t] for layer in layers for t in layer.inputs}} for f, ref in zip(feeds, ref32)]
    iso32 = run_ort(isolated, layer_feeds, as_written=True)
    iso64 = run_float64(isolated, layer_feeds, [n for layer in layers for n in (layer.name(layer.output), layer.pre)])
    iso_ort8 = run_ort(isolated, layer_feeds, as_written=False)
    ek_layers = Edgekit(isolated, mcpu)
    ek_iso = ek_layers.run(layer_feeds)
    logger.warning("per-layer edgekit build %.0f s (%s)", ek_layers.compile_s, ek_layers.target)

    iso = lambda layer: layer.name(layer.output)  # noqa: E731
    # The per-layer reference must reproduce the end-to-end one exactly (same inputs, same graph).
    sanity = compare(layers, [{iso(layer): r[layer.output] for layer in layers} for r in ref32], iso32, iso)
    if any(r.differ for r in sanity):
        raise RuntimeError("isolated layers do not reproduce onnxruntime's own values")
    pre = {iso(layer): layer.pre for layer in layers}
    results = {
        ("edgekit", "per layer", "ort"): compare(layers, ek_iso, iso32, iso, exact=iso64, qparams=qp, pre=pre),
        ("edgekit", "per layer", "float64"): compare(layers, ek_iso, iso64, iso),
        ("onnxruntime int8", "per layer", "ort"): compare(layers, iso_ort8, iso32, iso),
        ("onnxruntime int8", "per layer", "float64"): compare(layers, iso_ort8, iso64, iso),
        ("onnxruntime float32", "per layer", "float64"): compare(layers, iso32, iso64, iso),
    }
    if end_to_end:
        own = lambda layer: layer.output  # noqa: E731
        ref64 = run_float64(qmodel, feeds, q_names)
        ort8 = run_ort(expose(qmodel, q_names), feeds, as_written=False)
        ek_full = Edgekit(expose(qmodel, q_names), mcpu)
        ek_e2e = ek_full.run(feeds)
        logger.warning("end-to-end edgekit build %.0f s", ek_full.compile_s)
        results.update({
            ("edgekit", "end to end", "ort"): compare(layers, ek_e2e, ref32, own),
            ("edgekit", "end to end", "float64"): compare(layers, ek_e2e, ref64, own),
            ("onnxruntime int8", "end to end", "ort"): compare(layers, ort8, ref32, own),
            ("onnxruntime int8", "end to end", "float64"): compare(layers, ort8, ref64, own),
            ("onnxruntime float32", "end to end", "float64"): compare(layers, ref32, ref64, own),
        })  # fmt: skip
    return Fidelity(layers, _output_tensor(qmodel), str(ek_layers.target), results)


def measure(name: str, workdir: Path, samples: int, mcpu: str | None, config: QuantConfig | None = None) -> dict[str, Any]:
    """Quantizes ``name`` as benchmarks/quantization.py does (``config``: default
    ``QuantConfig()``) and compares every int8 tensor."""
    t0 = time.perf_counter()
    case = CASES[name]()
    fp32_path = workdir / f"{case.name}-fp32.onnx"
    onnx.save(case.fp32, str(fp32_path))
    q = quantize(str(fp32_path), config or QuantConfig(), calibration=case.calibration, eval_data=case.evaluation)
    feeds = [{k: np.ascontiguousarray(v[i : i + 1]) for k, v in case.evaluation.items()} for i in range(samples)]
    logger.warning("%s: quantized in %.0f s", case.name, time.perf_counter() - t0)
    fid = fidelity(q.model, feeds, mcpu)
    rows = lambda key: [asdict(r) for r in fid.results[key]]  # noqa: E731
    return {
        "model": case.name,
        "data": case.data_note,
        "samples": len(feeds),
        "target": fid.target,
        "tensors": len(fid.layers),
        "output_tensor": fid.output_tensor,
        "summary": fid.summary(),
        "per_layer": rows(("edgekit", "per layer", "ort")),
        "end_to_end": rows(("edgekit", "end to end", "ort")),
        "ort_int8_per_layer": rows(("onnxruntime int8", "per layer", "ort")),
        "seconds": round(time.perf_counter() - t0, 1),
    }


# --------------------------------------------------------------------------- #
# Report
# --------------------------------------------------------------------------- #


def _pct(x: float) -> str:
    return f"{100 * x:.3f} %" if x < 1 else "100 %"


def render(rows: list[dict[str, Any]], command: str, tensors: int) -> str:
    lines = [
        f"Command: `{command}`; CPU: {cpu_description()}; onnxruntime {ort.__version__}; date: {date.today()}.",
        "",
        "| model | engine | mode | reference | int8 elements ≤ 1 LSB | max | output ≤ 1 LSB | max "
        "| differing (float32 tie / near tie / real) |",
        "|---|---|---|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        for key, s in r["summary"].items():
            engine, mode, ref = key.split(" | ")
            classes = f"{s['differ']:,} ({s['float32_tie']:,} / {s['near_tie']:,} / {s['real']:,})" if s["differ"] and (
                s["float32_tie"] or s["near_tie"] or s["real"]
            ) else f"{s['differ']:,}"
            ref_name = "ORT QDQ float32" if ref == "ort" else "float64 QDQ"
            lines.append(
                f"| {r['model']} | {engine} | {mode} | {ref_name} | {_pct(s['within1'])} | {s['max_lsb']} | "
                f"{_pct(s['output_within1'])} | {s['output_max_lsb']} | {classes} |"
            )
    for r in rows:
        worst = sorted(r["per_layer"], key=lambda t: (-t["real"], -t["differ"]))[:tensors]
        worst = [t for t in worst if t["differ"]]
        lines += ["", f"{r['model']}: {r['tensors']} int8 tensors, {r['samples']} samples, edgekit target {r['target']}."]
        if not worst:
            lines.append("Per layer, edgekit equals onnxruntime's QDQ graph on every element.")
            continue
        lines += [
            "",
            "| tensor (per layer) | op | elements | differ | > 1 LSB | max | float32 tie | near tie | real | examples (class v: edgekit vs ORT) |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for t in worst:
            ex = "; ".join(f"{c} {v:.7f}: {a} vs {b}" for c, v, a, b in t["examples"])
            lines.append(
                f"| {t['tensor']} | {t['op']} | {t['elements']:,} | {t['differ']:,} | {t['over1']:,} | {t['max_lsb']} | "
                f"{t['float32_tie']:,} | {t['near_tie']:,} | {t['real']:,} | {ex} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="ppocr-cls", help="comma-separated subset of: " + ", ".join(CASES))
    parser.add_argument("--samples", type=int, default=4, help="evaluation samples per model")
    parser.add_argument("--mcpu", default=None, help="compile edgekit for this LLVM CPU instead of the host target")
    parser.add_argument("--tensors", type=int, default=12, help="per-layer rows to list per model (worst first)")
    parser.add_argument("--json", default=None, help="also write every per-tensor figure to this file")
    parser.add_argument("--round-inside-chains", action="store_true",
                        help="quantize with QuantConfig(chain_ends_only=False): an int8 rounding after every op of "
                        "an elementwise chain (the quantizer's default before 2026-12-06)")
    args = parser.parse_args(argv)
    config = QuantConfig(chain_ends_only=not args.round_inside_chains)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    names = args.models.split(",")
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgekit-int8-fidelity-") as tmp:
        for name in names:
            rows.append(measure(name, Path(tmp), args.samples, args.mcpu, config))
    command = f".venv/bin/python benchmarks/int8_fidelity.py --models {args.models} --samples {args.samples}" + (
        f" --mcpu {args.mcpu}" if args.mcpu else ""
    ) + (" --round-inside-chains" if args.round_inside_chains else "")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print(render(rows, command, args.tensors))
    return 0


if __name__ == "__main__":
    sys.exit(main())
