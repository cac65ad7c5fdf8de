"""Validated reading of TOML data files (board, target and firmware-port profiles).

:class:`Table` reads typed keys from one TOML table and rejects keys nobody
read, so every error names the file and the key; :func:`parse_size` reads
byte counts such as ``"512 KiB"``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

from edgekit.core.errors import ConfigError

__all__ = ["Table", "read_toml", "parse_size"]


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_size(value: int | str, *, where: str = "size") -> int:
    """Parses a byte count given as an int or a string like ``"512 KiB"``.

    Raises:
        ConfigError: if the value is negative or not a size.
    """
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a size, got {value!r}", hint='Write e.g. 524288 or "512 KiB".')
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(f"{where}: size must not be negative, got {value}", hint="Use 0 for unknown.")
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m:
            unit = (m.group(2) or "B").lower()
            return int(float(m.group(1)) * _SIZE_UNITS[unit])
    raise ConfigError(f"{where}: expected a size, got {value!r}", hint='Write e.g. 524288 or "512 KiB".')



class Table:
    """Reads typed keys from one TOML table and rejects keys nobody read."""

    def __init__(self, data: Mapping[str, Any], source: str, prefix: str = "", *, doc: str = "docs/boards.md") -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: '{prefix.rstrip('.')}' must be a table", hint="Write it as [section].")
        self.data = data
        self.source = source
        self.prefix = prefix
        self.doc = doc
        self.seen: set[str] = set()

    def _where(self, key: str) -> str:
        return f"{self.source}: key '{self.prefix}{key}'"

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ..., *, choices: Iterable[str] = ()) -> Any:
        self.seen.add(key)
        if key not in self.data:
            if default is ...:
                raise ConfigError(f"{self._where(key)} is missing", hint=f"Add it; see {self.doc} for the schema.")
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and kind is not bool:
            ok = False
        else:
            ok = isinstance(value, kind)
        if not ok:
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise self.error(key, f"must be {names}, got {type(value).__name__} {value!r}", "Fix the value in the profile.")
        choices = tuple(choices)
        if choices and value not in choices:
            raise self.error(key, f"is {value!r}", f"Use one of: {', '.join(choices)}.")
        return value

    def error(self, key: str, what: str, hint: str) -> ConfigError:
        """The error for a bad value of ``key``: names the file and the key."""
        return ConfigError(f"{self._where(key)} {what}", hint=hint, file=self.source, key=self.prefix + key)

    def strings(self, key: str, default: Any = ...) -> tuple[str, ...]:
        """A list of strings, as a tuple."""
        value = self.get(key, list, default)
        if not all(isinstance(v, str) for v in value):
            raise self.error(key, "must be a list of strings", "Fix the value.")
        return tuple(value)


    def size(self, key: str, default: int = 0) -> int:
        raw = self.get(key, (int, str), default)
        return parse_size(raw, where=self._where(key))

    def positive(self, key: str, kind: type, default: Any = ...) -> Any:
        value = self.get(key, kind, default)
        if value is not None and value < 0:
            raise ConfigError(f"{self._where(key)} must not be negative, got {value}", hint="Fix the value.")
        return value

    def sub(self, key: str, required: bool = False) -> "Table | None":
        self.seen.add(key)
        if key not in self.data:
            if required:
                raise ConfigError(f"{self._where(key)} table is missing", hint=f"Add a [{self.prefix}{key}] section.")
            return None
        return Table(self.data[key], self.source, f"{self.prefix}{key}.", doc=self.doc)

    def done(self) -> None:
        extra = sorted(set(self.data) - self.seen)
        if extra:
            raise ConfigError(
                f"{self.source}: unknown key '{self.prefix}{extra[0]}'"
                + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""),
                hint=f"Remove it or check its spelling; see {self.doc} for the schema.",
                file=self.source,
                keys=[self.prefix + k for k in extra],
            )


def read_toml(path: Path | Any, source: str) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML ({exc})", hint="Fix the syntax error.") from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read ({exc.strerror})", hint="Check the path and permissions.") from None
