"""Board profiles and compilation targets, loaded from TOML into frozen dataclasses.

Boards and targets are data (``board_configs/*.toml``, ``targets/*.toml``). A
profile is validated when it is loaded: an unknown key, a wrong type or a
reference to a missing target raises :class:`ConfigError` naming the file and
the key. Users add their own folders with ``EDGEKIT_BOARDS`` /
``EDGEKIT_TARGETS`` (``os.pathsep``-separated) or ``--boards-dir``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

from edgekit.core.errors import BoardNotFoundError, ConfigError
from edgekit.core.registry import Registry
from edgekit.core.resources import data_dir

__all__ = [
    "Target",
    "Board",
    "MemoryConfig",
    "TransportConfig",
    "SimulatorConfig",
    "NpuConfig",
    "FpgaConfig",
    "ProfileSet",
    "load_profiles",
    "get_board",
    "list_boards",
    "parse_size",
    "CODEGENS",
    "TRANSPORTS",
    "SIMULATORS",
]

logger = logging.getLogger(__name__)

CODEGENS = ("llvm", "cuda", "aot-c", "npu")
TRANSPORTS = ("local", "serial", "ssh", "rpc", "sim")
SIMULATORS = ("native", "unicorn", "qemu-user", "npu", "none")
FPGA_FAMILIES = ("ecp5",)
#: Simulators that count cycles: every run of the same inputs measures the
#: same, so one run is the measurement (qemu-user runs in wall-clock time).
DETERMINISTIC_SIMULATORS = ("unicorn", "npu")

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_size(value: int | str, *, where: str = "size") -> int:
    """Parses a byte count given as an int or a string like ``"512 KiB"``.

    Raises:
        ConfigError: if the value is negative or not a size.
    """
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a size, got {value!r}", hint='Write e.g. 524288 or "512 KiB".')
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(f"{where}: size must not be negative, got {value}", hint="Use 0 for unknown.")
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m:
            unit = (m.group(2) or "B").lower()
            return int(float(m.group(1)) * _SIZE_UNITS[unit])
    raise ConfigError(f"{where}: expected a size, got {value!r}", hint='Write e.g. 524288 or "512 KiB".')


# --------------------------------------------------------------------------- #
# Dataclasses
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Target:
    """A compilation target: how TVM generates code and what ISA runs it.

    Attributes:
        name: Unique name referenced by board profiles.
        codegen: One of :data:`CODEGENS`.
        isa: Instruction set (``x86_64``, ``aarch64``, ``riscv64``, ``rv32imf``, ...).
        tvm: TVM target as a JSON-able dict (``{"kind": "llvm", ...}``), or empty
            when ``tag`` is used. ``mcpu = "native"`` means this machine's CPU.
        tag: A TVM target tag (``tvm.target.list_tags()``), or ``""``.
        triple: LLVM triple of the device code, if it differs from the host's.
        vector_extensions: ISA extensions used (``avx2``, ``neon``, ``rvv``...).
        description: One line for listings.
        source: File the profile came from.
    """

    name: str
    codegen: str
    isa: str
    tvm: Mapping[str, Any] = field(default_factory=dict)
    tag: str = ""
    triple: str = ""
    vector_extensions: tuple[str, ...] = ()
    description: str = ""
    source: str = ""

    def tvm_target(self) -> Any:
        """Returns the :class:`tvm.target.Target` for this target (imports TVM)."""
        import tvm

        if self.tag:
            return tvm.target.Target(self.tag)
        spec = dict(self.tvm)
        if spec.get("mcpu") == "native":
            from tvm.target import codegen

            spec["mcpu"] = codegen.llvm_get_system_cpu()
        return tvm.target.Target(spec)

    def tvm_target_dict(self) -> dict[str, Any]:
        """The resolved TVM target as a dict, recorded in package manifests."""
        return json.loads(str(self.tvm_target()))


@dataclass(frozen=True)
class MemoryConfig:
    """Memories of a board in bytes (0 = unknown / not limited)."""

    ram_bytes: int = 0
    flash_bytes: int = 0


@dataclass(frozen=True)
class TransportConfig:
    """How the host reaches the board."""

    kind: str = "local"
    port: str = ""
    baudrate: int = 115200
    host: str = ""
    user: str = ""
    rpc_key: str = ""
    timeout_s: float = 5.0


@dataclass(frozen=True)
class SimulatorConfig:
    """The simulator used when no board is attached.

    Attributes:
        kind: One of :data:`SIMULATORS`.
        cpi: Cycles per executed instruction used by instruction-counting
            simulators to turn instructions into cycles.
        machine: Simulator-specific machine name (unicorn CPU model, qemu binary).
    """

    kind: str = "none"
    cpi: float = 1.0
    machine: str = ""

    @property
    def deterministic(self) -> bool:
        """Whether repeated runs measure exactly the same (cycle counting)."""
        return self.kind in DETERMINISTIC_SIMULATORS


@dataclass(frozen=True)
class NpuConfig:
    """Parameters of the FPGA-style int8 accelerator on a board."""

    rows: int
    cols: int
    clock_hz: int
    input_buffer_bytes: int
    weight_buffer_bytes: int
    acc_buffer_bytes: int
    dma_bytes_per_cycle: float


@dataclass(frozen=True)
class FpgaConfig:
    """The FPGA that holds a board's accelerator, for ``edgekit synth``.

    Attributes:
        family: One of :data:`FPGA_FAMILIES`.
        device: nextpnr's device flag (``85k``, ``25k``, ``um5g-85k`` ...).
        package: The chip's package (``CABGA381``).
        speed: Speed grade (6, 7 or 8).
        top: The board top module (``rtl/boards/<top>.v``).
        constraints: Its pin constraints file in ``rtl/boards/``.
    """

    family: str
    device: str
    package: str
    speed: int
    top: str
    constraints: str


@dataclass(frozen=True)
class Board:
    """A board profile.

    Attributes:
        name: Unique name used on the command line (``--board``).
        target: Name of the :class:`Target` its code is compiled for.
        description: One line for listings.
        clock_hz: CPU clock (0 = unknown).
        cores: CPU cores used for inference (0 = all of this machine's).
        memory: RAM and flash sizes.
        transport: How to reach it.
        simulator: How to simulate it.
        flasher: Name of the flashing method (``edgekit-serial``, ``scp``...).
        npu: Accelerator parameters, for boards that have one.
        fpga: The FPGA the accelerator is synthesized for, on boards with an open flow.
        source: File the profile came from.
    """

    name: str
    target: str
    description: str = ""
    clock_hz: int = 0
    cores: int = 0
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    transport: TransportConfig = field(default_factory=TransportConfig)
    simulator: SimulatorConfig = field(default_factory=SimulatorConfig)
    flasher: str = ""
    npu: NpuConfig | None = None
    fpga: FpgaConfig | None = None
    source: str = ""

    @property
    def simulated_only(self) -> bool:
        """True when no real hardware transport is configured."""
        return self.transport.kind == "sim"

    def summary(self) -> dict[str, Any]:
        """The JSON form used by ``edgekit boards --json``."""
        return {
            "name": self.name,
            "description": self.description,
            "target": self.target,
            "clock_hz": self.clock_hz,
            "cores": self.cores,
            "ram_bytes": self.memory.ram_bytes,
            "flash_bytes": self.memory.flash_bytes,
            "transport": self.transport.kind,
            "simulator": self.simulator.kind,
            "npu": None if self.npu is None else _asdict(self.npu),
            "fpga": None if self.fpga is None else _asdict(self.fpga),
            "source": self.source,
        }


def _asdict(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


# --------------------------------------------------------------------------- #
# Validation helpers
# --------------------------------------------------------------------------- #


class _Table:
    """Reads typed keys from one TOML table and rejects keys nobody read."""

    def __init__(self, data: Mapping[str, Any], source: str, prefix: str = "") -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: '{prefix.rstrip('.')}' must be a table", hint="Write it as [section].")
        self.data = data
        self.source = source
        self.prefix = prefix
        self.seen: set[str] = set()

    def _where(self, key: str) -> str:
        return f"{self.source}: key '{self.prefix}{key}'"

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ..., *, choices: Iterable[str] = ()) -> Any:
        self.seen.add(key)
        if key not in self.data:
            if default is ...:
                raise ConfigError(f"{self._where(key)} is missing", hint="Add it; see docs/boards.md for the schema.")
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and kind is not bool:
            ok = False
        else:
            ok = isinstance(value, kind)
        if not ok:
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise ConfigError(
                f"{self._where(key)} must be {names}, got {type(value).__name__} {value!r}",
                hint="Fix the value in the profile.",
                file=self.source,
                key=self.prefix + key,
            )
        choices = tuple(choices)
        if choices and value not in choices:
            raise ConfigError(
                f"{self._where(key)} is {value!r}",
                hint=f"Use one of: {', '.join(choices)}.",
                file=self.source,
                key=self.prefix + key,
            )
        return value

    def size(self, key: str, default: int = 0) -> int:
        raw = self.get(key, (int, str), default)
        return parse_size(raw, where=self._where(key))

    def positive(self, key: str, kind: type, default: Any = ...) -> Any:
        value = self.get(key, kind, default)
        if value is not None and value < 0:
            raise ConfigError(f"{self._where(key)} must not be negative, got {value}", hint="Fix the value.")
        return value

    def sub(self, key: str, required: bool = False) -> "_Table | None":
        self.seen.add(key)
        if key not in self.data:
            if required:
                raise ConfigError(f"{self._where(key)} table is missing", hint=f"Add a [{self.prefix}{key}] section.")
            return None
        return _Table(self.data[key], self.source, f"{self.prefix}{key}.")

    def done(self) -> None:
        extra = sorted(set(self.data) - self.seen)
        if extra:
            raise ConfigError(
                f"{self.source}: unknown key '{self.prefix}{extra[0]}'"
                + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""),
                hint="Remove it or check its spelling; see docs/boards.md for the schema.",
                file=self.source,
                keys=[self.prefix + k for k in extra],
            )


def _read_toml(path: Path | Any, source: str) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML ({exc})", hint="Fix the syntax error.") from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read ({exc.strerror})", hint="Check the path and permissions.") from None


def parse_target(data: Mapping[str, Any], source: str) -> Target:
    """Validates one target table and returns the :class:`Target`."""
    t = _Table(data, source)
    name = t.get("name", str)
    codegen = t.get("codegen", str, choices=CODEGENS)
    isa = t.get("isa", str)
    description = t.get("description", str, "")
    triple = t.get("triple", str, "")
    vec = t.get("vector_extensions", list, [])
    if not all(isinstance(v, str) for v in vec):
        raise ConfigError(f"{source}: key 'vector_extensions' must be a list of strings", hint="Fix the value.")
    tvm_tab = t.sub("tvm", required=True)
    assert tvm_tab is not None
    tag = tvm_tab.get("tag", str, "")
    spec = tvm_tab.get("target", dict, {})
    tvm_tab.done()
    if bool(tag) == bool(spec):
        raise ConfigError(
            f"{source}: [tvm] needs exactly one of 'tag' or 'target'",
            hint='Write tag = "raspberry-pi/4b-aarch64" or target = { kind = "llvm", ... }.',
        )
    if spec and "kind" not in spec:
        raise ConfigError(f"{source}: key 'tvm.target.kind' is missing", hint='Add kind = "llvm" (or "cuda", "c").')
    t.done()
    return Target(
        name=name,
        codegen=codegen,
        isa=isa,
        tvm=spec,
        tag=tag,
        triple=triple,
        vector_extensions=tuple(vec),
        description=description,
        source=source,
    )


def parse_board(data: Mapping[str, Any], source: str) -> Board:
    """Validates one board table and returns the :class:`Board`."""
    t = _Table(data, source)
    name = t.get("name", str)
    target = t.get("target", str)
    description = t.get("description", str, "")
    clock_hz = t.positive("clock_hz", int, 0)
    cores = t.positive("cores", int, 0)
    flasher = t.get("flasher", str, "")

    mem = t.sub("memory")
    memory = MemoryConfig()
    if mem is not None:
        memory = MemoryConfig(ram_bytes=mem.size("ram"), flash_bytes=mem.size("flash"))
        mem.done()

    tr = t.sub("transport")
    transport = TransportConfig()
    if tr is not None:
        transport = TransportConfig(
            kind=tr.get("kind", str, "local", choices=TRANSPORTS),
            port=tr.get("port", str, ""),
            baudrate=tr.positive("baudrate", int, 115200),
            host=tr.get("host", str, ""),
            user=tr.get("user", str, ""),
            rpc_key=tr.get("rpc_key", str, ""),
            timeout_s=tr.positive("timeout_s", float, 5.0),
        )
        tr.done()

    sim = t.sub("simulator")
    simulator = SimulatorConfig()
    if sim is not None:
        simulator = SimulatorConfig(
            kind=sim.get("kind", str, "none", choices=SIMULATORS),
            cpi=sim.positive("cpi", float, 1.0),
            machine=sim.get("machine", str, ""),
        )
        sim.done()

    npu_tab = t.sub("npu")
    npu = None
    if npu_tab is not None:
        npu = NpuConfig(
            rows=npu_tab.positive("rows", int),
            cols=npu_tab.positive("cols", int),
            clock_hz=npu_tab.positive("clock_hz", int),
            input_buffer_bytes=npu_tab.size("input_buffer"),
            weight_buffer_bytes=npu_tab.size("weight_buffer"),
            acc_buffer_bytes=npu_tab.size("acc_buffer"),
            dma_bytes_per_cycle=npu_tab.positive("dma_bytes_per_cycle", float),
        )
        npu_tab.done()
        if npu.rows == 0 or npu.cols == 0:
            raise ConfigError(f"{source}: npu.rows and npu.cols must be at least 1", hint="Fix the array size.")
    fpga_tab = t.sub("fpga")
    fpga = None
    if fpga_tab is not None:
        fpga = FpgaConfig(
            family=fpga_tab.get("family", str, choices=FPGA_FAMILIES),
            device=fpga_tab.get("device", str),
            package=fpga_tab.get("package", str),
            speed=fpga_tab.positive("speed", int),
            top=fpga_tab.get("top", str),
            constraints=fpga_tab.get("constraints", str),
        )
        fpga_tab.done()
        if npu is None:
            raise ConfigError(f"{source}: [fpga] needs an [npu] section", hint="Describe the accelerator under [npu].")
    t.done()
    return Board(
        name=name,
        target=target,
        description=description,
        clock_hz=clock_hz,
        cores=cores,
        memory=memory,
        transport=transport,
        simulator=simulator,
        flasher=flasher,
        npu=npu,
        fpga=fpga,
        source=source,
    )


# --------------------------------------------------------------------------- #
# Loading
# --------------------------------------------------------------------------- #


@dataclass
class ProfileSet:
    """Every loaded board and target, cross-checked."""

    boards: Registry[Board]
    targets: Registry[Target]

    def board(self, name: str) -> Board:
        """Returns the board called ``name`` (lists the known ones if unknown)."""
        return self.boards.get(name)

    def target_of(self, board: Board | str) -> Target:
        """Returns the target a board compiles for."""
        if isinstance(board, str):
            board = self.board(board)
        return self.targets.get(board.target)


def _builtin_files(package: str) -> list[tuple[str, Any]]:
    root = data_dir(package.rsplit(".", 1)[1])
    return sorted(
        ((f"{package}/{p.name}", p) for p in root.iterdir() if p.name.endswith(".toml")),
        key=lambda x: x[0],
    )


def _dir_files(folder: str | os.PathLike[str]) -> list[tuple[str, Path]]:
    path = Path(folder)
    if not path.is_dir():
        raise ConfigError(f"profile folder '{path}' does not exist", hint="Check EDGEKIT_BOARDS / --boards-dir.")
    return [(str(p), p) for p in sorted(path.glob("*.toml"))]


def _env_dirs(var: str) -> list[str]:
    return [d for d in os.environ.get(var, "").split(os.pathsep) if d]


def load_profiles(
    board_dirs: Iterable[str | os.PathLike[str]] = (),
    target_dirs: Iterable[str | os.PathLike[str]] = (),
) -> ProfileSet:
    """Loads built-in profiles, then those from ``EDGEKIT_BOARDS``/``EDGEKIT_TARGETS``
    and the given folders. A user profile may replace a built-in one of the same
    name; two user profiles with one name are an error.

    A user folder may hold targets too: files whose top level has
    ``codegen`` are read as targets.
    """
    boards: Registry[Board] = Registry("board", BoardNotFoundError)
    targets: Registry[Target] = Registry("target")

    for source, path in _builtin_files("edgekit.targets"):
        tgt = parse_target(_read_toml(path, source), source)
        targets.register(tgt.name, tgt)
    for source, path in _builtin_files("edgekit.board_configs"):
        brd = parse_board(_read_toml(path, source), source)
        boards.register(brd.name, brd)
    builtin_boards = set(boards.available())
    builtin_targets = set(targets.available())

    user_files: list[tuple[str, Path]] = []
    for folder in [*_env_dirs("EDGEKIT_TARGETS"), *target_dirs, *_env_dirs("EDGEKIT_BOARDS"), *board_dirs]:
        user_files.extend(_dir_files(folder))
    seen_user: dict[str, str] = {}
    for source, path in user_files:
        data = _read_toml(path, source)
        is_target = "codegen" in data
        obj: Board | Target = parse_target(data, source) if is_target else parse_board(data, source)
        key = ("target:" if is_target else "board:") + obj.name
        if key in seen_user:
            raise ConfigError(
                f"{source}: {'target' if is_target else 'board'} '{obj.name}' is also defined in {seen_user[key]}",
                hint="Give each profile a unique name.",
            )
        seen_user[key] = source
        builtin = builtin_targets if is_target else builtin_boards
        reg: Registry[Any] = targets if is_target else boards
        if obj.name in builtin:
            logger.info("%s replaces the built-in profile '%s'", source, obj.name)
        reg.register(obj.name, obj, replace=obj.name in builtin)

    for name in boards.available():
        brd = boards.get(name)
        if brd.target not in targets:
            raise ConfigError(
                f"{brd.source}: key 'target' names unknown target '{brd.target}'",
                hint=f"Use one of: {', '.join(targets.available())}, or add a target profile.",
            )
    return ProfileSet(boards=boards, targets=targets)


def get_board(name: str, board_dirs: Iterable[str | os.PathLike[str]] = ()) -> tuple[Board, Target]:
    """Loads the profiles and returns the named board with its target."""
    profiles = load_profiles(board_dirs)
    board = profiles.board(name)
    return board, profiles.target_of(board)


def list_boards(board_dirs: Iterable[str | os.PathLike[str]] = ()) -> list[Board]:
    """Every known board, sorted by name."""
    profiles = load_profiles(board_dirs)
    return [profiles.board(n) for n in profiles.boards.available()]
