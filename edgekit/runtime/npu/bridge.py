"""The host side of the board top's UART bridge (``rtl/boards/npu_bridge.v``).

Byte protocol (8N1; multi-byte fields little-endian; CRC-16/CCITT with
initial value 0xFFFF, which :func:`binascii.crc_hqx` computes)::

    'W' addr:u32 len:u16 data[len]  -> 'w' crc:u16      write memory
    'R' addr:u32 len:u16            -> 'r' data crc:u16  read memory
    'S' reg:u8 value:u32            -> 's'               write a register
    'G' reg:u8                      -> 'g' value:u32     read a register

Registers below 0xF0 are ``npu_top``'s (:class:`~edgekit.npu.rtl_regs.RtlReg`;
``CTRL`` = 1 starts a program, ``STATUS`` is polled); 0xF0 holds the board's
memory size and 0xF4 the protocol magic ``EKB1``.

Layers, bottom up: pure encoders (:func:`encode_write` ...), a
:class:`ByteLink` (a serial port, or the board's RTL under Verilator:
:class:`~edgekit.sim.npu.rtl_board.RtlBoardLink`), :class:`UartBridge` (one
method per command, replies and checksums checked, a retry after a
resynchronization), and :class:`BridgeNpuDevice`, which serves the driver's
command/completion rings (:class:`~edgekit.npu.ring.RingDevice`) from
the host — the board has no processor — and runs each program on the board.
"""

from __future__ import annotations

import binascii
import logging
import struct
from typing import Callable, Protocol, TypeVar

from edgekit.core.errors import ChecksumError, DeviceError, DeviceTimeoutError, ProtocolError
from edgekit.core.profiles import NpuConfig
from edgekit.npu.rtl_regs import STATUS_DONE, STATUS_FAULT, RtlReg, read_stats
from edgekit.npu.ring import NpuFault, ProgramStats, RingDevice

__all__ = [
    "ByteLink",
    "UartBridge",
    "BridgeNpuDevice",
    "crc16",
    "encode_write",
    "encode_read",
    "encode_set",
    "encode_get",
    "MAGIC",
    "REG_MEM_BYTES",
    "REG_MAGIC",
]

logger = logging.getLogger(__name__)

MAGIC = 0x31424B45  # "EKB1"
REG_MEM_BYTES = 0xF0
REG_MAGIC = 0xF4
#: Bytes per W/R command: a lost byte costs one block, not a whole image.
BLOCK_BYTES = 4096
#: Attempts of one command before its error reaches the caller.
ATTEMPTS = 3
#: Seconds a reply may take beyond its transfer time.
REPLY_TIMEOUT_S = 1.0
#: Seconds one program may run on the board before it counts as hung.
RUN_TIMEOUT_S = 30.0

T = TypeVar("T")


def crc16(data: bytes) -> int:
    """CRC-16/CCITT (polynomial 0x1021, initial value 0xFFFF), as the bridge computes it."""
    return binascii.crc_hqx(data, 0xFFFF)


def encode_write(addr: int, data: bytes) -> bytes:
    return b"W" + struct.pack("<IH", addr, len(data)) + bytes(data)


def encode_read(addr: int, n: int) -> bytes:
    return b"R" + struct.pack("<IH", addr, n)


def encode_set(reg: int, value: int) -> bytes:
    return b"S" + struct.pack("<BI", reg, value & 0xFFFFFFFF)


def encode_get(reg: int) -> bytes:
    return b"G" + struct.pack("<B", reg)


class ByteLink(Protocol):
    """A serial line to the board."""

    baudrate: int

    def write(self, data: bytes) -> None:
        """Sends ``data``."""
        ...

    def read(self, n: int, timeout_s: float) -> bytes:
        """Returns up to ``n`` bytes, fewer when ``timeout_s`` passed first."""
        ...

    def resync(self) -> None:
        """Waits until the bridge has dropped any incomplete command."""
        ...

    def clock(self) -> float:
        """Seconds on the link's clock (wall-clock, or simulated time)."""
        ...


