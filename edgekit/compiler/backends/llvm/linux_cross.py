"""Cross-compilation for 64-bit Linux boards (``aarch64``, ``riscv64``) with ``ziglang``.

A Linux board gets a *static runner executable* built around edgekit's
standalone C output (:func:`edgekit.compiler.backends.aot_c.pipeline.compile_aot` with the board's
LLVM target): ``model.c`` + ``kernels.o`` for the board's triple, linked by
``zig cc -target <arch>-linux-musl -static`` with :data:`RUNNER_C`, a small
hand-written driver. No system toolchain, sysroot or TVM runtime is needed on
the build machine or on the board: the package carries one self-contained
executable plus ``weights.bin``.

Why not the TVM C++ runtime built for the board from the wheel's sources: it
is a C++17 code base (plus ``tvm-ffi``) that would have to be compiled per
target with zig's ``c++`` on every build machine, needs ``dlopen`` of the
model library (so a target sysroot for qemu-user in CI), and ships megabytes
to each board. The static runner is ~1 MB, runs unchanged under qemu-user,
over SSH and behind an RPC server, and runs exactly the code the MCU path
already validates. Its cost: kernels run on one core (no TVM thread pool),
see docs/linux-boards.md.

The runner's command line::

    runner WEIGHTS WARMUP RUNS IN_0 ... IN_n OUT_0 ... OUT_m

It copies each input into the arena before every run (the planner may reuse
input memory for intermediates), times each ``ek_model_run`` with
``clock_gettime(CLOCK_MONOTONIC)``, prints ``ek_ns <nanoseconds>`` per timed
run on stdout and writes the outputs of the last run.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.compiler import firmware
from edgekit.compiler.backend import BuildResult, CompileOptions, ProgressFn, check_operators, refuse_tuning
from edgekit.core.errors import CompileError
from edgekit.package.sections import LinuxSection

if TYPE_CHECKING:
    from edgekit.core.profiles import Board, Target
    from edgekit.frontend.loader import PreparedModel

__all__ = [
    "build",
    "linux_arch",
    "zig_flags",
    "link_runner",
    "supports",
    "RUNNER_C",
    "RUNTIME",
    "RUNNER_MEMBER",
    "WEIGHTS_MEMBER",
    "LINUX_ARCHES",
]

logger = logging.getLogger(__name__)

#: Manifest ``runtime`` of packages built here (see :mod:`edgekit.runtime.linux_runner`).
RUNTIME = "linux-aot"
RUNNER_MEMBER = "bin/runner"
WEIGHTS_MEMBER = "weights.bin"

#: ISA (``target.isa``) -> zig/musl architecture name. Only 64-bit Linux
#: boards are handled here; 32-bit Arm Linux hosts belong to the NPU boards.
LINUX_ARCHES = {"aarch64": "aarch64", "riscv64": "riscv64"}

# Hand-written: the device-side driver. Kept free of anything but C11 +
# POSIX clock_gettime so musl links it statically for every architecture.
RUNNER_C = r"""/* edgekit Linux runner: runner WEIGHTS WARMUP RUNS IN... OUT... */
#define _POSIX_C_SOURCE 199309L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "model.h"

