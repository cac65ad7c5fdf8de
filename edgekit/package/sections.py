"""Typed backend sections of the manifest, and what every section class shares.

A backend writes its own object into ``manifest.json`` (``aot``, ``npu``,
``linux``, ``params`` ...; :attr:`~edgekit.package.manifest.Manifest.extra`).
Each has a frozen dataclass with ``from_json``/``to_json``: the backend builds
one and writes ``to_json()``, a reader calls ``Section.of(manifest)``. The
classes live next to their backend (``compiler/backends/<name>/section.py``)
unless a layer below the compiler reads them: ``params`` (read by
:class:`~edgekit.package.manifest.Manifest` itself and the TVM VM runners) and
``linux`` (read by the Linux and RPC runners) live here, because ``package``
and ``runtime`` may not import the compiler.

``from_json`` takes what older packages wrote: a key they lack gets the
default its field documents, a key this edgekit does not know is ignored, and
a key of the wrong type raises :class:`~edgekit.core.errors.ManifestError`
naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

from edgekit.core.errors import ManifestError

__all__ = ["Section", "SectionReader", "ParamsSection", "LinuxSection"]

_S = TypeVar("_S", bound="Section")
_MISSING: Any = object()
_WHAT = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list", dict: "an object"}


class _Sections(Protocol):
    """What :meth:`Section.of` reads of a :class:`~edgekit.package.manifest.Manifest`
    (which imports this module, so it is not named here)."""

    @property
    def board(self) -> str: ...

    @property
    def extra(self) -> Mapping[str, Any]: ...


class SectionReader:
    """Reads the keys of one section with type checks; errors name ``section.key``."""

    def __init__(self, data: Any, section: str, where: str) -> None:
        self.section, self.where = section, where
        if not isinstance(data, dict):
            self.bad(section, "an object")
        self.data: Mapping[str, Any] = data

    def bad(self, key: str, what: str) -> Any:
        """Raises the :class:`ManifestError` for ``key`` (``section.name``), which must be ``what``."""
        raise ManifestError(
            f"{self.where}: manifest.json key '{key}' must be {what}",
            hint="The package is damaged or not from edgekit; rebuild it with `edgekit compile`.",
            key=key,
        )

    def get(self, name: str, kind: type, default: Any = _MISSING, *, optional: bool = False) -> Any:
        """The value of ``name``: ``default`` when absent (required when there is none);
        ``None`` accepted where ``optional``; a ``float`` field accepts integers."""
        if name not in self.data:
            if default is _MISSING:
                self.bad(f"{self.section}.{name}", f"present ({_WHAT[kind]})")
            return default
        value = self.data[name]
        kinds = (int, float) if kind is float else (kind,)
        if (value is None and optional) or (isinstance(value, kinds) and (kind is bool or not isinstance(value, bool))):
            return value
        return self.bad(f"{self.section}.{name}", _WHAT[kind] + (" or null" if optional else ""))

    def strings(self, name: str, default: Any = _MISSING, *, optional: bool = False) -> Any:
        """A list of strings, as a tuple (``None`` where ``optional`` and null)."""
        value = self.get(name, list, default, optional=optional)
        if isinstance(value, list):
            if not all(isinstance(v, str) for v in value):
                self.bad(f"{self.section}.{name}", "a list of strings")
            return tuple(value)
        return value

    def ints(self, name: str, default: Any = _MISSING) -> Any:
        """A list of integers, as a tuple."""
        value = self.get(name, list, default)
        if isinstance(value, list):
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                self.bad(f"{self.section}.{name}", "a list of integers")
            return tuple(value)
        return value


class Section:
    """Base of the typed sections: :attr:`KEY` is the manifest key a subclass reads."""

    KEY: ClassVar[str] = ""

    @classmethod
    def from_json(cls: type[_S], data: Any, *, where: str = "package") -> _S:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def of(cls: type[_S], manifest: _Sections) -> _S | None:
        """The section in ``manifest``, or ``None`` when its backend wrote none.

        Raises:
            ManifestError: the section is not an object, or a key has the wrong type.
        """
        if cls.KEY not in manifest.extra:
            return None
        return cls.from_json(manifest.extra[cls.KEY], where=f"package manifest for board '{manifest.board}'")


@dataclass(frozen=True)
class ParamsSection(Section):
    """``params``: the weights member of a TVM VM package (``llvm`` on this ISA, ``cuda``).

    Attributes:
        member: The member holding the weights (older packages: ``params.bin``).
        format: How they are stored (``tvm-param-dict``).
        count: How many weights; the runners check it (``None``: not recorded).
        names: The Relax parameter of each weight, in call order (``llvm`` only).
    """

    KEY: ClassVar[str] = "params"

    member: str = "params.bin"
    format: str = "tvm-param-dict"
    count: int | None = None
    names: tuple[str, ...] | None = None

    @classmethod
    def from_json(cls, data: Any, *, where: str = "package") -> ParamsSection:
        r = SectionReader(data, cls.KEY, where)
        return cls(r.get("member", str, "params.bin"), r.get("format", str, "tvm-param-dict"),
                   r.get("count", int, None, optional=True), r.strings("names", None, optional=True))  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"member": self.member, "format": self.format, "count": self.count}
        if self.names is not None:
            out["names"] = list(self.names)
        return out


@dataclass(frozen=True)
class LinuxSection(Section):
    """``linux``: the static runner of another ISA's 64-bit Linux board (``llvm`` cross path).

    Attributes:
        runner: The executable member (older packages: ``bin/runner``).
        weights: The weights member it reads (``weights.bin``).
        arch: The board's architecture (``aarch64``, ``riscv64``); picks qemu-user.
        zig_target: The ``zig cc`` target it was linked for.
        zig_flags: The ``zig cc`` target flags.
        libc: The C library linked in.
        kernel_calls: Kernel calls the runner makes per inference.
    """

    KEY: ClassVar[str] = "linux"

    runner: str = "bin/runner"
    weights: str = "weights.bin"
    arch: str = ""
    zig_target: str = ""
    zig_flags: tuple[str, ...] = ()
    libc: str = ""
    kernel_calls: int = 0

    @classmethod
    def from_json(cls, data: Any, *, where: str = "package") -> LinuxSection:
        r = SectionReader(data, cls.KEY, where)
        return cls(r.get("runner", str, "bin/runner"), r.get("weights", str, "weights.bin"), r.get("arch", str, ""),
                   r.get("zig_target", str, ""), r.strings("zig_flags", ()), r.get("libc", str, ""),
                   r.get("kernel_calls", int, 0))  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {"runner": self.runner, "weights": self.weights, "arch": self.arch, "zig_target": self.zig_target,
                "zig_flags": list(self.zig_flags), "libc": self.libc, "kernel_calls": self.kernel_calls}  # fmt: skip
