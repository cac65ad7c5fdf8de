"""A user's accuracy function for accuracy-controlled quantization, named
``MODULE:FUNCTION`` (``edgekit compress --metric``)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Callable

from edgekit.core.errors import InputError

__all__ = ["load_metric"]


def load_metric(spec: str) -> Callable[..., float]:
    """Resolves ``MODULE:FUNCTION`` (``MODULE`` importable, from the current
    folder too, or a ``.py`` file) to the function.

    Raises:
        InputError: the spec is malformed, the module or function is missing,
            or it is not callable.
    """
    module_name, sep, func_name = spec.rpartition(":")
    if not sep or not module_name or not func_name:
        raise InputError(f"--metric '{spec}' is not MODULE:FUNCTION",
                         hint="Write e.g. --metric my_metrics:accuracy or --metric path/to/metrics.py:accuracy.")
    try:
        if module_name.endswith(".py") or "/" in module_name:
            path = Path(module_name)
            if not path.is_file():
                raise InputError(f"--metric: file '{path}' does not exist", hint="Check the path of the .py file.")
            module_spec = importlib.util.spec_from_file_location(f"edgekit_user_metric_{path.stem}", path)
            assert module_spec is not None and module_spec.loader is not None
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            added = "" not in sys.path
            if added:
                sys.path.insert(0, "")  # the current folder, as `python -m` would
            try:
                module = importlib.import_module(module_name)
            finally:
                if added:
                    sys.path.remove("")
    except InputError:
        raise
    except Exception as exc:  # ImportError, or anything the user's module raises on import
        raise InputError(f"--metric: cannot import '{module_name}' ({type(exc).__name__}: {exc})",
                         hint="Run from the folder that holds the module, or give the .py file's path.") from exc
    func = getattr(module, func_name, None)
    if not callable(func):
        found = ", ".join(n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))) or "none"
        raise InputError(f"--metric: '{module_name}' has no function '{func_name}'",
                         hint=f"Functions there: {found}.")
    return func
