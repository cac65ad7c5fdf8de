"""Build the fused PrimFuncs of a lowered model into one object file.

Kernels are built with TVM's LLVM code generator straight for the device
triple (``riscv32-unknown-elf``, ``thumbv7em-none-eabihf``, or the host for
numerical checks) and written as a relocatable ELF object. Each kernel uses
TVM's packed calling convention (``__tvm_ffi_<name>(self, args, num_args,
result)`` over ``TVMFFIAny`` / ``DLTensor``), the only one TVM 0.27 can emit;
the generated ``model.c`` builds those argument arrays statically.

Two things keep the kernels small enough for a microcontroller:

* an untuned schedule of a conv2d materialises its padded input and its
  pre-activation output as whole-tensor temporaries (tens of KiB each);
  :func:`schedule_for_mcu` inlines injective producers (padding) and moves
  the epilogue (bias, ReLU, residual add) into the innermost spatial loop of
  the reduction, so those temporaries shrink to a few bytes on the stack;
* what still needs a temporary of 1 KiB or more goes through TVM's
  ``TVMBackendAllocWorkspace`` hook; :func:`workspace_bytes` reads the sizes
  from the lowered TIR so the planner can reserve them in the arena.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.compiler.backends.aot_c.lower import tvm_error_line
from edgekit.compiler.backends.aot_c.plan import DEFAULT_ALIGNMENT, align_up
from edgekit.core.errors import CompileError

__all__ = ["KernelBuild", "schedule_for_mcu", "build_kernels", "workspace_bytes", "KERNEL_PREFIX"]

logger = logging.getLogger(__name__)

#: Symbol prefix TVM's packed API gives each kernel.
KERNEL_PREFIX = "__tvm_ffi_"


@dataclass
class KernelBuild:
    """The compiled kernels.

    Attributes:
        object_bytes: A relocatable ELF object with one ``__tvm_ffi_<name>`` per kernel.
        workspace: Kernel name -> bytes of workspace it may request (0 if none).
    """

    object_bytes: bytes
    workspace: dict[str, int]


def schedule_for_mcu(func: Any) -> Any:
    """Inlines producers and fuses epilogues of one PrimFunc (see module doc).

    Any step the schedule rejects is skipped: the result is always a valid,
    if possibly less compact, kernel.
    """
    from tvm import s_tir
    from tvm.s_tir.dlight.analysis import normalize_prim_func
    from tvm.s_tir.dlight.base import try_inline

    try:
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
    except Exception:  # a PrimFunc dlight cannot analyse: leave it as it is
        return func
    if infos is None:
        return func
    if any(info.is_reduction() and not any(it.kind == "R" for it in info.iters) for info in infos):
        # A reduction whose reduction axes all have extent 1 (a Gemm with
        # K = 1) loses them in normalization; TVM's reverse_compute_inline
        # then copies the epilogue into both its init and its update, so a
        # bias was added twice (found by fuzz/differential.py). Keep the
        # kernel as TVM wrote it.
        return func
    rest = try_inline(sch, infos)
    for block, consumer in zip(rest, rest[1:]):
        if not (block.is_reduction() and consumer.is_injective()):
            continue
        spatial = sum(1 for it in block.iters if it.kind == "S")
        if spatial == 0:
            continue
        try:
            loops = sch.get_loops(block.block_rv)
            sch.reverse_compute_at(consumer.block_rv, loops[spatial - 1])
        except Exception as exc:  # not every epilogue can move; keep it separate
            logger.debug("epilogue not fused: %s", tvm_error_line(exc))
    return sch.mod["main"]


def _workspace_of(func: Any) -> int:
    import tvm
    import tvm_ffi

    sizes: list[int] = []
    unknown: list[str] = []

    def visit(call: Any) -> None:
        if isinstance(call.op, tvm.ir.Op) and call.op.name.endswith("TVMBackendAllocWorkspace"):
            try:
                sizes.append(int(call.args[2]))
            except (TypeError, ValueError):
                unknown.append(str(call.args[2]))

    tvm_ffi.structural_walk(func.body, [(tvm.ir.Call, visit)], order="post")
    if unknown:
        raise CompileError(
            f"a kernel asks for a workspace of dynamic size ({unknown[0]})",
            hint="Only static shapes can run on a microcontroller; fix the input shapes.",
        )
    # The device allocator is a LIFO bump allocator (TIR frees in reverse
    # allocation order), so the sum of all requests is an upper bound.
    return sum(align_up(s, DEFAULT_ALIGNMENT) for s in sizes)


def workspace_bytes(host_mod: Any) -> dict[str, int]:
    """Workspace upper bound per kernel of a finalized (lowered) TIR module."""
    out: dict[str, int] = {}
    for gv, func in host_mod.functions.items():
        name = str(func.attrs.get("global_symbol", gv.name_hint)) if func.attrs else gv.name_hint
        out[name.removeprefix(KERNEL_PREFIX)] = _workspace_of(func)
    return out


def build_kernels(
    lowered: Any, names: list[str], tvm_target: Any, *, disable_asserts: bool = True, schedule: bool = True
) -> KernelBuild:
    """Builds the PrimFuncs ``names`` of ``lowered`` into one object for ``tvm_target``.

    Args:
        lowered: Module from :func:`edgekit.compiler.backends.aot_c.lower.lower_for_aot`.
        names: Kernels ``main`` calls (others are left out of the object).
        tvm_target: An LLVM target (host or bare-metal triple).
        disable_asserts: Drop the argument checks of the packed API (dtype,
            shape, alignment of every ``DLTensor``). ``model.c`` builds those
            arguments itself from the same plan, and the checks cost code size.
        schedule: Apply :func:`schedule_for_mcu` (turn off only to exercise
            the workspace path, or to compare).

    Raises:
        CompileError: when TVM cannot build a kernel.
    """
    import tvm
    from tvm import tirx

    if tvm_target.kind.name != "llvm":
        raise CompileError(
            f"the AOT backend builds kernels with LLVM, the target kind is '{tvm_target.kind.name}'",
            hint='Use a target with kind = "llvm" and the device triple (see targets/rv32imf-baremetal.toml).',
        )
    tir_build = importlib.import_module("tvm.tirx.build")
    funcs = {}
    for gv, func in lowered.functions.items():
        if gv.name_hint in names:
            funcs[gv] = (schedule_for_mcu(func) if schedule else func).with_attr("global_symbol", gv.name_hint)
    missing = sorted(set(names) - {gv.name_hint for gv in funcs})
    if missing:
        raise CompileError(f"kernels missing from the lowered model: {', '.join(missing)}", hint="Report this as a bug.")
    try:
        with tvm.transform.PassContext(opt_level=3, config={"tirx.disable_assert": disable_asserts}):
            mod = tirx.transform.BindTarget(tvm_target.with_host(tvm_target))(tvm.IRModule(funcs))
            pipeline, finalize_host, _ = tirx.get_tir_pipeline("s_tir")
            mod = pipeline(mod)
            host_mod, device_mods = tir_build.split_host_device_mods(mod)
            if any(len(m.functions) for m in device_mods.values()):
                raise CompileError("kernels were split into host and device parts", hint="Use a CPU target.")
            host_mod = finalize_host()(host_mod)
            workspace = workspace_bytes(host_mod)
            runtime_mod = tir_build.codegen_build(host_mod, tvm_target)
    except CompileError:
        raise
    except Exception as exc:
        raise CompileError(
            f"TVM could not build the kernels for {tvm_target.attrs.get('mtriple', 'the host')}: {tvm_error_line(exc)}",
            hint="Run with --debug for TVM's full message, or report the model.",
        ) from exc

    import tempfile

    with tempfile.TemporaryDirectory(prefix="edgekit-aot-") as tmp:
        path = Path(tmp) / "kernels.o"
        runtime_mod.write_to_file(str(path))
        data = path.read_bytes()
    logger.info("built %d kernels: %d bytes of object code", len(funcs), len(data))
    return KernelBuild(object_bytes=data, workspace=workspace)
