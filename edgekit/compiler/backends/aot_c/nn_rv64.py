"""The riscv64 weight layout of edgekit's int8 conv/matmul kernels.

On RV64 (``firmware_stubs/nn/ek_nn_s8.c``, "riscv64") the inner kernel does
three MACs per 64-bit ``mul`` + ``add``: the int8 weights of three output
channels for one reduction element k are packed into one int64,
``W = w0 + w1 * 2**21 + w2 * 2**42``, and ``x * W`` summed over k holds the
three channels' sums in 21-bit lanes. That is exact while every lane's sum
stays within ``(-2**20, 2**20)``; with ``|x| <= 128`` a lane's sum over a run
of k is at most ``128 * sum(|w|)`` over that run, so the kernel unpacks the
lanes into int32 every ``L`` k, ``L`` the longest run length whose bound
holds for every channel and every run (at least 63 for any int8 weights).

Depthwise windows of 16 to 63 taps over 2 rows or more (5x5, 7x7) pack the activations instead:
three horizontally adjacent outputs per word, from a ring of kh packed rows
(:func:`dw_scratch_bytes`); smaller windows keep the float rows.

With the V extension and VLEN >= 256 (``EK_NN_RVV``, e.g. the SpacemiT X60)
conv/matmul take vector kernels instead: the int8 weights of
:data:`RVV_BLOCK` output channels of one k are one vector (:func:`pack_rvv`),
widened to int16 and multiplied by each pixel's activation into int32 lanes
(``vwmacc.vx``), exact for any K; depthwise keeps the packed rows.
"""

from __future__ import annotations

import numpy as np

__all__ = ["LANE_BITS", "RVV_BLOCK", "dw_scratch_bytes", "pack_rows", "pack_rvv", "run_length"]

#: Bits of each lane of a packed accumulator (the C kernel's EK_RV_LANE).
LANE_BITS = 21
_LIMIT = 2 ** (LANE_BITS - 1) - 1  # largest |lane sum| the unpacking recovers
_X_MAX = 128  # largest |x| of an int8 activation
#: Output channels per weight vector of the RVV kernels (the C kernel's EK_RVV_OCB: 32 int32 lanes at e32m4, VLEN 256).
RVV_BLOCK = 32
#: Depthwise windows the packed kernel takes (EK_RV_DW_MIN_TAPS, EK_RV_DW_MAX_TAPS).
DW_TAPS = (16, 63)


def run_length(rows: np.ndarray) -> int:
    """The longest L such that ``128 * sum(|w|)`` over any L consecutive k of any row is at most 2**20 - 1.

    Args:
        rows: int8 weights ``[OC, K]``.
    """
    k = rows.shape[1]
    if k == 0:
        return 1
    sums = np.concatenate([np.zeros((rows.shape[0], 1), np.int64), np.cumsum(np.abs(rows.astype(np.int64)), axis=1)], axis=1)

    def fits(n: int) -> bool:
        return int((sums[:, n:] - sums[:, :-n]).max(initial=0)) * _X_MAX <= _LIMIT

    lo, hi = 1, k  # fits(1) always: 128 * 128 < 2**20; window sums grow with n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo


def pack_rows(rows: np.ndarray) -> np.ndarray:
    """Weights ``[OC, K]`` int8 as packed int64 words (three channels each), as bytes.

    Pairs of groups (6 channels) interleave per k, ``[OC/6][K][2]``, so the
    6-channel kernel reads both words of a k from one pointer; a last lone
    group of 3 is ``[K]``. Group g starts at word ``g * K`` either way.
    Channels past OC are zero.
    """
    oc, k = rows.shape
    full = np.zeros((-(-oc // 3) * 3, k), np.int64)
    full[:oc] = rows
    lanes = full.reshape(-1, 3, k)
    groups = lanes[:, 0] + (lanes[:, 1] << LANE_BITS) + (lanes[:, 2] << (2 * LANE_BITS))  # [G, K]
    pairs = len(groups) // 2
    words = np.concatenate([groups[: 2 * pairs].reshape(pairs, 2, k).transpose(0, 2, 1).reshape(-1), groups[2 * pairs :].reshape(-1)])
    return np.ascontiguousarray(words.astype("<i8")).view(np.int8).reshape(-1)


def pack_rvv(rows: np.ndarray) -> np.ndarray:
    """Weights ``[OC, K]`` int8 as the RVV kernels' vectors, ``[ceil(OC/32)][K][32]`` int8:
    block b (channels 32 b .. 32 b + 31) starts at byte ``32 b * K``. Channels past OC are zero."""
    oc, k = rows.shape
    full = np.zeros((-(-oc // RVV_BLOCK) * RVV_BLOCK, k), np.int8)
    full[:oc] = rows
    return np.ascontiguousarray(full.reshape(-1, RVV_BLOCK, k).transpose(0, 2, 1)).reshape(-1)


def dw_scratch_bytes(kh: int, kw: int, sw: int, ow: int) -> int | None:
    """Scratch of the packed depthwise kernel (ring of kh packed rows and a padding row, int64 weights, packed and int32 sums), or None if it does not take the window."""
    if kh < 2 or not DW_TAPS[0] <= kh * kw <= DW_TAPS[1]:  # the C kernel's passes take two kernel rows
        return None
    triples = -(-ow // 3)
    nx = 3 * sw * (triples - 1) + kw + 2 * sw
    return 8 * (kh + 1) * nx + 8 * kh * kw + 8 * triples + 4 * 3 * triples
