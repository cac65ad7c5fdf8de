"""What ``compile``'s front end makes of a model, without compiling it.

``edgekit inspect`` reports the operators of the model as loaded; compile
first legalizes it (:mod:`edgekit.frontend.legalize`: function ops expanded,
importer fixes, staged reductions) and then refuses operators TVM's importer
cannot convert (:func:`edgekit.frontend.support.check_supported`). This
module runs those same two steps on a copy of the model, so that what
``inspect`` says about compiling is what ``compile`` does: the operators TVM
will import, which nodes were expanded or rewritten, and every refusal.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edgekit.core.errors import UnsupportedOpsError

if TYPE_CHECKING:
    from edgekit.frontend.loader import PreparedModel

__all__ = ["FrontEndCheck", "check_frontend"]

logger = logging.getLogger(__name__)


@dataclass
class FrontEndCheck:
    """The result of :func:`check_frontend`.

    Attributes:
        ok: Compile's front end accepts the model (TVM's build may still
            fail; only compiling tells).
        ops: Op type -> nodes after legalization: what TVM's importer is
            given. Empty when legalization refused the model.
        changes: Op type of an original node -> action -> count, action being
            ``expanded`` (into its ONNX function body), ``rewritten`` (into
            operators TVM converts right), ``staged`` (a long reduction
            split axis by axis) or ``unrolled`` (a Loop or Scan, one body
            copy per iteration).
        refusal: The message compile would fail with ("" when ``ok``).
        refused_ops: The op types that refusal names.
    """

    ok: bool
    ops: dict[str, int] = field(default_factory=dict)
    changes: dict[str, dict[str, int]] = field(default_factory=dict)
    refusal: str = ""
    refused_ops: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """JSON form (``edgekit inspect --json`` key ``frontend``)."""
        return {"ok": self.ok, "ops": dict(self.ops), "changes": {k: dict(v) for k, v in self.changes.items()},
                "refusal": self.refusal, "refused_ops": list(self.refused_ops)}  # fmt: skip


def check_frontend(prepared: PreparedModel) -> FrontEndCheck:
    """Runs compile's legalization and operator check on a copy of ``prepared.model``.

    Imports TVM (its importer's operator table).
    """
    import onnx

    from edgekit.frontend.legalize import legalize_counted
    from edgekit.frontend.support import check_supported, tvm_supported_ops, walk_nodes

    supported = tvm_supported_ops()
    model = onnx.ModelProto()
    model.CopyFrom(prepared.model)
    try:
        model, done = legalize_counted(model, prepared.opset, supported)
    except UnsupportedOpsError as exc:
        return FrontEndCheck(False, refusal=str(exc), refused_ops=list(exc.fields.get("ops", [])))
    changes: dict[str, dict[str, int]] = {}
    for (op, action), n in sorted(done.items()):
        changes.setdefault(op, {})[action] = n
    ops = Counter(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}" for n in walk_nodes(model.graph))
    check = FrontEndCheck(True, dict(ops.most_common()), changes)
    try:
        check_supported(model, supported)
    except UnsupportedOpsError as exc:
        check.ok, check.refusal, check.refused_ops = False, str(exc), list(exc.fields.get("ops", []))
    return check
