"""edgekit's Python API: one function per command-line verb.

Each ``edgekit.cli.cmd_<verb>`` module parses its flags, calls one function
from here and renders the result; a Python program calls the same function.
The functions take typed arguments, return dataclasses, raise
:class:`edgekit.core.errors.EdgekitError` subclasses, print nothing, and
report progress through a callback (docs/api.md).

The modules are imported on first use (PEP 562), so ``edgekit boards`` does
not pay for onnx, onnxruntime or TVM.
"""

from __future__ import annotations

from edgekit.core.lazy import lazy_attributes

#: Public name -> module that defines it.
_API = {
    "list_boards": "edgekit.api.boards",
    "InspectResult": "edgekit.api.inspect",
    "inspect_model": "edgekit.api.inspect",
    "CompressOptions": "edgekit.api.compress",
    "CompressResult": "edgekit.api.compress",
    "CompressionGoalError": "edgekit.api.compress",
    "QuantizeRequest": "edgekit.api.compress",
    "compress_model": "edgekit.api.compress",
    "CompileResult": "edgekit.api.compile",
    "compile_model": "edgekit.api.compile",
    "SynthResult": "edgekit.api.synth",
    "synthesize": "edgekit.api.synth",
    "tune_model": "edgekit.api.tune",
    "Deployment": "edgekit.api.flash",
    "FlashResult": "edgekit.api.flash",
    "flash_package": "edgekit.api.flash",
    "RunResult": "edgekit.api.run",
    "run_package": "edgekit.api.run",
    "RunTarget": "edgekit.api.target",
    "BenchOptions": "edgekit.api.bench",
    "BenchResult": "edgekit.api.bench",
    "ReportFiles": "edgekit.api.bench",
    "Tracker": "edgekit.api.bench",
    "bench_package": "edgekit.api.bench",
    "GateRequest": "edgekit.api.gate",
    "gate_package": "edgekit.api.gate",
    "measure_payoff": "edgekit.api.payoff",
    "measure_payoffs": "edgekit.api.payoff",
    "measure_float_layers": "edgekit.api.payoff",
    "DoctorReport": "edgekit.api.doctor",
    "doctor_report": "edgekit.api.doctor",
}

__all__ = list(_API)


__getattr__, __dir__ = lazy_attributes(__name__, _API, globals())
