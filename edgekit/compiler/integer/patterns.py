"""Relax dataflow patterns of the QDQ chains the integer lowering rewrites.

TVM 0.27's ONNX importer turns ``QuantizeLinear``/``DequantizeLinear`` into
``relax.quantize``/``relax.dequantize`` around float compute, so a quantized
ONNX layer arrives as::

    quantize(act(add(conv2d|matmul(dequantize(x), [permute_dims](dequantize(w))),
                     [reshape](dequantize(bias)))))

(``act`` optional: ``nn.relu`` or ``clip``; ``add`` optional). Every pattern
here is anchored at the ``quantize`` so a match replaces exactly the tensor
onnxruntime would hand to the next layer as int8.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm.relax.dpl import DFPattern, is_op, is_tuple, wildcard

__all__ = [
    "dequantize",
    "LinearPattern",
    "BinaryPattern",
    "UnaryOpPattern",
    "ConcatPattern",
    "AnyQuantizePattern",
    "MOVEMENT_OPS",
]

#: Ops that only move int8 values; they commute with (de)quantization.
MOVEMENT_OPS = (
    "relax.reshape",
    "relax.permute_dims",
    "relax.squeeze",
    "relax.expand_dims",
    "relax.flatten",
)


def dequantize() -> DFPattern:
    """``dequantize(q, scale, zero_point)`` with anything as its arguments."""
    return is_op("relax.dequantize")(wildcard(), wildcard(), wildcard())


def _quantize(data: DFPattern) -> DFPattern:
    return is_op("relax.quantize")(data, wildcard(), wildcard())


@dataclass(kw_only=True)
class _Activated:
    """A pattern whose result goes through an optional activation to its ``quantize``.

    Attributes:
        relu: ``nn.relu`` of the result, when the match has it.
        clip: ``clip`` of the result, when the match has it.
        root: The ``quantize`` the match is anchored at.
    """

    relu: DFPattern
    clip: DFPattern
    root: DFPattern

    @staticmethod
    def _tail(result: DFPattern) -> dict[str, DFPattern]:
        """The fields above for ``quantize(act(result))``, ``act`` optional."""
        relu = is_op("relax.nn.relu")(result)
        clip = is_op("relax.clip")(result, wildcard(), wildcard())
        return {"relu": relu, "clip": clip, "root": _quantize(result | relu | clip)}


@dataclass
class LinearPattern(_Activated):
    """conv2d / matmul of two dequantized tensors, optional bias and activation."""

    x: DFPattern
    w: DFPattern
    w_perm: DFPattern
    conv: DFPattern
    matmul: DFPattern
    bias: DFPattern
    bias_add: DFPattern

    @classmethod
    def build(cls) -> "LinearPattern":
        x, w = dequantize(), dequantize()
        w_perm = is_op("relax.permute_dims")(w)
        weight = w | w_perm
        conv = is_op("relax.nn.conv2d")(x, weight)
        matmul = is_op("relax.matmul")(x, weight)
        core = conv | matmul
        bias = wildcard()
        bias_add = is_op("relax.add")(core, bias) | is_op("relax.add")(bias, core)
        return cls(x, w, w_perm, conv, matmul, bias, bias_add, **cls._tail(core | bias_add))


@dataclass
class BinaryPattern(_Activated):
    """add / subtract / multiply of two dequantized tensors, optional activation.

    An ONNX ``Sum`` of two tensors (ResNet-50's residual adds) is an ``add``: TVM's
    importer writes it ``sum(stack((broadcast_to(a, s), broadcast_to(b, s))), axis=0)``
    (``sum_of_two``; the rule checks the axes), which adds the same two floats.
    """

    a: DFPattern
    b: DFPattern
    add: DFPattern
    subtract: DFPattern
    multiply: DFPattern
    sum_of_two: DFPattern
    stack: DFPattern

    @classmethod
    def build(cls) -> "BinaryPattern":
        a, b = dequantize(), dequantize()
        add = is_op("relax.add")(a, b)
        subtract = is_op("relax.subtract")(a, b)
        multiply = is_op("relax.multiply")(a, b)
        stack = is_op("relax.stack")(is_tuple([_broadcast(a), _broadcast(b)]))
        sum_of_two = is_op("relax.sum")(stack)
        tail = cls._tail(add | subtract | multiply | sum_of_two)
        return cls(a, b, add, subtract, multiply, sum_of_two, stack, **tail)


def _broadcast(x: DFPattern) -> DFPattern:
    """``x`` or ``broadcast_to(x, shape)``."""
    return x | is_op("relax.broadcast_to")(x, wildcard())


@dataclass
class UnaryOpPattern:
    """``quantize(op(dequantize(x), ...))`` for one of the given ops."""

    x: DFPattern
    op: DFPattern
    root: DFPattern

    @classmethod
    def build(cls, *op_names: str) -> "UnaryOpPattern":
        x = dequantize()
        ops = [is_op(name)(x) for name in op_names]
        ops += [is_op(name)(x, wildcard()) for name in op_names]
        op = ops[0]
        for alt in ops[1:]:
            op = op | alt
        return cls(x, op, _quantize(op))


@dataclass
class ConcatPattern:
    """``quantize(concat(tuple))``; the fields are checked by the rule."""

    concat: DFPattern
    root: DFPattern

    @classmethod
    def build(cls) -> "ConcatPattern":
        concat = is_op("relax.concat")(wildcard())
        return cls(concat, _quantize(concat))


@dataclass
class AnyQuantizePattern:
    """Any ``quantize``; the elementwise-chain rule inspects what feeds it."""

    data: DFPattern
    root: DFPattern

    @classmethod
    def build(cls) -> "AnyQuantizePattern":
        data = wildcard()
        return cls(data, _quantize(data))
