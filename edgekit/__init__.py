"""edgekit: deploy ONNX models to edge hardware.

The public API mirrors the command line: :func:`load_model`, :func:`inspect`,
:func:`compile`, :func:`run`, :func:`bench` and the board registry.
"""

from __future__ import annotations

__version__ = "0.1.0"

from edgekit.compiler.driver import compile_model
from edgekit.compress import QuantConfig, quantize
from edgekit.core.errors import EdgekitError
from edgekit.core.profiles import get_board, list_boards, load_profiles
from edgekit.frontend.analysis import ModelReport, analyze
from edgekit.frontend.loader import PreparedModel, load_model
from edgekit.runtime.runner import bench_package, run_package

__all__ = [
    "__version__",
    "EdgekitError",
    "PreparedModel",
    "load_model",
    "ModelReport",
    "analyze",
    "QuantConfig",
    "quantize",
    "compile_model",
    "run_package",
    "bench_package",
    "load_profiles",
    "get_board",
    "list_boards",
]
