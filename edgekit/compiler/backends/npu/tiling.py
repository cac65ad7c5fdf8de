"""Tile selection: what part of a layer is on chip at a time.

A conv layer is computed as an implicit GEMM. Its output is cut into
spatial tiles of ``th x tw`` pixels and output-channel groups of ``ocg``
blocks of ``COLS`` channels; the reduction is cut into input-channel
groups of ``icg`` blocks of ``ROWS`` channels. One *step* computes the
partial sums of one (spatial tile, oc group, ic group); each step needs its
input tile (with the kernel halo) in the input buffer and its weight blocks
in the weight buffer. Buffers are double-buffered when both halves fit, so
the loads of step ``i+1`` overlap the GEMMs of step ``i``.

The search enumerates tile shapes and loop orders, keeps those that fit,
and picks the lowest estimated cycle count (a closed-form version of the
simulator's model, used only for ranking). A layer that does not fit in one
tile is split along every axis as needed; if not even the smallest split
fits (a single kernel's weight blocks exceed the weight buffer), the layer
is refused with :class:`DoesNotFitError` and stays on the host: nothing is
ever truncated.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from edgekit.core.errors import DoesNotFitError
from edgekit.core.profiles import NpuConfig
from edgekit.npu.layers import AddLayer, ConvLayer, NpuLayer
from edgekit.npu import timing

__all__ = ["Tiling", "plan", "plan_conv", "plan_add", "ic_blocks_of", "dw_blocks", "LOOP_ORDERS"]

logger = logging.getLogger(__name__)

#: ``spatial``: for tile: for oc group: for ic group. ``weights``: for oc
#: group: for tile: for ic group (weights stay while tiles stream past).
LOOP_ORDERS = ("spatial", "weights")
_MAX_EXTENT = 4095  # Gemm ext_outer/ext_inner are 12-bit fields


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _unique_splits(n: int) -> list[int]:
    """Every distinct ``ceil(n / k)``, largest first."""
    return sorted({_cdiv(n, k) for k in range(1, n + 1)}, reverse=True)


def ic_blocks_of(layer: ConvLayer, npu: NpuConfig, ob0: int, ob1: int) -> tuple[int, int]:
    """Input-channel blocks ``[ib0, ib1)`` that output blocks ``[ob0, ob1)`` read."""
    cb = _cdiv(layer.in_shape[0], npu.rows)
    if layer.group == 1:
        return 0, cb
    lo = ob0 * npu.cols
    hi = min(ob1 * npu.cols, layer.out_shape[0])
    return lo // npu.rows, _cdiv(hi, npu.rows)


def dw_blocks(layer: ConvLayer, npu: NpuConfig, ob: int) -> tuple[int, int]:
    """Input blocks ``[ib0, ib1)`` one depthwise output block reads."""
    return ic_blocks_of(layer, npu, ob, ob + 1)


def _dw_groups(layer: ConvLayer, npu: NpuConfig, ocg: int) -> tuple[int, int]:
    """Largest (input blocks, weight blocks per kernel position) over depthwise oc groups of ``ocg``."""
    ocb = _cdiv(layer.out_shape[0], npu.cols)
    most_ib = most_w = 0
    for o0 in range(0, ocb, ocg):
        o1 = min(ocb, o0 + ocg)
        ib0, ib1 = ic_blocks_of(layer, npu, o0, o1)
        most_ib = max(most_ib, ib1 - ib0)
        most_w = max(most_w, sum(dw_blocks(layer, npu, ob)[1] - dw_blocks(layer, npu, ob)[0] for ob in range(o0, o1)))
    return most_ib, most_w


@dataclass(frozen=True)
class Tiling:
    """A chosen tiling.

    Attributes:
        th, tw: Output tile (pixels).
        icg, ocg: Channel blocks per input group / output group.
        order: One of :data:`LOOP_ORDERS`.
        slots: Halves of the input and weight buffers (2 = double-buffered).
        acc_slots: Halves of the accumulator tile area.
        n_spatial, n_oc, n_ic: Number of tiles / groups along each axis.
        inp_entries, wgt_entries, acc_entries: Largest use per slot.
        param_entries: Accumulator entries holding per-channel parameters.
        est_cycles: The closed-form estimate used to choose this tiling.
    """

    th: int
    tw: int
    icg: int
    ocg: int
    order: str
    slots: int
    acc_slots: int
    n_spatial: int
    n_oc: int
    n_ic: int
    inp_entries: int
    wgt_entries: int
    acc_entries: int
    param_entries: int
    est_cycles: float

    @property
    def splits(self) -> int:
        """Steps the layer is split into."""
        return self.n_spatial * self.n_oc * self.n_ic

    def to_json(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _capacity(npu: NpuConfig) -> tuple[int, int, int]:
    return (
        npu.input_buffer_bytes // npu.rows,
        npu.weight_buffer_bytes // (npu.rows * npu.cols),
        npu.acc_buffer_bytes // (4 * npu.cols),
    )


def param_entries_per_block(layer: NpuLayer) -> int:
    """Accumulator entries of parameters per output block (bias + 2 per stage)."""
    return 1 + 2 * len(layer.stages)


def plan_conv(layer: ConvLayer, npu: NpuConfig) -> Tiling:
    """Chooses the tiling of a conv/gemm layer.

    Raises:
        DoesNotFitError: not even a 1x1 tile of one block fits the buffers.
    """
    c, h, w = layer.in_shape
    oc, oh, ow = layer.out_shape
    kh, kw = layer.weight.shape[2:]
    (sh, sw), (dh, dw) = layer.strides, layer.dilations
    R, C = npu.rows, npu.cols
    cb, ocb = _cdiv(c, R), _cdiv(oc, C)
    inp_cap, wgt_cap, acc_cap = _capacity(npu)
    params = param_entries_per_block(layer) * ocb
    depthwise = layer.group != 1
    best: Tiling | None = None
    ocg_opts = _unique_splits(ocb)
    for slots in (2, 1):
        for acc_slots in (2, 1):
            for ocg in ocg_opts:
                n_oc = _cdiv(ocb, ocg)
                if depthwise:
                    icg_opts = [_dw_groups(layer, npu, ocg)[0]]
                else:
                    icg_opts = _unique_splits(cb)
                for icg in icg_opts:
                    n_ic = 1 if depthwise else _cdiv(cb, icg)
                    wblocks = kh * kw * (_dw_groups(layer, npu, ocg)[1] if depthwise else icg * ocg)
                    if slots * wblocks > wgt_cap:
                        continue
                    for tw in _unique_splits(ow):
                        if tw > _MAX_EXTENT:
                            continue
                        iw = (tw - 1) * sw + (kw - 1) * dw + 1
                        # Largest th that fits the input and accumulator halves.
                        th_inp = ((inp_cap // slots) // (iw * icg) - (kh - 1) * dh - 1) // sh + 1
                        th_acc = ((acc_cap - params) // acc_slots) // (tw * ocg)
                        th = min(oh, th_inp, th_acc, _MAX_EXTENT)
                        if th < 1:
                            continue
                        th = _cdiv(oh, _cdiv(oh, th))  # balance the tiles
                        ih = (th - 1) * sh + (kh - 1) * dh + 1
                        n_sp = _cdiv(oh, th) * _cdiv(ow, tw)
                        for order in LOOP_ORDERS:
                            est = timing.estimate_conv(
                                npu, layer, th=th, tw=tw, ih=ih, iw=iw, icg=icg, ocg=ocg, n_sp=n_sp,
                                n_oc=n_oc, n_ic=n_ic, wblocks=wblocks, order=order, slots=slots, acc_slots=acc_slots,
                            )  # fmt: skip
                            if best is None or est < best.est_cycles:
                                best = Tiling(
                                    th, tw, icg, ocg, order, slots, acc_slots, n_sp, n_oc, n_ic,
                                    ih * iw * icg, wblocks, th * tw * ocg, params, est,
                                )  # fmt: skip
        if best is not None:
            break
    if best is None:
        raise DoesNotFitError(
            f"layer '{layer.name}' does not fit the accelerator buffers even when split to one pixel and one "
            f"channel block (needs {kh * kw} weight blocks and {params} parameter entries)",
            hint="It runs on the host; a board with larger NPU buffers would take it.",
            layer=layer.name,
        )
    logger.debug("tiling %s: %s", layer.name, best)
    return best


def plan_add(layer: AddLayer, npu: NpuConfig) -> Tiling:
    """Chooses the tiling of a residual add (pixels x channel blocks in the accumulator).

    Raises:
        DoesNotFitError: not even one pixel of one block fits.
    """
    c, h, w = layer.shape
    C = npu.cols
    ocb = _cdiv(c, C)
    _, _, acc_cap = _capacity(npu)
    params = 3 + 2 * len(layer.stages)
    best: Tiling | None = None
    for acc_slots in (2, 1):
        for ocg in _unique_splits(ocb):
            for tw in _unique_splits(w):
                th = min(h, ((acc_cap - params) // acc_slots) // (2 * tw * ocg), _MAX_EXTENT)
                if th < 1 or tw > _MAX_EXTENT:
                    continue
                th = _cdiv(h, _cdiv(h, th))
                n_sp = _cdiv(h, th) * _cdiv(w, tw)
                n_oc = _cdiv(ocb, ocg)
                est = timing.estimate_add(npu, th=th, tw=tw, ocg=ocg, steps=n_sp * n_oc, acc_slots=acc_slots)
                if best is None or est < best.est_cycles:
                    best = Tiling(th, tw, ocg, ocg, "spatial", 1, acc_slots, n_sp, n_oc, 1, 0, 0, 2 * th * tw * ocg, params, est)
        if best is not None:
            break
    if best is None:
        raise DoesNotFitError(
            f"add '{layer.name}' does not fit the accumulator buffer", hint="It runs on the host.", layer=layer.name
        )
    return best


def plan(layer: NpuLayer, npu: NpuConfig) -> Tiling:
    """The tiling of any accelerator layer."""
    return plan_conv(layer, npu) if isinstance(layer, ConvLayer) else plan_add(layer, npu)

