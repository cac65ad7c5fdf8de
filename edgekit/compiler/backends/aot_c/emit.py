"""Emit ``model.c`` / ``model.h``: the model as static C over TVM's kernels.

The generated C implements ``firmware_stubs/include/ek_model.h``:
``ek_model_info``, ``ek_arena`` and ``ek_model_run(weights)``. It has no heap,
no TVM runtime and no libc beyond what the kernels themselves use
(``memcpy``/``memset``). Every kernel call is a row of a constant table: the
kernel, its constant ``TVMFFIAny`` argument array pointing at constant
``DLTensor`` descriptors in the arena, and the slice of the arena its
workspace may use. Only the descriptors of dense weights live in RAM,
because their data pointer is known only when ``ek_model_run`` receives the
blob. A weight stored bitmask-sparse (:mod:`edgekit.core.sparse`) has a
constant descriptor on its planned arena buffer instead, and a row in the
decode table: ``ek_model_run`` unpacks it there right before the first
kernel call that reads it.

The ``DLTensor`` and ``TVMFFIAny`` layouts are written out by hand (they are
the stable DLPack and tvm-ffi C ABIs) so that the generated C needs no TVM
header on the device build.
"""

from __future__ import annotations

import logging
import re

from edgekit.compiler.backends.aot_c.graph import AotGraph, TensorInfo
from edgekit.compiler.backends.aot_c.kernels import KERNEL_PREFIX
from edgekit.compiler.backends.aot_c.layout import AotLayout, StoredWeight
from edgekit.core.errors import CompileError

__all__ = ["emit_model_h", "emit_model_c", "ERR_WEIGHTS_ALIGN", "dl_dtype"]

logger = logging.getLogger(__name__)

#: ``ek_model_run`` result when the weights pointer is not aligned.
ERR_WEIGHTS_ALIGN = -1

_CONTRACT = """\
#ifndef EK_MODEL_H
#define EK_MODEL_H
/* The contract of firmware_stubs/include/ek_model.h, repeated so that the
 * generated model compiles on its own; the include guard is shared. */
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif
typedef struct {
  uint32_t arena_bytes, weight_bytes, num_inputs, num_outputs;
  const uint32_t *input_offsets, *input_bytes;   /* inputs live in ek_arena at these offsets */
  const uint32_t *output_offsets, *output_bytes; /* outputs too */
} ek_model_info_t;
extern const ek_model_info_t ek_model_info;
extern uint8_t ek_arena[];
int32_t ek_model_run(const uint8_t *weights);
#ifdef __cplusplus
}
#endif
#endif /* EK_MODEL_H */
"""

_ABI = """\
/* DLPack DLTensor and tvm-ffi TVMFFIAny, as laid out by the C ABI of the
 * target (the kernels were compiled by LLVM for the same ABI). */
typedef struct { int32_t device_type, device_id; } ek_dldevice_t;
typedef struct { uint8_t code, bits; uint16_t lanes; } ek_dldtype_t;
typedef struct {
  void *data;
  ek_dldevice_t device;
  int32_t ndim;
  ek_dldtype_t dtype;
  int64_t *shape;
  int64_t *strides;
  uint64_t byte_offset;
} ek_dltensor_t;
typedef struct {
  int32_t type_index;
  uint32_t zero_padding;
  union { int64_t v_int64; double v_float64; void *v_ptr; } v;
} ek_ffi_any_t;
typedef char ek_check_any_size[(sizeof(ek_ffi_any_t) == 16) ? 1 : -1];

typedef int32_t (*ek_kernel_fn)(void *self, const ek_ffi_any_t *args, int32_t num_args, ek_ffi_any_t *result);
typedef struct {
  ek_kernel_fn fn;
  const ek_ffi_any_t *args;
  int32_t num_args;
  uint32_t ws_offset, ws_bytes;
} ek_step_t;

#define EK_DL_CPU 1
#define EK_FFI_DLTENSOR_PTR 7 /* kTVMFFIDLTensorPtr */
#define EK_ARG(t) {EK_FFI_DLTENSOR_PTR, 0u, {.v_ptr = (void *)(t)}}
"""

