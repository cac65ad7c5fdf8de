"""Static arena planning: one byte array for every tensor a model run needs.

Each :class:`Buffer` lives from the kernel call that first touches it to the
last one. Buffers whose lifetimes overlap must not share bytes; the others
may. :func:`plan_arena` places them with the "greedy by size" heuristic that
TensorFlow Lite Micro's planner also uses: largest buffer first, each at the
lowest aligned offset that does not collide with an already placed buffer
alive at the same time. It is hand-written because Relax's
``StaticPlanBlockMemory`` plans only intermediates (not inputs, outputs or
kernel workspaces) and its storage tokens are separate allocations, not
offsets in one arena.

Lifetimes are in kernel-call steps: ``first`` and ``last`` are inclusive step
indices. Model inputs use ``first = -1`` (written before the run) and end at
their last reader (the host writes them again before each run); outputs use
``last = num_calls`` so the host can read them after the run.

A buffer may be placed **inside** another one (``Buffer.within``): it then
starts at the same offset, as the output of a kernel that works in place
(an int8 quantization of a float input writes element i over bytes the
kernel has already read). The two are placed together; each keeps its own
size and lifetime, so the bytes of the larger one past the smaller are free
once the larger is dead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from edgekit.core.errors import CompileError

__all__ = ["Buffer", "ArenaPlan", "plan_arena", "find_overlaps", "align_up", "DEFAULT_ALIGNMENT"]

logger = logging.getLogger(__name__)

#: TVM marks every buffer argument ``storage_alignment = 64`` and LLVM may
#: rely on it, so every offset in the arena (and in the weights blob) is a
#: multiple of 64.
DEFAULT_ALIGNMENT = 64


def align_up(value: int, alignment: int) -> int:
    """``value`` rounded up to a multiple of ``alignment``."""
    return (value + alignment - 1) // alignment * alignment


@dataclass(frozen=True)
class Buffer:
    """A block of bytes with a lifetime in kernel-call steps (inclusive)."""

    name: str
    size: int
    first: int
    last: int
    within: str = ""  # name of the buffer whose offset this one shares (in-place kernels)

    def overlaps_in_time(self, other: "Buffer") -> bool:
        """True when both buffers are alive at some common step."""
        return self.first <= other.last and other.first <= self.last


@dataclass(frozen=True)
class ArenaPlan:
    """Where each buffer lives.

    Attributes:
        offsets: Buffer name -> byte offset in the arena.
        arena_bytes: Arena size (a multiple of the alignment, 0 if empty).
        alignment: Alignment every offset satisfies.
        total_bytes: Sum of all buffer sizes, i.e. the arena without reuse.
    """

    offsets: dict[str, int]
    arena_bytes: int
    alignment: int
    total_bytes: int


def plan_arena(buffers: list[Buffer], alignment: int = DEFAULT_ALIGNMENT) -> ArenaPlan:
    """Places ``buffers`` in one arena, reusing bytes across disjoint lifetimes.

    Raises:
        CompileError: on duplicate names, negative sizes or an empty lifetime.
    """
    if alignment <= 0 or alignment & (alignment - 1):
        raise CompileError(f"arena alignment must be a power of two, got {alignment}", hint="Use 16, 32 or 64.")
    names = [b.name for b in buffers]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise CompileError(f"arena buffers named twice: {', '.join(dup)}", hint="Report this as a bug.")
    for b in buffers:
        if b.size < 0 or b.last < b.first:
            raise CompileError(f"arena buffer '{b.name}' has size {b.size} and lifetime [{b.first}, {b.last}]",
                               hint="Report this as a bug.")

    groups = _groups(buffers)
    order = sorted(groups, key=lambda g: (-max(b.size for b in g), g[0].first, g[0].name))
    placed: list[tuple[int, Buffer]] = []
    offsets: dict[str, int] = {}
    for group in order:
        offset = _first_fit(group, placed, alignment)
        for buf in group:
            offsets[buf.name] = offset if buf.size else 0
            if buf.size:
                placed.append((offset, buf))
    arena = align_up(max((off + b.size for off, b in placed), default=0), alignment)
    total = sum(b.size for b in buffers)
    logger.debug("arena plan: %d buffers, %d bytes (%d without reuse)", len(buffers), arena, total)
    return ArenaPlan(offsets=offsets, arena_bytes=arena, alignment=alignment, total_bytes=total)


def _groups(buffers: list[Buffer]) -> list[list[Buffer]]:
    """Buffers that share an offset (``within`` chains), each group led by its outermost buffer."""
    by_name = {b.name: b for b in buffers}
    members: dict[str, list[Buffer]] = {}
    for b in buffers:
        root, seen = b, {b.name}
        while root.within:
            if root.within not in by_name or root.within in seen:
                raise CompileError(f"arena buffer '{b.name}' is placed within '{root.within}', which is not a buffer "
                                   "or contains it", hint="Report this as a bug.")  # fmt: skip
            root = by_name[root.within]
            seen.add(root.name)
        members.setdefault(root.name, []).append(b)
    return [sorted(g, key=lambda b: b.within != "") for g in members.values()]


def _first_fit(group: list[Buffer], placed: list[tuple[int, Buffer]], alignment: int) -> int:
    """Lowest aligned offset where every buffer of ``group`` (all at that offset)
    misses the bytes of every placed buffer alive at the same time."""
    need: list[tuple[int, int, int]] = []  # (start, end, bytes the group needs there)
    for off, other in placed:
        size = max((b.size for b in group if b.size and b.overlaps_in_time(other)), default=0)
        if size:
            need.append((off, off + other.size, size))
    if len(group) == 1:  # the common case: one pass over the intervals by start
        offset = 0
        for start, end, size in sorted(need):
            if offset + size <= start:
                break
            offset = max(offset, align_up(end, alignment))
        return offset
    for offset in sorted({0, *(align_up(end, alignment) for _, end, _ in need)}):
        if all(offset + size <= start or offset >= end for start, end, size in need):
            return offset
    raise AssertionError("unreachable: the offset past every placed buffer fits")


def find_overlaps(buffers: list[Buffer], plan: ArenaPlan) -> list[tuple[str, str]]:
    """Pairs of buffers alive at the same step whose bytes intersect (empty if the plan is sound).

    Also reports a buffer that is misaligned or reaches past the arena's end
    as the pair ``(name, "<arena>")``.
    """
    bad: list[tuple[str, str]] = []
    live = [b for b in buffers if b.size > 0]
    for b in live:
        off = plan.offsets[b.name]
        if off % plan.alignment or off + b.size > plan.arena_bytes:
            bad.append((b.name, "<arena>"))
    for i, a in enumerate(live):
        a0 = plan.offsets[a.name]
        for b in live[i + 1 :]:
            if not a.overlaps_in_time(b) or a.within == b.name or b.within == a.name:
                continue
            b0 = plan.offsets[b.name]
            if a0 < b0 + b.size and b0 < a0 + a.size:
                bad.append((a.name, b.name))
    return bad