class UartBridge:
    """Commands of the board's UART bridge.

    Args:
        link: The serial line.
    """

    def __init__(self, link: ByteLink) -> None:
        self.link = link
        self.byte_s = 10 / link.baudrate

    def _reply(self, n: int, what: str) -> bytes:
        got = self.link.read(n, REPLY_TIMEOUT_S + n * self.byte_s)
        if len(got) != n:
            raise DeviceTimeoutError(
                f"the board answered {len(got)} of {n} bytes to {what}",
                hint="Is the edgekit bitstream loaded (edgekit synth, then openFPGALoader)? Check --port and the baud rate.",
            )
        return got

    def _retry(self, what: str, attempt: Callable[[], T]) -> T:
        for k in range(ATTEMPTS):
            try:
                return attempt()
            except (DeviceTimeoutError, ProtocolError) as exc:
                if k == ATTEMPTS - 1:
                    raise
                logger.warning("%s failed (%s); resynchronizing and retrying", what, exc.message)
                self.link.resync()
        raise AssertionError("unreachable")

    def _tagged(self, tag: bytes, n: int, what: str) -> bytes:
        reply = self._reply(1 + n, what)
        if reply[:1] != tag:
            raise ProtocolError(f"the board answered {reply[:1]!r} to {what}, expected {tag!r}", hint="Reset the board (FIRE1) and retry.")
        return reply[1:]

    def write(self, addr: int, data: bytes) -> None:
        """Writes ``data`` at ``addr``; every block's CRC is checked.

        Raises:
            ChecksumError: a block arrived damaged ``ATTEMPTS`` times.
            DeviceTimeoutError: the board does not answer.
        """
        for off in range(0, len(data), BLOCK_BYTES):
            block = bytes(data[off : off + BLOCK_BYTES])

            def attempt(block: bytes = block, at: int = addr + off) -> None:
                self.link.write(encode_write(at, block))
                (got,) = struct.unpack("<H", self._tagged(b"w", 2, f"a write of {len(block)} bytes at {at:#x}"))
                if got != crc16(block):
                    raise ChecksumError(f"the board received a damaged block at {at:#x} (CRC {got:#06x}, sent {crc16(block):#06x})",
                                        hint="Check the cable and the baud rate.")  # fmt: skip

            self._retry("memory write", attempt)

    def read(self, addr: int, n: int) -> bytes:
        """Reads ``n`` bytes at ``addr``; every block's CRC is checked."""
        out = bytearray()
        for off in range(0, n, BLOCK_BYTES):
            size = min(BLOCK_BYTES, n - off)

            def attempt(at: int = addr + off, size: int = size) -> bytes:
                self.link.write(encode_read(at, size))
                body = self._tagged(b"r", size + 2, f"a read of {size} bytes at {at:#x}")
                data, (got,) = body[:size], struct.unpack("<H", body[size:])
                if got != crc16(data):
                    raise ChecksumError(f"a block read at {at:#x} arrived damaged", hint="Check the cable and the baud rate.")
                return data

            out += self._retry("memory read", attempt)
        return bytes(out)

    def set_reg(self, reg: int, value: int) -> None:
        """Writes a register (``npu_top``'s below 0xF0)."""

        def attempt() -> None:
            self.link.write(encode_set(reg, value))
            self._tagged(b"s", 0, f"a write of register {reg:#x}")

        self._retry("register write", attempt)

    def get_reg(self, reg: int) -> int:
        """Reads a register."""

        def attempt() -> int:
            self.link.write(encode_get(reg))
            return int(struct.unpack("<I", self._tagged(b"g", 4, f"a read of register {reg:#x}"))[0])

        return self._retry("register read", attempt)


class BridgeNpuDevice(RingDevice):
    """The accelerator on a board, through its UART bridge, behind the driver's rings.

    Args:
        npu: The accelerator the package was compiled for.
        dram_bytes: Memory the package needs.
        bridge: The board's bridge.

    Raises:
        DeviceError: no edgekit board top answers, or its array, or its
            memory, does not match the package.
    """

    def __init__(self, npu: NpuConfig, dram_bytes: int, bridge: UartBridge) -> None:
        super().__init__(npu, dram_bytes)
        self.bridge = bridge
        magic = bridge.get_reg(REG_MAGIC)
        if magic != MAGIC:
            raise DeviceError(f"the board answered magic {magic:#010x}, not edgekit's board top ({MAGIC:#010x})",
                              hint="Load the bitstream that `edgekit synth` wrote for this board.")  # fmt: skip
        geometry = bridge.get_reg(RtlReg.GEOMETRY)
        if geometry != (npu.rows << 16 | npu.cols):
            raise DeviceError(
                f"the board's accelerator is {geometry >> 16}x{geometry & 0xFFFF}, the package needs {npu.rows}x{npu.cols}",
                hint="Load the bitstream built for this board profile (edgekit synth --board ...).",
            )
        self.board_bytes = bridge.get_reg(REG_MEM_BYTES)
        if dram_bytes > self.board_bytes:
            raise DeviceError(f"the model needs {dram_bytes} bytes of accelerator memory, the board has {self.board_bytes}",
                              hint="Compile a smaller model, or synthesize a board top with more memory.")  # fmt: skip

    def _check(self, addr: int, n: int, what: str) -> None:
        if addr < 0 or addr + n > self.size:
            raise IndexError(f"{what} {addr}..{addr + n} outside 0..{self.size}")

    def read(self, addr: int, n: int) -> bytes:
        self._check(addr, n, "board memory read")
        return self.bridge.read(addr, n)

    def write(self, addr: int, data: bytes) -> None:
        self._check(addr, len(data), "board memory write")
        self.bridge.write(addr, data)

    def execute(self, prog_addr: int, count: int) -> ProgramStats:
        """Starts the program on the board, polls STATUS until it finishes, reads the counters.

        Raises:
            NpuFault: a misaligned program or an unknown opcode.
            DeviceTimeoutError: the program ran longer than :data:`RUN_TIMEOUT_S`.
        """
        if prog_addr % 32:
            raise NpuFault(f"program address {prog_addr:#x} is not 32-byte aligned (the board fetches whole rows)")
        self._check(prog_addr, 32 * count, "program")
        b = self.bridge
        b.set_reg(RtlReg.PROG_LO, prog_addr & 0xFFFFFFFF)
        b.set_reg(RtlReg.PROG_HI, prog_addr >> 32)
        b.set_reg(RtlReg.INSN_COUNT, count)
        b.set_reg(RtlReg.CTRL, 1)
        deadline = b.link.clock() + RUN_TIMEOUT_S
        while not (status := b.get_reg(RtlReg.STATUS)) & (STATUS_DONE | STATUS_FAULT):
            if b.link.clock() > deadline:
                raise DeviceTimeoutError(f"the NPU program at {prog_addr:#x} did not finish within {RUN_TIMEOUT_S:g} s",
                                         hint="Reset the board (FIRE1) and recompile the package.")  # fmt: skip
        if status & STATUS_FAULT:
            raise NpuFault("the board's NPU decoded an unknown opcode")
        return read_stats(b.get_reg)
