"""Builds the device agent from ``firmware_stubs/`` for one firmware port.

The port's sources, flags and linker script come from
:mod:`edgekit.core.firmware_ports` (``firmware_stubs/ports.toml``, the same
reader the package link step uses), the compiler from
:func:`edgekit.core.toolchain.find_toolchain`. Outputs are cached below
``agents/`` of edgekit's cache root (:mod:`edgekit.core.cache`) by a hash of
every input, so a test session builds each image once.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Sequence

from edgekit.core.cache import cache_dir as _cache_dir
from edgekit.core.errors import CompileError, ConfigError
from edgekit.core.firmware_ports import PortSpec, firmware_stubs_dir, load_port
from edgekit.core.firmware_ports import port_for_board as _port_for_board
from edgekit.core.profiles import Board, load_profiles
from edgekit.core.toolchain import find_toolchain

__all__ = ["PortSpec", "firmware_stubs_dir", "load_port", "port_for_board", "build_agent", "build_blob_agent", "cache_dir"]

logger = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Where built agents are cached: ``agents/`` below edgekit's cache root."""
    return _cache_dir("agents")


def port_for_board(board: Board | str) -> PortSpec:
    """The firmware port a board's profile names; a name is looked up among
    the built-in and ``EDGEKIT_BOARDS`` profiles.

    Raises:
        ConfigError: unknown board, or it names no (or an unknown) firmware port.
    """
    return _port_for_board(load_profiles().board(board) if isinstance(board, str) else board)


def build_agent(port: str, model_sources: Sequence[Path], *, extra_cflags: Sequence[str] = ()) -> Path:
    """Compiles and links the agent for ``port`` with a model implementation.

    Args:
        port: Port name from ``ports.toml``.
        model_sources: C sources (or objects) implementing ``ek_model.h``.
        extra_cflags: Added after the port's flags (e.g. ``-DNAME=value``).

    Returns:
        Path of the cached image (executable or ELF).

    Raises:
        CompileError: the compiler failed; the message carries its output.
    """
    spec = load_port(port)
    inputs = [*spec.sources, *map(Path, model_sources)]
    if spec.linker_script:
        inputs.append(spec.linker_script)
    headers = sorted(p for d in spec.include_dirs for p in d.glob("*.h"))
    toolchain = find_toolchain(cross=spec.cross)
    key = hashlib.sha256()
    cmd_tail = [*toolchain.command, *spec.target_flags, *spec.cflags, *extra_cflags, *spec.ldflags]
    key.update(repr(cmd_tail).encode())
    for path in [*inputs, *headers]:
        key.update(str(path.name).encode())
        key.update(path.read_bytes())
    out_dir = cache_dir() / f"{port}-{key.hexdigest()[:16]}"
    out = out_dir / spec.output
    if out.is_file():
        return out
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent))
    cmd = [*toolchain.command, *spec.target_flags, *spec.cflags, *extra_cflags]
    cmd += [f"-I{d}" for d in spec.include_dirs]
    cmd += [str(p) for p in [*spec.sources, *model_sources]]
    if spec.linker_script:
        cmd.append(f"-Wl,-T,{spec.linker_script}")
    cmd += [*spec.ldflags, "-o", str(tmp / spec.output)]
    logger.debug("building agent: %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=toolchain.env())
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CompileError(
            f"building the {port} agent failed:\n{proc.stderr.strip()[-4000:]}",
            hint="Check the model sources against firmware_stubs/include/ek_model.h.",
            port=port,
        )
    try:
        tmp.rename(out_dir)
    except OSError:  # another process built it first
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def build_blob_agent(port: str, weight_bytes: int) -> Path:
    """Builds the agent with ``test_model/blob_model.c``: a model that only
    holds a ``weight_bytes``-byte image (for transfer and fault tests).

    For the POSIX port the storage is sized so one slot holds the image.

    Raises:
        CompileError: the compiler failed.
        ConfigError: ``weight_bytes`` is not positive.
    """
    if weight_bytes < 1:
        raise ConfigError(f"weight_bytes={weight_bytes} must be positive", hint="Pass the image size in bytes.")
    flags = [f"-DEK_BLOB_BYTES={int(weight_bytes)}u"]
    if port == "posix":
        slot = max(1 << 20, (weight_bytes + 64 + 4095) // 4096 * 4096)
        flags.append(f"-DEK_POSIX_STORAGE_BYTES=(2u*{slot}u)")
    return build_agent(port, [firmware_stubs_dir() / "test_model" / "blob_model.c"], extra_cflags=flags)
