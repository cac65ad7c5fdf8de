"""Functional and cycle-level simulator of the accelerator.

:class:`NpuCore` executes an instruction stream on a DRAM image:

* **functionally**, bit-exact: int8 x int8 products summed in int32 (wrapping
  like the hardware adders), the ALU's 64-bit fixed-point requantization
  from :func:`edgekit.core.fixedpoint.requantize`;
* **in time**: the load, compute and store modules each run in program order;
  an instruction starts when its module is free, the dependency tokens it
  pops have been pushed and, for DMA, its AXI channel (read or write) is
  free. Costs come from :mod:`edgekit.npu.timing`. Time is a max-plus
  function of the costs, so a faster DMA can never make a program slower.

Every buffer entry carries the time its last write completes and the time
its last reader finishes; an instruction that reads data before it is
written, or overwrites data still being read, raises :class:`HazardError`.
That turns a wrong dependency token in the compiler into a test failure
instead of a silently different result.
"""

from __future__ import annotations

import logging
from collections import deque

import numpy as np

from edgekit.core.fixedpoint import FixedPoint, requantize
from edgekit.core.profiles import NpuConfig
from edgekit.npu import timing
from edgekit.npu.isa import Alu, AluOp, Buffer, Finish, Gemm, Insn, Load, Module, Store, module_of
from edgekit.npu.ring import NpuFault, ProgramStats

__all__ = ["NpuCore", "HazardError"]

logger = logging.getLogger(__name__)


class HazardError(NpuFault):
    """An instruction read data not yet written or overwrote data still being read."""


# Token queue each (module, flag) uses: (module, "pop_prev") -> queue name.
_QUEUES = {
    (Module.LOAD, "pop_next"): "c2l",
    (Module.LOAD, "push_next"): "l2c",
    (Module.COMPUTE, "pop_prev"): "l2c",
    (Module.COMPUTE, "pop_next"): "s2c",
    (Module.COMPUTE, "push_prev"): "c2l",
    (Module.COMPUTE, "push_next"): "c2s",
    (Module.STORE, "pop_prev"): "c2s",
    (Module.STORE, "push_prev"): "s2c",
}


class _Buf:
    """One on-chip buffer with per-entry write-ready and read-busy times."""

    def __init__(self, name: str, data: np.ndarray) -> None:
        self.name = name
        self.data = data
        self.ready = np.zeros(len(data), dtype=np.int64)
        self.busy = np.zeros(len(data), dtype=np.int64)

    def check(self, idx: np.ndarray | slice, what: str) -> None:
        if isinstance(idx, slice):
            if idx.start < 0 or idx.stop > len(self.data):
                raise NpuFault(f"{what}: {self.name} entries {idx.start}..{idx.stop} outside 0..{len(self.data)}")
        elif idx.size and (idx.min() < 0 or idx.max() >= len(self.data)):
            raise NpuFault(f"{what}: {self.name} entry {int(idx.max())} outside 0..{len(self.data)}")

    def read(self, idx: np.ndarray | slice, start: int, end: int, what: str) -> None:
        if np.any(self.ready[idx] > start):
            raise HazardError(f"{what} reads {self.name} data at cycle {start} before it is written")
        self.busy[idx] = np.maximum(self.busy[idx], end)

    def write(self, idx: np.ndarray | slice, start: int, end: int, what: str) -> None:
        if np.any(self.busy[idx] > start) or np.any(self.ready[idx] > start):
            raise HazardError(f"{what} overwrites {self.name} data at cycle {start} that is still in use")
        self.ready[idx] = end

    def update(self, idx: np.ndarray | slice, start: int, end: int, what: str) -> None:
        """Read-modify-write by one pipelined unit (accumulate, ALU in place)."""
        if np.any(self.ready[idx] > start) or np.any(self.busy[idx] > start):
            raise HazardError(f"{what} updates {self.name} data at cycle {start} that is not ready or still in use")
        self.ready[idx] = end
        self.busy[idx] = end


