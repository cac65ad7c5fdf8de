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
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, TypeVar

from edgekit.core.errors import BoardNotFoundError, ConfigError
from edgekit.core.links import SIMULATORS, TRANSPORTS
from edgekit.core.registry import Registry
from edgekit.core.resources import data_dir
from edgekit.core.tomlfile import Table, parse_size, read_toml

__all__ = [
    "Target",
    "QuantDefaults",
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
FPGA_FAMILIES = ("ecp5",)

# --------------------------------------------------------------------------- #
# Dataclasses
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class QuantDefaults:
    """A target's int8 conventions, the ``[quantization]`` table of its profile.

    ``QuantConfig.for_board`` starts from these; ``None`` (key not written)
    keeps ``QuantConfig``'s own default.

    Attributes:
        per_channel: One weight scale per output channel.
        weight_symmetric: Weight zero points fixed at 0.
        activation_symmetric: Activation zero points fixed at 0.
    """

    per_channel: bool | None = None
    weight_symmetric: bool | None = None
    activation_symmetric: bool | None = None

    def declared(self) -> dict[str, bool]:
        """The keys the profile wrote, by ``QuantConfig`` field name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


@dataclass(frozen=True)
class Target:
    """A compilation target: how TVM generates code and what ISA runs it.

    Attributes:
        name: Unique name referenced by board profiles.
        codegen: One of :data:`CODEGENS`.
        isa: Instruction set (``x86_64``, ``aarch64``, ``riscv64``, ``rv32imf``, ...).
        tvm: TVM target as a JSON-able dict (``{"kind": "llvm", ...}``), or empty
            when ``tag`` is used. ``mcpu = "native"`` means this machine's CPU
            (LLVM's name for it, less any extension this machine lacks).
        tag: A TVM target tag (``tvm.target.list_tags()``), or ``""``.
        triple: LLVM triple of the device code, if it differs from the host's.
        vector_extensions: ISA extensions used (``avx2``, ``neon``, ``rvv``...).
        description: One line for listings.
        quantization: Default int8 conventions for this target's code.
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
    quantization: QuantDefaults = QuantDefaults()
    source: str = ""

    def tvm_target(self) -> Any:
        """Returns the :class:`tvm.target.Target` for this target (imports TVM)."""
        import tvm

        if self.tag:
            return tvm.target.Target(self.tag)
        spec = dict(self.tvm)
        if spec.get("mcpu") == "native":
            from tvm.target import codegen

            from edgekit.core.cpu_features import native_mattr

            spec["mcpu"] = codegen.llvm_get_system_cpu()
            # LLVM names the CPU by its family and model; what a VM hides of it goes.
            if hidden := native_mattr(spec["mcpu"]):
                spec["mattr"] = [*spec.get("mattr", []), *hidden]
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
        kind: A registered simulator (:data:`edgekit.core.links.SIMULATORS`).
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
        return SIMULATORS.get(self.kind).deterministic


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
        firmware: The firmware port its device agent is built from
            (``[ports.NAME]`` in ``firmware_stubs/ports.toml``), or ``""``.
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
    firmware: str = ""
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
            "firmware": self.firmware,
            "npu": None if self.npu is None else _asdict(self.npu),
            "fpga": None if self.fpga is None else _asdict(self.fpga),
            "source": self.source,
        }


def _asdict(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


# --------------------------------------------------------------------------- #
# Validation helpers
# --------------------------------------------------------------------------- #


def parse_target(data: Mapping[str, Any], source: str) -> Target:
    """Validates one target table and returns the :class:`Target`."""
    t = Table(data, source)
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
    quantization = _section(t, "quantization", QuantDefaults(), _quantization)
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
        quantization=quantization,
        source=source,
    )


def _quantization(q: Table) -> QuantDefaults:
    return QuantDefaults(**{f.name: q.get(f.name, bool, None) for f in fields(QuantDefaults)})


_T = TypeVar("_T")


def _section(t: Table, key: str, default: _T, build: Callable[[Table], _T]) -> _T:
    """``build`` of the ``[key]`` sub-table (every key read, no other allowed), or ``default`` without one."""
    tab = t.sub(key)
    if tab is None:
        return default
    value = build(tab)
    tab.done()
    return value


def _memory(m: Table) -> MemoryConfig:
    return MemoryConfig(ram_bytes=m.size("ram"), flash_bytes=m.size("flash"))


def _transport(tr: Table) -> TransportConfig:
    return TransportConfig(
        kind=tr.get("kind", str, "local", choices=TRANSPORTS.available()),
        port=tr.get("port", str, ""),
        baudrate=tr.positive("baudrate", int, 115200),
        host=tr.get("host", str, ""),
        user=tr.get("user", str, ""),
        rpc_key=tr.get("rpc_key", str, ""),
        timeout_s=tr.positive("timeout_s", float, 5.0),
    )


def _simulator(sim: Table) -> SimulatorConfig:
    return SimulatorConfig(
        kind=sim.get("kind", str, "none", choices=SIMULATORS.available()),
        cpi=sim.positive("cpi", float, 1.0),
        machine=sim.get("machine", str, ""),
    )


def _npu(tab: Table) -> NpuConfig:
    npu = NpuConfig(
        rows=tab.positive("rows", int),
        cols=tab.positive("cols", int),
        clock_hz=tab.positive("clock_hz", int),
        input_buffer_bytes=tab.size("input_buffer"),
        weight_buffer_bytes=tab.size("weight_buffer"),
        acc_buffer_bytes=tab.size("acc_buffer"),
        dma_bytes_per_cycle=tab.positive("dma_bytes_per_cycle", float),
    )
    if npu.rows == 0 or npu.cols == 0:
        raise ConfigError(f"{tab.source}: npu.rows and npu.cols must be at least 1", hint="Fix the array size.")
    return npu


def _fpga(tab: Table) -> FpgaConfig:
    return FpgaConfig(
        family=tab.get("family", str, choices=FPGA_FAMILIES),
        device=tab.get("device", str),
        package=tab.get("package", str),
        speed=tab.positive("speed", int),
        top=tab.get("top", str),
        constraints=tab.get("constraints", str),
    )


def parse_board(data: Mapping[str, Any], source: str) -> Board:
    """Validates one board table and returns the :class:`Board`."""
    t = Table(data, source)
    npu: NpuConfig | None = _section(t, "npu", None, _npu)
    fpga: FpgaConfig | None = _section(t, "fpga", None, _fpga)
    if fpga is not None and npu is None:
        raise ConfigError(f"{source}: [fpga] needs an [npu] section", hint="Describe the accelerator under [npu].")
    board = Board(
        name=t.get("name", str),
        target=t.get("target", str),
        description=t.get("description", str, ""),
        clock_hz=t.positive("clock_hz", int, 0),
        cores=t.positive("cores", int, 0),
        memory=_section(t, "memory", MemoryConfig(), _memory),
        transport=_section(t, "transport", TransportConfig(), _transport),
        simulator=_section(t, "simulator", SimulatorConfig(), _simulator),
        flasher=t.get("flasher", str, ""),
        firmware=t.get("firmware", str, ""),
        npu=npu,
        fpga=fpga,
        source=source,
    )
    t.done()
    return board


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
        tgt = parse_target(read_toml(path, source), source)
        targets.register(tgt.name, tgt)
    for source, path in _builtin_files("edgekit.board_configs"):
        brd = parse_board(read_toml(path, source), source)
        boards.register(brd.name, brd)
    builtin_boards = set(boards.available())
    builtin_targets = set(targets.available())

    user_files: list[tuple[str, Path]] = []
    for folder in [*_env_dirs("EDGEKIT_TARGETS"), *target_dirs, *_env_dirs("EDGEKIT_BOARDS"), *board_dirs]:
        user_files.extend(_dir_files(folder))
    seen_user: dict[str, str] = {}
    for source, path in user_files:
        data = read_toml(path, source)
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
        _check_firmware(brd)
    return ProfileSet(boards=boards, targets=targets)


def _check_firmware(board: Board) -> None:
    if not board.firmware:
        return
    from edgekit.core.firmware_ports import load_ports

    ports = load_ports()
    if board.firmware not in ports:
        raise ConfigError(
            f"{board.source}: key 'firmware' names unknown firmware port '{board.firmware}'",
            hint=f"Use one of: {', '.join(ports.available())} (firmware_stubs/ports.toml).",
            file=board.source,
            key="firmware",
        )


def get_board(name: str, board_dirs: Iterable[str | os.PathLike[str]] = ()) -> tuple[Board, Target]:
    """Loads the profiles and returns the named board with its target."""
    profiles = load_profiles(board_dirs)
    board = profiles.board(name)
    return board, profiles.target_of(board)


def list_boards(board_dirs: Iterable[str | os.PathLike[str]] = ()) -> list[Board]:
    """Every known board, sorted by name."""
    profiles = load_profiles(board_dirs)
    return [profiles.board(n) for n in profiles.boards.available()]
