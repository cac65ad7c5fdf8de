"""C toolchain for the AOT backend: compile, link and measure with ``ziglang``.

``ziglang`` (PyPI) ships clang and a linker for every triple edgekit targets,
so no system toolchain is needed. The host build (numerical checks on the
build machine) uses zig too, or the system ``cc`` when zig is missing.

:func:`cc_flags` turns a :class:`~edgekit.core.profiles.Target` into compiler
flags from its TVM target dict (``mtriple``, ``mcpu``, ``mattr``, ``mabi``), so
the C side uses the same ISA and float ABI as the LLVM-built kernels.
:func:`firmware_spec` turns the firmware port a board profile names
(:mod:`edgekit.core.firmware_ports`) into what :func:`link_image` needs. The
compiler is found by :func:`edgekit.core.toolchain.find_toolchain` (one
search order for every C build edgekit runs).
"""

from __future__ import annotations

import logging
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

from edgekit.core.errors import CompileError, ConfigError
from edgekit.core.firmware_ports import firmware_stubs_dir, port_for_board
from edgekit.core.toolchain import Toolchain, find_toolchain

if TYPE_CHECKING:
    from edgekit.core.profiles import Board, Target

__all__ = [
    "Toolchain",
    "FirmwareSpec",
    "find_toolchain",
    "cc_flags",
    "compile_c",
    "link_image",
    "path_map_flags",
    "flash_bytes",
    "ram_bytes",
    "undefined_symbols",
    "firmware_spec",
    "CC_TIMEOUT_S",
]

logger = logging.getLogger(__name__)

#: Limit for one compiler or linker run.
CC_TIMEOUT_S = 300

# LLVM architecture (first triple component) -> zig's name for it.
_ZIG_ARCH = {"riscv32": "riscv32", "riscv64": "riscv64", "thumbv7em": "thumb", "thumbv7m": "thumb",
             "thumbv6m": "thumb", "thumbv8m.main": "thumb", "x86_64": "x86_64", "aarch64": "aarch64"}
#: The FPU that LLVM's CPU model implies (TVM builds the kernels with it) but
#: zig's does not: a plain ``-mcpu=cortex_m7`` compiles model.c's float
#: arithmetic to soft-float calls (``__aeabi_fdiv``), against the eabihf ABI.
_ZIG_FPU = {"cortex-m4": "+vfp4d16sp", "cortex-m7": "+fp_armv8d16", "cortex-m33": "+fp_armv8d16sp"}


def cc_flags(target: "Target") -> list[str]:
    """zig ``cc`` flags that select ``target``'s ISA and float ABI.

    Raises:
        CompileError: for a triple zig has no architecture name for here.
    """
    spec = dict(target.tvm)
    triple = str(spec.get("mtriple") or target.triple)
    if not triple:
        return []
    arch = triple.split("-")[0]
    if arch not in _ZIG_ARCH:
        raise CompileError(
            f"target '{target.name}': no C cross compiler setting for triple '{triple}'",
            hint=f"Use one of the architectures {', '.join(sorted(_ZIG_ARCH))}, or set EDGEKIT_CC.",
        )
    bare = "none" in triple.split("-")[1:] or triple.endswith("-elf") or "unknown-elf" in triple
    abi = "eabihf" if triple.endswith("eabihf") else ("eabi" if triple.endswith("eabi") else "none")
    os_name = "freestanding" if bare else "linux"
    flags = ["-target", f"{_ZIG_ARCH[arch]}-{os_name}-{abi if bare else 'gnu'}"]
    mcpu = str(spec.get("mcpu", ""))
    features = "".join(f for f in spec.get("mattr", []) if f.startswith(("+", "-")))
    if abi == "eabihf" and mcpu in _ZIG_FPU and not any(tag in features for tag in ("fp", "vfp", "soft")):
        features = _ZIG_FPU[mcpu] + features
    if mcpu and mcpu != "native":
        flags.append(f"-mcpu={mcpu.replace('-', '_')}{features}")
    if spec.get("mabi"):
        flags.append(f"-mabi={spec['mabi']}")
    return flags


