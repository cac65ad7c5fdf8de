"""The ``npu`` section of an accelerator package's manifest (see :mod:`edgekit.package.sections`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from edgekit.package.sections import Section, SectionReader

__all__ = ["NpuSection"]


@dataclass(frozen=True)
class NpuSection(Section):
    """``npu``: where the plan is and what the partition put on the accelerator.

    The runners read the plan member itself (``npu/plan.json``), not this section.

    Attributes:
        plan: The member holding the execution plan.
        partition: The partition summary (``offloaded_layers``,
            ``offloaded_macs``, ``total_macs``, ``offloaded_macs_fraction`` and
            every node's placement with its reason), as JSON.
        layers: Layers that run on the accelerator.
    """

    KEY: ClassVar[str] = "npu"

    plan: str = "npu/plan.json"
    partition: Mapping[str, Any] = field(default_factory=dict)
    layers: int = 0

    @classmethod
    def from_json(cls, data: Any, *, where: str = "package") -> NpuSection:
        r = SectionReader(data, cls.KEY, where)
        return cls(r.get("plan", str, cls.plan), r.get("partition", dict, {}), r.get("layers", int, 0))

    def to_json(self) -> dict[str, Any]:
        return {"plan": self.plan, "partition": dict(self.partition), "layers": self.layers}

    @property
    def offloaded_macs_fraction(self) -> float:
        """Share of the model's MACs on the accelerator (0.0 when not recorded)."""
        return float(self.partition.get("offloaded_macs_fraction", 0.0))
