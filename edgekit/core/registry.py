"""A small named registry for boards, targets, passes, transports and simulators.

Third parties add entries through the ``edgekit.<kind>`` entry-point group;
those are loaded lazily on the first lookup that misses.
"""

from __future__ import annotations

import difflib
import importlib
import logging
from importlib.metadata import entry_points
from typing import Callable, Generic, Iterator, TypeVar

from edgekit.core.errors import ConfigError

__all__ = ["Registry", "resolve"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps unique names to entries of one kind.

    Args:
        kind: What the entries are ("board", "transport", ...); used in messages
            and as the entry-point group suffix (``edgekit.<kind>s``).
        error: Error class raised for an unknown name.
    """

    def __init__(self, kind: str, error: type[ConfigError] = ConfigError) -> None:
        self.kind = kind
        self._error = error
        self._entries: dict[str, T] = {}
        self._entry_points_loaded = False

    def register(self, name: str, entry: T, *, replace: bool = False) -> T:
        """Adds ``entry`` under ``name``; a duplicate raises unless ``replace``."""
        if name in self._entries and not replace:
            raise ConfigError(
                f"{self.kind} '{name}' is already registered",
                hint=f"Rename one of the two {self.kind}s; names must be unique.",
            )
        self._entries[name] = entry
        return entry

    def decorator(self, name: str) -> Callable[[T], T]:
        """Returns a decorator that registers the decorated object as ``name``."""

        def _wrap(obj: T) -> T:
            return self.register(name, obj)

        return _wrap

    def get(self, name: str) -> T:
        """Returns the entry called ``name``; an unknown name lists the candidates."""
        if name not in self._entries:
            self._load_entry_points()
        try:
            return self._entries[name]
        except KeyError:
            names = self.available()
            close = difflib.get_close_matches(name, names, n=1)
            suggestion = f" Did you mean '{close[0]}'?" if close else ""
            raise self._error(
                f"unknown {self.kind} '{name}'",
                hint=f"Choose one of: {', '.join(names) or '(none)'}.{suggestion}",
                name=name,
                available=names,
            ) from None

    def available(self) -> list[str]:
        """Sorted names of every registered entry."""
        self._load_entry_points()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.available())

    def __len__(self) -> int:
        return len(self._entries)

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        group = f"edgekit.{self.kind}s"
        for ep in entry_points(group=group):
            if ep.name in self._entries:
                continue
            try:
                self._entries[ep.name] = ep.load()
            except Exception as exc:  # a broken plugin must not break edgekit
                logger.warning("could not load %s plugin %r: %s", self.kind, ep.name, exc)


def resolve(spec: str, name: str = "") -> object:
    """Imports ``"module:attr"`` (how registries name implementations lazily).

    A module that is not installed raises :class:`ConfigError` naming the
    entry, so an optional part only fails when it is used.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"'{spec}' is not 'module:attr'", hint=f"Fix the registry entry of '{name or spec}'.")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise
        raise ConfigError(
            f"'{name or spec}' needs {module_name}, which is not installed",
            hint="Upgrade or reinstall edgekit (with the extra that provides it).",
            module=module_name,
        ) from None
    return getattr(module, attr)