static int read_file(const char *path, uint8_t *dst, uint32_t n) {
  FILE *f = fopen(path, "rb");
  size_t got;
  if (!f) return -1;
  got = fread(dst, 1, n, f);
  fclose(f);
  return got == n ? 0 : -1;
}

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int main(int argc, char **argv) {
  const uint32_t ni = ek_model_info.num_inputs, no = ek_model_info.num_outputs, nw = ek_model_info.weight_bytes;
  uint8_t *weights, **inputs;
  long warmup, runs, r;
  uint32_t i;
  if (argc != 4 + (int)(ni + no)) {
    fprintf(stderr, "usage: %s WEIGHTS WARMUP RUNS IN(x%u) OUT(x%u)\n", argv[0], (unsigned)ni, (unsigned)no);
    return 2;
  }
  warmup = strtol(argv[2], NULL, 10);
  runs = strtol(argv[3], NULL, 10);
  if (warmup < 0 || runs < 1) { fprintf(stderr, "need WARMUP >= 0 and RUNS >= 1\n"); return 2; }
  weights = aligned_alloc(EK_MODEL_ALIGNMENT, nw ? (nw + EK_MODEL_ALIGNMENT - 1u) / EK_MODEL_ALIGNMENT * EK_MODEL_ALIGNMENT : EK_MODEL_ALIGNMENT);
  if (!weights || (nw && read_file(argv[1], weights, nw))) { fprintf(stderr, "cannot read weights %s\n", argv[1]); return 3; }
  inputs = calloc(ni ? ni : 1u, sizeof(*inputs));
  for (i = 0; i < ni; ++i) {
    inputs[i] = malloc(ek_model_info.input_bytes[i] ? ek_model_info.input_bytes[i] : 1u);
    if (!inputs[i] || read_file(argv[4 + i], inputs[i], ek_model_info.input_bytes[i])) {
      fprintf(stderr, "cannot read input %s (%u bytes expected)\n", argv[4 + i], (unsigned)ek_model_info.input_bytes[i]);
      return 3;
    }
  }
  for (r = 0; r < warmup + runs; ++r) {
    int64_t t0, t1;
    int32_t rc;
    for (i = 0; i < ni; ++i) memcpy(ek_arena + ek_model_info.input_offsets[i], inputs[i], ek_model_info.input_bytes[i]);
    t0 = now_ns();
    rc = ek_model_run(weights);
    t1 = now_ns();
    if (rc != 0) { fprintf(stderr, "ek_model_run returned %d\n", (int)rc); return 4; }
    if (r >= warmup) printf("ek_ns %lld\n", (long long)(t1 - t0));
  }
  for (i = 0; i < no; ++i) {
    FILE *f = fopen(argv[4 + ni + i], "wb");
    if (!f || fwrite(ek_arena + ek_model_info.output_offsets[i], 1, ek_model_info.output_bytes[i], f) != ek_model_info.output_bytes[i]) {
      fprintf(stderr, "cannot write output %s\n", argv[4 + ni + i]);
      return 5;
    }
    fclose(f);
  }
  fflush(stdout);
  return 0;
}
"""


def linux_arch(target: "Target") -> str | None:
    """The zig architecture of a Linux ``target``, or None when it is not one
    this module cross-compiles for (bare-metal, another OS, 32-bit)."""
    if target.codegen != "llvm":
        return None
    spec = dict(target.tvm)
    triple = str(spec.get("mtriple") or target.triple)
    if triple and "linux" not in triple:
        return None
    return LINUX_ARCHES.get(target.isa.lower())


def supports(target: "Target") -> bool:
    """True when :func:`build` can compile for ``target``."""
    return linux_arch(target) is not None


def zig_flags(target: "Target", tvm_target: Any = None) -> list[str]:
    """``zig cc`` flags for a static musl executable that matches ``target``'s ISA.

    CPU and features come from the resolved TVM target (a tag's ``mcpu`` and
    ``mattr``), so the C driver and the LLVM-built kernels agree on the ISA
    and float ABI (``lp64d`` on riscv64, musl's only ABI there).

    Raises:
        CompileError: when ``target`` is not a 64-bit Linux target.
    """
    arch = linux_arch(target)
    if arch is None:
        raise CompileError(
            f"target '{target.name}' ({target.isa}) is not a 64-bit Linux target",
            hint=f"Linux cross-compilation covers the ISAs {', '.join(sorted(LINUX_ARCHES))}.",
        )
    attrs: dict[str, Any] = {}
    if tvm_target is not None:
        attrs = {k: tvm_target.attrs[k] for k in ("mcpu", "mattr") if k in tvm_target.attrs}
    else:
        attrs = {k: target.tvm[k] for k in ("mcpu", "mattr") if k in target.tvm}
    flags = ["-target", f"{arch}-linux-musl"]
    mcpu = str(attrs.get("mcpu", "") or "")
    # zig spells CPU names with underscores and takes features as +x/-x
    # suffixes; only the ones LLVM also uses as mattr (e.g. +v, +neon) pass.
    features = "".join(str(f) for f in attrs.get("mattr", []) or [] if str(f).startswith(("+", "-")) and str(f) != "+64bit")
    if mcpu and mcpu != "native":
        flags.append(f"-mcpu={mcpu.replace('-', '_')}{features}")
    elif features:
        flags.append(f"-mcpu=baseline{features}")
    return flags


def _baseline_link_flags(flags: list[str]) -> list[str]:
    """``flags`` (from :func:`zig_flags`) without the CPU: what links a runner
    against the architecture's baseline musl."""
    return [f for f in flags if not f.startswith("-mcpu=")]


def link_runner(members: dict[str, bytes], flags: list[str], workdir: Path, *, strip: bool = True) -> bytes:
    """Compiles ``model.c`` and :data:`RUNNER_C` and links them with ``kernels.o``
    into one static executable; returns its bytes.

    ``strip=False`` keeps the symbol table (``benchmarks/requant_forms.py``
    attributes executed instructions to functions with it).

    Raises:
        CompileError: when zig is missing or the compile/link fails.
    """
    toolchain = firmware.find_toolchain(cross=True)
    if toolchain.kind != "zig":
        raise CompileError(
            "cross-compiling for a Linux board needs zig's clang (EDGEKIT_CC names another compiler)",
            hint="Unset EDGEKIT_CC or `pip install ziglang`.",
        )
    workdir.mkdir(parents=True, exist_ok=True)
    for name in ("model/model.c", "model/model.h", "model/kernels.o"):
        (workdir / Path(name).name).write_bytes(members[name])
    (workdir / "runner.c").write_text(RUNNER_C, encoding="utf-8")
    # The C is compiled for the board's CPU; the link takes the architecture's
    # baseline CPU, so zig builds (and caches) musl once per architecture
    # rather than once per board CPU: each such build is 1.5-3 minutes.
    objects = firmware.compile_c(toolchain, [workdir / "model.c", workdir / "runner.c"], workdir / "obj", flags, [workdir])
    exe = firmware.link_image(
        toolchain,
        [*objects, workdir / "kernels.o"],
        workdir / "runner",
        [*_baseline_link_flags(flags), "-static", *(["-s"] if strip else []), "-Wl,--gc-sections", "-lm"],
        freestanding=False,
    )
    return exe.read_bytes()


def build(
    prepared: "PreparedModel",
    board: "Board",
    target: "Target",
    options: CompileOptions,
    progress: ProgressFn,
) -> BuildResult:
    """Compiles ``prepared`` into a static runner executable for a Linux ``board``.

    Raises:
        UnsupportedOpsError: listing every operator TVM cannot import.
        CompileError: when a stage fails, or the target is not a Linux one.
    """
    from edgekit.compiler.backends.aot_c.pipeline import WEIGHTS_BIN, compile_aot

    refuse_tuning(options, "Linux cross builds")
    check_operators(prepared, options, progress)
    tvm_target = target.tvm_target()
    flags = zig_flags(target, tvm_target)
    # Linux has a libm, so exact exp/tanh/erf instead of TVM's polynomials
    # (the bare-metal default): outputs then match onnxruntime to 1e-4.
    artifacts = compile_aot(prepared, tvm_target, opt_level=options.opt_level, fast_math=False, progress=progress)
    members = artifacts.members()
    progress("link", f"linking a static runner for {flags[1]}")
    with tempfile.TemporaryDirectory(prefix="edgekit-linux-") as tmp:
        runner = link_runner(members, flags, Path(tmp))
    members[RUNNER_MEMBER] = runner
    assert WEIGHTS_BIN == WEIGHTS_MEMBER
    memory = {
        "arena_bytes": artifacts.layout.arena_bytes,
        "weight_bytes": artifacts.layout.weight_bytes,
        "code_bytes": len(runner),
        "workspace_bytes": max((b for _, b in artifacts.layout.workspace), default=0),
    }
    logger.debug("linux build for %s (%s): %s", board.name, flags[1], memory)  # compile's summary shows these
    return BuildResult(
        members=members,
        runtime=RUNTIME,
        memory=memory,
        extra_manifest={
            LinuxSection.KEY: LinuxSection(
                runner=RUNNER_MEMBER,
                weights=WEIGHTS_MEMBER,
                arch=flags[1].split("-")[0],
                zig_target=flags[1],
                zig_flags=tuple(flags),
                libc="musl (static)",
                kernel_calls=len(artifacts.graph.calls),
            ).to_json()
        },
    )
