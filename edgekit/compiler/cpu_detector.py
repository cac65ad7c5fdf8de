"""Relax rewrites for the idioms of YOLO-family detectors on CPUs (float32).

Found by profiling a YOLOv8n and a YOLOX detector kernel by kernel against
onnxruntime's profiler (``benchmarks/cpu.py --profile``):

* **SiLU** (``x * sigmoid(x)``, after every convolution of YOLOv5/v8/X):
  TVM lowers ``sigmoid`` to ``1 / (1 + exp(-x))`` with LLVM's ``exp``, a scalar
  ``expf`` call per element, in the epilogue of every convolution.
  :func:`fast_sigmoid_pass` computes it with TVM's polynomial ``fast_exp``
  instead, which vectorizes and still fuses into the convolution's write-back.

Entry points are Relax module passes; :func:`edgekit.compiler.cpu_pipeline.prepare_cpu_module`
runs them after the layout conversion.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["fast_sigmoid", "fast_sigmoid_pass"]

logger = logging.getLogger(__name__)


def fast_sigmoid(x: Any) -> Any:
    """TE ``sigmoid(x) = 1 / (1 + exp(-x))`` with TVM's polynomial ``fast_exp`` (relative error ~1e-7).

    ``fast_exp`` clamps its argument to about [-88.4, 88.4]: for ``x < -88``
    the result is ~4e-39 instead of something smaller, for ``x > 88`` it is 1.
    """
    from tvm import te, topi

    neg = te.compute(x.shape, lambda *i: -x(*i), name="sigmoid_neg")
    e = topi.fast_exp(neg)
    return te.compute(x.shape, lambda *i: 1.0 / (1.0 + e(*i)), name="sigmoid")


def fast_sigmoid_pass() -> Any:
    """Relax pass: float32 ``relax.sigmoid`` as :func:`fast_sigmoid` (vectorized, no libm calls).

    Runs after ``ConvertLayout`` (a ``call_te`` has no layout rule); the
    result is elementwise, so ``FuseOps`` still puts it in the epilogue of
    the convolution before it.
    """
    from edgekit.compiler.cpu_pipeline import _call_rewrite_pass, static_shape

    def rewrite(b: Any, call: Any) -> Any:
        if static_shape(call.args[0], "float32") is None:
            return None
        return b.call_te(fast_sigmoid, call.args[0], primfunc_name_hint="fast_sigmoid")

    return _call_rewrite_pass("relax.sigmoid", rewrite, "EdgekitFastSigmoid")
