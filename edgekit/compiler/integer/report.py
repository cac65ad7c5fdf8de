"""What the integer lowering did: chains rewritten, chains left in float and why."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["Chain", "LoweringReport"]


@dataclass(frozen=True)
class Chain:
    """One ``... -> QuantizeLinear`` chain.

    Attributes:
        kind: The rule that handled it (``conv2d``, ``matmul``, ``add``,
            ``max_pool2d``, ``lut``, ...), or the float op when none did.
        name: The ONNX tensor it produces (from the output scale's name) or
            the weight's name; ``""`` when the importer bound them as constants.
        shape: Output shape.
        detail: For rewritten chains, what was folded (per-channel, relu,
            zero-point fold, ...); for float ones, why it stayed float.
    """

    kind: str
    name: str
    shape: tuple[int, ...]
    detail: str = ""

    def as_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "name": self.name, "shape": list(self.shape), "detail": self.detail}


@dataclass
class LoweringReport:
    """Result of :func:`~edgekit.compiler.integer.lower.lower_to_integer_with_report`.

    Attributes:
        rewritten: Chains now computed in integers only.
        kept_float: Quantized chains left as float compute, each with its reason.
        float_ops: Float compute ops still in ``main`` after lowering, by op
            name (model-boundary quantize/dequantize and un-quantized layers).
    """

    rewritten: list[Chain] = field(default_factory=list)
    kept_float: list[Chain] = field(default_factory=list)
    float_ops: Counter[str] = field(default_factory=Counter)

    @property
    def modified(self) -> bool:
        """True when at least one chain was rewritten."""
        return bool(self.rewritten)

    def counts(self) -> dict[str, int]:
        """Number of rewritten chains per kind."""
        return dict(Counter(c.kind for c in self.rewritten))

    def summary(self) -> str:
        """One line for logs and the CLI."""
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.counts().items()))
        return (
            f"integer lowering: {len(self.rewritten)} chains integer-only ({kinds or 'none'}), "
            f"{len(self.kept_float)} kept in float"
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "rewritten": [c.as_dict() for c in self.rewritten],
            "kept_float": [c.as_dict() for c in self.kept_float],
            "float_ops": dict(self.float_ops),
        }