_WORKSPACE = """\
/* TVMBackendAllocWorkspace for the kernels: a LIFO bump allocator over the
 * arena slice the planner reserved for the running kernel (TIR frees its
 * temporaries in reverse allocation order). These definitions override the
 * weak hook variables in kernels.o. */
#define EK_WS_DEPTH 16
static uint8_t *ek_ws_base;
static uint32_t ek_ws_size, ek_ws_top, ek_ws_depth;
static uint32_t ek_ws_saved[EK_WS_DEPTH], ek_ws_start[EK_WS_DEPTH];

static void *ek_ws_alloc(int device_type, int device_id, uint64_t nbytes, int code_hint, int bits_hint) {
  uint32_t start = (ek_ws_top + (EK_MODEL_ALIGNMENT - 1u)) & ~(EK_MODEL_ALIGNMENT - 1u);
  (void)device_type; (void)device_id; (void)code_hint; (void)bits_hint;
  if (ek_ws_depth == EK_WS_DEPTH || start > ek_ws_size || nbytes > (uint64_t)(ek_ws_size - start)) return NULL;
  ek_ws_saved[ek_ws_depth] = ek_ws_top;
  ek_ws_start[ek_ws_depth++] = start;
  ek_ws_top = start + (uint32_t)nbytes;
  return ek_ws_base + start;
}

static int ek_ws_free(int device_type, int device_id, void *ptr) {
  (void)device_type; (void)device_id;
  if (ek_ws_depth == 0u || (uint8_t *)ptr != ek_ws_base + ek_ws_start[ek_ws_depth - 1u]) return -1;
  ek_ws_top = ek_ws_saved[--ek_ws_depth];
  return 0;
}

void *(*__TVMBackendAllocWorkspace)(int, int, uint64_t, int, int) = ek_ws_alloc;
int (*__TVMBackendFreeWorkspace)(int, int, void *) = ek_ws_free;

/* Kernels report a failed check here before returning non-zero; firmware
 * that wants the message defines its own (strong) version. */
const char *ek_model_error_kind;
__attribute__((weak)) void TVMFFIErrorSetRaisedFromCStrParts(const char *kind, const char **parts, int32_t num_parts) {
  (void)parts; (void)num_parts;
  ek_model_error_kind = kind;
}
"""

_DECODER = """\
/* Bitmask-sparse weights (edgekit/core/sparse.py): a mask of ceil(count/8)
 * bytes (bit i%8 of byte i/8 set = element i is not zero), zero-padded to a
 * multiple of the element size, then the non-zero elements in order. Each is
 * unpacked into its arena buffer right before the first kernel call that
 * reads it; the planner keeps that buffer alive until the last one.
 * The codec is hand-written: no library emits C decoders for the packages
 * TVM's kernels run in. Source and destination are aligned to the element
 * size (weights blob and arena are EK_MODEL_ALIGNMENT aligned). */
typedef uint16_t ek_u16_alias __attribute__((may_alias));
typedef uint32_t ek_u32_alias __attribute__((may_alias));

static inline __attribute__((always_inline)) void ek_unpack_bitmask(uint8_t *dst, const uint8_t *src, uint32_t count,
                                                                     uint32_t esize) {
  const uint8_t *val = src + ((count + 7u) / 8u + esize - 1u) / esize * esize;
  uint32_t i, b, k;
  for (i = 0u; i < count; i += 8u) {
    uint32_t bits = src[i >> 3], n = count - i < 8u ? count - i : 8u;
    for (b = 0u; b < n; ++b, dst += esize) {
      if (bits & (1u << b)) {
        if (esize == 4u) *(ek_u32_alias *)dst = *(const ek_u32_alias *)val;
        else if (esize == 2u) *(ek_u16_alias *)dst = *(const ek_u16_alias *)val;
        else if (esize == 1u) *dst = *val;
        else for (k = 0u; k < esize; ++k) dst[k] = val[k];
        val += esize;
      } else {
        if (esize == 4u) *(ek_u32_alias *)dst = 0u;
        else if (esize == 2u) *(ek_u16_alias *)dst = 0u;
        else for (k = 0u; k < esize; ++k) dst[k] = 0u;
      }
    }
  }
}

/* One call per element size present, so each inlined copy has a constant esize. */
static void ek_decode(const ek_decode_t *d, const uint8_t *weights) {
  uint8_t *dst = ek_arena + d->dst;
  const uint8_t *src = weights + d->src;
  switch (d->esize) {
{cases}  default: ek_unpack_bitmask(dst, src, d->count, d->esize); break;
  }
}
"""

