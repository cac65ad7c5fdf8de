"""Which x86 instruction-set extensions this machine has, and which a target's code may use.

Code compiled for an LLVM CPU (``mcpu``) may use every extension LLVM lists
for that CPU; run on a machine without one of them it stops with an illegal
instruction (SIGILL), which no Python code can catch. A target's extensions
come from LLVM itself (:func:`tvm.target.codegen.llvm_get_cpu_features`, which
honours ``mattr``); this machine's from Linux (``/proc/cpuinfo``).

``EDGEKIT_TEST_HOST_FLAGS`` (flags as Linux spells them, comma- or
space-separated) replaces ``/proc/cpuinfo``: the test suite then runs as on a
CPU with only those extensions (docs/testing.md).
"""

from __future__ import annotations

import os
import platform
import re
from typing import Any

__all__ = ["TEST_FLAGS_ENV", "canonical_arch", "host_arch", "host_features", "host_flags", "isa_features", "missing_features",
           "native_mattr", "runs_here"]  # fmt: skip

#: Environment variable that replaces this machine's CPU flags (Linux names).
TEST_FLAGS_ENV = "EDGEKIT_TEST_HOST_FLAGS"

# Linux names a few extensions differently from LLVM (arch/x86/include/asm/
# cpufeatures.h); the others match once '_', '-' and '.' are dropped. No
# installed library maps one onto the other, hence this table.
_LINUX_TO_LLVM = {"pni": "sse3", "bmi1": "bmi", "abm": "lzcnt", "pclmulqdq": "pclmul", "sha_ni": "sha"}

# LLVM lists tuning properties ("fast-gather", "slow-pmullq", "prefer-256-bit")
# among a CPU's features. These families are the instruction sets its code
# generator emits from ordinary code or edgekit's intrinsics.
_ISA = re.compile(r"(sse|ssse3|avx|amx|fma|f16c|bmi|lzcnt|popcnt|movbe|gfni|vaes|vpclmulqdq|pclmul|aes|sha|adx)")

_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}


def _key(name: str) -> str:
    return re.sub(r"[._-]", "", name)


def host_flags() -> frozenset[str]:
    """This CPU's flags as Linux names them (``avx512_vnni``): ``EDGEKIT_TEST_HOST_FLAGS`` if set, empty if unknown."""
    forced = os.environ.get(TEST_FLAGS_ENV)
    if forced is not None:
        return frozenset(forced.replace(",", " ").split())
    try:
        with open("/proc/cpuinfo") as f:
            return frozenset(next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), []))
    except OSError:
        return frozenset()


def host_features() -> frozenset[str]:
    """:func:`host_flags` in LLVM's spelling without separators (``avx512vnni``, ``sse42``, ``amxint8``)."""
    return frozenset(_key(_LINUX_TO_LLVM.get(f, f)) for f in host_flags())


def _is_x86(target: Any) -> bool:
    triple = str(target.attrs.get("mtriple", "") or "")
    return triple.startswith(("x86_64", "i686", "i386")) or (not triple and host_arch() == "x86_64")


def canonical_arch(name: str) -> str:
    """An architecture as this module names it: ``amd64``/``x64`` -> ``x86_64``, ``arm64`` -> ``aarch64``."""
    name = name.lower()
    return _ARCH_ALIASES.get(name, name)


def host_arch() -> str:
    """This machine's architecture (:func:`canonical_arch` of :func:`platform.machine`)."""
    return canonical_arch(platform.machine())


def isa_features(target: Any) -> frozenset[str]:
    """The x86 instruction-set extensions code for ``target`` (a :class:`tvm.target.Target`) may use (LLVM's names).

    Empty for a target that is not x86 or not LLVM.
    """
    from tvm.target.codegen import llvm_get_cpu_features

    if target.kind.name != "llvm" or not _is_x86(target):
        return frozenset()
    return frozenset(f for f in llvm_get_cpu_features(target) if _ISA.match(f))


def missing_features(target: Any, have: frozenset[str] | None = None) -> list[str]:
    """The extensions of ``target``'s code missing from ``have`` (default: :func:`host_features`), sorted."""
    have = host_features() if have is None else have
    return sorted(f for f in isa_features(target) if _key(f) not in have)


def native_mattr(cpu: str) -> list[str]:
    """``mattr`` entries (``-avx512fp16``) that take from LLVM's ``cpu`` what this machine lacks.

    ``mcpu=native`` resolves to a CPU *name* (LLVM's guess from the CPU's
    family and model); a virtual machine often hides some of that CPU's
    extensions (AMX, AVX-512) from its guests, and code using them would
    stop with an illegal instruction. Empty where this machine's flags are
    unknown (no ``/proc/cpuinfo``): the name is then all there is to go by.
    """
    import tvm

    if not host_flags():
        return []
    return [f"-{f}" for f in missing_features(tvm.target.Target({"kind": "llvm", "mcpu": cpu}))]


def runs_here(target: Any) -> bool:
    """True when code built for ``target`` (a :class:`tvm.target.Target`) can run on this machine.

    The target's triple must be this machine's ISA, and on x86 every
    instruction-set extension of its code must be here. For another ISA only
    code for the machine's own CPU (no ``mcpu``) is trusted: no feature check
    is written for it.
    """
    if target.kind.name != "llvm":
        return False
    triple = str(target.attrs.get("mtriple", "") or "")
    if triple and _ARCH_ALIASES.get(triple.split("-")[0], triple.split("-")[0]) != host_arch():
        return False
    if host_arch() != "x86_64":
        from tvm.target.codegen import llvm_get_system_cpu

        mcpu = str(target.attrs.get("mcpu", "") or "")
        return mcpu in ("", llvm_get_system_cpu()) and not list(target.attrs.get("mattr", []) or [])
    return bool(host_flags()) and not missing_features(target)
