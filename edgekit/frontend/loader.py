"""Loading ONNX models and making them compilable.

:func:`load_model` turns what users actually have — dynamic batch sizes, old
opsets, weights in ``Constant`` nodes, initializers listed as graph inputs,
shape arithmetic subgraphs — into a model with static shapes, weights as
initializers, opset >= 13 and folded shape computations. Each fix is recorded
in :attr:`PreparedModel.notes` so ``inspect`` can show what was changed.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgekit.core.errors import InputError, ModelError
from edgekit.core.tensors import TensorSpec
from edgekit.frontend.shapes import ShapeTable

__all__ = ["PreparedModel", "load_model", "read_onnx", "infer_shapes", "refold", "MIN_OPSET"]

logger = logging.getLogger(__name__)

#: Opset every prepared model is raised to (onnxruntime's per-channel
#: quantizer and TVM's importer both want >= 13).
MIN_OPSET = 13


@dataclass
class PreparedModel:
    """A model ready for compression and compilation.

    Attributes:
        model: The prepared ONNX model (static shapes, inferred value_info).
        inputs: Real inputs (initializers excluded) with static shapes.
        outputs: Outputs with their inferred shapes.
        source: The file it came from, if any.
        opset: Default-domain opset after preparation.
        notes: Human-readable list of what preparation changed.
    """

    model: onnx.ModelProto
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    source: str = ""
    opset: int = 0
    notes: list[str] = field(default_factory=list)
    #: Set once :func:`edgekit.frontend.legalize.legalize_prepared` has run.
    legalized: bool = False

    @property
    def name(self) -> str:
        """Short name: the file stem, or the graph name."""
        return Path(self.source).stem if self.source else (self.model.graph.name or "model")

    def serialize(self) -> bytes:
        """The prepared model as ONNX bytes."""
        return self.model.SerializeToString()


def read_onnx(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """Reads an ONNX file, turning every failure into a :class:`ModelError`.

    The file is treated as untrusted: :func:`edgekit.frontend.safety.read_model_safely`
    checks dims, tensor sizes and external-data paths before anything besides
    the model file is opened (no ``../``, absolute paths or symlinks; nothing
    outside the model's folder).
    """
    from edgekit.frontend.safety import read_model_safely

    p = Path(path)
    if not p.exists():
        raise ModelError(f"model file '{p}' does not exist", hint="Check the path.")
    if not p.is_file():
        raise ModelError(f"'{p}' is not a file", hint="Pass the path of an .onnx file.")
    return read_model_safely(p)


def _np_dtype(elem_type: int) -> str:
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).name
    except Exception:
        return f"onnx:{elem_type}"


def _opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 0


def _lift_constants(model: onnx.ModelProto) -> int:
    """Moves ``Constant`` nodes of the main graph into initializers."""
    graph = model.graph
    keep = []
    lifted = 0
    for node in graph.node:
        if node.op_type != "Constant" or node.domain not in ("", "ai.onnx") or len(node.attribute) != 1:
            keep.append(node)
            continue
        attr = node.attribute[0]
        name = node.output[0]
        if attr.name == "value":
            tensor = onnx.TensorProto()
            tensor.CopyFrom(attr.t)
            tensor.name = name
        elif attr.name == "value_float":
            tensor = numpy_helper.from_array(np.array(attr.f, dtype=np.float32), name)
        elif attr.name == "value_floats":
            tensor = numpy_helper.from_array(np.array(list(attr.floats), dtype=np.float32), name)
        elif attr.name == "value_int":
            tensor = numpy_helper.from_array(np.array(attr.i, dtype=np.int64), name)
        elif attr.name == "value_ints":
            tensor = numpy_helper.from_array(np.array(list(attr.ints), dtype=np.int64), name)
        else:  # sparse_value / strings: leave to the importer
            keep.append(node)
            continue
        graph.initializer.append(tensor)
        lifted += 1
    if lifted:
        del graph.node[:]
        graph.node.extend(keep)
    return lifted


def _drop_initializer_inputs(model: onnx.ModelProto) -> int:
    """IR < 4 models list every initializer as a graph input; they are weights.

    Without those inputs the model is only valid at IR >= 4, so the IR version
    is raised to what its opsets need.
    """
    inits = {i.name for i in model.graph.initializer}
    real = [i for i in model.graph.input if i.name not in inits]
    dropped = len(model.graph.input) - len(real)
    if dropped:
        del model.graph.input[:]
        model.graph.input.extend(real)
        need = helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
        model.ir_version = max(model.ir_version, need, 4)
    return dropped


def _fix_input_shapes(
    model: onnx.ModelProto, shapes: Mapping[str, tuple[int, ...]], notes: list[str]
) -> None:
    names = [i.name for i in model.graph.input]
    unknown = [n for n in shapes if n not in names]
    if unknown:
        raise InputError(
            f"--input-shape names unknown input(s): {', '.join(unknown)}",
            hint=f"The model's inputs are: {', '.join(names)}.",
        )
    problems = []
    for inp in model.graph.input:
        ttype = inp.type.tensor_type
        dims = ttype.shape.dim
        if inp.name in shapes:
            want = shapes[inp.name]
            if any(int(d) <= 0 for d in want):
                _refuse_empty(inp, [int(d) for d in want], "--input-shape gives")
            if ttype.HasField("shape") and len(dims) and len(dims) != len(want):
                declared = "x".join(d.dim_param or (str(d.dim_value) if d.dim_value > 0 else "?") for d in dims)
                raise InputError(
                    f"--input-shape {inp.name} has {len(want)} dimensions, the model's input has {len(dims)}",
                    hint=f"The model declares {inp.name} as {declared}: give one size per dimension.",
                )
            for i, d in enumerate(dims):
                if d.HasField("dim_value") and d.dim_value > 0 and d.dim_value != want[i]:
                    notes.append(f"input '{inp.name}': axis {i} changed from {d.dim_value} to {want[i]}")
            ttype.shape.Clear()
            for d in want:
                ttype.shape.dim.add().dim_value = int(d)
            continue
        if not ttype.HasField("shape"):
            problems.append(f"'{inp.name}' has no shape")
            continue
        # A declared size 0 past the batch axis is an empty tensor (some
        # exporters write 0 for an unknown batch: that one stays symbolic).
        if any(d.HasField("dim_value") and d.dim_value == 0 for d in list(dims)[1:]):
            _refuse_empty(inp, [d.dim_value if d.HasField("dim_value") else d.dim_param or "?" for d in dims],
                          "the model declares")
        for axis, d in enumerate(dims):
            if d.HasField("dim_value") and d.dim_value > 0:
                continue
            label = d.dim_param or "?"
            if axis == 0:
                d.Clear()
                d.dim_value = 1
                notes.append(f"input '{inp.name}': symbolic batch '{label}' fixed to 1")
            else:
                problems.append(f"'{inp.name}' axis {axis} is symbolic ('{label}')")
    if problems:
        example = " ".join(f"--input-shape {i.name}={_shape_template(i)}" for i in model.graph.input)
        raise InputError(
            "input shapes are not static: " + "; ".join(problems),
            hint=f"Pass the shape of every such input, replacing the symbols with sizes: {example}.",
        )


def _refuse_empty(inp: onnx.ValueInfoProto, shape: list, source: str) -> None:
    """Raises :class:`InputError` for an input with a zero-size (or negative) axis."""
    axis = next(i for i, d in enumerate(shape) if isinstance(d, int) and d <= 0)
    fixed = "x".join(str(d) if isinstance(d, int) and d > 0 else "1" for d in shape)
    raise InputError(
        f"input '{inp.name}' has no elements: {source} shape {'x'.join(map(str, shape))}, axis {axis} of size "
        f"{shape[axis]}; edgekit compiles tensors of at least one element (kernels and memory plans are static)",
        hint=f"Give every axis a size of at least 1, e.g. --input-shape {inp.name}={fixed}, "
        "or remove the empty input from the model.",
    )


def _shape_template(inp: onnx.ValueInfoProto) -> str:
    dims = inp.type.tensor_type.shape.dim
    out = []
    for axis, d in enumerate(dims):
        if d.HasField("dim_value") and d.dim_value > 0:
            out.append(str(d.dim_value))
        else:
            out.append("1" if axis == 0 else (d.dim_param or f"D{axis}"))
    return "x".join(out) or "..."


def _upgrade_opset(model: onnx.ModelProto, notes: list[str]) -> onnx.ModelProto:
    current = _opset(model)
    if current >= MIN_OPSET:
        return model
    from onnx import version_converter

    try:
        upgraded = version_converter.convert_version(model, MIN_OPSET)
    except Exception as exc:
        raise ModelError(
            f"cannot upgrade the model from opset {current} to {MIN_OPSET} ({str(exc)[:200]})",
            hint="Re-export the model with opset 13 or newer.",
        ) from None
    notes.append(f"opset upgraded from {current} to {MIN_OPSET}")
    return upgraded


def _simplify(model: onnx.ModelProto, notes: list[str]) -> onnx.ModelProto:
    import onnxslim

    before = len(model.graph.node)
    try:
        slim = onnxslim.slim(model)
    except Exception as exc:  # onnxslim is best-effort; the model stays valid without it
        logger.warning("onnxslim could not simplify the model (%s); continuing without it", exc)
        notes.append(f"onnxslim failed ({type(exc).__name__}); model left unsimplified")
        return model
    if slim is None:
        return model
    after = len(slim.graph.node)
    notes.append(f"simplified with onnxslim: {before} -> {after} nodes")
    return slim


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """ONNX shape inference with data propagation; the model as it is if that fails."""
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as exc:
        logger.warning("shape inference failed (%s); continuing without value_info", exc)
        return model


def _explicit_conv_pads(model: onnx.ModelProto) -> int:
    """Replaces ``auto_pad=SAME_*`` on Conv nodes by explicit ``pads`` (static shapes only).

    Same semantics (ONNX operator spec), but TVM's importer turns ``SAME_*``
    into a separate pad kernel that copies the whole input before the
    convolution, while explicit pads become the convolution's own padding.
    Returns the number of nodes rewritten.
    """
    shapes = ShapeTable(model.graph).shape
    changed = 0
    for node in model.graph.node:
        if node.op_type != "Conv" or len(node.input) < 2:
            continue
        attrs = {a.name: a for a in node.attribute}
        mode = attrs["auto_pad"].s.decode() if "auto_pad" in attrs else "NOTSET"
        x, w = shapes.get(node.input[0]), shapes.get(node.input[1])
        if mode not in ("SAME_UPPER", "SAME_LOWER") or x is None or w is None or len(x) < 3:
            continue
        spatial = x[2:]
        kernel = list(attrs["kernel_shape"].ints) if "kernel_shape" in attrs else w[2:]
        strides = list(attrs["strides"].ints) if "strides" in attrs else [1] * len(spatial)
        dilations = list(attrs["dilations"].ints) if "dilations" in attrs else [1] * len(spatial)
        begin, end = [], []
        for size, k, st, dl in zip(spatial, kernel, strides, dilations):
            out = -(-size // st)
            total = max((out - 1) * st + (k - 1) * dl + 1 - size, 0)
            small = total // 2
            begin.append(small if mode == "SAME_UPPER" else total - small)
            end.append(total - begin[-1])
        keep = [a for a in node.attribute if a.name not in ("auto_pad", "pads")]
        del node.attribute[:]
        node.attribute.extend(keep)
        node.attribute.append(onnx.helper.make_attribute("pads", begin + end))
        changed += 1
    return changed


def refold(model: onnx.ModelProto) -> onnx.ModelProto:
    """After a graph rewrite: constants lifted, shape arithmetic folded again
    (onnxslim), shapes inferred afresh."""
    notes: list[str] = []
    _lift_constants(model)
    del model.graph.value_info[:]
    model = _simplify(model, notes)
    _lift_constants(model)
    return infer_shapes(model)


def _specs(values, inits: set[str]) -> list[TensorSpec]:
    specs = []
    for v in values:
        if v.name in inits:
            continue
        t = v.type.tensor_type
        shape = tuple(int(d.dim_value) if d.HasField("dim_value") else -1 for d in t.shape.dim)
        specs.append(TensorSpec(v.name, shape, _np_dtype(t.elem_type)))
    return specs


def load_model(
    model: str | os.PathLike[str] | onnx.ModelProto,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    *,
    simplify: bool = True,
    check: bool = True,
) -> PreparedModel:
    """Loads an ONNX model and makes it compilable.

    Args:
        model: Path of an ``.onnx`` file, or a loaded ``ModelProto``.
        input_shapes: Static shapes for inputs, by name. Inputs not given keep
            their static shape; a symbolic first axis becomes 1.
        simplify: Fold shape arithmetic and constants with onnxslim.
        check: Run ``onnx.checker`` on the input.

    Returns:
        The :class:`PreparedModel`.

    Raises:
        ModelError: the file is unreadable, malformed or cannot be upgraded.
        InputError: an input shape is unknown, symbolic or given wrongly.
    """
    source = ""
    if isinstance(model, onnx.ModelProto):
        proto = onnx.ModelProto()
        proto.CopyFrom(model)
    else:
        source = str(model)
        proto = read_onnx(model)
    if not proto.graph.node:
        raise ModelError(f"model {source or proto.graph.name!r} has no nodes", hint="Check the export.")
    if check:
        try:
            onnx.checker.check_model(proto)
        except Exception as exc:
            raise ModelError(
                f"model {source or '(in memory)'} failed the ONNX checker: {str(exc).splitlines()[0][:300]}",
                hint="Fix or re-export the model; edgekit only compiles valid ONNX.",
            ) from None

    notes: list[str] = []
    # The version converter only sees initializers of IR<4 models through the
    # graph inputs, so upgrade before dropping those inputs.
    proto = _upgrade_opset(proto, notes)
    if n := _drop_initializer_inputs(proto):
        notes.append(f"{n} initializers listed as graph inputs treated as weights")
    if n := _lift_constants(proto):
        notes.append(f"{n} Constant nodes lifted to initializers")
    _fix_input_shapes(proto, dict(input_shapes or {}), notes)
    # Shapes recorded for intermediate values predate the fixed input shapes
    # (a symbolic batch would come back through them); infer them afresh.
    del proto.graph.value_info[:]
    if simplify:
        proto = _simplify(proto, notes)
        # onnxslim may re-emit Constant nodes for folded values.
        _lift_constants(proto)
    proto = infer_shapes(proto)
    if n := _explicit_conv_pads(proto):
        notes.append(f"{n} Conv auto_pad attributes made explicit")

    inits = {i.name for i in proto.graph.initializer}
    inputs = _specs(proto.graph.input, inits)
    outputs = _specs(proto.graph.output, set())
    if any(d < 0 for s in outputs for d in s.shape):
        bad = [s.name for s in outputs if any(d < 0 for d in s.shape)]
        notes.append(f"output shape(s) not inferred statically: {', '.join(bad)}")
    return PreparedModel(proto, inputs, outputs, source=source, opset=_opset(proto), notes=notes)
