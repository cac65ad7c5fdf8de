"""Encoding of the accelerator's instructions."""

from __future__ import annotations

import pytest

from edgekit.npu.isa import (
    INSN_BYTES, Alu, AluOp, Buffer, Deps, Finish, Gemm, IsaError, Load, Module, Store,
    decode, decode_program, encode, encode_program, module_of,
)  # fmt: skip

SAMPLES = [
    Load(deps=Deps(pop_next=True, push_next=True), buffer=Buffer.INP, sram_base=4095, dram_addr=(1 << 40) - 1,
         y_size=17, x_size=4095, chunk=3, x_stride=64, y_stride=1 << 31, pad_top=1, pad_bottom=2, pad_left=3,
         pad_right=255, pad_value=-128),
    Load(buffer=Buffer.ACC, int8_src=1, chunk=9),
    Store(deps=Deps(pop_prev=True, push_prev=True), sram_base=12, dram_addr=4096, y_size=3, x_size=5, chunk=2, x_stride=16, y_stride=80),
    Gemm(deps=Deps(pop_prev=True, pop_next=True, push_prev=True), reset=1, acc_base=7, inp_base=9, wgt_base=11,
         ext_outer=4095, ext_inner=1, acc_so=100, acc_si=4, inp_so=300, inp_si=65535),
    Alu(op=AluOp.REQUANT, dst_base=1, param_base=1000, count=256, stride=4, relu=1, zin=-255, zout=255, lo=-128, hi=127),
    Alu(op=AluOp.RESADD, dst_base=0, src_base=64, param_base=900, count=64, zin=-3, zin_b=5),
    Finish(),
]  # fmt: skip


@pytest.mark.parametrize("insn", SAMPLES, ids=lambda i: type(i).__name__)
def test_round_trip(insn):
    word = encode(insn)
    assert len(word) == INSN_BYTES
    assert decode(word) == insn


def test_program_round_trip_and_length_check():
    blob = encode_program(SAMPLES)
    assert decode_program(blob) == SAMPLES
    with pytest.raises(IsaError, match="whole number"):
        decode_program(blob[:-1])


def test_field_overflow_is_refused():
    with pytest.raises(IsaError, match="ext_outer = 4096 does not fit 12 bits"):
        Gemm(ext_outer=4096)
    with pytest.raises(IsaError, match="pad_value"):
        Load(pad_value=128)
    with pytest.raises(IsaError, match="zin"):
        Alu(zin=256)


def test_bad_words_are_refused():
    with pytest.raises(IsaError, match="unknown opcode"):
        decode(bytes([7]) + bytes(INSN_BYTES - 1))
    stray = bytearray(encode(Finish()))
    stray[-1] = 0x80
    with pytest.raises(IsaError, match="stray bits"):
        decode(bytes(stray))


def test_modules():
    assert module_of(Load(buffer=Buffer.INP)) == Module.LOAD
    assert module_of(Load(buffer=Buffer.WGT)) == Module.LOAD
    assert module_of(Load(buffer=Buffer.ACC)) == Module.COMPUTE
    assert module_of(Gemm()) == Module.COMPUTE
    assert module_of(Store()) == Module.STORE
