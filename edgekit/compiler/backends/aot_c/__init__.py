"""The ``aot-c`` backend: bare-metal microcontrollers, static C and no runtime.

One module per step of :data:`PASSES` (see docs/aot.md): ``lower`` (import,
Relax lowering), ``nn`` and ``fold`` (int8 layers and chains to edgekit's C
kernels), ``graph`` (tensors and calls), ``memory`` (the plan before the
build; ``edgekit inspect``'s fit), ``kernels`` (TVM kernel build), ``plan``
and ``layout`` (arena and weights), ``emit`` (``model.c``), ``pipeline``
(:func:`build`, the entry point, and :func:`compile_aot`); ``host`` runs the
C on this machine for numerical checks.
"""

from edgekit.compiler.backends.aot_c.pipeline import PASSES, RUNTIME, build, compile_aot

__all__ = ["build", "compile_aot", "PASSES", "RUNTIME"]
