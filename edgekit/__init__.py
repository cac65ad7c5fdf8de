"""edgekit: deploy ONNX models to edge hardware.

The public API mirrors the command line: :func:`load_model`, :func:`analyze`
(``inspect``), :func:`quantize`, :func:`compile_model`, :func:`run_package`,
:func:`bench_package` and the board registry.

The API is imported on first use (PEP 562): ``import edgekit`` stays cheap for
the CLI and for the pytest plugin, which every test run of a user loads.
"""

from __future__ import annotations

import importlib
from typing import Any

from edgekit.core.errors import EdgekitError

__version__ = "0.1.0"

#: Public name -> module that defines it.
_API = {
    "PreparedModel": "edgekit.frontend.loader",
    "load_model": "edgekit.frontend.loader",
    "ModelReport": "edgekit.frontend.analysis",
    "analyze": "edgekit.frontend.analysis",
    "QuantConfig": "edgekit.compress",
    "quantize": "edgekit.compress",
    "compile_model": "edgekit.compiler.driver",
    "run_package": "edgekit.runtime.runner",
    "bench_package": "edgekit.runtime.runner",
    "load_profiles": "edgekit.core.profiles",
    "get_board": "edgekit.core.profiles",
    "list_boards": "edgekit.core.profiles",
}

__all__ = ["__version__", "EdgekitError", *_API]


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'edgekit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
