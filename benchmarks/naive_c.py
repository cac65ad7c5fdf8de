"""A naive C loop-nest implementation of simple fp32 CNNs, as a yardstick.

``benchmarks/mcu.py`` measures edgekit's compiled kernels against the code an
embedded engineer would write by hand first: one plain loop nest per layer,
no tiling, no vectorization, compiled with the same flags and run by the same
agent firmware in the same simulator. Hand-written because the point is to be
the naive baseline; it covers the op subset of small CNNs (Conv with pads,
strides and groups, Relu, MaxPool, Flatten, Gemm with transB, Add).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

__all__ = ["emit_naive_model"]


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def emit_naive_model(model: onnx.ModelProto) -> tuple[str, bytes, dict[str, int]]:
    """Returns ``(model.c source, weights image, sizes)`` implementing
    ``firmware_stubs/include/ek_model.h`` for a static-shape fp32 CNN.

    Every tensor gets its own arena slot (no reuse: a naive implementation).
    """
    model = onnx.shape_inference.infer_shapes(model)
    shapes: dict[str, tuple[int, ...]] = {}
    for v in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        shapes[v.name] = tuple(d.dim_value for d in v.type.tensor_type.shape.dim)
    inits = {i.name: numpy_helper.to_array(i).astype(np.float32) for i in model.graph.initializer}

    offsets: dict[str, int] = {}
    arena = 0

    def slot(name: str) -> int:
        nonlocal arena
        if name not in offsets:
            offsets[name] = arena
            arena += int(np.prod(shapes[name])) * 4
        return offsets[name]

    woff: dict[str, int] = {}
    blob = bytearray()

    def weight(name: str) -> int:
        if name not in woff:
            woff[name] = len(blob) // 4
            blob.extend(inits[name].tobytes())
        return woff[name]

    inp = model.graph.input[0].name
    slot(inp)
    body: list[str] = []
    for node in model.graph.node:
        op = node.op_type
        x = node.input[0]
        y = node.output[0]
        if op == "Flatten" or op == "Reshape":
            offsets[y] = offsets[x]  # a view
            continue
        xo, yo = offsets[x], slot(y)
        if op == "Conv":
            n, c, h, w = shapes[x]
            _, k, oh, ow = shapes[y]
            wt = inits[node.input[1]]
            kh, kw = wt.shape[2:]
            sh, sw = _attr(node, "strides", [1, 1])
            pt, pl, _, _ = _attr(node, "pads", [0, 0, 0, 0])
            g = _attr(node, "group", 1)
            cg, kg = c // g, k // g
            wo = weight(node.input[1])
            bo = weight(node.input[2]) if len(node.input) > 2 else -1
            bias = f"W[{bo} + o]" if bo >= 0 else "0.0f"
            body.append(f"""  {{ const float *x = (const float *)(ek_arena + {xo}); float *y = (float *)(ek_arena + {yo});
    for (int o = 0; o < {k}; o++) for (int i = 0; i < {oh}; i++) for (int j = 0; j < {ow}; j++) {{
      float acc = {bias}; int gr = o / {kg};
      for (int ci = 0; ci < {cg}; ci++) for (int r = 0; r < {kh}; r++) for (int s = 0; s < {kw}; s++) {{
        int yy = i * {sh} - {pt} + r, xx = j * {sw} - {pl} + s;
        if (yy < 0 || yy >= {h} || xx < 0 || xx >= {w}) continue;
        acc += W[{wo} + ((o * {cg} + ci) * {kh} + r) * {kw} + s] * x[((gr * {cg} + ci) * {h} + yy) * {w} + xx];
      }}
      y[(o * {oh} + i) * {ow} + j] = acc;
    }} }}""")
        elif op == "Relu":
            size = int(np.prod(shapes[y]))
            body.append(f"""  {{ const float *x = (const float *)(ek_arena + {xo}); float *y = (float *)(ek_arena + {yo});
    for (int i = 0; i < {size}; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f; }}""")
        elif op == "MaxPool":
            n, c, h, w = shapes[x]
            _, _, oh, ow = shapes[y]
            kh, kw = _attr(node, "kernel_shape", [2, 2])
            sh, sw = _attr(node, "strides", [1, 1])
            body.append(f"""  {{ const float *x = (const float *)(ek_arena + {xo}); float *y = (float *)(ek_arena + {yo});
    for (int ch = 0; ch < {c}; ch++) for (int i = 0; i < {oh}; i++) for (int j = 0; j < {ow}; j++) {{
      float m = -3.4e38f;
      for (int r = 0; r < {kh}; r++) for (int s = 0; s < {kw}; s++) {{
        float v = x[(ch * {h} + i * {sh} + r) * {w} + j * {sw} + s]; if (v > m) m = v; }}
      y[(ch * {oh} + i) * {ow} + j] = m;
    }} }}""")
        elif op == "Gemm":
            wt = inits[node.input[1]]
            trans_b = _attr(node, "transB", 0)
            k_in = shapes[x][1]
            n_out = shapes[y][1]
            wo = weight(node.input[1])
            bo = weight(node.input[2]) if len(node.input) > 2 else -1
            bias = f"W[{bo} + o]" if bo >= 0 else "0.0f"
            idx = f"o * {k_in} + k" if trans_b else f"k * {n_out} + o"
            assert wt.size == k_in * n_out
            body.append(f"""  {{ const float *x = (const float *)(ek_arena + {xo}); float *y = (float *)(ek_arena + {yo});
    for (int o = 0; o < {n_out}; o++) {{ float acc = {bias};
      for (int k = 0; k < {k_in}; k++) acc += W[{wo} + {idx}] * x[k];
      y[o] = acc; }} }}""")
        elif op == "Add":
            size = int(np.prod(shapes[y]))
            bo = offsets[node.input[1]]
            body.append(f"""  {{ const float *a = (const float *)(ek_arena + {xo}); const float *b = (const float *)(ek_arena + {bo});
    float *y = (float *)(ek_arena + {yo}); for (int i = 0; i < {size}; i++) y[i] = a[i] + b[i]; }}""")
        else:
            raise ValueError(f"naive reference has no loop nest for {op}")
    out = model.graph.output[0].name
    in_bytes = int(np.prod(shapes[inp])) * 4
    out_bytes = int(np.prod(shapes[out])) * 4
    source = f"""/* Generated by benchmarks/naive_c.py: naive loop nests, one arena slot per tensor. */
#include "ek_model.h"
static const uint32_t in_off[1] = {{{offsets[inp]}}}, in_bytes[1] = {{{in_bytes}}};
static const uint32_t out_off[1] = {{{offsets[out]}}}, out_bytes[1] = {{{out_bytes}}};
const ek_model_info_t ek_model_info = {{ .arena_bytes = {arena}, .weight_bytes = {len(blob)},
  .num_inputs = 1, .num_outputs = 1, .input_offsets = in_off, .input_bytes = in_bytes,
  .output_offsets = out_off, .output_bytes = out_bytes }};
uint8_t ek_arena[{arena}] __attribute__((aligned(16)));
int32_t ek_model_run(const uint8_t *weights) {{
  const float *W = (const float *)weights;
{chr(10).join(body)}
  return 0;
}}
"""
    return source, bytes(blob), {"arena_bytes": arena, "weight_bytes": len(blob), "input_bytes": in_bytes, "output_bytes": out_bytes}
