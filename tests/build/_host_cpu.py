"""Which code the build tests may run on this machine: the one place tests ask about the CPU.

A test that *executes* code compiled for an explicit LLVM CPU (``mcpu``) must
first ask :func:`runs_here` (or carry :func:`needs_cpu`): code using an
extension this CPU lacks dies with SIGILL and takes the whole pytest process
down. Tests that only compile and scan the assembly need no guard.

This machine's flags are ``/proc/cpuinfo``'s, or ``EDGEKIT_TEST_HOST_FLAGS``
to run the suite as on another CPU (:data:`AVX2_FLAGS`,
:data:`SAPPHIRE_RAPIDS_FLAGS`; docs/testing.md); the host board's own target
follows them too (:func:`edgekit.core.cpu_features.native_mattr`).
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import tvm

from edgekit.core import cpu_features
from edgekit.core.profiles import load_profiles

#: The x86 extensions of Haswell (AVX2, FMA; no AVX-512), as Linux names them.
AVX2_FLAGS = "sse sse2 pni ssse3 sse4_1 sse4_2 popcnt avx avx2 fma f16c bmi1 bmi2 abm movbe pclmulqdq aes"
#: A Sapphire Rapids Xeon: :data:`AVX2_FLAGS` plus every other extension LLVM's ``sapphirerapids`` has
#: (AVX-512 with VNNI, VBMI, FP16; AVX-VNNI; AMX), in Linux's spelling.
SAPPHIRE_RAPIDS_FLAGS = AVX2_FLAGS + (
    " adx sha_ni gfni vaes vpclmulqdq avx512f avx512dq avx512cd avx512bw avx512vl avx512ifma avx512vbmi"
    " avx512_vbmi2 avx512_vnni avx512_bitalg avx512_vpopcntdq avx512_bf16 avx512_fp16 avx_vnni"
    " amx_tile amx_int8 amx_bf16"
)


def _target(target: str | dict[str, Any] | tvm.target.Target) -> tvm.target.Target:
    if isinstance(target, str):
        return tvm.target.Target({"kind": "llvm", "mcpu": target})
    return target if isinstance(target, tvm.target.Target) else tvm.target.Target(target)


def _name(target: tvm.target.Target) -> str:
    return str(target.attrs.get("mcpu", "") or target)


def runs_here(target: str | dict[str, Any] | tvm.target.Target) -> bool:
    """True when code for ``target`` (an x86 ``mcpu`` name, a target dict or a Target) can run on this CPU."""
    return cpu_features.runs_here(_target(target))


def why_not(target: str | dict[str, Any] | tvm.target.Target) -> str:
    """The skip reason for a test that runs ``target``'s code on a CPU that cannot."""
    t = _target(target)
    forced = os.environ.get(cpu_features.TEST_FLAGS_ENV) is not None
    forced_note = f" ({cpu_features.TEST_FLAGS_ENV} is set)" if forced else ""
    missing = cpu_features.missing_features(t)
    lacks = f": it has no {', '.join(missing)}" if missing else ""
    return f"this CPU{forced_note} cannot run {_name(t)} code{lacks}"


def skip_unless_runs_here(target: str | dict[str, Any] | tvm.target.Target) -> None:
    """``pytest.skip`` (with the missing extensions) unless this CPU runs ``target``'s code."""
    if not runs_here(target):
        pytest.skip(why_not(target))


def needs_cpu(target: str | dict[str, Any] | tvm.target.Target) -> pytest.MarkDecorator:
    """A ``skipif`` mark for a test that runs code compiled for ``target``."""
    runs = runs_here(target)
    return pytest.mark.skipif(not runs, reason="" if runs else why_not(target))


def first_runnable(*mcpus: str) -> str:
    """The first of ``mcpus`` whose code runs here (the first one when none does: a test then skips on it).

    For tests about a class of instruction set rather than one CPU, e.g.
    AVX512-VNNI with VBMI: ``znver4`` or ``icelake-server`` (an Intel CPU
    has no ``sse4a``, which LLVM gives every Zen).
    """
    return next((m for m in mcpus if runs_here(m)), mcpus[0])


def host_target(**attrs: Any) -> tvm.target.Target:
    """The ``host`` board's target (``mcpu=native``: this CPU less what it lacks), plus ``attrs`` (``num-cores``)."""
    profiles = load_profiles()
    spec = profiles.target_of(profiles.board("host")).tvm_target_dict()
    return tvm.target.Target({k: v for k, v in spec.items() if k != "tag"} | attrs)
