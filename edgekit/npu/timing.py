"""Cycle costs of the accelerator's instructions, shared by the simulator and the tiler.

The array is weight-stationary and systolic: a ``GEMM`` streams one input
vector per cycle; its ``ROWS x COLS`` weight block is preloaded into shadow
registers (``ROWS`` cycles) while the previous ``GEMM`` streams, so the
preload only shows when that ``GEMM`` was shorter than ``ROWS`` vectors. A
``GEMM`` that starts on an idle array pays the pipeline fill (``ROWS + COLS
- 1`` cycles); an ``ALU`` op that follows a ``GEMM`` waits for the same
drain. DMA moves ``dma_bytes_per_cycle`` bytes per cycle per AXI channel
(reads and writes are separate channels, as on the Zynq HP ports), pays a
fixed setup latency per instruction and starts every non-contiguous run on
a fresh beat; padding is written into the buffer at one entry per cycle.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from edgekit.core.profiles import NpuConfig

if TYPE_CHECKING:
    from edgekit.npu.layers import ConvLayer

__all__ = [
    "DMA_SETUP_CYCLES",
    "GEMM_ISSUE_CYCLES",
    "ALU_LATENCY_CYCLES",
    "FINISH_CYCLES",
    "dma_cycles",
    "gemm_cycles",
    "alu_cycles",
    "pipeline_depth",
    "estimate_conv",
    "estimate_add",
]

logger = logging.getLogger(__name__)

#: Latency of one DMA descriptor: address phase plus DRAM first-word latency
#: (about 200 ns on Zynq-7000 HP ports at 100 MHz).
DMA_SETUP_CYCLES = 24
#: Decode/issue of one GEMM before its first vector enters the array.
GEMM_ISSUE_CYCLES = 1
#: ALU pipeline depth (subtract, multiply, round/shift, clamp).
ALU_LATENCY_CYCLES = 4
FINISH_CYCLES = 1


def _cdiv(a: float, b: float) -> int:
    return int(-(-a // b))


def pipeline_depth(npu: NpuConfig) -> int:
    """Cycles from the first vector entering the array to its result leaving it."""
    return npu.rows + npu.cols - 1


def dma_cycles(npu: NpuConfig, *, y: int, x: int, chunk_bytes: int, x_stride: int, y_stride: int, pad_entries: int = 0) -> int:
    """Cycles of one 2-D DMA of ``y x x`` chunks of ``chunk_bytes``."""
    bw = float(npu.dma_bytes_per_cycle)
    if x_stride == chunk_bytes:
        if y_stride == x * chunk_bytes or y == 1:
            transfer = _cdiv(y * x * chunk_bytes, bw)
        else:
            transfer = y * _cdiv(x * chunk_bytes, bw)
    else:
        transfer = y * x * _cdiv(chunk_bytes, bw)
    return DMA_SETUP_CYCLES + transfer + pad_entries


def gemm_cycles(npu: NpuConfig, vectors: int, prev_vectors: int, cold: bool) -> int:
    """Cycles of one GEMM of ``vectors`` input vectors.

    Args:
        prev_vectors: Length of the GEMM before it (its streaming hides this
            GEMM's weight preload); 0 when the array was idle.
        cold: The array was idle or drained before this GEMM.
    """
    cycles = GEMM_ISSUE_CYCLES + vectors + max(0, npu.rows - prev_vectors)
    if cold:
        cycles += pipeline_depth(npu)
    return cycles


def alu_cycles(npu: NpuConfig, count: int, after_gemm: bool) -> int:
    """Cycles of one ALU op over ``count`` entries (one entry per cycle)."""
    return ALU_LATENCY_CYCLES + count + (pipeline_depth(npu) if after_gemm else 0)


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
    cin = layer.in_shape[0]
    cpad_in = _cdiv(cin, R) * R
    m = th * tw
    steps = n_sp * n_oc * n_ic
    gemm = steps * wblocks * (m + GEMM_ISSUE_CYCLES + max(0, R - m))
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
    contiguous = icg * R == cpad_in
    inp_cost = DMA_SETUP_CYCLES + (ih * _cdiv(iw * icg * R, bw) if contiguous else ih * iw * _cdiv(icg * R, bw))
    read = inp_loads * inp_cost + wgt_loads * (DMA_SETUP_CYCLES + _cdiv(wblocks * R * C, bw))
    write = n_sp * n_oc * (DMA_SETUP_CYCLES + th * _cdiv(tw * ocg * C, bw))
    if slots == 2:
        body = max(compute, read) + inp_cost
    else:
        body = compute + read
    return body + (write if acc_slots == 1 else max(0.0, write - compute)) + DMA_SETUP_CYCLES


def estimate_add(npu: NpuConfig, *, th: int, tw: int, ocg: int, steps: int, acc_slots: int, c_pad: int) -> float:
    """Closed-form cycle estimate of a residual-add tiling."""
    bw = float(npu.dma_bytes_per_cycle)
    entries = th * tw * ocg
    contiguous = ocg * npu.cols == c_pad
    load = DMA_SETUP_CYCLES + (th * _cdiv(tw * ocg * npu.cols, bw) if contiguous else th * tw * _cdiv(ocg * npu.cols, bw))
    compute = steps * (2 * load + ALU_LATENCY_CYCLES + entries)
    store = steps * load
    return compute + (store if acc_slots == 1 else load)
