"""The ``npu`` section of an accelerator package's manifest (see :mod:`edgekit.package.sections`),
and the partition records it holds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from edgekit.package.sections import Section, SectionReader

__all__ = ["NpuSection", "PartitionSummary", "Placement"]


@dataclass(frozen=True)
class Placement:
    """Where one ONNX node runs and why (``npu.partition.placements[]``).

    Attributes:
        node, op: The node and its operator.
        where: ``npu`` or ``host``.
        reason: Why, in words.
        layer: The accelerator layer it belongs to ("" on the host).
        macs: Its multiply-accumulates.
    """

    node: str
    op: str
    where: str
    reason: str
    layer: str = ""
    macs: int = 0

    @classmethod
    def from_json(cls, data: Any, where: str = "package") -> Placement:
        r = SectionReader(data, "npu.partition.placements[]", where)
        return cls(r.get("node", str), r.get("op", str), r.get("where", str), r.get("reason", str, ""),
                   r.get("layer", str, ""), r.get("macs", int, 0))  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "op": self.op, "where": self.where, "reason": self.reason, "layer": self.layer,
                "macs": self.macs}  # fmt: skip


@dataclass(frozen=True)
class PartitionSummary:
    """What the partition put on the accelerator (``npu.partition``; also ``inspect --board``'s ``npu``).

    Attributes:
        offloaded_layers: Accelerator layers.
        offloaded_macs, total_macs: MACs on the accelerator, and in the whole model.
        offloaded_macs_fraction: Their ratio (0.0 for a model without MACs).
        placements: Every compute node, with where it runs and why.
    """

    offloaded_layers: int
    offloaded_macs: int
    total_macs: int
    offloaded_macs_fraction: float
    placements: tuple[Placement, ...] = ()

    @classmethod
    def from_json(cls, data: Any, where: str = "package") -> PartitionSummary:
        r = SectionReader(data, "npu.partition", where)
        placements = tuple(Placement.from_json(p, where) for p in r.get("placements", list, []))
        return cls(r.get("offloaded_layers", int), r.get("offloaded_macs", int), r.get("total_macs", int),
                   float(r.get("offloaded_macs_fraction", float)), placements)  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {"offloaded_layers": self.offloaded_layers, "offloaded_macs": self.offloaded_macs,
                "total_macs": self.total_macs, "offloaded_macs_fraction": self.offloaded_macs_fraction,
                "placements": [p.to_json() for p in self.placements]}  # fmt: skip


@dataclass(frozen=True)
class NpuSection(Section):
    """``npu``: where the plan is and what the partition put on the accelerator.

    The runners read the plan member itself (``npu/plan.json``), not this section.

    Attributes:
        plan: The member holding the execution plan.
        partition: The partition's summary (``None`` where a package lacks it).
        layers: Layers that run on the accelerator.
    """

    KEY: ClassVar[str] = "npu"

    plan: str = "npu/plan.json"
    partition: PartitionSummary | None = None
    layers: int = 0

    @classmethod
    def from_json(cls, data: Any, *, where: str = "package") -> NpuSection:
        r = SectionReader(data, cls.KEY, where)
        partition = r.get("partition", dict, None)
        return cls(r.get("plan", str, cls.plan), PartitionSummary.from_json(partition, where) if partition is not None
                   else None, r.get("layers", int, 0))  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"plan": self.plan}
        if self.partition is not None:
            out["partition"] = self.partition.to_json()
        out["layers"] = self.layers
        return out
