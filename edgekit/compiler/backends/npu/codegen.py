"""Lowers tiled layers to instruction streams and packs their constants.

DRAM layout: every activation tensor the accelerator touches is stored
pixel-major (NHWC) with its channels padded to a multiple of
``lcm(ROWS, COLS)`` (padding channels meet zero weights downstream, so their
values never matter). Weights are packed per (output group, input group)
in the order a step loads them, one contiguous DMA each: blocks of
``ROWS x COLS`` int8, ``block[r][c] = W[oc = ob*COLS + c, ic = ib*ROWS + r,
kh, kw]``. Per-channel parameters (bias, multipliers, shifts) are int32
vectors of ``COLS`` lanes, loaded once per layer to the top of the
accumulator buffer.

Program order puts the loads of step ``i + slots`` right after the GEMMs of
step ``i``, so every dependency token is produced before it is consumed.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import Iterator, Mapping

import numpy as np

from edgekit.compiler.backends.npu.tiling import Tiling, dw_blocks, ic_blocks_of
from edgekit.core.profiles import NpuConfig
from edgekit.npu.isa import Alu, AluOp, Buffer, Deps, Finish, Gemm, Insn, Load, Store
from edgekit.npu.layers import AddLayer, ConvLayer, NpuLayer
from edgekit.npu.placement import TensorPlace, align

__all__ = ["LayerCode", "Program", "generate", "lane_multiple"]

logger = logging.getLogger(__name__)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def lane_multiple(npu: NpuConfig) -> int:
    """Channel padding unit of activations in DRAM."""
    return math.lcm(npu.rows, npu.cols)


@dataclass
class LayerCode:
    """One layer's program."""

    name: str
    kind: str
    op: str
    insns: list[Insn]
    tiling: Tiling
    macs: int
    inputs: tuple[str, ...]
    output: str
    const_addr: int
    const_size: int


@dataclass
class Program:
    """Everything the accelerator needs for a model.

    Attributes:
        const_image: DRAM bytes from ``const_base`` (weights and parameters).
        act_base, act_end: The activation region.
    """

    layers: list[LayerCode]
    tensors: dict[str, TensorPlace]
    const_base: int
    const_image: bytes
    act_base: int
    act_end: int
    notes: list[str] = field(default_factory=list)


class _Emitter:
    """Collects instructions and adds token flags afterwards."""

    def __init__(self) -> None:
        self.insns: list[Insn] = []

    def add(self, insn: Insn) -> int:
        self.insns.append(insn)
        return len(self.insns) - 1

    def dep(self, index: int, **flags: bool) -> None:
        insn = self.insns[index]
        self.insns[index] = replace(insn, deps=insn.deps | Deps(**flags))  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- #
# Constants
# --------------------------------------------------------------------------- #


def _params(layer: NpuLayer, npu: NpuConfig, nblocks: int) -> np.ndarray:
    """int32 ``[nblocks, n_per_block, COLS]`` parameter vectors of a conv layer."""
    C = npu.cols
    oc = layer.out_shape[0]
    npar = 1 + 2 * len(layer.stages)
    out = np.zeros((nblocks * C, npar), dtype=np.int64)
    out[:oc, 0] = layer.bias  # type: ignore[union-attr]
    for k, st in enumerate(layer.stages):
        out[:oc, 1 + 2 * k] = st.fp.multiplier
        out[:oc, 2 + 2 * k] = st.fp.shift
    return out.reshape(nblocks, C, npar).transpose(0, 2, 1).astype(np.int32)


def _weight_block(layer: ConvLayer, npu: NpuConfig, ob: int, ib: int, kh: int, kw: int) -> np.ndarray:
    R, C = npu.rows, npu.cols
    oc, cin = layer.out_shape[0], layer.in_shape[0]
    blk = np.zeros((R, C), dtype=np.int8)
    o0, i0 = ob * C, ib * R
    o1, i1 = min(oc, o0 + C), min(cin, i0 + R)
    if o1 <= o0 or i1 <= i0:
        return blk
    if layer.group == 1:
        blk[: i1 - i0, : o1 - o0] = layer.weight[o0:o1, i0:i1, kh, kw].T
    else:
        for ch in range(max(o0, i0), min(o1, i1)):
            blk[ch - i0, ch - o0] = layer.weight[ch, 0, kh, kw]
    return blk


# --------------------------------------------------------------------------- #
# Conv
# --------------------------------------------------------------------------- #


