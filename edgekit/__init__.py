"""edgekit: deploy ONNX models to edge hardware.

The public API mirrors the command line, one function per verb (the
:mod:`edgekit.api` layer): :func:`inspect_model`, :func:`compress_model`,
:func:`compile_model`, :func:`flash_package`, :func:`run_package`,
:func:`bench_package`, :func:`gate_package`, :func:`measure_payoff`,
:func:`doctor_report` and :func:`list_boards`; plus the building blocks
:func:`load_model`, :func:`analyze`, :func:`quantize` and the board profiles.

The API is imported on first use (PEP 562): ``import edgekit`` stays cheap for
the CLI and for the pytest plugin, which every test run of a user loads.
"""

from __future__ import annotations

from edgekit.core.errors import EdgekitError
from edgekit.core.lazy import lazy_attributes

__version__ = "0.1.0"

#: Public name -> module that defines it.
_API = {
    "PreparedModel": "edgekit.frontend.loader",
    "load_model": "edgekit.frontend.loader",
    "ModelReport": "edgekit.frontend.analysis",
    "analyze": "edgekit.frontend.analysis",
    "QuantConfig": "edgekit.compress",
    "quantize": "edgekit.compress",
    "inspect_model": "edgekit.api.inspect",
    "CompressOptions": "edgekit.api.compress",
    "QuantizeRequest": "edgekit.api.compress",
    "compress_model": "edgekit.api.compress",
    "compile_model": "edgekit.api.compile",
    "RunTarget": "edgekit.api.target",
    "flash_package": "edgekit.api.flash",
    "run_package": "edgekit.api.run",
    "BenchOptions": "edgekit.api.bench",
    "bench_package": "edgekit.api.bench",
    "GateRequest": "edgekit.api.gate",
    "gate_package": "edgekit.api.gate",
    "measure_payoff": "edgekit.api.payoff",
    "doctor_report": "edgekit.api.doctor",
    "list_boards": "edgekit.api.boards",
    "load_profiles": "edgekit.core.profiles",
    "get_board": "edgekit.core.profiles",
}

__all__ = ["__version__", "EdgekitError", *_API]


__getattr__, __dir__ = lazy_attributes(__name__, _API, globals())
