"""Asymmetric-weight taps read inside their conv's kernel: the slices fused into the epilogue.

:mod:`edgekit.compiler.integer.weight_taps` adds each input position where
``w - z_w`` leaves int8 as ``x[tap] * r[c]``: a strided slice of the conv's
input (padded with its zero point at the border, moved channels-last by a
transpose) times a per-channel constant, added to the accumulator. TVM's
FuseOps puts an injective op (a slice, a pad, a transpose) into a group only
in its second phase, and only where every op on the way, the last included,
is injective; by then the accumulator's add belongs to the conv's group
(``kOutEWiseFusable``), so each tap's slice stayed a kernel of its own that
wrote an int32 tensor the conv's epilogue read back (PP-OCR cls, QUInt8
weights: 40 such kernels besides the 110 of the symmetric build). A chain
that starts elementwise and meets the epilogue only through injective ops
does fuse in the first phase (the digits CNN's first layer, whose taps start
at the input's quantize).

:func:`tap_fusion_pass` runs between ``AnnotateTIROpPattern`` and
``FuseOps``: for every side input of a conv's epilogue (the ops FuseOps
puts after the conv, elementwise and read once) that is computed from a
strided slice by injective ops read once each, it marks those ops broadcast
(``op_pattern`` 1, on a copy of their PrimFunc where another call shares it),
so FuseOps' first phase takes the whole chain into the conv's group. The
values are unchanged (the schedules inline the chain into the epilogue, as
they do for the first layer); only the grouping differs.

A residual add's operand is a side input too. Where it is an int8 tensor read
only there -- a ResNet block's add of two conv outputs (the branch and the
downsample conv) -- FuseOps' first phase gave its widening ``astype(t,
float32) * s`` to ``t``'s own conv, which then wrote that float32 tensor
(four times the bytes) for the other conv's epilogue to read. The widening's
elementwise ops are marked broadcast as well (:func:`_widening`): ``t``'s conv
stops at the int8 tensor, and the chain joins the epilogue that reads it. Of
two convs whose epilogues reach the same add, the first in binding order
keeps it. Other side inputs are left as they are.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from edgekit.compiler.relax_rewrite import dtype_of, is_call, use_counts, with_pass

if TYPE_CHECKING:  # pragma: no cover
    import tvm

__all__ = ["inline_tap_chains", "tap_fusion_pass", "with_tap_fusion"]

logger = logging.getLogger(__name__)

#: TVM's ``OpPatternKind`` values used here.
_ELEMWISE, _BROADCAST, _INJECTIVE, _OUT_ELEMWISE_FUSABLE = 0, 1, 2, 4
#: Activation dtypes a residual operand is kept in between kernels.
_NARROW = ("int8", "uint8")


def with_tap_fusion(passes: list[Any]) -> list[Any]:
    """``passes`` with :func:`tap_fusion_pass` right before ``FuseOps``."""
    return with_pass(passes, tap_fusion_pass(), before="FuseOps")


def _callee(mod: Any, value: Any) -> Any:
    """The GlobalVar of the PrimFunc ``value`` calls through ``call_tir``, else None."""
    import tvm

    if not is_call(value, "relax.call_tir"):
        return None
    gv = value.args[0]
    return gv if isinstance(gv, tvm.ir.GlobalVar) and isinstance(mod[gv], tvm.tirx.PrimFunc) else None


def _pattern(mod: Any, value: Any) -> int:
    gv = _callee(mod, value)
    attrs = mod[gv].attrs if gv is not None else None
    return int(attrs["op_pattern"]) if attrs is not None and "op_pattern" in attrs else 8


def _tensor_args(value: Any, var2val: Any) -> list[Any]:
    """The bound variables among a ``call_tir``'s arguments (function parameters and constants left out)."""
    return [a for a in value.args[1].fields if a in var2val]


def _side_chain(mod: Any, var: Any, var2val: Any, uses: dict[Any, int], out: list[Any]) -> None:
    """The bindings computing ``var`` by injective-or-simpler ops, each read once (depth first)."""
    value = var2val.get(var)
    if value is None or uses.get(var, 0) != 1 or _pattern(mod, value) > _INJECTIVE:
        return
    out.append(var)
    for arg in _tensor_args(value, var2val):
        _side_chain(mod, arg, var2val, uses, out)


def _widening(mod: Any, var: Any, var2val: Any, uses: dict[Any, int]) -> list[Any]:
    """The elementwise bindings, each read once, that compute ``var`` from one 8-bit tensor
    read once (a residual operand ``astype(t, float32) * s``, its last binding first); [] if
    ``var`` is not such a widening. ``t`` itself is left out: it stays its producer's output."""
    chain: list[Any] = []
    while True:
        value = var2val.get(var)
        if value is None or uses.get(var, 0) != 1 or _pattern(mod, value) != _ELEMWISE or dtype_of(var) in _NARROW:
            return []
        chain.append(var)
        args = _tensor_args(value, var2val)
        if len(args) != 1:
            return []
        var = args[0]
        if dtype_of(var) in _NARROW:
            return chain if uses.get(var, 0) == 1 else []


