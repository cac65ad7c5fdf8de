"""CUDA backend (codegen ``cuda``): NVIDIA GPUs, desktop and Jetson.

The model is imported like the host LLVM backend (weights detached into
``params.bin``), lowered with Relax's ``zero`` pipeline and scheduled for the
GPU with TVM's default dlight rules (``tvm.s_tir.dlight`` in TVM 0.27:
Matmul, GEMV, Reduction, GeneralReduction, then Fallback for the rest), then
built into a Relax VM library whose device code is carried in the module.

No GPU is needed to compile. Device code is compiled from the generated CUDA
source by ``nvcc`` (fatbin) when it is on PATH, else by NVRTC from
``cuda-bindings`` (cubin); with neither, compiling raises a clear error. The
CUDA source also goes into the package (``cuda/kernels.cu``) for inspection.
The host side is exported with zig for the target's host triple (Jetson is
aarch64), or the system compiler for this machine's.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.compiler.backend import (
    CHECK_OPERATORS, BuildResult, CompileOptions, Pass, ProgressFn, check_operators, refuse_tuning,
)
from edgekit.compiler.backends.cuda.section import CudaSection
from edgekit.compiler.backends.llvm.host import LIBRARY_MEMBER, PARAMS_MEMBER, param_key
from edgekit.compiler.importer import tvm_error_line
from edgekit.core.errors import CompileError
from edgekit.package.sections import ParamsSection

if TYPE_CHECKING:
    from edgekit.core.profiles import Board, Target
    from edgekit.frontend.loader import PreparedModel

__all__ = ["build", "import_model", "compile_for_gpu", "export", "gpu_schedule", "cuda_compiler", "PASSES", "RUNTIME", "SOURCE_MEMBER"]

logger = logging.getLogger(__name__)

RUNTIME = "tvm-vm-cuda"
SOURCE_MEMBER = "cuda/kernels.cu"

_HERE = "edgekit.compiler.backends.cuda.pipeline"

#: The steps :func:`build` runs, in order (names are its progress stages).
PASSES: tuple[Pass, ...] = (
    CHECK_OPERATORS,
    Pass("import", "ONNX to Relax with TVM's importer (QDQ stays float), weights detached into params.bin",
         f"{_HERE}:import_model"),
    Pass("build", "Relax 'zero' pipeline, dlight GPU schedules, device code by nvcc or NVRTC",
         f"{_HERE}:compile_for_gpu"),
    Pass("export", "export lib/model.so (host side linked for the board's triple), params.bin, cuda/kernels.cu",
         f"{_HERE}:export"),
)


def cuda_compiler() -> str:
    """``nvcc`` or ``nvrtc``: what turns CUDA source into device code here.

    Raises:
        CompileError: when neither is available.
    """
    mode = os.environ.get("TVM_CUDA_COMPILE_MODE", "").lower()
    if mode in ("nvcc", "nvrtc"):
        return mode
    if shutil.which("nvcc"):
        return "nvcc"
    if importlib.util.find_spec("cuda") is not None and importlib.util.find_spec("cuda.bindings") is not None:
        return "nvrtc"
    raise CompileError(
        "compiling for a GPU needs a CUDA compiler: neither nvcc nor NVRTC (cuda-bindings) was found",
        hint="Install the CUDA toolkit (nvcc on PATH) or `pip install cuda-bindings`; no GPU is needed to compile.",
    )


def gpu_schedule() -> Any:
    """TVM's default dlight GPU rules as one pass."""
    from tvm.s_tir import dlight as dl

    return dl.ApplyDefaultSchedule(dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(),
                                   dl.gpu.GeneralReduction(), dl.gpu.Fallback())


def _zig_shared(command: tuple[str, ...], arch: str) -> Any:
    """An ``export_library`` compile function linking a shared library for
    ``arch``-linux-gnu with zig (the TVM runtime symbols resolve on the board)."""
    import subprocess

    def fcompile(output: str, objects: Any, options: Any = None) -> None:
        objs = [objects] if isinstance(objects, str) else list(objects)
        cmd = [*command, "-target", f"{arch}-linux-gnu", "-shared", "-fPIC", "-o", output, *objs, *(options or [])]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.strip()[:300] or "zig failed")

    fcompile.output_format = "so"  # type: ignore[attr-defined]
    return fcompile


def _export(executable: Any, target: "Target", tmp: Path) -> bytes:
    import platform

    path = tmp / "model.so"
    host = target.tvm_target().host
    triple = str(host.attrs.get("mtriple", "")) if host is not None else ""
    arch = triple.split("-")[0] if triple else ""
    if arch and arch != platform.machine():
        from edgekit.compiler.firmware import find_toolchain

        executable.export_library(str(path), fcompile=_zig_shared(find_toolchain(cross=True).command, arch))
    else:
        executable.export_library(str(path))
    return path.read_bytes()


