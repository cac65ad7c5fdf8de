"""The model variants a ``compress --report`` document describes (fp32, int8, pruned ...).

The compress document is ``{"model", "output", "steps": [...]}`` where a step
is either the int8 quality report (``"step": "quantize"``) or a pipeline
step's :meth:`edgekit.compress.passes.CompressionStep.to_json`. Each yields
the variant after it; the first one also yields the fp32 starting point.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Variant", "accuracy_label", "variants_of"]

logger = logging.getLogger(__name__)


@dataclass
class Variant:
    """One model along the compression chain.

    Attributes:
        name: ``fp32``, ``int8``, ``int8 (all layers)``, or a pipeline step name.
        weight_bytes: Weight bytes of this variant.
        accuracy: Percent: the labelled metric where the report has one, else
            top-1 agreement with the fp32 model (100 for fp32 itself).
        sqnr_db: Output SQNR against fp32 (``None``: identical or unknown).
        latency_ms: Compiled latency on the board, where measured.
        macs: Multiply-accumulates, where known.
    """

    name: str
    weight_bytes: int | None
    accuracy: float | None
    sqnr_db: float | None = None
    latency_ms: float | None = None
    macs: int | None = None


def _pct(value: float | None) -> float | None:
    # Metrics are fractions in the reports (accuracy 0.97); plots read percent.
    if value is None:
        return None
    return value * 100.0 if value <= 1.0 else value


def accuracy_label(document: Mapping[str, Any]) -> str:
    """``accuracy %`` when the document has a labelled metric, else ``top-1 agreement %``."""
    for step in document.get("steps", []):
        if step.get("metric") or step.get("accuracy") is not None:
            return "accuracy %"
    return "top-1 agreement %"


def _quantize_variants(step: Mapping[str, Any], first: bool) -> list[Variant]:
    wb = step.get("weight_bytes") or {}
    metric = step.get("metric")
    agreements = [o["top1_agreement"] for o in step.get("outputs", []) if o.get("top1_agreement") is not None]
    sqnrs = [o["sqnr_db"] for o in step.get("outputs", []) if o.get("sqnr_db") is not None]
    if metric:
        ref, acc = _pct(metric["fp32"]), _pct(metric["quantized"])
    else:
        ref, acc = (100.0, min(agreements)) if agreements else (None, None)
    out = []
    if first:
        out.append(Variant("fp32", wb.get("before"), ref))
    fb = step.get("fallback")
    if fb and fb.get("layers") and ref is not None and fb.get("drop_before") is not None:
        # drop_before is the loss of plain int8 in the same unit as the budget.
        out.append(Variant("int8 (all layers)", (wb.get("after") or 0) - int(fb.get("bytes_cost", 0)),
                           ref - fb["drop_before"]))
    name = f"int8 ({len(fb['layers'])} in float)" if fb and fb.get("layers") else "int8"
    out.append(Variant(name, wb.get("after"), acc, min(sqnrs) if sqnrs else None))
    return out


def _pipeline_variants(step: Mapping[str, Any], first: bool) -> list[Variant]:
    fid = step.get("fidelity") or {}
    acc = _pct(step.get("accuracy"))
    if acc is None:
        acc = fid.get("top1_agreement")
    out = []
    if first:
        before = step.get("before") or {}
        out.append(Variant("fp32", before.get("weight_bytes"), 100.0 if step.get("accuracy") is None else None,
                           None, step.get("latency_ms_before"), before.get("macs")))
    after = step.get("after") or {}
    out.append(Variant(str(step.get("step")), after.get("weight_bytes"), acc, fid.get("sqnr_db"),
                       step.get("latency_ms_after"), after.get("macs")))
    return out


def variants_of(document: Mapping[str, Any], latencies: Mapping[str, float] | None = None) -> list[Variant]:
    """The variants of a compress document, fp32 first.

    Args:
        document: The ``compress --report`` JSON object.
        latencies: Latency in ms by variant name, e.g. from ``edgekit bench``
            of each variant's package; fills in what the document lacks.
    """
    variants: list[Variant] = []
    for step in document.get("steps", []):
        kind = step.get("step")
        if kind == "quantize":
            variants += _quantize_variants(step, first=not variants)
        elif "before" in step and "after" in step:
            variants += _pipeline_variants(step, first=not variants)
    for v in variants:
        if latencies and v.latency_ms is None and v.name in latencies:
            v.latency_ms = float(latencies[v.name])
    return variants
