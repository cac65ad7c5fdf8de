"""The ``cuda`` section of a CUDA package's manifest (see :mod:`edgekit.package.sections`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from edgekit.package.sections import Section, SectionReader

__all__ = ["CudaSection"]


@dataclass(frozen=True)
class CudaSection(Section):
    """``cuda``: how the device code was made.

    Attributes:
        compiler: What compiled the CUDA C (``nvcc`` or ``nvrtc``).
        schedule: The GPU schedule rules applied.
        source: The member holding the generated CUDA C, or ``None`` when not kept.
    """

    KEY: ClassVar[str] = "cuda"

    compiler: str = ""
    schedule: str = ""
    source: str | None = None

    @classmethod
    def from_json(cls, data: Any, *, where: str = "package") -> CudaSection:
        r = SectionReader(data, cls.KEY, where)
        return cls(r.get("compiler", str, ""), r.get("schedule", str, ""), r.get("source", str, None, optional=True))

    def to_json(self) -> dict[str, Any]:
        return {"compiler": self.compiler, "schedule": self.schedule, "source": self.source}
