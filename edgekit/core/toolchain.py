"""The one place edgekit finds a C compiler.

Search order (the same for firmware images, device agents, host checks and
cross-built shared libraries):

1. ``$EDGEKIT_CC`` (a command line, e.g. ``clang`` or ``zig cc``);
2. ``python -m ziglang cc`` (pip ``ziglang``, an edgekit dependency): one
   clang for every triple edgekit targets, host included;
3. for host builds only: the system ``cc``, ``gcc`` or ``clang``.

zig keeps its own compiler cache; it goes below edgekit's cache root
(:func:`edgekit.core.cache.cache_dir`) unless ``ZIG_GLOBAL_CACHE_DIR`` is set.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass

from edgekit.core.cache import cache_dir
from edgekit.core.errors import CompileError

__all__ = ["Toolchain", "find_toolchain"]


@dataclass(frozen=True)
class Toolchain:
    """A C compiler command.

    Attributes:
        command: Argument list that starts a compile (e.g. ``[python, -m, ziglang, cc]``).
        kind: ``zig`` (can cross-compile) or ``cc`` (host only).
    """

    command: tuple[str, ...]
    kind: str

    def env(self) -> dict[str, str]:
        """The environment to run the compiler in (zig's cache below edgekit's)."""
        env = dict(os.environ)
        if self.kind == "zig":
            env.setdefault("ZIG_GLOBAL_CACHE_DIR", str(cache_dir("zig")))
        return env


def find_toolchain(*, cross: bool) -> Toolchain:
    """The C compiler to use, in the order of the module docstring.

    Args:
        cross: The build is for another machine than this one (no system cc).

    Raises:
        CompileError: when no usable compiler exists, saying what to install.
    """
    env = os.environ.get("EDGEKIT_CC", "").split()
    if env:
        return Toolchain(tuple(env), "zig" if "zig" in " ".join(env) else "cc")
    if importlib.util.find_spec("ziglang") is not None:
        return Toolchain((sys.executable, "-m", "ziglang", "cc"), "zig")
    if not cross:
        for name in ("cc", "gcc", "clang"):
            path = shutil.which(name)
            if path:
                return Toolchain((path,), "cc")
    raise CompileError(
        "no C cross compiler found" if cross else "no C compiler found",
        hint="Install one with `pip install ziglang` (edgekit uses zig's clang for every board), or set EDGEKIT_CC.",
    )
