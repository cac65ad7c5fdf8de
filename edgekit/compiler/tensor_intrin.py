"""Loading only the CPU tensor intrinsics of TVM, for tuning processes.

Its own module because both MetaSchedule drivers use it as their builder
workers' initializer: local tuning (:mod:`edgekit.compiler.backends.llvm.tuning`) and
tuning measured over RPC (:mod:`edgekit.compiler.tuning_rpc`).
"""

from __future__ import annotations

import logging

__all__ = ["use_cpu_tensor_intrinsics_only"]

logger = logging.getLogger(__name__)


def use_cpu_tensor_intrinsics_only() -> None:
    """Makes ``import tvm.s_tir.tensor_intrin`` load only the CPU intrinsics.

    MetaSchedule imports that package in every ``TuneContext`` and in every
    builder worker. In TVM 0.27 the package ``__init__`` registers the
    intrinsics of every backend (CUDA's alone parse thousands of TVMScript
    functions) and took 60-65 s here, per process, on each tuning run and each
    restarted builder worker. The CPU modules (x86 VNNI/AVX512, ARM dot
    products) load in under 2 s. Installed as a stub package: a no-op once
    the real package is imported.
    """
    import importlib
    import importlib.util
    import sys
    import types

    name = "tvm.s_tir.tensor_intrin"
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return
    stub = types.ModuleType(name)
    stub.__path__ = list(spec.submodule_search_locations)
    stub.__package__ = name
    stub.__doc__ = "CPU-only tensor intrinsics (edgekit: see edgekit.compiler.tensor_intrin)"
    sys.modules[name] = stub
    for sub in ("x86", "arm_cpu"):
        try:
            importlib.import_module(f"{name}.{sub}")
        except Exception as exc:  # pragma: no cover - depends on the TVM build
            logger.debug("tensor intrinsics %s not loaded: %s", sub, exc)
