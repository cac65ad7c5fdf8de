"""Bitmask-sparse storage of weight tensors: one size rule, one codec.

A tensor of ``count`` elements of ``itemsize`` bytes is stored as

* a **mask** of ``ceil(count / 8)`` bytes: bit ``i % 8`` (least significant
  first) of byte ``i // 8`` is set when element ``i`` is not zero;
* zero padding up to a multiple of ``itemsize``, so that the values that
  follow are aligned to their own size when the encoding itself starts at an
  aligned address (a word load on a core without unaligned access);
* the **values** of the non-zero elements, in element order, little-endian.

"Zero" means all bytes zero, so the round trip is bit-exact for every dtype
(``-0.0`` and NaN payloads are kept as values). Pruning
(:func:`edgekit.compress.prune.sparse_storage_bytes`) estimates with
:func:`bitmask_bytes` and the AOT C backend encodes with
:func:`encode_bitmask`; ``model.c`` carries the matching C decoder.

The codec is hand-written because no library emits C decoders for the
packages TVM's kernels run in (TVM 0.27 has no AOT executor or C runtime to
hook a storage format into). A plain bitmask was chosen over block-sparse
(CSR of blocks) formats: the pruning edgekit does is unstructured, where
whole zero blocks are rare, and a bit per element costs 1/32 of an fp32
tensor and 1/8 of an int8 one, so it pays from 3 % (fp32) or 12.5 % (int8)
zeros on.
"""

from __future__ import annotations

import numpy as np

from edgekit.core.errors import InputError

__all__ = ["mask_bytes", "values_offset", "bitmask_bytes", "nonzero_mask", "encode_bitmask", "decode_bitmask"]


def mask_bytes(count: int) -> int:
    """Bytes of the mask of a ``count``-element tensor."""
    return (count + 7) // 8


def values_offset(count: int, itemsize: int) -> int:
    """Offset of the first value inside the encoding (the mask, padded to ``itemsize``)."""
    return -(-mask_bytes(count) // itemsize) * itemsize


def nonzero_mask(array: np.ndarray) -> np.ndarray:
    """Flat boolean mask of the elements whose bytes are not all zero."""
    flat = np.ascontiguousarray(array).reshape(-1)
    if flat.dtype.itemsize == 0:
        raise InputError(f"cannot store dtype {flat.dtype} sparse", hint="Keep this tensor dense.")
    raw = flat.view(np.uint8).reshape(flat.size, flat.dtype.itemsize)
    return raw.any(axis=1)


def bitmask_bytes(array: np.ndarray) -> int:
    """Bytes of ``array`` stored bitmask-sparse (mask, its padding and the non-zero values)."""
    itemsize = array.dtype.itemsize
    return values_offset(array.size, itemsize) + int(np.count_nonzero(nonzero_mask(array))) * itemsize


def encode_bitmask(array: np.ndarray) -> bytes:
    """The bitmask-sparse encoding of ``array`` (flattened in C order, little-endian).

    Its length is :func:`bitmask_bytes` of ``array``.
    """
    flat = np.ascontiguousarray(array).reshape(-1)
    flat = flat.astype(flat.dtype.newbyteorder("<"), copy=False)
    keep = nonzero_mask(flat)
    mask = np.packbits(keep, bitorder="little").tobytes()
    pad = values_offset(flat.size, flat.dtype.itemsize) - len(mask)
    return mask + b"\0" * pad + flat[keep].tobytes()


def decode_bitmask(data: bytes, count: int, dtype: np.dtype | str) -> np.ndarray:
    """Inverse of :func:`encode_bitmask`: the flat array of ``count`` elements.

    Raises:
        InputError: when ``data`` is shorter or longer than its mask says.
    """
    dt = np.dtype(dtype).newbyteorder("<")
    start = values_offset(count, dt.itemsize)
    if len(data) < start:
        raise InputError(f"bitmask encoding of {count} elements needs at least {start} bytes, got {len(data)}",
                         hint="The weights blob is truncated; rebuild the package.")
    keep = np.unpackbits(np.frombuffer(data, np.uint8, mask_bytes(count)), count=count, bitorder="little").astype(bool)
    nnz = int(np.count_nonzero(keep))
    if len(data) != start + nnz * dt.itemsize:
        raise InputError(
            f"bitmask encoding of {count} elements with {nnz} non-zeros is {start + nnz * dt.itemsize} bytes, "
            f"got {len(data)}",
            hint="The weights blob is damaged; rebuild the package.",
        )
    # Bytes, not values, are scattered so that the round trip is bit-exact.
    raw = np.zeros((count, dt.itemsize), dtype=np.uint8)
    raw[keep] = np.frombuffer(data, np.uint8, nnz * dt.itemsize, offset=start).reshape(nnz, dt.itemsize)
    return raw.reshape(-1).view(dt)
