"""Second readers of an int8 tensor read its dot-product operand form: no separate conversion kernel.

A dense int8 conv reads its activations as the operand its instruction
multiplies (:meth:`edgekit.compiler.backends.llvm.int8._Rewriter.activations`):
``u8 = astype(astype(t, int16) + 128, uint8)`` for ``vpdpbusd``,
``astype(t, int16)`` for AVX2's ``vpmaddwd``. Where ``t`` has a second reader
-- a residual add, which the integer lowering and the float requantization
put in the next conv's epilogue as ``astype(t, float32)`` -- TVM's FuseOps
cannot put the conversion into ``t``'s producing conv (the int8 tensor is
still needed), so the conversion ran as a kernel of its own: PP-OCR cls,
znver5 code, 7 of its 8 ``cast_add_cast`` kernels (issue #14).

:func:`operand_reader_pass` rewrites those second readers to read the
converted tensor instead: ``astype(t, D)`` after the conversion becomes
``astype(astype(u8, int16) - 128, D)`` or ``astype(i16, D)`` (exact: the
conversion is a bijection on int8 values). ``t``'s only reader is then the
conversion, which fuses into the producing conv's epilogue. Written by hand
because it is a choice no TVM pass makes: which of two forms of one value
each reader takes is a layout decision FuseOps does not see (it fuses given
readers, it does not re-point them), and CSE would merge the other way.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from edgekit.compiler.relax_rewrite import calls_rewrite_pass, const_value, dtype_of, is_call, use_counts

if TYPE_CHECKING:  # pragma: no cover
    import tvm

__all__ = ["operand_reader_pass"]

logger = logging.getLogger(__name__)

#: Types a second reader may widen ``t`` to (each holds every int8 value exactly).
_WIDE = ("int16", "int32", "float32")


def _int8_source(var2val: Any, value: Any, narrowed: dict[Any, Any]) -> tuple[Any, bool] | None:
    """``(t, reads_t)`` when ``value`` converts the int8 tensor ``t`` to a dot-product operand, else None.

    A u8 conversion of a wider ``v`` (the requantization packs an int32 to int16 directly,
    ``requant._widened_once``) converts ``t = astype(v, int8)`` too where that is bound
    (``narrowed``; an asymmetric-weight tap reads it, integer/weight_taps.py): both are ``v``
    modulo 256. Then ``reads_t`` is False: every reader of ``t`` is a second reader.
    """
    if not is_call(value, "relax.astype"):
        return None
    inner = value.args[0]
    if dtype_of(value) == "uint8":
        add = var2val.get(inner)
        offset = const_value(add.args[1]) if is_call(add, "relax.add") else None
        if offset is None or offset.size != 1 or int(offset.reshape(-1)[0]) != 128:
            return None
        widened = var2val.get(add.args[0])
        if not (is_call(widened, "relax.astype") and dtype_of(widened) == "int16"):
            return None
        inner = widened.args[0]
        if dtype_of(inner) != "int8" and inner in narrowed:
            return narrowed[inner], False
    elif dtype_of(value) != "int16":
        return None
    return (inner, True) if dtype_of(inner) == "int8" else None


def _find_conversions(m: Any) -> None:
    """``m.operands``: int8 var -> its operand var, for operands only dense kernels read and
    int8 tensors with another reader (the conversion must come first in binding order; the
    rewrite checks that when it meets a reader). ``m.repeats``: for a later u8 conversion of
    the same tensor (two dense convs read it: a ResNet block's branch and its downsample),
    the var its outer ``astype`` reads -> the first operand var."""
    from tvm import relax

    mod = m.builder_.get()
    uses = use_counts(mod)
    readers: dict[Any, list[Any]] = {}
    m.operands = {}
    m.repeats = {}
    for func in mod.functions.values():
        if not isinstance(func, relax.Function):
            continue
        var2val = relax.analysis.get_var2val(func)
        for var, value in var2val.items():
            for v in relax.analysis.free_vars(value):
                readers.setdefault(v, []).append(value)
        narrowed = {v.args[0]: k for k, v in var2val.items() if is_call(v, "relax.astype") and dtype_of(v) == "int8"}
        for var, value in var2val.items():
            found = _int8_source(var2val, value, narrowed)
            if found is None or uses.get(found[0], 0) < (2 if found[1] else 1):
                continue
            t = found[0]
            # A pad reading the operand folds the conversion itself (backends/llvm/pad.py,
            # int8_input.py): a second reader of the operand would undo that.
            if not all(is_call(r, "relax.call_tir") for r in readers.get(var, [])):
                continue
            first = m.operands.setdefault(t, var)
            if first is not var and found[1] and dtype_of(value) == dtype_of(first) == "uint8":
                m.repeats[value.args[0]] = first


def _read_operand(m: Any, call: Any) -> Any:
    """``astype(t, D)`` as the same value read from ``t``'s operand form, once that is bound."""
    from tvm import relax
    from tvm.relax import op as R

    t = call.args[0]
    if t in m.repeats and dtype_of(call) == "uint8" and m.lookup_binding(m.repeats[t]) is not None:
        return m.repeats[t]  # the same conversion again: read the first one's result
    operand = m.operands.get(t)
    if operand is None or dtype_of(call) not in _WIDE or m.lookup_binding(operand) is None:
        return None  # not converted, or the conversion itself / a reader before it
    if dtype_of(operand) == "int16":
        return operand if dtype_of(call) == "int16" else R.astype(operand, dtype_of(call))
    centered = R.subtract(R.astype(operand, "int16"), relax.const(128, "int16"))
    return centered if dtype_of(call) == "int16" else R.astype(centered, dtype_of(call))


def operand_reader_pass(target: tvm.target.Target) -> Any:
    """Second readers of a converted int8 tensor read the converted tensor (see the module docstring).

    Runs after :func:`edgekit.compiler.backends.llvm.requant.float_requant_pass`,
    whose float form of the residual add reads ``astype(t, float32)``, and runs
    that pass's rewrite again after it: an int8 tensor left with the
    conversion as its only reader then packs the requantized int32 to int16
    directly (``requant._widened_once``), as one with a single reader always did.
    """
    import tvm

    from edgekit.compiler.backends.llvm.requant import float_requant_pass

    if target.kind.name != "llvm":
        return tvm.transform.Sequential([], name="EdgekitOperandReaders")
    rewrite = calls_rewrite_pass({"relax.astype": _read_operand}, "EdgekitOperandReaders", _find_conversions)
    return tvm.transform.Sequential([rewrite, float_requant_pass(target)], name="EdgekitOperandReaders")