_RUN = """\
int32_t ek_model_run(const uint8_t *weights) {
  uint32_t i;
{weights_setup}  for (i = 0; i < EK_MODEL_NUM_STEPS; ++i) {
    const ek_step_t *step = &ek_steps[i];
    ek_ffi_any_t result = {0, 0u, {0}};
{decode}    ek_ws_base = ek_arena + step->ws_offset;
    ek_ws_size = step->ws_bytes;
    ek_ws_top = 0u;
    ek_ws_depth = 0u;
    if (step->fn((void *)0, step->args, step->num_args, &result) != 0) return (int32_t)(i + 1u);
  }
  return 0;
}
"""

_WEIGHTS_CHECK = """\
  if (weights == (const uint8_t *)0 || ((uintptr_t)weights & (EK_MODEL_ALIGNMENT - 1u)) != 0u)
    return EK_MODEL_ERR_WEIGHTS_ALIGN;
"""
_WEIGHTS_SETUP = """\
  for (i = 0; i < EK_MODEL_NUM_WEIGHTS; ++i) ek_weights[i].data = (void *)(weights + ek_weight_offsets[i]);
"""
_DECODE_STEP = """\
    for (; d < EK_MODEL_NUM_DECODES && ek_decodes[d].step == i; ++d) ek_decode(&ek_decodes[d], weights);
"""

_DL_CODES = {"int": 0, "uint": 1, "float": 2, "bfloat": 4}


def dl_dtype(dtype: str) -> tuple[int, int, int]:
    """DLPack ``(code, bits, lanes)`` of a TVM dtype string.

    Raises:
        CompileError: for a dtype DLPack has no code for here (vectors, custom types).
    """
    if dtype == "bool":
        return 6, 8, 1
    m = re.fullmatch(r"([a-z]+?)(\d+)", dtype)
    if not m or m.group(1) not in _DL_CODES:
        raise CompileError(f"tensor dtype '{dtype}' cannot be passed to a kernel", hint="Report the model.")
    return _DL_CODES[m.group(1)], int(m.group(2)), 1


def _comment(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.:\-\[\], ]", "_", text)[:80]


def _describe(t: TensorInfo) -> str:
    return f"{_comment(t.name)}: {t.dtype}[{','.join(str(d) for d in t.shape)}]"


def emit_model_h(graph: AotGraph, layout: AotLayout, *, model_name: str = "model") -> str:
    """The text of ``model.h``: the ``ek_model.h`` contract plus this model's sizes."""
    lines = [
        f"/* model.h - generated by edgekit for model '{_comment(model_name)}'. Do not edit. */",
        _CONTRACT,
        "#ifndef EK_MODEL_GENERATED_H",
        "#define EK_MODEL_GENERATED_H",
        f"#define EK_MODEL_ARENA_BYTES {layout.arena_bytes}u",
        f"#define EK_MODEL_WEIGHT_BYTES {layout.weight_bytes}u",
        f"#define EK_MODEL_DENSE_WEIGHT_BYTES {layout.dense_weight_bytes}u /* weights.bin if all were dense */",
        f"#define EK_MODEL_DECODE_SCRATCH_BYTES {layout.decode_scratch_bytes}u /* decoded sparse weights, in the arena */",
        f"#define EK_MODEL_NUM_INPUTS {len(graph.inputs)}u",
        f"#define EK_MODEL_NUM_OUTPUTS {len(graph.outputs)}u",
        f"#define EK_MODEL_ALIGNMENT {layout.plan.alignment}u /* of ek_arena and of the weights pointer */",
        f"#define EK_MODEL_ERR_WEIGHTS_ALIGN ({ERR_WEIGHTS_ALIGN}) /* weights NULL or not aligned */",
        "/* ek_model_run returns 0, EK_MODEL_ERR_WEIGHTS_ALIGN, or 1 + the index of the kernel call that failed. */",
    ]
    for label, indices in (("input", graph.inputs), ("output", graph.outputs)):
        for i, t in enumerate(indices):
            info = graph.tensors[t]
            lines.append(
                f"/* {label} {i} {_describe(info)} at ek_arena + {layout.tensor_offsets[t]}, {info.nbytes} bytes */"
            )
    lines.append("#endif /* EK_MODEL_GENERATED_H */")
    return "\n".join(lines) + "\n"


