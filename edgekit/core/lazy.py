"""Public names of a package imported on first use (PEP 562), so that
importing the package stays cheap (``edgekit boards`` never loads onnx or
TVM)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(package: str, names: Mapping[str, str],
                    namespace: dict[str, Any]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:  # fmt: skip
    """The module-level ``__getattr__`` and ``__dir__`` of ``package``.

    Args:
        package: The package's name (for the AttributeError).
        names: Public name -> module that defines it.
        namespace: The package's ``globals()``; a name once imported is
            cached there.
    """

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(names))

    return __getattr__, __dir__