def _cuda_source(executable: Any) -> str:
    def walk(mod: Any) -> str:
        if getattr(mod, "kind", "") == "cuda" or getattr(mod, "type_key", "") == "cuda":
            return str(mod.inspect_source())
        for sub in getattr(mod, "imports", []) or []:
            text = walk(sub)
            if text:
                return text
        return ""

    try:
        return walk(executable.mod)
    except Exception as exc:  # the source is informational only
        logger.debug("no CUDA source: %s", exc)
        return ""


def import_model(prepared: "PreparedModel") -> tuple[Any, list[Any]]:
    """ONNX to Relax with TVM's importer; returns ``(mod, weights)`` with the weights detached."""
    from tvm.relax.frontend import detach_params
    from tvm.relax.frontend.onnx import from_onnx

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            mod = from_onnx(prepared.model, shape_dict={s.name: list(s.shape) for s in prepared.inputs},
                            dtype_dict={s.name: s.dtype for s in prepared.inputs}, keep_params_in_input=True)
        mod, params = detach_params(mod)
    except Exception as exc:
        raise CompileError(f"TVM could not import model '{prepared.name}': {tvm_error_line(exc)}",
                           hint="Run `edgekit inspect` on the model.") from exc
    return mod, list(params.get("main", []))


def compile_for_gpu(mod: Any, name: str, target: "Target", opt_level: int, compiler: str) -> Any:
    """Relax's ``zero`` pipeline, the dlight GPU schedules and ``tvm.compile``,
    with device code compiled by ``compiler`` (``nvcc`` or ``nvrtc``)."""
    import tvm
    from tvm import relax

    old_mode = os.environ.get("TVM_CUDA_COMPILE_MODE")
    os.environ["TVM_CUDA_COMPILE_MODE"] = compiler
    try:
        tvm_target = target.tvm_target()
        with tvm_target, tvm.transform.PassContext(opt_level=opt_level):
            mod = relax.get_pipeline("zero")(mod)
            mod = gpu_schedule()(mod)
        return tvm.compile(mod, target=tvm_target)
    except Exception as exc:
        raise CompileError(f"TVM could not build model '{name}' for {target.name}: {tvm_error_line(exc)}",
                           hint="Run with --debug for TVM's full message.") from exc
    finally:
        if old_mode is None:
            os.environ.pop("TVM_CUDA_COMPILE_MODE", None)
        else:
            os.environ["TVM_CUDA_COMPILE_MODE"] = old_mode


def export(executable: Any, target: "Target", weights: list[Any]) -> dict[str, bytes]:
    """Package members: the library (host side linked for the board), ``params.bin`` and the CUDA source."""
    import tvm

    with tempfile.TemporaryDirectory(prefix="edgekit-cuda-") as tmp:
        try:
            library = _export(executable, target, Path(tmp))
        except Exception as exc:
            raise CompileError(f"could not export the CUDA library: {tvm_error_line(exc)}",
                               hint="Exporting needs zig (pip install ziglang) or a host C compiler.") from exc
    blob = bytes(tvm.runtime.save_param_dict({param_key(i): w for i, w in enumerate(weights)}))
    members = {LIBRARY_MEMBER: library, PARAMS_MEMBER: blob}
    source = _cuda_source(executable)
    if source:
        members[SOURCE_MEMBER] = source.encode()
    return members


def build(
    prepared: "PreparedModel",
    board: "Board",
    target: "Target",
    options: CompileOptions,
    progress: ProgressFn,
) -> BuildResult:
    """Compiles ``prepared`` for an NVIDIA GPU with dlight schedules.

    Raises:
        UnsupportedOpsError, CompileError: as for the host backend; CompileError
            also when no CUDA compiler is available.
    """
    refuse_tuning(options, "the cuda backend")
    compiler = cuda_compiler()
    check_operators(prepared, options, progress)
    progress("import", "importing into TVM Relax")
    mod, weights = import_model(prepared)
    progress("build", f"scheduling with dlight and building for {target.name} ({compiler})")
    executable = compile_for_gpu(mod, prepared.name, target, options.opt_level, compiler)
    progress("export", "exporting the library and weights")
    members = export(executable, target, weights)
    weight_bytes = sum(int(np.prod(w.shape, dtype=np.int64)) * np.dtype(w.dtype).itemsize for w in weights)
    return BuildResult(
        members=members,
        runtime=RUNTIME,
        memory={"arena_bytes": 0, "weight_bytes": weight_bytes, "code_bytes": len(members[LIBRARY_MEMBER])},
        extra_manifest={
            "entry": "main",
            "library": LIBRARY_MEMBER,
            ParamsSection.KEY: ParamsSection(PARAMS_MEMBER, "tvm-param-dict", len(weights)).to_json(),
            CudaSection.KEY: CudaSection(compiler, "dlight default gpu rules",
                                         SOURCE_MEMBER if SOURCE_MEMBER in members else None).to_json(),
        },
    )
