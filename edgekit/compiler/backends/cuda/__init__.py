"""The ``cuda`` backend: NVIDIA GPUs (desktop and Jetson), a Relax VM library
with device code (:mod:`~edgekit.compiler.backends.cuda.pipeline`: :func:`build`,
the entry point, and :data:`PASSES`)."""

from edgekit.compiler.backends.cuda.pipeline import PASSES, RUNTIME, build

__all__ = ["build", "PASSES", "RUNTIME"]
