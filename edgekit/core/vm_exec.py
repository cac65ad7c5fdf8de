"""How a Relax VM executable runs its functions: compiled code or bytecode.

Host packages build ``main`` as compiled code (``relax.build(..., exec_mode="compiled")``);
packages written before that, and the profiling builds of the benchmarks, are bytecode the VM
interprets. The compiler and the host runner both need to tell which, from the library itself.
"""

from __future__ import annotations

from typing import Any

__all__ = ["exec_mode_of"]


def exec_mode_of(executable: Any, function: str = "main") -> str:
    """``"compiled"`` or ``"bytecode"``: how ``function`` of a Relax VM executable runs.

    Args:
        executable: A ``relax.VMExecutable``, or an exported library loaded with
            ``tvm.runtime.load_module`` (a package's ``lib/model.so``).
        function: The function's name.

    Raises:
        ValueError: if the executable has no such function.
    """
    from tvm import relax

    exe = executable if isinstance(executable, relax.VMExecutable) else relax.VMExecutable(executable)
    # as_text() heads each function "@name:" (bytecode) or "@name num_inputs=N vm_tir_func;".
    for line in exe.as_text().splitlines():
        head = line.split(maxsplit=1)
        if head and head[0].rstrip(":") == f"@{function}":
            return "compiled" if "vm_tir_func" in line else "bytecode"
    raise ValueError(f"the executable has no function '{function}'")