def path_map_flags(folders: Mapping[Path, str]) -> list[str]:
    """Flags that record each folder of ``folders`` under its given name.

    With them, debug info and ``__FILE__`` carry no build-machine path: the
    AOT build compiles in a fresh temporary folder, so without them two
    compiles of one model give different firmware bytes. clang (zig cc) and
    GCC 8 or later take ``-ffile-prefix-map``. The folders must not nest (GCC
    and clang pick different maps when two match).
    """
    return [f"-ffile-prefix-map={folder}={name}" for folder, name in folders.items()]


def _run(cmd: list[str], what: str, toolchain: Toolchain, cwd: Path | None = None) -> None:
    logger.debug("%s: %s", what, " ".join(cmd))
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=CC_TIMEOUT_S, env=toolchain.env())
    except subprocess.TimeoutExpired:
        raise CompileError(f"{what} took longer than {CC_TIMEOUT_S} s", hint="Retry on a less loaded machine.") from None
    except OSError as exc:
        raise CompileError(f"{what} could not start ({exc.strerror})", hint="Reinstall ziglang or set EDGEKIT_CC.") from None
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        overflow = [ln for ln in detail if "overflow" in ln.lower() or "will not fit" in ln.lower()]
        undefined = sorted({ln.split("undefined symbol:")[1].strip() for ln in detail if "undefined symbol:" in ln})
        if overflow:
            hint = "The image does not fit the board's memory; shrink or quantize the model."
        elif undefined:
            hint = f"The firmware sources must define {', '.join(undefined)} (see docs/aot.md, 'What the kernels import')."
        else:
            hint = "Run with --debug for the full compiler output."
        raise CompileError(
            f"{what} failed: {(overflow or detail or ['(no output)'])[0][:300]}",
            hint=hint,
            output=(proc.stderr or proc.stdout)[-4000:],
        )