def _tap_chains(mod: Any, func: Any) -> list[Any]:
    """The bindings of ``func`` to mark broadcast: side chains of conv epilogues that hold a strided
    slice, and the widenings of a residual operand read once (:func:`_widening`)."""
    from tvm import relax

    var2val = relax.analysis.get_var2val(func)
    uses = use_counts(mod)
    readers: dict[Any, list[Any]] = {}
    for var, value in var2val.items():
        for arg in _tensor_args(value, var2val) if _callee(mod, value) is not None else []:
            readers.setdefault(arg, []).append(var)
    marked: list[Any] = []
    claimed: set[Any] = set()  # epilogue ops of an earlier conv: a residual add read by two convs' chains
    for var, value in var2val.items():
        if _pattern(mod, value) != _OUT_ELEMWISE_FUSABLE:
            continue
        head = var
        while uses.get(head, 0) == 1 and len(readers.get(head, [])) == 1:
            nxt = readers[head][0]
            if _pattern(mod, var2val[nxt]) > _BROADCAST or nxt in claimed or nxt in marked:
                break
            claimed.add(nxt)
            for arg in _tensor_args(var2val[nxt], var2val):
                chain: list[Any] = []
                if not arg.same_as(head):
                    _side_chain(mod, arg, var2val, uses, chain)
                names = [_callee(mod, var2val[v]).name_hint for v in chain]
                if any(n.startswith("strided_slice") for n in names):
                    marked += [v for v in chain if _pattern(mod, var2val[v]) == _INJECTIVE]
                elif not arg.same_as(head):
                    marked += _widening(mod, arg, var2val, uses)
            head = nxt
    return marked


def tap_fusion_pass() -> Any:
    """Marks the injective ops of conv-epilogue side chains that slice an input broadcast (see the module doc)."""
    import tvm
    from tvm import relax

    @tvm.transform.module_pass(opt_level=0, name="EdgekitTapFusion")
    def apply(mod: Any, _ctx: Any) -> Any:
        if "main" not in [gv.name_hint for gv in mod.get_global_vars()]:
            return mod
        main_gv = mod.get_global_var("main")
        var2val = relax.analysis.get_var2val(mod[main_gv])
        calls = [var2val[v] for v in _tap_chains(mod, mod[main_gv])]
        if not calls:
            return mod
        copies: dict[Any, Any] = {}

        @relax.expr_functor.mutator
        class Remark(relax.PyExprMutator):
            def visit_call_(self, call: Any) -> Any:
                marked = any(c.same_as(call) for c in calls)
                call = super().visit_call_(call)
                if not marked:
                    return call
                gv = call.args[0]
                if gv not in copies:
                    func = mod[gv].with_attr("op_pattern", _BROADCAST)
                    copies[gv] = self.builder_.add_func(func, f"{gv.name_hint}_tap")
                return relax.call_tir(copies[gv], call.args[1], call.ty)

        mutator = Remark(mod)
        mutator.builder_.update_func(main_gv, mutator.visit_expr(mod[main_gv]))
        logger.debug("tap fusion: %d injective ops of tap slices marked broadcast", len(calls))
        return mutator.builder_.get()

    return apply


def _closure(sch: Any, block: Any, step: str) -> set[str]:
    """Names of the blocks reachable from ``block`` by ``sch.get_producers`` or ``sch.get_consumers``."""
    seen: set[str] = set()
    todo = list(getattr(sch, step)(block))
    while todo:
        b = todo.pop()
        name = sch.get(b).name_hint
        if name not in seen:
            seen.add(name)
            todo.extend(getattr(sch, step)(b))
    return seen


def inline_tap_chains(sch: Any, acc: Any) -> None:
    """Inlines a conv kernel's tap chains (the blocks beside the accumulation: slice, pad, widening,
    transpose, the product with ``r``) into the epilogue that reads them.

    After :func:`tap_fusion_pass` they are blocks of the conv's kernel, but
    neither upstream of the accumulator nor downstream of it, so the epilogue
    inlining left each a loop of its own over its whole tensor (a transpose of
    all channels before the one-channel slice): the conv kernels of PP-OCR
    cls with QUInt8 weights took up to twice the time of their symmetric
    build's. Inlined, each tap is one load per output pixel in the write-back.

    A residual operand widened beside the accumulation (``astype(t, float32) * s``
    of an int8 / uint8 / int16 tensor: :func:`_widening`, or the operand form
    :mod:`~edgekit.compiler.backends.llvm.operand_readers` reads) is inlined the
    same way, before the write-back takes the epilogue: left as loops, they
    wrote whole float tensors inside the kernel and kept the epilogue out of
    the register tile (ResNet-50's residual convs, int8, twice the time of
    the same conv without the add). Other kernels are left alone.
    """
    from tvm.s_tir.dlight.analysis import get_root_block

    fixed = _closure(sch, acc, "get_producers") | _closure(sch, acc, "get_consumers") | {sch.get(acc).name_hint}
    fixed |= {sch.get(b).name_hint for b in sch.get_output_blocks(get_root_block(sch))}
    side = [sch.get(b).name_hint for b in sch.get_child_blocks(get_root_block(sch))]
    side = [n for n in side if n not in fixed]
    if not any("strided_slice" in n for n in side) and not _reads_narrow(sch, side):
        return
    for name in side:
        try:
            sch.compute_inline(sch.get_sblock(name))
        except Exception as exc:  # the loop stands: exact, one more pass over its tensor
            logger.debug("tap block %s not inlined (%s)", name, str(exc).splitlines()[0][:200])


def _reads_narrow(sch: Any, names: list[str]) -> bool:
    """True when one of the blocks ``names`` reads an int8, uint8 or int16 buffer (a residual operand)."""
    return any(str(r.source.dtype) in (*_NARROW, "int16") for n in names for r in sch.get(sch.get_sblock(n)).reads)
