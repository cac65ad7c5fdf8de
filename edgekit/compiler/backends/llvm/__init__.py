"""The ``llvm`` backend (CPUs): Relax VM libraries for this machine's ISA,
static runners for other ISAs' 64-bit Linux boards.

* :mod:`~edgekit.compiler.backends.llvm.pipeline` — :func:`build` (the entry
  point) and the pass lists :data:`PASSES` / :data:`CROSS_PASSES`;
* :mod:`~edgekit.compiler.backends.llvm.host` — the Relax VM library;
* :mod:`~edgekit.compiler.backends.llvm.linux_cross` — the static runner;
* :mod:`~edgekit.compiler.backends.llvm.int8_choice` — :func:`choose_precision`,
  the backend's precision hook: int8 or fp32 per layer of a QDQ model, by
  what measured faster on the target.
"""

from edgekit.compiler.backends.llvm.int8_choice import choose_precision
from edgekit.compiler.backends.llvm.pipeline import CROSS_PASSES, PASSES, build, passes_for

__all__ = ["build", "choose_precision", "passes_for", "PASSES", "CROSS_PASSES"]
