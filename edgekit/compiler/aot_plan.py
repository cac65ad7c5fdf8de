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

    order = sorted(buffers, key=lambda b: (-b.size, b.first, b.name))
    placed: list[tuple[int, Buffer]] = []
    offsets: dict[str, int] = {}
    for buf in order:
        if buf.size == 0:
            offsets[buf.name] = 0
            continue
        busy = sorted((off, off + other.size) for off, other in placed if other.overlaps_in_time(buf))
        offset = 0
        for start, end in busy:
            if offset + buf.size <= start:
                break
            offset = max(offset, align_up(end, alignment))
        offsets[buf.name] = offset
        placed.append((offset, buf))
    arena = align_up(max((off + b.size for off, b in placed), default=0), alignment)
    total = sum(b.size for b in buffers)
    logger.debug("arena plan: %d buffers, %d bytes (%d without reuse)", len(buffers), arena, total)
    return ArenaPlan(offsets=offsets, arena_bytes=arena, alignment=alignment, total_bytes=total)


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
            if not a.overlaps_in_time(b):
                continue
            b0 = plan.offsets[b.name]
            if a0 < b0 + b.size and b0 < a0 + a.size:
                bad.append((a.name, b.name))
    return bad
