"""Rules for the operator/attribute combinations TVM 0.27's ONNX importer
converts wrongly or not at all (found by ONNX's node conformance tests;
docs/conformance.md).

Each rule, keyed by op type in :data:`IMPORTER_RULES`, expands the node to its
ONNX function body, rewrites it into operators that import correctly, or
refuses it naming the attribute (see :mod:`edgekit.frontend.rule_context`).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgekit.frontend.rule_context import EXPAND, FLOATS, Context, Rewrite, Rule, attr, elem, rank, scalar, text_attr

__all__ = ["IMPORTER_RULES"]

_T = onnx.TensorProto


def _attention(node: onnx.NodeProto, ctx: Context) -> "str | Rewrite | None":
    # TVM's "Attention" converter is onnxruntime's contrib op (num_heads);
    # the standard op (opset 23) is its function body. A float16 body rounds
    # every intermediate (the softmax too) to float16: 4 ulps from the
    # reference where onnxruntime's kernel is 1; computed in float32 (and
    # expanded in the next round) it is within 2.
    return _in_float32(node, ctx) or EXPAND


def _layer_norm(node: onnx.NodeProto, ctx: Context) -> str | None:
    # TVM returns placeholders for Mean/InvStdDev and extends negative axes
    # wrongly; its fused kernel is right for the last axis alone.
    ndim = rank(ctx, node.input[0])
    axis = int(attr(node, "axis", -1))
    extra_outputs = any(o and o in ctx.used for o in node.output[1:])
    if ndim is None or extra_outputs or (axis % ndim) != ndim - 1:
        return EXPAND
    return None


def _batch_norm(node: onnx.NodeProto, ctx: Context) -> str | None:
    if int(attr(node, "training_mode", 0)):
        return "training_mode=1 (batch statistics and running-mean updates are not compiled; export the model in eval mode)"
    return None


def _conv_transpose(node: onnx.NodeProto, ctx: Context) -> "str | Rewrite | None":
    output_shape = attr(node, "output_shape")
    if not output_shape:
        return None
    x, w = ctx.shape(node.input[0]), ctx.shape(node.input[1])
    if x is None or w is None:
        return "output_shape with input shapes unknown at compile time"
    spatial = len(x) - 2
    output_shape = list(output_shape)[-spatial:]
    strides = list(attr(node, "strides", [1] * spatial))
    dilations = list(attr(node, "dilations", [1] * spatial))
    kernel = list(attr(node, "kernel_shape", w[2:]))
    out_pad = list(attr(node, "output_padding", [0] * spatial))
    mode = text_attr(node, "auto_pad", "NOTSET")
    begin, end = [], []
    for i in range(spatial):
        total = strides[i] * (x[2 + i] - 1) + out_pad[i] + (kernel[i] - 1) * dilations[i] + 1 - output_shape[i]
        if total < 0:  # the output is larger than the kernel reaches: extra rows at the end
            out_pad[i] -= total
            total = 0
        half = total // 2
        if mode == "SAME_UPPER":
            begin.append(half)
            end.append(total - half)
        else:
            begin.append(total - half)
            end.append(half)
        if out_pad[i] >= max(strides[i], dilations[i]):
            return f"output_shape {list(output_shape)} needs output_padding {out_pad[i]} >= stride {strides[i]}"
    new = onnx.NodeProto()
    new.CopyFrom(node)
    keep = [a for a in node.attribute if a.name not in ("output_shape", "pads", "auto_pad", "output_padding")]
    del new.attribute[:]
    new.attribute.extend(keep)
    new.attribute.append(helper.make_attribute("pads", begin + end))
    new.attribute.append(helper.make_attribute("output_padding", out_pad))
    return Rewrite([new])


def _is_inf(node: onnx.NodeProto, ctx: Context) -> "Rewrite | None":
    neg, pos = int(attr(node, "detect_negative", 1)), int(attr(node, "detect_positive", 1))
    if neg and pos:
        return None
    # TVM ignores both attributes: IsInf(x) and the sign test instead.
    x, y = node.input[0], node.output[0]
    p = f"{y}__isinf_"
    zero = numpy_helper.from_array(np.zeros((), dtype=helper.tensor_dtype_to_np_dtype(ctx.types[x].tensor_type.elem_type)), p + "zero")
    nodes = [helper.make_node("IsInf", [x], [p + "any"])]
    if not neg and not pos:  # nothing is detected: all false
        nodes.append(helper.make_node("Xor", [p + "any", p + "any"], [y]))
    else:
        nodes.append(helper.make_node("Greater" if pos else "Less", [x, p + "zero"], [p + "sign"]))
        nodes.append(helper.make_node("And", [p + "any", p + "sign"], [y]))
    return Rewrite(nodes, [zero])


def _resize(node: onnx.NodeProto, ctx: Context) -> str | None:
    if int(attr(node, "antialias", 0)):
        return "antialias=1"
    x = ctx.shape(node.input[0])
    y = ctx.shape(node.output[0])
    scales = ctx.const(node, 2)
    if x is None or y is None:
        return None  # TVM refuses computed sizes itself
    axes = attr(node, "axes")
    if scales is not None and scales.size:
        full = [1.0] * len(x)
        for ax, s in zip(axes if axes else range(len(x)), scales.tolist()):
            full[ax] = float(s)
        for i, (a, b, s) in enumerate(zip(x, y, full)):
            if a and b / a != s and not np.isclose(b / a, s, rtol=1e-6):
                # ONNX maps coordinates with the given scale, TVM with out/in.
                return f"scales {scales.tolist()} that do not divide the input size {list(x)} (axis {i}: {a} -> {b})"
    mode = text_attr(node, "mode", "nearest")
    coord = text_attr(node, "coordinate_transformation_mode", "half_pixel")
    if mode == "nearest" and coord in ("half_pixel", "pytorch_half_pixel"):
        for a, b in zip(x, y):
            if a == b or not a or not b:
                continue
            # A source coordinate exactly halfway between two pixels is
            # rounded after float32 arithmetic on in/out: the side it falls
            # on is not the reference's unless in/out is exact in binary.
            ties = any(((2 * i + 1) * a) % (2 * b) == 0 for i in range(b))
            q = b // np.gcd(a, b)
            if ties and q & (q - 1):
                return f"mode=nearest with output size {b} from {a} (halfway source pixels round differently)"
    return None


def _roi_align(node: onnx.NodeProto, ctx: Context) -> str | None:
    if text_attr(node, "mode", "avg") == "max":
        return "mode=max"
    return None


def _space_to_depth(node: onnx.NodeProto, ctx: Context) -> str | None:
    mode = text_attr(node, "mode", "DCR")
    if mode != "DCR":
        return f"mode={mode} (TVM implements DCR only)"
    return None


def _mod(node: onnx.NodeProto, ctx: Context) -> "Rewrite | None":
    # TVM computes x - floor(x / y) * y, NaN for an infinite divisor; ONNX
    # (Python's %) gives x (same sign or zero) or y there.
    if int(attr(node, "fmod", 0)) or elem(ctx, node.input[0]) not in FLOATS:
        return None
    x, y = node.input[0], node.input[1]
    out = node.output[0]
    p = f"{out}__mod_"
    raw = onnx.NodeProto()
    raw.CopyFrom(node)
    raw.output[0] = p + "raw"
    nodes = [
        raw,
        helper.make_node("IsInf", [y], [p + "yinf"]),
        helper.make_node("IsInf", [x], [p + "xinf"]),
        helper.make_node("IsNaN", [x], [p + "xnan"]),
        helper.make_node("Or", [p + "xinf", p + "xnan"], [p + "xbad"]),
        helper.make_node("Not", [p + "xbad"], [p + "xok"]),
        helper.make_node("And", [p + "yinf", p + "xok"], [p + "case"]),
        helper.make_node("Mul", [x, y], [p + "xy"]),
        helper.make_node("Greater", [p + "xy", p + "zero"], [p + "same"]),
        helper.make_node("Equal", [x, p + "zero"], [p + "x0"]),
        helper.make_node("Or", [p + "same", p + "x0"], [p + "keepx"]),
        helper.make_node("Where", [p + "keepx", x, y], [p + "inf_case"]),
        helper.make_node("Where", [p + "case", p + "inf_case", p + "raw"], [out]),
    ]
    return Rewrite(nodes, [scalar(ctx, x, 0.0, p + "zero")])


def _bit_shift(node: onnx.NodeProto, ctx: Context) -> "Rewrite | None":
    # ONNX shifts by the width or more give 0 (sign fill to the right for
    # signed types); LLVM leaves them undefined, so the answer depended on the
    # CPU: right with AVX-512BW (vpsllvw saturates the count), wrong with AVX2.
    x, y, out = node.input[0], node.input[1], node.output[0]
    kind = elem(ctx, x)
    if kind is None or out.endswith("__shift_raw") or y.endswith("__shift_y"):  # already guarded
        return None
    dtype = helper.tensor_dtype_to_np_dtype(kind)
    width = 8 * dtype.itemsize
    shift = ctx.const(node, 1)
    if shift is not None and shift.size and 0 <= int(shift.min()) and int(shift.max()) < width:
        return None
    p = f"{out}__shift_"
    if text_attr(node, "direction", "") == "RIGHT" and np.issubdtype(dtype, np.signedinteger):
        clamped = helper.make_node("Min", [y, p + "top"], [p + "y"])
        return Rewrite([clamped, helper.make_node("BitShift", [x, p + "y"], [out], direction="RIGHT")],
                       [scalar(ctx, y, width - 1, p + "top")])  # fmt: skip
    raw = onnx.NodeProto()
    raw.CopyFrom(node)
    raw.output[0] = p + "raw"
    nodes = [raw, helper.make_node("GreaterOrEqual", [y, p + "width"], [p + "out"]),
             helper.make_node("Where", [p + "out", p + "zero", p + "raw"], [out])]  # fmt: skip
    return Rewrite(nodes, [scalar(ctx, y, width, p + "width"), scalar(ctx, x, 0, p + "zero")])


def _reduce_extreme(node: onnx.NodeProto, ctx: Context) -> "Rewrite | None":
    # TVM starts max/min at the lowest/highest *finite* value: a reduction
    # over nothing but -inf (+inf for min) returns that value, not the
    # infinity (a fully masked attention row then became NaN).
    x = node.input[0]
    if elem(ctx, x) not in FLOATS or node.output[0].endswith("__inf_fixed"):
        return None
    inf = -np.inf if node.op_type == "ReduceMax" else np.inf
    out = node.output[0]
    p = f"{out}__ext_"
    raw = onnx.NodeProto()
    raw.CopyFrom(node)
    raw.output[0] = p + "raw__inf_fixed"
    all_inf = onnx.NodeProto()
    all_inf.CopyFrom(node)
    all_inf.op_type = "ReduceMin"
    del all_inf.input[:]
    all_inf.input.extend([p + "isinf_f", *node.input[1:]])
    all_inf.output[0] = p + "all__inf_fixed"
    all_inf.name = ""
    nodes = [
        raw,
        helper.make_node("Equal", [x, p + "inf"], [p + "isinf"]),
        helper.make_node("Cast", [p + "isinf"], [p + "isinf_f"], to=_T.FLOAT),
        all_inf,
        helper.make_node("Equal", [p + "all__inf_fixed", p + "one"], [p + "all"]),
        helper.make_node("Where", [p + "all", p + "inf", p + "raw__inf_fixed"], [out]),
    ]
    inits = [scalar(ctx, x, inf, p + "inf"), numpy_helper.from_array(np.array(1.0, np.float32), p + "one")]
    return Rewrite(nodes, inits)


def _in_float32(node: onnx.NodeProto, ctx: Context) -> "Rewrite | None":
    # TVM accumulates float16 matmuls, convolutions and softmax sums in
    # float16; the reference (and onnxruntime) accumulate in float32.
    # Compute in float32.
    if elem(ctx, node.input[0]) != _T.FLOAT16:
        return None
    p = f"{node.output[0]}__f32_"
    nodes = []
    new = onnx.NodeProto()
    new.CopyFrom(node)
    for i, name in enumerate(node.input):
        if name and elem(ctx, name) == _T.FLOAT16:
            nodes.append(helper.make_node("Cast", [name], [f"{p}in{i}"], to=_T.FLOAT))
            new.input[i] = f"{p}in{i}"
    outs = [o for o in node.output if o]
    for i, name in enumerate(node.output):
        if name:
            new.output[i] = f"{p}out{i}"
    nodes.append(new)
    for i, name in enumerate(node.output):
        if name:
            nodes.append(helper.make_node("Cast", [f"{p}out{i}"], [name], to=_T.FLOAT16))
    return Rewrite(nodes) if outs else None


def _compress(node: onnx.NodeProto, ctx: Context) -> "Rewrite | str":
    cond = ctx.const(node, 1)
    if cond is None:
        return "a condition computed at run time (the output size would depend on the data)"
    axis = attr(node, "axis")
    p = f"{node.output[0]}__compress_"
    idx = np.nonzero(cond.reshape(-1).astype(bool))[0].astype(np.int64)
    inits = [numpy_helper.from_array(idx, p + "idx")]
    if axis is None:
        inits.append(numpy_helper.from_array(np.array([-1], np.int64), p + "flat"))
        nodes = [helper.make_node("Reshape", [node.input[0], p + "flat"], [p + "x"]),
                 helper.make_node("Gather", [p + "x", p + "idx"], [node.output[0]], axis=0)]
    else:
        nodes = [helper.make_node("Gather", [node.input[0], p + "idx"], [node.output[0]], axis=int(axis))]
    return Rewrite(nodes, inits)


def _dropout(node: onnx.NodeProto, ctx: Context) -> "str | Rewrite | None":
    if len(node.input) > 2 and node.input[2]:
        mode = ctx.const(node, 2)
        if mode is None or bool(np.asarray(mode).reshape(-1)[0]):
            ratio = ctx.const(node, 1) if len(node.input) > 1 and node.input[1] else None
            if ratio is None or float(np.asarray(ratio).reshape(-1)[0]) != 0.0:
                return "training_mode (random masks are not compiled; export the model in eval mode)"
            # Training with ratio 0 drops nothing: the input, and a mask of ones.
            x, p = node.input[0], f"{node.output[0]}__dropout_"
            nodes = [helper.make_node("Identity", [x], [node.output[0]])]
            if len(node.output) > 1 and node.output[1]:
                nodes += [helper.make_node("Shape", [x], [p + "shape"]),
                          helper.make_node("ConstantOfShape", [p + "shape"], [node.output[1]],
                                           value=numpy_helper.from_array(np.array([True])))]
            return Rewrite(nodes)
    return None


def _qdq(node: onnx.NodeProto, ctx: Context) -> str | None:
    t = ctx.types.get(node.input[1]) if len(node.input) > 1 else None
    if t is not None and t.tensor_type.elem_type in (_T.FLOAT16, _T.BFLOAT16):
        return "a float16 scale (results round one step away from the reference); use float32 scales"
    return None


def _lp_norm(node: onnx.NodeProto, ctx: Context) -> "Rewrite | str":
    # No TVM converter and no ONNX function: x / ||x||_p along the axis,
    # 0 where the norm is 0 (the reference's choice).
    p = int(attr(node, "p", 2))
    if p not in (1, 2):
        return f"p={p} (only 1 and 2 are defined)"
    x, y = node.input[0], node.output[0]
    ndim = rank(ctx, x)
    t = ctx.types.get(x)
    if ndim is None or t is None:
        return "an input of unknown shape"
    axis = int(attr(node, "axis", -1)) % ndim
    dtype = helper.tensor_dtype_to_np_dtype(t.tensor_type.elem_type)
    pre = f"{y}__lpnorm_"
    reduce = "ReduceL2" if p == 2 else "ReduceL1"
    inits = [numpy_helper.from_array(np.zeros((), dtype=dtype), pre + "zero")]
    if ctx.opset >= 18:
        inits.append(numpy_helper.from_array(np.array([axis], dtype=np.int64), pre + "axes"))
        norm = helper.make_node(reduce, [x, pre + "axes"], [pre + "norm"], keepdims=1)
    else:
        norm = helper.make_node(reduce, [x], [pre + "norm"], axes=[axis], keepdims=1)
    nodes = [
        norm,
        helper.make_node("Div", [x, pre + "norm"], [pre + "div"]),
        helper.make_node("Equal", [pre + "norm", pre + "zero"], [pre + "is0"]),
        helper.make_node("Where", [pre + "is0", pre + "zero", pre + "div"], [y]),
    ]
    return Rewrite(nodes, inits)


def _conv_transpose_f32(node: onnx.NodeProto, ctx: Context) -> "str | Rewrite | None":
    return _conv_transpose(node, ctx) or _in_float32(node, ctx)


def _top_k(node: onnx.NodeProto, ctx: Context) -> str | None:
    if elem(ctx, node.input[0]) in (_T.UINT64, _T.UINT32, _T.UINT16):
        return "an unsigned input wider than 8 bits (TVM's sort has no kernel for it)"
    return None


def _one_hot(node: onnx.NodeProto, ctx: Context) -> "Rewrite | None":
    # TVM wants depth as an integer scalar; ONNX allows any numeric type and
    # shape [1] (depth 10.0 failed to import).
    # Float indices are cast to int64 by the standard; TVM refuses them.
    depth = ctx.const(node, 1)
    float_indices = elem(ctx, node.input[0]) in FLOATS
    odd_depth = depth is not None and not (depth.dtype == np.int64 and depth.ndim == 0)
    if not (float_indices or odd_depth):
        return None
    new = onnx.NodeProto()
    new.CopyFrom(node)
    nodes, inits = [new], []
    if odd_depth:
        name = f"{node.output[0]}__onehot_depth"
        new.input[1] = name
        inits.append(numpy_helper.from_array(np.array(int(depth.reshape(-1)[0]), np.int64), name))
    if float_indices:
        name = f"{node.output[0]}__onehot_indices"
        nodes.insert(0, helper.make_node("Cast", [node.input[0]], [name], to=_T.INT64))
        new.input[0] = name
    return Rewrite(nodes, inits)


def _col2im(node: onnx.NodeProto, ctx: Context) -> "Rewrite | str":
    # No TVM converter and no ONNX function. Col2Im scatters each column
    # (one value per channel and kernel offset) back to its image position
    # and sums overlaps: that is a ConvTranspose of the columns, laid out on
    # the grid of block positions, with a 0/1 kernel that routes input
    # channel (c, offset) to output channel c at that offset.
    image, block = ctx.const(node, 1), ctx.const(node, 2)
    x = ctx.shape(node.input[0])
    if image is None or block is None:
        return "image_shape/block_shape computed at run time"
    if x is None:
        return "an input of unknown shape"
    image, block = [int(v) for v in image.reshape(-1)], [int(v) for v in block.reshape(-1)]
    spatial = len(image)
    dilations = list(attr(node, "dilations", [1] * spatial))
    strides = list(attr(node, "strides", [1] * spatial))
    pads = list(attr(node, "pads", [0] * 2 * spatial))
    kernel = int(np.prod(block))
    channels = x[1] // kernel
    grid = [(image[d] + pads[d] + pads[spatial + d] - dilations[d] * (block[d] - 1) - 1) // strides[d] + 1
            for d in range(spatial)]
    if channels * kernel != x[1] or int(np.prod(grid)) != x[2]:
        return f"an input of shape {list(x)} that does not match image_shape {image} and block_shape {block}"
    out_pad = [image[d] + pads[d] + pads[spatial + d] - (strides[d] * (grid[d] - 1) + dilations[d] * (block[d] - 1) + 1)
               for d in range(spatial)]
    dtype = helper.tensor_dtype_to_np_dtype(elem(ctx, node.input[0]) or _T.FLOAT)
    weight = np.zeros((channels * kernel, channels, *block), dtype)
    for c in range(channels):
        for k, offset in enumerate(np.ndindex(*block)):
            weight[(c * kernel + k, c, *offset)] = 1
    y = node.output[0]
    p = f"{y}__col2im_"
    inits = [numpy_helper.from_array(np.array([x[0], x[1], *grid], np.int64), p + "grid"),
             numpy_helper.from_array(weight, p + "w")]
    nodes = [
        helper.make_node("Reshape", [node.input[0], p + "grid"], [p + "cols"]),
        helper.make_node("ConvTranspose", [p + "cols", p + "w"], [y], strides=strides, dilations=dilations,
                         pads=pads, output_padding=out_pad, kernel_shape=block),
    ]
    return Rewrite(nodes, inits)


IMPORTER_RULES: dict[str, Rule] = {
    "Col2Im": _col2im,
    "OneHot": _one_hot,
    "TopK": _top_k,
    "LpNormalization": _lp_norm,
    "Attention": _attention,
    "LayerNormalization": _layer_norm,
    "BatchNormalization": _batch_norm,
    "IsInf": _is_inf,
    "Resize": _resize,
    "RoiAlign": _roi_align,
    "SpaceToDepth": _space_to_depth,
    "Mod": _mod,
    "BitShift": _bit_shift,
    "ReduceMax": _reduce_extreme,
    "ReduceMin": _reduce_extreme,
    "MatMul": _in_float32,
    "Softmax": _in_float32,
    "LogSoftmax": _in_float32,
    "Gemm": _in_float32,
    "Conv": _in_float32,
    "ConvTranspose": _conv_transpose_f32,
    "Compress": _compress,
    "Dropout": _dropout,
    "QuantizeLinear": _qdq,
    "DequantizeLinear": _qdq,
}