def _tensor_init(t: TensorInfo, data: str, shape_name: str) -> str:
    code, bits, lanes = dl_dtype(t.dtype)
    shape = f"(int64_t *){shape_name}" if t.shape else "(int64_t *)0"
    return f"{{{data}, {{EK_DL_CPU, 0}}, {len(t.shape)}, {{{code}u, {bits}u, {lanes}u}}, {shape}, (int64_t *)0, 0u}}"


def emit_model_c(graph: AotGraph, layout: AotLayout, *, model_name: str = "model") -> str:
    """The text of ``model.c`` for ``graph`` placed by ``layout``."""
    out = _preamble(graph, layout, model_name)
    tensors, ref, num_weights = _tensor_tables(graph, layout)
    out += tensors
    out += _step_table(graph, layout, ref)
    sparse = layout.sparse_weights()
    if sparse:
        out += _decode_table(sparse, layout, len(graph.calls))
    out += [*_model_info(graph, layout), "", _WORKSPACE]
    if sparse:
        cases = "".join(
            f"  case {n}u: ek_unpack_bitmask(dst, src, d->count, {n}u); break;\n"
            for n in sorted({_esize(w) for w in sparse} & {1, 2, 4})
        )
        out.append(_DECODER.replace("{cases}", cases))
    setup = (_WEIGHTS_CHECK if layout.storage else "  (void)weights;\n") + (_WEIGHTS_SETUP if num_weights else "")
    if sparse:
        setup = "  uint32_t d = 0u;\n" + setup
    out.append(_RUN.replace("{weights_setup}", setup).replace("{decode}", _DECODE_STEP if sparse else ""))
    return "\n".join(out)


def _preamble(graph: AotGraph, layout: AotLayout, model_name: str) -> list[str]:
    """Header comment, includes, the ABI types, the C kernels' source, kernel prototypes and the arena."""
    out: list[str] = [
        f"/* model.c - generated by edgekit for model '{_comment(model_name)}'. Do not edit.",
        f" * {len(graph.calls)} kernel calls, arena {layout.arena_bytes} bytes, weights {layout.weight_bytes} bytes"
        f" ({layout.dense_weight_bytes} dense, {len(layout.decoded)} tensors bitmask-sparse). */",
        "#include <stddef.h>",
        "#include <stdint.h>",
        '#include "model.h"',
        "",
        _ABI,
    ]
    if graph.extern_names():
        out.append(graph.extern_source)
    for name in graph.kernel_names():
        out.append(
            f"extern int32_t {KERNEL_PREFIX}{name}(void *self, const ek_ffi_any_t *args, int32_t num_args, "
            "ek_ffi_any_t *result);"
        )
    return out + ["", f"uint8_t ek_arena[EK_MODEL_ARENA_BYTES] __attribute__((aligned({layout.plan.alignment})));", ""]


def _tensor_tables(graph: AotGraph, layout: AotLayout) -> tuple[list[str], dict[int, str], int]:
    """Shapes and DLTensor descriptors of every tensor a call uses: ``ek_tensors``
    in the arena (decoded sparse weights too), ``ek_weights`` in the blob.

    Returns:
        ``(lines, C reference per tensor index, number of blob weights)``.
    """
    out: list[str] = []
    used = sorted({a for c in graph.calls for a in c.args})
    shapes: dict[tuple[int, ...], str] = {}
    for t in used:
        shape = graph.tensors[t].shape
        if shape and shape not in shapes:
            shapes[shape] = f"ek_shape{len(shapes)}"
            out.append(f"static const int64_t {shapes[shape]}[{len(shape)}] = {{{', '.join(map(str, shape))}}};")
    out.append("")

    ref: dict[int, str] = {}
    arena_rows, weight_rows, weight_offsets = [], [], []
    for t in used:
        info = graph.tensors[t]
        shape_name = shapes.get(info.shape, "")
        if info.kind == "weight" and t not in layout.decoded:
            ref[t] = f"&ek_weights[{len(weight_rows)}]"
            weight_rows.append(f"  {_tensor_init(info, '(void *)0', shape_name)}, /* {_describe(info)} */")
            weight_offsets.append(str(layout.weight_offsets[t]))
        else:
            ref[t] = f"&ek_tensors[{len(arena_rows)}]"
            offset = layout.decoded[t] if t in layout.decoded else layout.tensor_offsets[t]
            data = f"ek_arena + {offset}"
            arena_rows.append(f"  {_tensor_init(info, data, shape_name)}, /* {_describe(info)} */")
    out.append(f"static const ek_dltensor_t ek_tensors[{len(arena_rows)}] = {{")
    out += arena_rows + ["};"]
    if weight_rows:
        out.append(f"#define EK_MODEL_NUM_WEIGHTS {len(weight_rows)}u")
        out.append(f"static ek_dltensor_t ek_weights[{len(weight_rows)}] = {{")
        out += weight_rows + ["};"]
        out.append(f"static const uint32_t ek_weight_offsets[{len(weight_rows)}] = {{{', '.join(weight_offsets)}}};")
    out.append("")
    return out, ref, len(weight_rows)


