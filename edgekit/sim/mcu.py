"""A microcontroller simulator on unicorn: firmware ELF in, pty UART out.

The simulator loads the firmware's ELF program headers into flash and RAM
mapped per the board profile (sizes) and the port's memory map (bases, from
``firmware_stubs/ports.toml``), models the UART registers as MMIO backed by a
pseudo-terminal, and runs the core in a background thread. The host talks to
it through :attr:`McuSimulator.port` with the same pyserial transport and
protocol code as a real board.

Cycle model (docs/simulators.md): ``cycles = executed instructions x
board.simulator.cpi``. Instructions are counted with a basic-block hook; the
firmware's ``ek_port_read_cycles`` / ``ek_port_read_instret`` are intercepted
by symbol and return those counts, so the same firmware and inputs always give
the same cycle counts.
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from elftools.elf.elffile import ELFFile

from edgekit.core.errors import ConfigError, DeviceError, DeviceFaultError
from edgekit.core.profiles import Board
from edgekit.sim.agent_build import PortSpec, port_for_board
from edgekit.sim.uart import UART_MODELS, PtyUart

__all__ = ["McuSimulator", "SimFault", "STUCK_CHECK_BLOCKS"]

logger = logging.getLogger(__name__)

_EM_ARM = "EM_ARM"
_EM_RISCV = "EM_RISCV"
_PAGE = 0x1000
#: A basic block that re-enters itself this many times in a row without UART
#: access has its registers compared with the previous check; equal registers
#: mean the core can never leave (no interrupts in the model): it is stuck.
STUCK_CHECK_BLOCKS = 20_000
_ACCESS = {}  # unicorn memory-access type -> word, filled on first use
_INTERCEPTED = ("ek_port_read_cycles", "ek_port_read_instret")
#: Slot storage bounds and the one function that programs it (power-cut tests).
_STORAGE_SYMBOLS = ("__ek_slots_start", "__ek_slots_end", "ek_port_storage_write")
#: The stack region the linker script publishes (firmware_stubs/ports/*/link.ld).
_STACK_SYMBOLS = ("__stack_top", "STACK_BYTES")
#: Byte the stack region is filled with at power-on (for the high-water mark).
_STACK_PAINT = b"\xa5"
#: Lowest stack bytes whose change means the stack ran out (images with no guard band).
_STACK_EXHAUSTED_BYTES = 16

# Simulators still running when the interpreter exits (a caller that never
# closed one): their unicorn thread must be stopped before Python tears down,
# or the daemon thread crashes the process at exit.
_LIVE: "weakref.WeakSet[McuSimulator]" = weakref.WeakSet()


@atexit.register
def _stop_live_simulators() -> None:
    for sim in list(_LIVE):
        try:
            sim.stop()
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass


@dataclass(frozen=True)
class SimFault:
    """Why a simulated core stopped serving the host.

    Attributes:
        kind: ``fault`` (invalid memory access, illegal instruction),
            ``stack`` (the stack pointer went below the stack region the
            linker script reserves), ``stuck`` (a loop it can never leave), ``budget`` (ran past its
            instruction budget), ``halted`` (the core left the firmware) or
            ``stopped`` (the simulator was stopped or closed).
        pc: Program counter when it stopped.
        address: The faulting data address, where there is one.
        detail: unicorn's message or what the loop did.
        instructions: Instructions executed since power-on.
    """

    kind: str
    pc: int
    address: int | None
    detail: str
    instructions: int

    def describe(self) -> str:
        """One line: kind, pc and address."""
        where = f"pc={self.pc:#010x}" + ("" if self.address is None else f", address={self.address:#010x}")
        return f"{self.detail} ({where}, after {self.instructions:,} instructions)"


def _page_up(n: int) -> int:
    return (n + _PAGE - 1) & ~(_PAGE - 1)


class McuSimulator:
    """Runs a device-agent firmware ELF for one board.

    Args:
        elf: Path of the firmware image (or its bytes).
        board: The board profile (``simulator.kind == "unicorn"``).
        port: The firmware port; by default the one the board profile names (``firmware``).

    Attributes:
        port_name: pty slave path for the host's serial transport.
        instructions: Instructions executed since power-on.
        stack: ``(lowest address, top)`` of the stack region from the
            image's linker symbols, or ``None`` if it publishes none. The
            linker only reserves the region; nothing on the chip stops an
            overflow into ``.bss``. Here, a write into the unused RAM between
            the image's last RAM section and the stack stops the core with a
            ``stack`` fault (a guard band, as an MPU region would be); the
            region is painted at power-on, so :meth:`stack_high_water` is
            exact, and with no unused RAM below it a stack whose lowest bytes
            were written is reported as exhausted.
        stack_guard: ``(start, end)`` of that guard band (empty when the
            image leaves no RAM unused).
        flash_region: ``(start, end)`` of the flash the simulator maps.
        ram_region: ``(start, end)`` of the RAM it maps: the board's RAM, or
            less where the port links into one bank of several (``ram_bytes``
            in ``firmware_stubs/ports.toml``); nothing else is memory.

    Raises:
        ConfigError: the board is not simulated with unicorn or the ELF does
            not match its architecture.
    """

    def __init__(self, elf: Path | bytes, board: Board, port: PortSpec | None = None) -> None:
        import unicorn

        self._uc_mod = unicorn
        if board.simulator.kind != "unicorn":
            raise ConfigError(
                f"board '{board.name}' is simulated by '{board.simulator.kind}', not unicorn",
                hint="Pick a microcontroller board (see 'edgekit boards').",
            )
        self.board = board
        self.spec = port or port_for_board(board)
        data = elf if isinstance(elf, bytes) else Path(elf).read_bytes()
        self._load_elf(data)
        self.cpi = board.simulator.cpi
        self.instructions = 0
        self.error: BaseException | None = None
        self.fault: SimFault | None = None
        self._bad_access: tuple[str, int] | None = None
        self._budget_end: int | None = None
        self._last_block = -1
        self._repeats = 0
        self._stuck_regs: tuple[int, ...] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # start/stop may come from two threads at once (a watchdog or a test's
        # timer killing the core while the caller closes it): one at a time.
        self._life = threading.RLock()
        self._block_cache: dict[tuple[int, int], int] = {}
        self._cut_countdown: int | None = None
        self._cut_torn = False
        self.power_cut = threading.Event()
        self.storage_writes = 0
        self.uart = PtyUart()
        self.uart.should_stop = self._stop.is_set
        self.port_name = self.uart.port
        self._uc = self._make_uc()
        self.start()

    # -- setup ------------------------------------------------------------- #

    def _load_elf(self, data: bytes) -> None:
        import io

        elf = ELFFile(io.BytesIO(data))
        self.arch = elf["e_machine"]
        if self.arch not in (_EM_ARM, _EM_RISCV) or elf.elfclass != 32:
            raise ConfigError(
                f"firmware for {self.arch} (ELF{elf.elfclass}) cannot run on the '{self.board.name}' simulator",
                hint="Compile the package for this board.",
            )
        self.entry = elf["e_entry"]
        self.segments: list[tuple[int, bytes, int]] = []
        for seg in elf.iter_segments():
            if seg["p_type"] == "PT_LOAD" and seg["p_memsz"]:
                # Load at the physical (load) address: .data's initial values
                # sit in flash and start-up code copies them to RAM.
                self.segments.append((seg["p_paddr"], seg.data(), seg["p_memsz"]))
        symtab = elf.get_section_by_name(".symtab")
        self.symbols: dict[str, int] = {}
        if symtab is not None:
            for name in (*_INTERCEPTED, *_STORAGE_SYMBOLS, *_STACK_SYMBOLS):
                found = symtab.get_symbol_by_name(name)
                if found:
                    value = found[0]["st_value"]
                    self.symbols[name] = value if name in _STACK_SYMBOLS else value & ~1
        self.stack: tuple[int, int] | None = None
        self.stack_guard = (0, 0)
        if all(n in self.symbols for n in _STACK_SYMBOLS):
            top = self.symbols["__stack_top"]
            self.stack = (top - self.symbols["STACK_BYTES"], top)
            # RAM sections end where the unused RAM (the guard band) starts.
            ends = [int(sec["sh_addr"]) + int(sec["sh_size"]) for sec in elf.iter_sections()
                    if sec["sh_flags"] & 0x3 == 0x3 and int(sec["sh_addr"]) < self.stack[0]]  # SHF_WRITE|SHF_ALLOC
            self.stack_guard = (max(ends, default=self.stack[0]), self.stack[0])
        missing = [n for n in _INTERCEPTED if n not in self.symbols]
        if missing:
            raise ConfigError(
                f"firmware has no symbol {', '.join(missing)}",
                hint="Link the image from firmware_stubs (it defines the cycle-counter functions), unstripped.",
            )

    def _make_uc(self) -> Any:
        uc_mod = self._uc_mod
        if self.arch == _EM_RISCV:
            uc = uc_mod.Uc(uc_mod.UC_ARCH_RISCV, uc_mod.UC_MODE_RISCV32)
            self._insn_len = _rv_len
        else:
            from unicorn import arm_const as ac

            uc = uc_mod.Uc(uc_mod.UC_ARCH_ARM, uc_mod.UC_MODE_THUMB | uc_mod.UC_MODE_MCLASS)
            uc.ctl_set_cpu_model(ac.UC_CPU_ARM_CORTEX_M7)
            self._insn_len = _thumb_len
        raw = self.spec.raw
        flash_base, ram_base = int(raw["flash_base"]), int(raw["ram_base"])
        flash, ram = self.board.memory.flash_bytes, self.board.memory.ram_bytes
        # Map only memory the board has at these addresses: a port that links
        # into one RAM bank of several declares its size, so an overrun faults.
        ram = min(ram, int(raw.get("ram_bytes", ram))) if ram else ram
        if not flash or not ram:
            raise ConfigError(
                f"board '{self.board.name}' has no [memory] flash/ram sizes", hint="Add them to its profile."
            )
        uc.mem_map(flash_base, _page_up(flash), uc_mod.UC_PROT_ALL)
        uc.mem_map(ram_base, _page_up(ram), uc_mod.UC_PROT_ALL)
        self.flash_region, self.ram_region = (flash_base, flash_base + flash), (ram_base, ram_base + ram)
        for region in raw.get("sim_regions", []):  # plain memory for peripherals the port only configures
            uc.mem_map(int(region["base"]), _page_up(int(region["size"])), uc_mod.UC_PROT_READ | uc_mod.UC_PROT_WRITE)
        for addr, blob, memsz in self.segments:
            inside = any(b <= addr and addr + memsz <= b + s for b, s in ((flash_base, flash), (ram_base, ram)))
            if not inside:
                raise ConfigError(
                    f"firmware segment at {addr:#x} (+{memsz} bytes) lies outside {self.board.name}'s flash and RAM",
                    hint="The image was linked for another memory map; rebuild it for this board.",
                )
            uc.mem_write(addr, blob)
        uart_cfg = raw["uart"]
        self._uart_model = UART_MODELS[uart_cfg["kind"]](self.uart)
        base = int(uart_cfg["base"])
        page = base & ~(_PAGE - 1)  # unicorn maps whole pages; the UART may sit mid-page
        skew = base - page
        uc.mmio_map(
            page,
            _page_up(skew + self._uart_model.size),
            lambda _uc, off, size, _ud: self._uart_read(off - skew, size),
            None,
            lambda _uc, off, size, value, _ud: self._uart_write(off - skew, size, value),
            None,
        )
        uc.hook_add(uc_mod.UC_HOOK_BLOCK, self._on_block)
        uc.hook_add(uc_mod.UC_HOOK_MEM_INVALID, self._on_bad_access)
        guard0, guard1 = self.stack_guard
        if guard0 < guard1:
            # A ranged write hook: unicorn calls it only for writes inside the
            # band (no measurable cost on other writes).
            uc.hook_add(uc_mod.UC_HOOK_MEM_WRITE, self._on_guard_write, None, guard0, guard1 - 1)
        for name in _INTERCEPTED:
            addr = self.symbols[name]
            uc.hook_add(uc_mod.UC_HOOK_CODE, self._on_counter_read, name, addr, addr)
        if "ek_port_storage_write" in self.symbols:
            addr = self.symbols["ek_port_storage_write"]
            uc.hook_add(uc_mod.UC_HOOK_CODE, self._on_storage_write, None, addr, addr)
        return uc

    # -- hooks -------------------------------------------------------------- #

    def _uart_read(self, offset: int, size: int) -> int:
        self._repeats = 0  # I/O: a polling loop is not stuck
        return self._uart_model.read(offset, size)

    def _uart_write(self, offset: int, size: int, value: int) -> None:
        self._repeats = 0
        self._uart_model.write(offset, size, value)

    def _on_block(self, uc: Any, address: int, size: int, _ud: Any) -> None:
        key = (address, size)
        n = self._block_cache.get(key)
        if n is None:
            code = bytes(uc.mem_read(address, size))
            n = self._insn_len(code)
            self._block_cache[key] = n
        self.instructions += n
        if self._stop.is_set():
            uc.emu_stop()

        if address == self._last_block:
            self._repeats += 1
            if self._repeats % STUCK_CHECK_BLOCKS == 0:
                self._check_stuck(uc, address)
        else:
            self._last_block, self._repeats, self._stuck_regs = address, 0, None
        if self._budget_end is not None and self.instructions > self._budget_end:
            self._halt_with("budget", address, None, "the core ran past its instruction budget for the command")

    def _on_guard_write(self, uc: Any, access: int, address: int, size: int, value: int, _ud: Any) -> None:
        assert self.stack is not None
        self._halt_with(
            "stack", self._pc(), address,
            f"stack overflow: a write {self.stack[0] - address} B below the {self.stack[1] - self.stack[0]} B "
            "stack the linker script reserves",
        )  # fmt: skip

    def _paint_stack(self) -> None:
        if self.stack is not None:
            self._uc.mem_write(self.stack[0], _STACK_PAINT * (self.stack[1] - self.stack[0]))

    def _check_stuck(self, uc: Any, address: int) -> None:
        regs = self._registers(uc)
        if regs == self._stuck_regs:
            self._halt_with(
                "stuck", address, None, f"the core is stuck in a loop it cannot leave ({self._repeats:,} passes, no I/O)"
            )
        self._stuck_regs = regs

    def _registers(self, uc: Any) -> tuple[int, ...]:
        if self.arch == _EM_RISCV:
            from unicorn import riscv_const as rc

            return tuple(uc.reg_read(rc.UC_RISCV_REG_X1 + i) for i in range(31))
        from unicorn import arm_const as ac

        return tuple(uc.reg_read(r) for r in (*range(ac.UC_ARM_REG_R0, ac.UC_ARM_REG_R12 + 1), ac.UC_ARM_REG_SP))

    def _halt_with(self, kind: str, pc: int, address: int | None, detail: str) -> None:
        if self.fault is None:
            self.fault = SimFault(kind, pc, address, detail, self.instructions)
            logger.error("simulated %s stopped: %s", self.board.name, self.fault.describe())
        self._stop.set()
        self._uc.emu_stop()

    def _on_bad_access(self, uc: Any, access: int, address: int, size: int, value: int, _ud: Any) -> bool:
        if not _ACCESS:
            m = self._uc_mod
            _ACCESS.update({
                m.UC_MEM_READ_UNMAPPED: "read", m.UC_MEM_WRITE_UNMAPPED: "write", m.UC_MEM_FETCH_UNMAPPED: "fetch",
                m.UC_MEM_READ_PROT: "read", m.UC_MEM_WRITE_PROT: "write", m.UC_MEM_FETCH_PROT: "fetch",
            })  # fmt: skip
        self._bad_access = (_ACCESS.get(access, "access"), address)
        return False  # unicorn stops with the matching UcError

    # -- host-side watch ------------------------------------------------------ #

    def stack_high_water(self) -> int | None:
        """Most stack bytes written since the core last started (the painted
        region's untouched bottom left out); ``None`` without a stack region."""
        if self.stack is None:
            return None
        data = bytes(self._uc.mem_read(self.stack[0], self.stack[1] - self.stack[0]))
        untouched = len(data) - len(data.lstrip(_STACK_PAINT))
        return len(data) - untouched

    def set_budget(self, instructions: int | None) -> None:
        """Stops the core with a ``budget`` fault once it has executed
        ``instructions`` more (None: no limit). Runners set it per command
        from the work the command should take."""
        self._budget_end = None if instructions is None else self.instructions + int(instructions)

    def check_alive(self, command: str = "") -> None:
        """Raises :class:`DeviceFaultError` when the core no longer serves the
        host: it faulted, is stuck, ran past its budget, left the firmware or
        the simulator was stopped. Cheap; the protocol client calls it while
        it waits for an answer."""
        fault = self.fault
        if fault is None and self.stack is not None and self.stack_guard[0] >= self.stack_guard[1]:
            # No unused RAM to guard: a stack whose lowest bytes were written has run out.
            if bytes(self._uc.mem_read(self.stack[0], _STACK_EXHAUSTED_BYTES)) != _STACK_PAINT * _STACK_EXHAUSTED_BYTES:
                self._halt_with("stack", self._pc(), self.stack[0],
                                f"stack exhausted: all {self.stack[1] - self.stack[0]} B the linker script reserves were "
                                "used (an overflow into .bss is likely)")  # fmt: skip
                fault = self.fault
        if fault is None and (self._thread is None or not self._thread.is_alive()):
            fault = SimFault("stopped", self._pc(), None, "the simulator is not running", self.instructions)
        if fault is None:
            return
        during = f" during {command}" if command else ""
        hints = {
            "fault": "The firmware accessed memory the board does not have; recompile the package with this edgekit "
            "and report the model if it repeats (run with --debug).",
            "stuck": "The firmware hangs; recompile the package with this edgekit and report the model.",
            "stack": "A kernel or the agent needs more stack than the firmware reserves (STACK_BYTES in the port's "
            "linker script); report the model (run with --debug).",
            "budget": "The model ran far longer than its size allows; recompile it, and report it if it repeats.",
        }
        raise DeviceFaultError(
            f"simulated {self.board.name} stopped{during}: {fault.describe()}",
            hint=hints.get(fault.kind, "The simulator was stopped; run the command again."),
            kind=fault.kind,
            pc=fault.pc,
            address=fault.address,
            command=command,
        )

    def _on_counter_read(self, uc: Any, address: int, size: int, name: str) -> None:
        value = self.instructions if name == "ek_port_read_instret" else int(self.instructions * self.cpi)
        lo, hi = value & 0xFFFFFFFF, (value >> 32) & 0xFFFFFFFF
        if self.arch == _EM_RISCV:
            from unicorn import riscv_const as rc

            uc.reg_write(rc.UC_RISCV_REG_A0, lo)
            uc.reg_write(rc.UC_RISCV_REG_A1, hi)
            uc.reg_write(rc.UC_RISCV_REG_PC, uc.reg_read(rc.UC_RISCV_REG_RA))
        else:
            from unicorn import arm_const as ac

            uc.reg_write(ac.UC_ARM_REG_R0, lo)
            uc.reg_write(ac.UC_ARM_REG_R1, hi)
            uc.reg_write(ac.UC_ARM_REG_PC, uc.reg_read(ac.UC_ARM_REG_LR))

    def _on_storage_write(self, uc: Any, address: int, size: int, _ud: Any) -> None:
        self.storage_writes += 1
        if self._cut_countdown is None:
            return
        self._cut_countdown -= 1
        if self._cut_countdown > 0:
            return
        self._cut_countdown = None
        if self._cut_torn:
            # A torn write: the first half of the bytes reached flash.
            dst, src, n = (self._arg(i) for i in range(3))
            half = n // 2
            if half:
                uc.mem_write(dst, bytes(uc.mem_read(src, half)))
        self._stop.set()
        uc.emu_stop()
        self.power_cut.set()

    def _arg(self, i: int) -> int:
        """Integer argument ``i`` of the function being entered (a0.. / r0..)."""
        if self.arch == _EM_RISCV:
            from unicorn import riscv_const as rc

            return int(self._uc.reg_read(rc.UC_RISCV_REG_A0 + i))
        from unicorn import arm_const as ac

        return int(self._uc.reg_read(ac.UC_ARM_REG_R0 + i))

    # -- fault injection ---------------------------------------------------- #

    def arm_power_cut(self, after_writes: int, *, torn: bool = False) -> None:
        """Halts the core when it enters ``ek_port_storage_write`` for the
        ``after_writes``-th time from now (that write does not happen; with
        ``torn`` its first half does). :attr:`power_cut` is set when it fires;
        call :meth:`reset` to power the board on again.

        Raises:
            ConfigError: the firmware has no ``ek_port_storage_write`` symbol.
        """
        if "ek_port_storage_write" not in self.symbols:
            raise ConfigError(
                "firmware has no ek_port_storage_write symbol", hint="Link the agent from firmware_stubs, unstripped."
            )
        if after_writes < 1:
            raise ConfigError(f"after_writes={after_writes} must be >= 1", hint="Count storage writes from 1.")
        self.power_cut.clear()
        self._cut_torn = torn
        self._cut_countdown = after_writes

    def disarm_power_cut(self) -> None:
        """Cancels a pending :meth:`arm_power_cut`."""
        self._cut_countdown = None

    def read_storage(self) -> bytes:
        """The weights-slot storage (flash) as the firmware left it.

        Raises:
            ConfigError: the firmware has no slot-storage symbols.
        """
        start, end = self.symbols.get("__ek_slots_start"), self.symbols.get("__ek_slots_end")
        if start is None or end is None:
            raise ConfigError("firmware has no __ek_slots_start/__ek_slots_end", hint="Link it with firmware_stubs' script.")
        flash_end = int(self.spec.raw["flash_base"]) + self.board.memory.flash_bytes
        return bytes(self._uc.mem_read(start, min(end, flash_end) - start))

    # -- run control -------------------------------------------------------- #

    def _reset_registers(self) -> int:
        uc = self._uc
        if self.arch == _EM_RISCV:
            from unicorn import riscv_const as rc

            # Also set by start.S; set here too so a first float before it cannot trap.
            uc.reg_write(rc.UC_RISCV_REG_MSTATUS, uc.reg_read(rc.UC_RISCV_REG_MSTATUS) | 0x2000)
            return self.entry
        from unicorn import arm_const as ac

        base = int(self.spec.raw["flash_base"])
        vectors = bytes(uc.mem_read(base, 8))
        uc.reg_write(ac.UC_ARM_REG_SP, int.from_bytes(vectors[:4], "little"))
        return int.from_bytes(vectors[4:], "little")  # odd: Thumb

    def _run(self, pc: int) -> None:
        try:
            self._uc.emu_start(pc, 0xFFFFFFFF if self.arch == _EM_RISCV else 0xFFFFFFFE)
        except self._uc_mod.UcError as exc:
            self.error = exc
            address = self._bad_access[1] if self._bad_access else None
            detail = str(exc)
            if self.fault is None:
                self.fault = SimFault("fault", self._pc(), address, detail, self.instructions)
            logger.error("simulated %s stopped: %s", self.board.name, self.fault.describe())
            return
        if not self._stop.is_set() and self.fault is None:
            self.fault = SimFault("halted", self._pc(), None, "the core left the firmware", self.instructions)

    def _pc(self) -> int:
        if self.arch == _EM_RISCV:
            from unicorn import riscv_const as rc

            return int(self._uc.reg_read(rc.UC_RISCV_REG_PC))
        from unicorn import arm_const as ac

        return int(self._uc.reg_read(ac.UC_ARM_REG_PC))

    def start(self) -> None:
        """Powers the core on at its reset vector (memory contents are kept)."""
        with self._life:
            if self._thread is not None:
                raise DeviceError("simulator already running", hint="Call reset() to restart it.")
            self._stop.clear()
            self.error = None
            self.fault = None
            self._bad_access = None
            self._budget_end = None
            self._paint_stack()
            pc = self._reset_registers()
            self._thread = threading.Thread(target=self._run, args=(pc,), name=f"sim-{self.board.name}", daemon=True)
            self._thread.start()
            _LIVE.add(self)

    def stop(self) -> None:
        """Halts the core; flash and RAM keep their contents. Safe to call from
        several threads at once: the first halts the core, the others wait for it."""
        with self._life:
            thread = self._thread
            if thread is None:
                return
            self._stop.set()
            self._uc.emu_stop()
            thread.join(timeout=10)
            if thread.is_alive():
                raise DeviceError("simulator did not stop within 10 s", hint="This is a bug; report it.")
            self._thread = None
            _LIVE.discard(self)

    def reset(self) -> None:
        """A reset: the core restarts from its vector; flash (the weights
        slots) and uninitialised RAM survive, as on a real chip."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stops the core and closes the pty."""
        self.stop()
        self.uart.close()

    def __enter__(self) -> "McuSimulator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _rv_len(code: bytes) -> int:
    """Instructions in a RISC-V block: 16-bit if the low two bits are not 11.

    Hand-written: a length decoder is all that is needed, not a disassembler.
    """
    n = i = 0
    while i + 1 < len(code):
        i += 4 if code[i] & 3 == 3 else 2
        n += 1
    return n


def _thumb_len(code: bytes) -> int:
    """Instructions in a Thumb-2 block: 32-bit when the first halfword's top
    five bits are 0b11101, 0b11110 or 0b11111."""
    n = i = 0
    while i + 1 < len(code):
        top = code[i + 1] >> 3
        i += 4 if top in (0x1D, 0x1E, 0x1F) else 2
        n += 1
    return n
