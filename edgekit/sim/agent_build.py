"""Builds the device agent from ``firmware_stubs/`` for one port.

``firmware_stubs/boards.toml`` lists, per port, the sources, compiler target
flags and linker script; this module turns that list into a compiler call.
Used by the simulators' tests and by the POSIX agent; the package link step
(``edgekit.compiler.firmware``) reads the same file. Outputs are cached by a
hash of every input, so a test session builds each image once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from edgekit.core.resources import data_dir
from edgekit.core.errors import CompileError, ConfigError

__all__ = ["PortSpec", "firmware_stubs_dir", "load_port", "port_for_board", "build_agent", "build_blob_agent", "cache_dir"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PortSpec:
    """One ``[ports.NAME]`` table of ``boards.toml`` merged with ``[common]``.

    Attributes:
        name: Port name (``posix``, ``rv32-sim``, ``stm32h7``).
        boards: Board profiles this port serves.
        compiler: ``host`` (system cc, else zig) or ``zig``.
        target_flags: Compiler target selection.
        sources / include_dirs / linker_script: Absolute paths.
        cflags / ldflags: Extra flags.
        output: File name of the image.
        raw: The whole table, for simulator-only keys (memory map, UART).
    """

    name: str
    boards: tuple[str, ...]
    compiler: str
    target_flags: tuple[str, ...]
    sources: tuple[Path, ...]
    include_dirs: tuple[Path, ...]
    linker_script: Path | None
    cflags: tuple[str, ...]
    ldflags: tuple[str, ...]
    output: str
    raw: dict[str, Any]


def firmware_stubs_dir() -> Path:
    """The ``firmware_stubs`` folder: installed package data, else the source tree."""
    path = data_dir("firmware_stubs")
    if not (path / "boards.toml").is_file():
        raise ConfigError(
            f"firmware sources not found (looked for {path}/boards.toml)",
            hint="Reinstall edgekit; its wheel ships firmware_stubs/.",
        )
    return path


def _boards_toml() -> tuple[Path, dict[str, Any]]:
    root = firmware_stubs_dir()
    with open(root / "boards.toml", "rb") as fh:
        return root, tomllib.load(fh)


def load_port(name: str) -> PortSpec:
    """Reads one port's description.

    Raises:
        ConfigError: unknown port (the message lists the known ones).
    """
    root, data = _boards_toml()
    ports = data.get("ports", {})
    if name not in ports:
        raise ConfigError(f"unknown firmware port '{name}'", hint=f"Choose one of: {', '.join(sorted(ports))}.")
    common, port = data.get("common", {}), ports[name]
    script = port.get("linker_script", "")
    return PortSpec(
        name=name,
        boards=tuple(port.get("boards", [])),
        compiler=port.get("compiler", "zig"),
        target_flags=tuple(port.get("target_flags", [])),
        sources=tuple(root / s for s in [*common.get("sources", []), *port.get("sources", [])]),
        include_dirs=tuple(root / d for d in common.get("include_dirs", [])),
        linker_script=root / script if script else None,
        cflags=tuple([*common.get("cflags", []), *port.get("cflags", [])]),
        ldflags=tuple(port.get("ldflags", [])),
        output=port.get("output", "firmware.elf"),
        raw=dict(port),
    )


def port_for_board(board_name: str) -> PortSpec:
    """The port whose ``boards`` list names ``board_name``.

    Raises:
        ConfigError: no port serves that board.
    """
    _, data = _boards_toml()
    for name, port in data.get("ports", {}).items():
        if board_name in port.get("boards", []):
            return load_port(name)
    raise ConfigError(
        f"no firmware port for board '{board_name}'",
        hint="Add a [ports.NAME] table listing the board in firmware_stubs/boards.toml.",
    )


def cache_dir() -> Path:
    """Where built agents are cached (``EDGEKIT_CACHE`` or ``~/.cache/edgekit``)."""
    base = os.environ.get("EDGEKIT_CACHE") or os.path.join(Path.home(), ".cache", "edgekit")
    return Path(base) / "agents"


def _compiler(spec: PortSpec) -> list[str]:
    if spec.compiler == "host":
        cc = os.environ.get("CC") or shutil.which("cc")
        if cc:
            return [cc]
    return [sys.executable, "-m", "ziglang", "cc"]


def build_agent(port: str, model_sources: Sequence[Path], *, extra_cflags: Sequence[str] = ()) -> Path:
    """Compiles and links the agent for ``port`` with a model implementation.

    Args:
        port: Port name from ``boards.toml``.
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
    key = hashlib.sha256()
    cmd_tail = [*spec.target_flags, *spec.cflags, *extra_cflags, *spec.ldflags]
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
    cmd = [*_compiler(spec), *spec.target_flags, *spec.cflags, *extra_cflags]
    cmd += [f"-I{d}" for d in spec.include_dirs]
    cmd += [str(p) for p in [*spec.sources, *model_sources]]
    if spec.linker_script:
        cmd.append(f"-Wl,-T,{spec.linker_script}")
    cmd += [*spec.ldflags, "-o", str(tmp / spec.output)]
    logger.debug("building agent: %s", " ".join(cmd))
    env = dict(os.environ)
    env.setdefault("ZIG_GLOBAL_CACHE_DIR", str(cache_dir().parent / "zig"))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
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