def _step_table(graph: AotGraph, layout: AotLayout, ref: dict[int, str]) -> list[str]:
    """Each call's argument array and ``ek_steps``: kernel, arguments, workspace slice."""
    out, steps = [], []
    for i, call in enumerate(graph.calls):
        args = ", ".join(f"EK_ARG({ref[a]})" for a in call.args)
        out.append(f"static const ek_ffi_any_t ek_args{i}[{len(call.args)}] = {{{args}}};")
        ws_off, ws_bytes = layout.workspace[i]
        fn = call.func if call.extern else f"{KERNEL_PREFIX}{call.func}"
        steps.append(
            f"  {{{fn}, ek_args{i}, {len(call.args)}, {ws_off}u, {ws_bytes}u}}, /* {i} */"
        )
    out += ["", f"#define EK_MODEL_NUM_STEPS {len(steps)}u", f"static const ek_step_t ek_steps[{len(steps)}] = {{"]
    return out + steps + ["};", ""]


def _model_info(graph: AotGraph, layout: AotLayout) -> list[str]:
    """``ek_model_info``: sizes and the inputs' and outputs' arena offsets."""

    def table(name: str, values: list[int]) -> str:
        return f"static const uint32_t {name}[{max(len(values), 1)}] = {{{', '.join(map(str, values)) or '0'}}};"

    ins, outs = graph.inputs, graph.outputs
    return [
        table("ek_input_offsets", [layout.tensor_offsets[t] for t in ins]),
        table("ek_input_bytes", [graph.tensors[t].nbytes for t in ins]),
        table("ek_output_offsets", [layout.tensor_offsets[t] for t in outs]),
        table("ek_output_bytes", [graph.tensors[t].nbytes for t in outs]),
        "const ek_model_info_t ek_model_info = {",
        "  EK_MODEL_ARENA_BYTES, EK_MODEL_WEIGHT_BYTES, EK_MODEL_NUM_INPUTS, EK_MODEL_NUM_OUTPUTS,",
        "  ek_input_offsets, ek_input_bytes, ek_output_offsets, ek_output_bytes,",
        "};",
    ]


def _esize(w: StoredWeight) -> int:
    return w.dense_bytes // max(_count(w), 1)


def _count(w: StoredWeight) -> int:
    n = 1
    for d in w.shape:
        n *= d
    return n


def _decode_table(sparse: list[StoredWeight], layout: AotLayout, num_steps: int) -> list[str]:
    """``ek_decodes``: one row per sparse weight, in the order of the calls that need them."""
    if num_steps > 0xFFFF:
        raise CompileError(f"{num_steps} kernel calls do not fit the decode table's 16-bit step field",
                           hint="Store the weights dense (--weight-storage dense).")  # fmt: skip
    rows = []
    for w in sorted(sparse, key=lambda w: (w.decode_step, w.offset)):
        esize = _esize(w)
        if esize > 0xFFFF or _count(w) * esize != w.dense_bytes:
            raise CompileError(f"weight '{w.name}' ({w.dtype}) cannot be stored sparse", hint="Report this as a bug.")
        rows.append(
            f"  {{{w.offset}u, {layout.decoded[w.index]}u, {_count(w)}u, {esize}u, {w.decode_step}u}}, "
            f"/* {_comment(w.name)}: {w.dtype}, {w.stored_bytes} of {w.dense_bytes} bytes */"
        )
    return [
        f"#define EK_MODEL_NUM_DECODES {len(rows)}u",
        "/* A sparse weight: blob offset, arena offset, elements, element size, kernel call it is decoded before. */",
        "typedef struct { uint32_t src, dst, count; uint16_t esize, step; } ek_decode_t;",
        f"static const ek_decode_t ek_decodes[{len(rows)}] = {{",
        *rows,
        "};",
        "",
    ]
