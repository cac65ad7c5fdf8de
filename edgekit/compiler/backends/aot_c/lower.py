"""Import an ONNX model into TVM Relax and lower it for the AOT C emitter.

The lowering stops where Relax's VM build would start emitting VM
instructions: after ``CallTIRRewrite``, ``main`` is a straight list of
``R.builtin.alloc_tensor`` bindings, destination-passing calls of fused
PrimFuncs, ``R.reshape`` views and constants. Memory is *not* planned by
``StaticPlanBlockMemory`` here: :mod:`edgekit.compiler.backends.aot_c.plan` plans one
arena that also holds the model inputs, outputs and kernel workspaces, which
Relax's planner leaves out.

Weights are imported as parameters and detached (so the importer never embeds
them in the IR), then bound back as constants so ``FoldConstant`` can run the
weight-only computations (transposes, reshapes of biases) at compile time. The
constants left in ``main`` are exactly what the device needs: they become the
weights blob.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from edgekit.compiler.importer import fusion_passes, tvm_error_line
from edgekit.core.errors import CompileError

if TYPE_CHECKING:
    from edgekit.frontend.loader import PreparedModel

__all__ = ["import_model", "lower_for_aot", "tvm_error_line"]

logger = logging.getLogger(__name__)


def import_model(prepared: "PreparedModel") -> Any:
    """Imports ``prepared`` into a Relax module whose weights are constants.

    Returns:
        The ``tvm.IRModule``; ``main`` takes only the real model inputs.

    Raises:
        CompileError: naming TVM's first error line when the import fails.
    """
    from tvm import relax

    from edgekit.compiler.importer import import_onnx

    mod, weights, _ = import_onnx(prepared)
    names = [p.name for p in mod["main"].params[len(prepared.inputs) :]]
    if weights:
        try:
            mod = relax.transform.BindParams("main", dict(zip(names, weights)))(mod)
        except Exception as exc:
            raise CompileError(
                f"TVM could not bind the weights of model '{prepared.name}': {tvm_error_line(exc)}",
                hint="Report the model; run with --debug for TVM's message.",
            ) from exc
    return mod


def lower_for_aot(mod: Any, tvm_target: Any, opt_level: int = 3, *, fast_math: bool = True) -> Any:
    """Runs the Relax passes that turn ``main`` into a list of kernel calls.

    Args:
        mod: The module from :func:`import_model`.
        tvm_target: The ``tvm.target.Target`` kernels will be built for.
        opt_level: ``PassContext`` optimisation level.
        fast_math: Replace softmax, exp, erf, tanh and sigmoid by TVM's
            polynomial versions, so the kernels need no ``expf``/``tanhf``/
            ``erff`` from a libm the bare-metal image does not have
            (``FastMathTransform`` leaves sigmoid alone: its TOPI kernel calls
            ``expf``).

    Returns:
        The lowered module (``main`` plus the fused PrimFuncs it calls).

    Raises:
        CompileError: when a pass fails.
    """
    import tvm
    from tvm import relax

    from edgekit.compiler.detector import fast_sigmoid_pass

    passes = tvm.transform.Sequential(
        [
            relax.transform.DecomposeOpsForInference(),
            *([relax.transform.FastMathTransform(), fast_sigmoid_pass()] if fast_math else []),
            *fusion_passes(),
            # Reshapes become R.reshape views instead of copy kernels.
            relax.transform.RewriteDataflowReshape(),
            relax.transform.ToNonDataflow(),
            relax.transform.RemovePurityChecking(),
            relax.transform.CallTIRRewrite(),
        ]
    )
    try:
        with tvm_target, tvm.transform.PassContext(opt_level=opt_level):
            return passes(mod)
    except Exception as exc:
        raise CompileError(
            f"TVM could not lower the model for {tvm_target.kind.name} ({tvm_error_line(exc)})",
            hint="Run with --debug for TVM's full message, or report the model.",
        ) from exc
