"""Emit ``model.c`` / ``model.h``: the model as static C over TVM's kernels.

The generated C implements ``firmware_stubs/include/ek_model.h``:
``ek_model_info``, ``ek_arena`` and ``ek_model_run(weights)``. It has no heap,
no TVM runtime and no libc beyond what the kernels themselves use
(``memcpy``/``memset``). Every kernel call is a row of a constant table: the
kernel, its constant ``TVMFFIAny`` argument array pointing at constant
``DLTensor`` descriptors in the arena, and the slice of the arena its
workspace may use. Only the descriptors of weights live in RAM, because
their data pointer is known only when ``ek_model_run`` receives the blob.

The ``DLTensor`` and ``TVMFFIAny`` layouts are written out by hand (they are
the stable DLPack and tvm-ffi C ABIs) so that the generated C needs no TVM
header on the device build.
"""

from __future__ import annotations

import logging
import re

from edgekit.compiler.aot_graph import AotGraph, TensorInfo
from edgekit.compiler.aot_kernels import KERNEL_PREFIX
from edgekit.compiler.aot_layout import AotLayout
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

_RUN = """\
int32_t ek_model_run(const uint8_t *weights) {
  uint32_t i;
{weights_setup}  for (i = 0; i < EK_MODEL_NUM_STEPS; ++i) {
    const ek_step_t *step = &ek_steps[i];
    ek_ffi_any_t result = {0, 0u, {0}};
    ek_ws_base = ek_arena + step->ws_offset;
    ek_ws_size = step->ws_bytes;
    ek_ws_top = 0u;
    ek_ws_depth = 0u;
    if (step->fn((void *)0, step->args, step->num_args, &result) != 0) return (int32_t)(i + 1u);
  }
  return 0;
}
"""

_WEIGHTS_SETUP = """\
  if (weights == (const uint8_t *)0 || ((uintptr_t)weights & (EK_MODEL_ALIGNMENT - 1u)) != 0u)
    return EK_MODEL_ERR_WEIGHTS_ALIGN;
  for (i = 0; i < EK_MODEL_NUM_WEIGHTS; ++i) ek_weights[i].data = (void *)(weights + ek_weight_offsets[i]);
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
    out: list[str] = [
        f"/* model.c - generated by edgekit for model '{_comment(model_name)}'. Do not edit.",
        f" * {len(graph.calls)} kernel calls, arena {layout.arena_bytes} bytes, weights {layout.weight_bytes} bytes. */",
        "#include <stddef.h>",
        "#include <stdint.h>",
        '#include "model.h"',
        "",
        _ABI,
    ]
    for name in graph.kernel_names():
        out.append(
            f"extern int32_t {KERNEL_PREFIX}{name}(void *self, const ek_ffi_any_t *args, int32_t num_args, "
            "ek_ffi_any_t *result);"
        )
    out += ["", f"uint8_t ek_arena[EK_MODEL_ARENA_BYTES] __attribute__((aligned({layout.plan.alignment})));", ""]

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
        if info.kind == "weight":
            ref[t] = f"&ek_weights[{len(weight_rows)}]"
            weight_rows.append(f"  {_tensor_init(info, '(void *)0', shape_name)}, /* {_describe(info)} */")
            weight_offsets.append(str(layout.weight_offsets[t]))
        else:
            ref[t] = f"&ek_tensors[{len(arena_rows)}]"
            data = f"ek_arena + {layout.tensor_offsets[t]}"
            arena_rows.append(f"  {_tensor_init(info, data, shape_name)}, /* {_describe(info)} */")
    out.append(f"static const ek_dltensor_t ek_tensors[{len(arena_rows)}] = {{")
    out += arena_rows + ["};"]
    if weight_rows:
        out.append(f"#define EK_MODEL_NUM_WEIGHTS {len(weight_rows)}u")
        out.append(f"static ek_dltensor_t ek_weights[{len(weight_rows)}] = {{")
        out += weight_rows + ["};"]
        out.append(f"static const uint32_t ek_weight_offsets[{len(weight_rows)}] = {{{', '.join(weight_offsets)}}};")
    out.append("")

    steps = []
    for i, call in enumerate(graph.calls):
        args = ", ".join(f"EK_ARG({ref[a]})" for a in call.args)
        out.append(f"static const ek_ffi_any_t ek_args{i}[{len(call.args)}] = {{{args}}};")
        ws_off, ws_bytes = layout.workspace[i]
        steps.append(
            f"  {{{KERNEL_PREFIX}{call.func}, ek_args{i}, {len(call.args)}, {ws_off}u, {ws_bytes}u}}, /* {i} */"
        )
    out += ["", f"#define EK_MODEL_NUM_STEPS {len(steps)}u", f"static const ek_step_t ek_steps[{len(steps)}] = {{"]
    out += steps + ["};", ""]

    def table(name: str, values: list[int]) -> str:
        return f"static const uint32_t {name}[{max(len(values), 1)}] = {{{', '.join(map(str, values)) or '0'}}};"

    ins, outs = graph.inputs, graph.outputs
    out += [
        table("ek_input_offsets", [layout.tensor_offsets[t] for t in ins]),
        table("ek_input_bytes", [graph.tensors[t].nbytes for t in ins]),
        table("ek_output_offsets", [layout.tensor_offsets[t] for t in outs]),
        table("ek_output_bytes", [graph.tensors[t].nbytes for t in outs]),
        "const ek_model_info_t ek_model_info = {",
        "  EK_MODEL_ARENA_BYTES, EK_MODEL_WEIGHT_BYTES, EK_MODEL_NUM_INPUTS, EK_MODEL_NUM_OUTPUTS,",
        "  ek_input_offsets, ek_input_bytes, ek_output_offsets, ek_output_bytes,",
        "};",
        "",
        _WORKSPACE,
        _RUN.replace("{weights_setup}", _WEIGHTS_SETUP if weight_rows else "  (void)weights;\n"),
    ]
    return "\n".join(out)