class NpuCore:
    """One accelerator instance executing programs against a DRAM image.

    Args:
        npu: Array and buffer parameters.
        dram: The DRAM image (a writable buffer the core reads and writes).
        functional: Compute values; ``False`` only times the program (for
            fast design-space sweeps; hazards are still checked).
    """

    def __init__(self, npu: NpuConfig, dram: bytearray | memoryview | np.ndarray, functional: bool = True) -> None:
        self.npu = npu
        self.dram = np.frombuffer(dram, dtype=np.uint8) if not isinstance(dram, np.ndarray) else dram
        self.functional = functional
        R, C = npu.rows, npu.cols
        self.inp = _Buf("input buffer", np.zeros((npu.input_buffer_bytes // R, R), dtype=np.int8))
        self.wgt = _Buf("weight buffer", np.zeros((npu.weight_buffer_bytes // (R * C), R, C), dtype=np.int8))
        self.acc = _Buf("accumulator buffer", np.zeros((npu.acc_buffer_bytes // (4 * C), C), dtype=np.int32))

    # ------------------------------------------------------------------ DMA

    def _dram_view(self, addr: int, y: int, x: int, chunk_bytes: int, xs: int, ys: int, what: str) -> np.ndarray:
        if y == 0 or x == 0:
            return np.zeros((y, x, chunk_bytes), dtype=np.int8)
        last = addr + (y - 1) * ys + (x - 1) * xs + chunk_bytes
        if addr < 0 or last > len(self.dram):
            raise NpuFault(f"{what}: DRAM access {addr}..{last} outside the {len(self.dram)}-byte memory")
        base = self.dram[addr:last].view(np.int8)
        return np.lib.stride_tricks.as_strided(base, shape=(y, x, chunk_bytes), strides=(ys, xs, 1), writeable=True)

    def _load(self, insn: Load, start: int, stats: ProgramStats) -> int:
        R, C = self.npu.rows, self.npu.cols
        buf, eb = {
            Buffer.INP: (self.inp, R),
            Buffer.WGT: (self.wgt, R * C),
            Buffer.ACC: (self.acc, C if insn.int8_src else 4 * C),
        }[Buffer(insn.buffer)]
        yp = insn.y_size + insn.pad_top + insn.pad_bottom
        xp = insn.x_size + insn.pad_left + insn.pad_right
        n = yp * xp * insn.chunk
        sl = slice(insn.sram_base, insn.sram_base + n)
        buf.check(sl, "LOAD")
        chunk_bytes = insn.chunk * eb
        nbytes = insn.y_size * insn.x_size * chunk_bytes
        cost = timing.dma_cycles(
            self.npu, y=insn.y_size, x=insn.x_size, chunk_bytes=chunk_bytes, x_stride=insn.x_stride,
            y_stride=insn.y_stride, pad_entries=(yp * xp - insn.y_size * insn.x_size) * insn.chunk, entry_bytes=eb,
        )  # fmt: skip
        end = start + cost
        buf.write(sl, start, end, "LOAD")
        src = self._dram_view(insn.dram_addr, insn.y_size, insn.x_size, chunk_bytes, insn.x_stride, insn.y_stride, "LOAD")
        if self.functional:
            box = np.full((yp, xp, chunk_bytes), insn.pad_value, dtype=np.int8)
            if buf is self.acc and not insn.int8_src:
                box = np.zeros((yp, xp, chunk_bytes), dtype=np.int8)  # parameters are never padded
            box[insn.pad_top : insn.pad_top + insn.y_size, insn.pad_left : insn.pad_left + insn.x_size] = src
            flat = box.reshape(n, -1)
            if buf is self.acc:
                buf.data[sl] = flat.astype(np.int32) if insn.int8_src else flat.view(np.int32)
            else:
                buf.data[sl] = flat.reshape(buf.data[sl].shape)
        stats.dma_read_bytes += nbytes
        stats.dma_read_cycles += cost
        return end

    def _store(self, insn: Store, start: int, stats: ProgramStats) -> int:
        C = self.npu.cols
        n = insn.y_size * insn.x_size * insn.chunk
        sl = slice(insn.sram_base, insn.sram_base + n)
        self.acc.check(sl, "STORE")
        chunk_bytes = insn.chunk * C
        cost = timing.dma_cycles(
            self.npu, y=insn.y_size, x=insn.x_size, chunk_bytes=chunk_bytes, x_stride=insn.x_stride,
            y_stride=insn.y_stride, entry_bytes=C, write=True,
        )  # fmt: skip
        end = start + cost
        self.acc.read(sl, start, end, "STORE")
        dst = self._dram_view(insn.dram_addr, insn.y_size, insn.x_size, chunk_bytes, insn.x_stride, insn.y_stride, "STORE")
        if self.functional:
            # The store unit writes the low byte of each lane (values are already clamped).
            dst[...] = self.acc.data[sl].astype(np.int8).reshape(insn.y_size, insn.x_size, chunk_bytes)
        stats.dma_write_bytes += insn.y_size * insn.x_size * chunk_bytes
        stats.dma_write_cycles += cost
        return end

    # -------------------------------------------------------------- compute

    def _gemm(self, insn: Gemm, start: int, cost: int) -> int:
        end = start + cost
        i = np.arange(insn.ext_outer, dtype=np.int64)[:, None]
        j = np.arange(insn.ext_inner, dtype=np.int64)[None, :]
        ii = (insn.inp_base + i * insn.inp_so + j * insn.inp_si).ravel()
        aa = (insn.acc_base + i * insn.acc_so + j * insn.acc_si).ravel()
        w = np.array([insn.wgt_base])
        self.inp.check(ii, "GEMM")
        self.acc.check(aa, "GEMM")
        self.wgt.check(w, "GEMM")
        self.inp.read(ii, start, end, "GEMM")
        self.wgt.read(w, start, end, "GEMM")
        self.acc.update(aa, start, end, "GEMM")
        if self.functional:
            # float64 products of int8 are exact; the sum of ROWS of them too.
            prod = self.inp.data[ii].astype(np.float64) @ self.wgt.data[insn.wgt_base].astype(np.float64)
            prod_i = prod.astype(np.int64)
            if insn.reset:
                base = np.zeros_like(prod_i)
            else:
                base = self.acc.data[aa].astype(np.int64)
            if len(np.unique(aa)) != len(aa):
                out = self.acc.data.astype(np.int64)
                if insn.reset:
                    out[aa] = 0
                np.add.at(out, aa, prod_i)
                self.acc.data[:] = out.astype(np.int32)  # int64 -> int32 wraps like the adders
            else:
                self.acc.data[aa] = (base + prod_i).astype(np.int32)
        return end

    def _alu(self, insn: Alu, start: int, cost: int) -> int:
        end = start + cost
        idx = insn.dst_base + np.arange(insn.count, dtype=np.int64) * insn.stride
        nparam = {AluOp.ADD: 1, AluOp.REQUANT: 2, AluOp.RESADD: 3}[AluOp(insn.op)]
        pidx = np.arange(insn.param_base, insn.param_base + nparam)
        self.acc.check(idx, "ALU")
        self.acc.check(pidx, "ALU")
        self.acc.read(pidx, start, end, "ALU")
        src = None
        if insn.op == AluOp.RESADD:
            src = insn.src_base + np.arange(insn.count, dtype=np.int64) * insn.stride
            self.acc.check(src, "ALU")
            self.acc.read(src, start, end, "ALU")
        self.acc.update(idx, start, end, "ALU")
        if self.functional:
            x = self.acc.data[idx].astype(np.int64)
            p = self.acc.data[pidx].astype(np.int64)
            if insn.op == AluOp.ADD:
                y = (x + p[0]).astype(np.int32)
            elif insn.op == AluOp.REQUANT:
                v = x - insn.zin
                if insn.relu:
                    v = np.maximum(v, 0)
                y = requantize(v, FixedPoint(p[0][None, :], p[1][None, :]), insn.zout, insn.lo, insn.hi).astype(np.int32)
            else:
                b = self.acc.data[src].astype(np.int64)
                v = (x - insn.zin) * p[0] + (b - insn.zin_b) * p[1]
                one = FixedPoint(np.ones_like(p[2])[None, :], p[2][None, :])
                y = requantize(v, one, insn.zout, insn.lo, insn.hi).astype(np.int32)
            self.acc.data[idx] = y
        return end

    # ------------------------------------------------------------------ run

    def run(self, insns: list[Insn]) -> ProgramStats:
        """Executes ``insns`` (one program, ending in ``FINISH``) and returns its costs.

        Raises:
            NpuFault: an access out of range, a token popped that was never
                pushed, or an instruction in the wrong module.
            HazardError: a data race the dependency tokens do not prevent.
        """
        npu = self.npu
        stats = ProgramStats()
        for buf in (self.inp, self.wgt, self.acc):  # each program starts on an idle device at cycle 0
            buf.ready[:] = 0
            buf.busy[:] = 0
        t0 = timing.FETCH_CYCLES
        clock = {Module.LOAD: t0, Module.COMPUTE: t0, Module.STORE: t0}
        queues: dict[str, deque[int]] = {q: deque() for q in ("l2c", "c2l", "c2s", "s2c")}
        read_free = write_free = t0
        prev_compute: Insn | None = None
        for n, insn in enumerate(insns):
            mod = module_of(insn)
            start = clock[mod]
            for flag in ("pop_prev", "pop_next"):
                if getattr(insn.deps, flag):  # type: ignore[attr-defined]
                    q = _QUEUES.get((mod, flag))
                    if q is None:
                        raise NpuFault(f"instruction {n} ({type(insn).__name__}) in the {mod.name} module cannot {flag}")
                    if not queues[q]:
                        raise NpuFault(f"instruction {n} pops an empty {q} queue (the program would deadlock)")
                    start = max(start, queues[q].popleft())
            if isinstance(insn, Load):
                if isinstance(prev_compute, Gemm) and mod == Module.COMPUTE:  # an accumulator load waits for the drain
                    start = max(start, clock[mod] + timing.pipeline_depth(npu))
                start = max(start, read_free)
                end = self._load(insn, start, stats)
                read_free = end
            elif isinstance(insn, Store):
                start = max(start, write_free)
                end = self._store(insn, start, stats)
                write_free = end
            elif isinstance(insn, Gemm):
                vectors = insn.ext_outer * insn.ext_inner
                cost = timing.gemm_cycles(npu, vectors)
                end = self._gemm(insn, start, cost)
                stats.gemm_cycles += cost
                stats.vectors += vectors
            elif isinstance(insn, Alu):
                if isinstance(prev_compute, Gemm):  # the ALU waits for the GEMM's results to land
                    start = max(start, clock[mod] + timing.pipeline_depth(npu))
                cost = timing.alu_cycles(npu, insn.count, after_gemm=False, resadd=insn.op == AluOp.RESADD)
                end = self._alu(insn, start, cost)
                stats.alu_cycles += cost
            elif isinstance(insn, Finish):
                start = max(start, *clock.values(), read_free, write_free)
                if isinstance(prev_compute, Gemm):
                    start = max(start, clock[mod] + timing.pipeline_depth(npu))
                end = start + timing.FINISH_CYCLES
            else:  # pragma: no cover - decode() only makes the classes above
                raise NpuFault(f"unknown instruction {insn!r}")
            if mod == Module.COMPUTE:
                if not isinstance(insn, Finish):
                    stats.compute_stall_cycles += start - clock[mod]
                prev_compute = insn
            clock[mod] = end
            for flag in ("push_prev", "push_next"):
                if getattr(insn.deps, flag):  # type: ignore[attr-defined]
                    q = _QUEUES.get((mod, flag))
                    if q is None:
                        raise NpuFault(f"instruction {n} ({type(insn).__name__}) in the {mod.name} module cannot {flag}")
                    queues[q].append(end)
            stats.instructions += 1
        stats.cycles = max(*clock.values(), read_free, write_free)
        stats.leftover_tokens = sum(len(q) for q in queues.values())
        return stats
