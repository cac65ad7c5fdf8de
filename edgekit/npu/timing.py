"""Cycle costs of the accelerator's instructions, shared by the simulator and the tiler.

The constants are calibrated against the accelerator's RTL (``rtl/npu/``,
run under Verilator by :mod:`edgekit.sim.npu.rtl_device`); ``docs/npu-isa.md``
says which are measured there and which are assumed:

* a ``GEMM`` issues in one cycle (decode and the weight block's read into
  the array's weight registers) and then streams one input vector per
  cycle; the next ``GEMM`` issues right behind it (measured);
* results land :func:`pipeline_depth` cycles after the last vector; an
  ``ALU`` op or an accumulator ``LOAD`` that follows a ``GEMM`` waits for
  them (measured);
* an ``ALU`` op costs ``ALU_LATENCY_CYCLES + count`` (``+ 2 * count`` for
  ``RESADD``, whose two products share each lane's multiplier): parameter
  reads, one entry per cycle, nine pipeline stages and the write-back
  (measured);
* a DMA instruction moves one beat of ``dma_bytes_per_cycle`` per cycle,
  each buffer entry in whole beats, one cycle per padding entry, plus the
  memory latency (:data:`MEM_LATENCY_CYCLES`, assumed: DRAM and
  interconnect) and the DMA pipeline (measured). Reads and writes use
  separate channels, as the Zynq HP ports do.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from edgekit.core.profiles import NpuConfig

if TYPE_CHECKING:
    from edgekit.npu.layers import ConvLayer

__all__ = [
    "MEM_LATENCY_CYCLES",
    "DMA_SETUP_CYCLES",
    "DMA_WRITE_SETUP_CYCLES",
    "GEMM_ISSUE_CYCLES",
    "ALU_LATENCY_CYCLES",
    "RESADD_PASSES",
    "FETCH_CYCLES",
    "FINISH_CYCLES",
    "dma_cycles",
    "gemm_cycles",
    "alu_cycles",
    "pipeline_depth",
    "estimate_conv",
    "estimate_add",
]

logger = logging.getLogger(__name__)

#: Assumed: cycles from a DMA request to its data (and from a write to its
#: acknowledgement) — DRAM plus interconnect, about 200 ns on a Zynq-7000 HP
#: port at 100 MHz. The RTL harness's memory model takes this number
#: (:data:`edgekit.sim.npu.rtl_device.DEFAULT_MEM_LATENCY`).
MEM_LATENCY_CYCLES = 20
#: Measured (RTL): a read DMA instruction's fixed cost on top of its beats:
#: the memory latency plus three cycles (response FIFO, entry register,
#: buffer write).
DMA_SETUP_CYCLES = MEM_LATENCY_CYCLES + 3
#: Measured (RTL): a STORE's fixed cost: accumulator read, the write beat
#: register and the last acknowledgement.
DMA_WRITE_SETUP_CYCLES = MEM_LATENCY_CYCLES + 3
#: Measured (RTL): a GEMM's issue cycle before its first vector.
GEMM_ISSUE_CYCLES = 1
#: Measured (RTL): an ALU op's cycles on top of one per entry pass (three
#: for the parameter reads, nine pipeline stages: the 34 x 32-bit multiply
#: in three, rounding, the shift in two, zero point and clamp in two).
ALU_LATENCY_CYCLES = 12
#: Measured (RTL): passes per entry of ``RESADD``: its two products go
#: through each lane's one multiplier one after the other.
RESADD_PASSES = 2
#: Measured (RTL): cycles from the start command to the first instruction
#: (fetch and queue).
FETCH_CYCLES = 2
#: Measured (RTL): FINISH waits one cycle for every module's idle flag.
FINISH_CYCLES = 2
_GEMM_DRAIN_CYCLES = 4


def _cdiv(a: float, b: float) -> int:
    return int(-(-a // b))


def pipeline_depth(npu: NpuConfig) -> int:
    """Cycles from a GEMM's last vector issue until its last result is written.

    Measured on the RTL: the input register, products, column sums (one
    adder-tree stage) and the accumulator read; it does not grow with
    ``ROWS``/``COLS``.
    """
    return _GEMM_DRAIN_CYCLES


def dma_cycles(
    npu: NpuConfig,
    *,
    y: int,
    x: int,
    chunk_bytes: int,
    x_stride: int,
    y_stride: int,
    pad_entries: int = 0,
    entry_bytes: int | None = None,
    write: bool = False,
) -> int:
    """Cycles of one 2-D DMA of ``y x x`` chunks of ``chunk_bytes``.

    Args:
        entry_bytes: Bytes of one buffer entry; each entry moves in whole
            beats (the RTL's DMA). ``None``: contiguous runs in whole beats
            (for callers that only rank tilings).
        write: A STORE (write channel) rather than a LOAD.
    """
    bw = float(npu.dma_bytes_per_cycle)
    if entry_bytes:
        transfer = y * x * (chunk_bytes // entry_bytes) * _cdiv(entry_bytes, bw)
    elif x_stride == chunk_bytes:
        if y_stride == x * chunk_bytes or y == 1:
            transfer = _cdiv(y * x * chunk_bytes, bw)
        else:
            transfer = y * _cdiv(x * chunk_bytes, bw)
    else:
        transfer = y * x * _cdiv(chunk_bytes, bw)
    return (DMA_WRITE_SETUP_CYCLES if write else DMA_SETUP_CYCLES) + transfer + pad_entries


def gemm_cycles(npu: NpuConfig, vectors: int) -> int:
    """Cycles the compute module spends on one GEMM of ``vectors`` input vectors.

    The weight block is read in the issue cycle, so back-to-back GEMMs stream
    without bubbles, however short they are (measured on the RTL).
    """
    return GEMM_ISSUE_CYCLES + vectors


def alu_cycles(npu: NpuConfig, count: int, after_gemm: bool, *, resadd: bool = False) -> int:
    """Cycles of one ALU op over ``count`` entries, drain included.

    One entry per cycle, ``RESADD_PASSES`` for a ``RESADD`` (``resadd``).
    """
    passes = RESADD_PASSES if resadd else 1
    return ALU_LATENCY_CYCLES + passes * count + (pipeline_depth(npu) if after_gemm else 0)


def estimate_conv(
    npu: NpuConfig,
    layer: "ConvLayer",
    *,
    th: int,
    tw: int,
    ih: int,
    iw: int,
    icg: int,
    ocg: int,
    n_sp: int,
    n_oc: int,
    n_ic: int,
    wblocks: int,
    order: str,
    slots: int,
    acc_slots: int,
) -> float:
    """Closed-form cycle estimate of a conv tiling (for ranking tilings only)."""
    R, C = npu.rows, npu.cols
    bw = float(npu.dma_bytes_per_cycle)
    oc, oh, ow = layer.out_shape
    m = th * tw
    steps = n_sp * n_oc * n_ic
    gemm = steps * wblocks * (m + GEMM_ISSUE_CYCLES)
    # Edge tiles are smaller than th x tw: scale the streaming part by real/tiled pixels.
    gemm *= (oh * ow) / float(n_sp * m) if n_sp * m else 1.0
    epilogue = n_sp * n_oc * ((1 + len(layer.stages)) * ocg * (ALU_LATENCY_CYCLES + m) + pipeline_depth(npu))
    compute = gemm + epilogue
    if order == "spatial":
        inp_loads = n_sp * (1 if n_ic == 1 else n_oc * n_ic)
        wgt_loads = 1 if n_oc * n_ic == 1 else steps
    else:
        inp_loads = 1 if n_sp * n_ic == 1 else steps
        wgt_loads = n_oc if n_ic == 1 else steps
    # The DMA moves every buffer entry in whole beats (padding: one entry per cycle).
    inp_cost = DMA_SETUP_CYCLES + ih * iw * icg * _cdiv(R, bw)
    read = inp_loads * inp_cost + wgt_loads * (DMA_SETUP_CYCLES + wblocks * _cdiv(R * C, bw))
    write = n_sp * n_oc * (DMA_WRITE_SETUP_CYCLES + th * tw * ocg * _cdiv(C, bw))
    if slots == 2:
        body = max(compute, read) + inp_cost
    else:
        body = compute + read
    return body + (write if acc_slots == 1 else max(0.0, write - compute)) + DMA_SETUP_CYCLES


def estimate_add(npu: NpuConfig, *, th: int, tw: int, ocg: int, steps: int, acc_slots: int) -> float:
    """Closed-form cycle estimate of a residual-add tiling."""
    bw = float(npu.dma_bytes_per_cycle)
    entries = th * tw * ocg
    load = DMA_SETUP_CYCLES + entries * _cdiv(npu.cols, bw)  # int8 operands: one entry of COLS bytes at a time
    compute = steps * (2 * load + ALU_LATENCY_CYCLES + RESADD_PASSES * entries)
    store = steps * (load + DMA_WRITE_SETUP_CYCLES - DMA_SETUP_CYCLES)
    return compute + (store if acc_slots == 1 else load)
