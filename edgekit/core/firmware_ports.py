"""Firmware ports: which sources, flags and linker script make a device-agent image.

``firmware_stubs/ports.toml`` holds ``[common]`` (agent sources, include
folders, C flags of every image) and one ``[ports.NAME]`` table per port.
A board profile names its port (``firmware = "rv32-sim"``); this module is
the only reader of that file, for the package link step
(:mod:`edgekit.compiler.firmware`) and for the simulators' and tests' agent
builds (:mod:`edgekit.sim.agent_build`) alike.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from edgekit.core.errors import ConfigError
from edgekit.core.registry import Registry
from edgekit.core.resources import data_dir
from edgekit.core.tomlfile import Table, read_toml


class _BoardLike(Protocol):
    """What :func:`port_for_board` reads of a :class:`~edgekit.core.profiles.Board`
    (a protocol, so this module does not import the profiles that import it)."""

    name: str
    firmware: str
    source: str

__all__ = ["PortSpec", "PORTS_FILE", "firmware_stubs_dir", "load_ports", "load_port", "port_for_board"]

#: The port list inside ``firmware_stubs/``.
PORTS_FILE = "ports.toml"
_DOC = "firmware_stubs/README.md"
#: Keys only the simulator reads (memory map, UART, extra regions); kept in ``raw``.
_SIM_KEYS = ("flash_base", "ram_base", "ram_bytes", "uart", "sim_regions")


@dataclass(frozen=True)
class PortSpec:
    """One ``[ports.NAME]`` table merged with ``[common]``.

    Attributes:
        name: Port name (``posix``, ``rv32-sim``, ``stm32h7``).
        target_flags: Compiler target selection; empty for a build for this machine.
        sources / include_dirs / linker_script: Absolute paths.
        cflags: ``[common]`` flags, then the port's.
        ldflags: Link flags.
        output: File name of the image.
        ram_bytes: RAM the image links into when less than the board's (one
            bank of several), else 0.
        raw: The port's table, for the simulator's keys (memory map, UART).
    """

    name: str
    target_flags: tuple[str, ...]
    sources: tuple[Path, ...]
    include_dirs: tuple[Path, ...]
    linker_script: Path | None
    cflags: tuple[str, ...]
    ldflags: tuple[str, ...]
    output: str
    ram_bytes: int
    raw: dict[str, Any]

    @property
    def cross(self) -> bool:
        """Whether the image is built for another machine than this one."""
        return bool(self.target_flags)


def firmware_stubs_dir() -> Path:
    """The ``firmware_stubs`` folder: installed package data, else the source tree."""
    path = data_dir("firmware_stubs")
    if not (path / PORTS_FILE).is_file():
        raise ConfigError(
            f"firmware sources not found (looked for {path}/{PORTS_FILE})",
            hint="Reinstall edgekit; its wheel ships firmware_stubs/.",
        )
    return path


def _check(table: Table, root: Path, key: str, rel: str) -> Path:
    path = root / rel
    if not path.exists():
        raise table.error(key, f"names missing file '{rel}'", f"Fix the path (relative to {root}).")
    return path


def _paths(table: Table, root: Path, key: str) -> tuple[Path, ...]:
    return tuple(_check(table, root, key, rel) for rel in table.strings(key, ()))


_Common = tuple[tuple[Path, ...], tuple[Path, ...], tuple[str, ...]]


def _parse_port(name: str, table: Table, common: _Common, root: Path) -> PortSpec:
    sources, includes, cflags = common
    script = table.get("linker_script", str, "")
    table.seen.update(_SIM_KEYS)
    spec = PortSpec(
        name=name,
        target_flags=table.strings("target_flags", ()),
        sources=sources + _paths(table, root, "sources"),
        include_dirs=includes,
        linker_script=_check(table, root, "linker_script", script) if script else None,
        cflags=cflags + table.strings("cflags", ()),
        ldflags=table.strings("ldflags", ()),
        output=table.get("output", str, "firmware.elf"),
        ram_bytes=table.size("ram_bytes", 0),
        raw=dict(table.data),
    )
    table.done()
    return spec


@functools.lru_cache(maxsize=8)
def load_ports(root: Path | None = None) -> Registry[PortSpec]:
    """Reads ``ports.toml`` under ``root`` (default: the shipped ``firmware_stubs``).

    Raises:
        ConfigError: the file is unreadable, has an unknown key or names a missing file.
    """
    root = firmware_stubs_dir() if root is None else Path(root)
    source = str(root / PORTS_FILE)
    top = Table(read_toml(root / PORTS_FILE, source), source, doc=_DOC)
    common_tab = top.sub("common")
    if common_tab is None:
        common_tab = Table({}, source, "common.", doc=_DOC)
    common = (_paths(common_tab, root, "sources"), _paths(common_tab, root, "include_dirs"), common_tab.strings("cflags", ()))
    common_tab.done()
    ports_tab = top.sub("ports", required=True)
    assert ports_tab is not None
    ports: Registry[PortSpec] = Registry("firmware port")
    for name in ports_tab.data:
        table = ports_tab.sub(name)
        assert table is not None
        ports.register(name, _parse_port(name, table, common, root))
    ports_tab.done()
    top.done()
    return ports


def load_port(name: str, root: Path | None = None) -> PortSpec:
    """One port's description.

    Raises:
        ConfigError: unknown port (the message lists the known ones).
    """
    return load_ports(root).get(name)


def port_for_board(board: _BoardLike, root: Path | None = None) -> PortSpec:
    """The port a board's profile names (``firmware = "..."``).

    Raises:
        ConfigError: the board names no firmware port, or an unknown one.
    """
    if not board.firmware:
        raise ConfigError(
            f"board '{board.name}' names no firmware port",
            hint=f"Add firmware = \"PORT\" to {board.source or 'its profile'} (ports: {', '.join(load_ports(root).available())}).",
        )
    return load_port(board.firmware, root)