def _steps(tiling: Tiling) -> Iterator[tuple[int, int, int]]:
    if tiling.order == "spatial":
        for t in range(tiling.n_spatial):
            for o in range(tiling.n_oc):
                for i in range(tiling.n_ic):
                    yield t, o, i
    else:
        for o in range(tiling.n_oc):
            for t in range(tiling.n_spatial):
                for i in range(tiling.n_ic):
                    yield t, o, i


class _ConvLowering:
    """One conv layer's program, built in named steps (:meth:`program`).

    The geometry of the layer and its tiling, the constants
    (:meth:`pack_constants`), which buffer slot each step reads
    (:meth:`schedule_slots`), and the instructions of each step: its loads
    (:meth:`emit_loads`), its GEMMs (:meth:`emit_gemms`) and, after a
    group's last input-channel step, the requantization and store
    (:meth:`emit_epilogue`).
    """

    def __init__(self, layer: ConvLayer, tiling: Tiling, npu: NpuConfig, src: TensorPlace, dst: TensorPlace, const_addr: int) -> None:
        self.layer, self.tiling, self.npu, self.src, self.dst, self.const_addr = layer, tiling, npu, src, dst, const_addr
        R, C = npu.rows, npu.cols
        self.cin, self.h, self.w = layer.in_shape
        _, self.oh, self.ow = layer.out_shape
        self.kh_n, self.kw_n = layer.weight.shape[2:]
        (self.sh, self.sw), (self.dh, self.dw) = layer.strides, layer.dilations
        self.pt, self.pl = layer.pads[0], layer.pads[1]
        self.cb, self.ocb = _cdiv(self.cin, R), _cdiv(layer.out_shape[0], C)
        self.npar = 1 + 2 * len(layer.stages)
        inp_cap = npu.input_buffer_bytes // R
        wgt_cap = npu.weight_buffer_bytes // (R * C)
        acc_cap = npu.acc_buffer_bytes // (4 * C)
        self.pbase = acc_cap - tiling.param_entries
        self.inp_slot = [k * (inp_cap // tiling.slots) for k in range(tiling.slots)]
        self.wgt_slot = [k * (wgt_cap // tiling.slots) for k in range(tiling.slots)]
        self.acc_slot = [k * (self.pbase // tiling.acc_slots) for k in range(tiling.acc_slots)]
        self.tiles_x = _cdiv(self.ow, tiling.tw)
        self.steps = list(_steps(tiling))
        self.em = _Emitter()
        self.weights_at: dict[tuple[int, int], tuple[int, list[tuple[int, int, int, int]]]] = {}

    def oc_range(self, o: int) -> tuple[int, int]:
        return o * self.tiling.ocg, min(self.ocb, (o + 1) * self.tiling.ocg)

    def ic_range(self, o: int, i: int) -> tuple[int, int]:
        if self.layer.group != 1:
            return ic_blocks_of(self.layer, self.npu, *self.oc_range(o))
        return i * self.tiling.icg, min(self.cb, (i + 1) * self.tiling.icg)

    def blocks_of(self, o: int, i: int) -> list[tuple[int, int, int, int]]:
        ib0, ib1 = self.ic_range(o, i)
        out = []
        for ob in range(*self.oc_range(o)):
            ibs = range(*dw_blocks(self.layer, self.npu, ob)) if self.layer.group != 1 else range(ib0, ib1)
            for ib in ibs:
                for kh in range(self.kh_n):
                    for kw in range(self.kw_n):
                        out.append((ob, ib, kh, kw))
        return out

    def tile_geom(self, t: int) -> tuple[int, int, int, int]:
        ty, tx = divmod(t, self.tiles_x)
        oy0, ox0 = ty * self.tiling.th, tx * self.tiling.tw
        return oy0, ox0, min(self.tiling.th, self.oh - oy0), min(self.tiling.tw, self.ow - ox0)

    def pack_constants(self) -> bytes:
        """Parameters, then the weights of each (o, i) in first-use order (:attr:`weights_at`)."""
        blob = bytearray(_params(self.layer, self.npu, self.ocb).tobytes())
        for _t, o, i in self.steps:
            if (o, i) in self.weights_at:
                continue
            blocks = self.blocks_of(o, i)
            self.weights_at[(o, i)] = (self.const_addr + len(blob), blocks)
            blob += b"".join(_weight_block(self.layer, self.npu, *b).tobytes() for b in blocks)
        return bytes(blob)

    def schedule_slots(self) -> None:
        """Load-side state: what each slot holds, and which slot each step reads."""
        n, slots = len(self.steps), self.tiling.slots
        inp_key_of_step = [(t, *self.ic_range(o, i)) for t, o, i in self.steps]
        wgt_key_of_step = [(o, i) for _t, o, i in self.steps]
        self.inp_slot_of, self.wgt_slot_of = [0] * n, [0] * n
        self.inp_loaded, self.wgt_loaded = [False] * n, [False] * n
        ni = nw = -1
        for k in range(n):
            if k == 0 or inp_key_of_step[k] != inp_key_of_step[k - 1]:
                ni += 1
                self.inp_loaded[k] = True
            if k == 0 or wgt_key_of_step[k] != wgt_key_of_step[k - 1]:
                nw += 1
                self.wgt_loaded[k] = True
            self.inp_slot_of[k] = ni % slots
            self.wgt_slot_of[k] = nw % slots
            if not (self.inp_loaded[k] or self.wgt_loaded[k]):
                raise AssertionError(f"step {k} of {self.layer.name} loads nothing")  # tiles always change something

    def _input_load(self, k: int) -> Load:
        t, o, i = self.steps[k]
        layer, src, R, w = self.layer, self.src, self.npu.rows, self.w
        oy0, ox0, th_a, tw_a = self.tile_geom(t)
        ih_a = (th_a - 1) * self.sh + (self.kh_n - 1) * self.dh + 1
        iw_a = (tw_a - 1) * self.sw + (self.kw_n - 1) * self.dw + 1
        iy0, ix0 = oy0 * self.sh - self.pt, ox0 * self.sw - self.pl
        y_lo, y_hi = max(0, iy0), min(self.h, iy0 + ih_a)
        x_lo, x_hi = max(0, ix0), min(w, ix0 + iw_a)
        ib0, ib1 = self.ic_range(o, i)
        y_n, x_n = max(0, y_hi - y_lo), max(0, x_hi - x_lo)
        return Load(
            buffer=Buffer.INP,
            sram_base=self.inp_slot[self.inp_slot_of[k]],
            dram_addr=src.addr + (y_lo * w + x_lo) * src.cpad + ib0 * R if y_n and x_n else src.addr,
            y_size=y_n,
            x_size=x_n,
            chunk=ib1 - ib0,
            x_stride=src.cpad,
            y_stride=w * src.cpad,
            pad_top=(y_lo - iy0) if y_n else ih_a,
            pad_bottom=iy0 + ih_a - y_hi if y_n else 0,
            pad_left=(x_lo - ix0) if x_n else iw_a,
            pad_right=ix0 + iw_a - x_hi if x_n else 0,
            pad_value=layer.zx,
        )

    def emit_loads(self, k: int) -> None:
        """Step ``k``'s input and weight loads, with their dependency tokens."""
        _t, o, i = self.steps[k]
        em, R, C = self.em, self.npu.rows, self.npu.cols
        first = last = -1
        if self.inp_loaded[k]:
            last = first = em.add(self._input_load(k))
        if self.wgt_loaded[k]:
            addr, blocks = self.weights_at[(o, i)]
            last = em.add(
                Load(buffer=Buffer.WGT, sram_base=self.wgt_slot[self.wgt_slot_of[k]], dram_addr=addr, chunk=len(blocks), x_stride=len(blocks) * R * C)
            )
            first = last if first < 0 else first
        if k >= self.tiling.slots:
            em.dep(first, pop_next=True)
        em.dep(last, push_next=True)

    def emit_gemms(self, k: int, acc_base: int, g: int) -> None:
        """Step ``k``'s GEMMs into the accumulator slot at ``acc_base`` (group ``g``)."""
        t, o, i = self.steps[k]
        em, tiling = self.em, self.tiling
        _oy0, _ox0, th_a, tw_a = self.tile_geom(t)
        ob0, ob1 = self.oc_range(o)
        ocg_a = ob1 - ob0
        iw_a = (tw_a - 1) * self.sw + (self.kw_n - 1) * self.dw + 1
        ib0, ib1 = self.ic_range(o, i)
        nib = ib1 - ib0
        _, blocks = self.weights_at[(o, i)]
        first_gemm = -1
        seen_ob: set[int] = set()
        for bi, (ob, ib, kh, kw) in enumerate(blocks):
            reset = i == 0 and ob not in seen_ob
            seen_ob.add(ob)
            idx = em.add(
                Gemm(
                    reset=int(reset),
                    acc_base=acc_base + (ob - ob0),
                    inp_base=self.inp_slot[self.inp_slot_of[k]] + (kh * self.dh * iw_a + kw * self.dw) * nib + (ib - ib0),
                    wgt_base=self.wgt_slot[self.wgt_slot_of[k]] + bi,
                    ext_outer=th_a,
                    ext_inner=tw_a,
                    acc_so=tw_a * ocg_a,
                    acc_si=ocg_a,
                    inp_so=self.sh * iw_a * nib,
                    inp_si=self.sw * nib,
                )
            )
            first_gemm = idx if first_gemm < 0 else first_gemm
        em.dep(first_gemm, pop_prev=True)
        if i == 0 and g >= tiling.acc_slots:
            em.dep(first_gemm, pop_next=True)
        if k + tiling.slots < len(self.steps):
            em.dep(len(em.insns) - 1, push_prev=True)

    def emit_epilogue(self, k: int, acc_base: int, g: int, n_groups: int) -> None:
        """After a group's last input-channel step: bias and requantization, then the store."""
        t, o, _i = self.steps[k]
        em, layer, dst, C = self.em, self.layer, self.dst, self.npu.cols
        oy0, ox0, th_a, tw_a = self.tile_geom(t)
        ob0, ob1 = self.oc_range(o)
        ocg_a = ob1 - ob0
        count = th_a * tw_a
        for ob in range(ob0, ob1):
            p = self.pbase + ob * self.npar
            em.add(Alu(op=AluOp.ADD, dst_base=acc_base + ob - ob0, param_base=p, count=count, stride=ocg_a))
            for s, st in enumerate(layer.stages):
                em.add(
                    Alu(op=AluOp.REQUANT, dst_base=acc_base + ob - ob0, param_base=p + 1 + 2 * s, count=count,
                        stride=ocg_a, relu=int(st.relu), zin=st.zin, zout=st.zout, lo=st.lo, hi=st.hi)
                )  # fmt: skip
        em.dep(len(em.insns) - 1, push_next=True)
        st_idx = em.add(
            Store(sram_base=acc_base, dram_addr=dst.addr + (oy0 * self.ow + ox0) * dst.cpad + ob0 * C, y_size=th_a,
                  x_size=tw_a, chunk=ocg_a, x_stride=dst.cpad, y_stride=self.ow * dst.cpad)
        )  # fmt: skip
        em.dep(st_idx, pop_prev=True)
        if g + self.tiling.acc_slots < n_groups:
            em.dep(st_idx, push_prev=True)

    def program(self) -> tuple[list[Insn], bytes]:
        """The layer's instructions and constants."""
        tiling, em, C = self.tiling, self.em, self.npu.cols
        blob = self.pack_constants()
        em.add(Load(buffer=Buffer.ACC, sram_base=self.pbase, dram_addr=self.const_addr, chunk=self.ocb * self.npar,
                    x_stride=self.ocb * self.npar * 4 * C))  # fmt: skip
        n = len(self.steps)
        n_groups = sum(1 for _t, _o, i in self.steps if i == tiling.n_ic - 1)
        self.schedule_slots()
        for k in range(min(tiling.slots, n)):
            self.emit_loads(k)
        g = -1
        for k, (_t, _o, i) in enumerate(self.steps):
            if i == 0:
                g += 1
            acc_base = self.acc_slot[g % tiling.acc_slots]
            self.emit_gemms(k, acc_base, g)
            if i == tiling.n_ic - 1:
                self.emit_epilogue(k, acc_base, g, n_groups)
            if k + tiling.slots < n:
                self.emit_loads(k + tiling.slots)
        em.add(Finish())
        return em.insns, blob


def _conv_program(
    layer: ConvLayer, tiling: Tiling, npu: NpuConfig, src: TensorPlace, dst: TensorPlace, const_addr: int
) -> tuple[list[Insn], bytes]:
    return _ConvLowering(layer, tiling, npu, src, dst, const_addr).program()


# --------------------------------------------------------------------------- #
# Add
# --------------------------------------------------------------------------- #


def _add_program(
    layer: AddLayer, tiling: Tiling, npu: NpuConfig, a: TensorPlace, b: TensorPlace, dst: TensorPlace, const_addr: int
) -> tuple[list[Insn], bytes]:
    C = npu.cols
    c, h, w = layer.shape
    ocb = _cdiv(c, C)
    acc_cap = npu.acc_buffer_bytes // (4 * C)
    pbase = acc_cap - tiling.param_entries
    acc_slot = [k * (pbase // tiling.acc_slots) for k in range(tiling.acc_slots)]
    par = [np.full(C, layer.ma), np.full(C, layer.mb), np.full(C, layer.shift)]
    for st in layer.stages:
        par += [np.full(C, int(st.fp.multiplier[0])), np.full(C, int(st.fp.shift[0]))]
    blob = np.stack(par).astype(np.int32).tobytes()
    em = _Emitter()
    em.add(Load(buffer=Buffer.ACC, sram_base=pbase, dram_addr=const_addr, chunk=len(par), x_stride=len(par) * 4 * C))
    tiles_x = _cdiv(w, tiling.tw)
    g = 0
    for t in range(tiling.n_spatial):
        ty, tx = divmod(t, tiles_x)
        y0, x0 = ty * tiling.th, tx * tiling.tw
        th_a, tw_a = min(tiling.th, h - y0), min(tiling.tw, w - x0)
        for o in range(tiling.n_oc):
            ob0, ob1 = o * tiling.ocg, min(ocb, (o + 1) * tiling.ocg)
            n_ent = th_a * tw_a * (ob1 - ob0)
            base = acc_slot[g % tiling.acc_slots]
            for k, src in enumerate((a, b)):
                idx = em.add(
                    Load(buffer=Buffer.ACC, int8_src=1, sram_base=base + k * n_ent,
                         dram_addr=src.addr + (y0 * w + x0) * src.cpad + ob0 * C, y_size=th_a, x_size=tw_a,
                         chunk=ob1 - ob0, x_stride=src.cpad, y_stride=w * src.cpad)
                )  # fmt: skip
                if k == 0 and g >= tiling.acc_slots:
                    em.dep(idx, pop_next=True)
            em.add(Alu(op=AluOp.RESADD, dst_base=base, src_base=base + n_ent, param_base=pbase, count=n_ent,
                       zin=layer.za, zin_b=layer.zb, zout=layer.zout, lo=layer.lo, hi=layer.hi))  # fmt: skip
            for s, st in enumerate(layer.stages):
                em.add(Alu(op=AluOp.REQUANT, dst_base=base, param_base=pbase + 3 + 2 * s, count=n_ent, relu=int(st.relu),
                           zin=st.zin, zout=st.zout, lo=st.lo, hi=st.hi))  # fmt: skip
            em.dep(len(em.insns) - 1, push_next=True)
            s_idx = em.add(
                Store(sram_base=base, dram_addr=dst.addr + (y0 * w + x0) * dst.cpad + ob0 * C, y_size=th_a, x_size=tw_a,
                      chunk=ob1 - ob0, x_stride=dst.cpad, y_stride=w * dst.cpad)
            )  # fmt: skip
            em.dep(s_idx, pop_prev=True)
            if g + tiling.acc_slots < tiling.n_spatial * tiling.n_oc:
                em.dep(s_idx, push_prev=True)
            g += 1
    em.add(Finish())
    return em.insns, blob


# --------------------------------------------------------------------------- #
# Whole model
# --------------------------------------------------------------------------- #


def generate(
    layers: list[NpuLayer],
    tilings: Mapping[str, Tiling],
    npu: NpuConfig,
    onnx_shapes: Mapping[str, tuple[int, ...]],
    act_base: int = 0,
) -> Program:
    """Allocates DRAM, packs constants and emits every layer's program.

    Activations come first (their sizes follow from the shapes), then the
    constants, so every address is final when an instruction is emitted.

    Args:
        layers: Accelerator layers in execution order.
        tilings: Layer name -> its tiling.
        npu: The accelerator.
        onnx_shapes: Shapes of the layers' input/output tensors in the model.
        act_base: DRAM address of the activation region.
    """
    L = lane_multiple(npu)
    tensors: dict[str, TensorPlace] = {}
    addr = align(act_base)
    for layer in layers:
        view = layer.in_shape if isinstance(layer, ConvLayer) else layer.shape
        for name, shape in [*((n, view) for n in layer.inputs), (layer.output, layer.out_shape)]:
            if name in tensors:
                continue
            cpad = _cdiv(shape[0], L) * L
            tensors[name] = TensorPlace(name, addr, shape, cpad, tuple(onnx_shapes[name]), layer.layout)
            addr = align(addr + tensors[name].nbytes)
    act_end = addr
    const_base = act_end
    codes: list[LayerCode] = []
    image = bytearray()
    for layer in layers:
        at = const_base + len(image)
        tiling = tilings[layer.name]
        if isinstance(layer, ConvLayer):
            insns, blob = _conv_program(layer, tiling, npu, tensors[layer.input], tensors[layer.output], at)
        else:
            insns, blob = _add_program(layer, tiling, npu, tensors[layer.a], tensors[layer.b], tensors[layer.output], at)
        image += blob + bytes(align(len(blob)) - len(blob))
        codes.append(LayerCode(layer.name, layer.kind, layer.op, insns, tiling, layer.macs, layer.inputs, layer.output, at, len(blob)))
    logger.info("codegen: %d layers, %d instructions, %d B constants, %d B activations",
                len(codes), sum(len(c.insns) for c in codes), len(image), act_end - act_base)  # fmt: skip
    return Program(codes, tensors, const_base, bytes(image), align(act_base), act_end)
