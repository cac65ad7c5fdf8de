"""The ``aot-c`` backend: bare-metal microcontrollers, static C and no runtime.

One module per step of :data:`PASSES` (see docs/aot.md):
:mod:`~.lower` (import, Relax lowering), :mod:`~.nn` and :mod:`~.fold`
(int8 layers and chains to edgekit's C kernels), :mod:`~.graph` (tensors and
calls), :mod:`~.memory` (the plan before the build, ``edgekit inspect``'s fit),
:mod:`~.kernels` (TVM kernel build), :mod:`~.plan` and :mod:`~.layout` (arena
and weights), :mod:`~.emit` (``model.c``), :mod:`~.pipeline` (:func:`build`,
the entry point, and :func:`compile_aot`); :mod:`~.host` runs the C on this
machine for numerical checks.
"""

from edgekit.compiler.backends.aot_c.pipeline import PASSES, RUNTIME, build, compile_aot

__all__ = ["build", "compile_aot", "PASSES", "RUNTIME"]