def compile_c(
    toolchain: Toolchain, sources: Sequence[Path], out_dir: Path, flags: Sequence[str], include_dirs: Sequence[Path] = ()
) -> list[Path]:
    """Compiles each C source to an object in ``out_dir`` and returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    objects = []
    for src in sources:
        obj = out_dir / (Path(src).stem + ".o")
        cmd = [*toolchain.command, *flags, "-O2", "-std=c11", "-ffunction-sections", "-fdata-sections",
               *(f"-I{d}" for d in include_dirs), "-c", str(src), "-o", str(obj)]
        _run(cmd, f"compiling {Path(src).name}", toolchain)
        objects.append(obj)
    return objects


def link_image(
    toolchain: Toolchain,
    inputs: Sequence[Path],
    out: Path,
    flags: Sequence[str],
    *,
    linker_script: Path | None = None,
    include_dirs: Sequence[Path] = (),
    freestanding: bool = True,
    cwd: Path | None = None,
) -> Path:
    """Compiles and links C sources and objects into an executable ELF ``out``.

    A linker script whose memory regions are the board's RAM and flash makes
    the linker itself reject an image that does not fit. ``cwd`` is the
    compiler's working folder (debug info records it as the compile folder;
    default: this process's).
    """
    cmd = [*toolchain.command, *flags, "-O2", "-std=c11", "-ffunction-sections", "-fdata-sections",
           *(f"-I{d}" for d in include_dirs)]
    if freestanding:
        cmd += ["-nostdlib", "-ffreestanding", "-Wl,--gc-sections"]
    if linker_script is not None:
        cmd += [f"-Wl,-T,{linker_script}"]
    cmd += [*(str(p) for p in inputs), "-o", str(out)]
    _run(cmd, f"linking {out.name}", toolchain, cwd)
    return out


def _sections(path: Path) -> list[tuple[str, int, bool, bool]]:
    from elftools.elf.elffile import ELFFile

    out = []
    with open(path, "rb") as fh:
        elf = ELFFile(fh)
        for sec in elf.iter_sections():
            flags = sec["sh_flags"]
            alloc = bool(flags & 0x2)  # SHF_ALLOC
            nobits = sec["sh_type"] == "SHT_NOBITS"
            out.append((sec.name, sec["sh_size"], alloc, nobits))
    return out


def flash_bytes(paths: Sequence[Path]) -> int:
    """Bytes an object or image puts in flash: allocated sections with contents
    (code, read-only data, initial values of data)."""
    return sum(size for p in paths for _, size, alloc, nobits in _sections(Path(p)) if alloc and not nobits)


def ram_bytes(paths: Sequence[Path]) -> int:
    """Bytes of writable allocated sections (``.data`` and ``.bss``)."""
    from elftools.elf.elffile import ELFFile

    total = 0
    for p in paths:
        with open(p, "rb") as fh:
            for sec in ELFFile(fh).iter_sections():
                if sec["sh_flags"] & 0x2 and sec["sh_flags"] & 0x1:  # SHF_ALLOC and SHF_WRITE
                    total += sec["sh_size"]
    return total


def undefined_symbols(path: Path) -> list[str]:
    """Names an object needs from elsewhere (what the firmware must provide)."""
    from elftools.elf.elffile import ELFFile

    with open(path, "rb") as fh:
        symtab = ELFFile(fh).get_section_by_name(".symtab")
        if symtab is None:
            return []
        return sorted({s.name for s in symtab.iter_symbols() if s.name and s["st_shndx"] == "SHN_UNDEF"})


@dataclass(frozen=True)
class FirmwareSpec:
    """How to build a board's firmware image from ``firmware_stubs``.

    Attributes:
        board: Board name.
        sources: C (and assembly) sources, absolute.
        include_dirs: Include folders, absolute.
        linker_script: Linker script, absolute, or None.
        flags: Extra compiler flags.
        ram_bytes: RAM the image links into when less than the board's (one
            bank of several; ``ram_bytes`` of the port in ports.toml), else 0.
        stack_bytes: The stack the linker script reserves (``STACK_BYTES``), 0 if unknown.
        board_source: The board's profile file (named in errors).
        root: The ``firmware_stubs`` folder the port's files are in.
    """

    board: str
    sources: tuple[Path, ...]
    include_dirs: tuple[Path, ...] = ()
    linker_script: Path | None = None
    flags: tuple[str, ...] = field(default_factory=tuple)
    ram_bytes: int = 0
    stack_bytes: int = 0
    board_source: str = ""
    root: Path | None = None

    def arena_ram(self, board_ram: int) -> int:
        """The most RAM the arena could get in this image: the RAM it links
        into (the board's, or one bank of it) less the stack; 0 if the RAM is
        unknown (not limited).

        Raises:
            ConfigError: the RAM is known but no larger than the stack, so
                no arena fits (0 would read as "not limited").
        """
        ram = min(r for r in (board_ram, self.ram_bytes) if r) if (board_ram or self.ram_bytes) else 0
        if ram and ram <= self.stack_bytes:
            where = f"{self.board_source}: " if self.board_source else ""
            script = self.linker_script.name if self.linker_script else "its linker script"
            raise ConfigError(
                f"{where}board '{self.board}' links its firmware into {ram} B of RAM, no more than the "
                f"{self.stack_bytes} B stack {script} reserves: no RAM is left for the model's arena",
                hint="Set the board's `ram` to what the part has, or give it a firmware port with a smaller "
                "stack (STACK_BYTES in the port's linker script).",
                board=self.board, ram_bytes=ram, stack_bytes=self.stack_bytes,
            )  # fmt: skip
        return ram - self.stack_bytes if ram else 0


def firmware_spec(board: "Board | str", root: Path | None = None) -> FirmwareSpec | None:
    """How to link ``board``'s firmware: the port its profile names
    (``firmware = "..."``), from ``root/ports.toml`` (default: the shipped
    ``firmware_stubs``); None when the board has no firmware port.

    Raises:
        ConfigError: the port is unknown or ``ports.toml`` names missing files.
    """
    if isinstance(board, str):
        from edgekit.core.profiles import load_profiles

        board = load_profiles().board(board)
    if not board.firmware:
        return None
    port = port_for_board(board, root)
    script = port.linker_script
    return FirmwareSpec(board.name, port.sources, port.include_dirs, script, port.cflags, port.ram_bytes,
                        _stack_bytes(script) if script else 0, board.source, root or firmware_stubs_dir())  # fmt: skip


def _stack_bytes(script: Path) -> int:
    """``STACK_BYTES = 16K;`` from a linker script (0 if it sets none)."""
    found = re.search(r"^\s*STACK_BYTES\s*=\s*(\d+)\s*([KM]?)\s*;", script.read_text(encoding="utf-8"), re.M)
    if not found:
        return 0
    return int(found.group(1)) * {"": 1, "K": 1024, "M": 1024 * 1024}[found.group(2)]
