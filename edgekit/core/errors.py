"""The edgekit error hierarchy.

Every error a user can cause derives from :class:`EdgekitError`. Each carries a
``hint`` that says what to do next; the CLI prints ``message`` and ``hint`` on
one line and exits with code 2 (see :mod:`edgekit.cli.main`).
"""

from __future__ import annotations

__all__ = [
    "EdgekitError",
    "ConfigError",
    "BoardNotFoundError",
    "ModelError",
    "UnsupportedOpsError",
    "InputError",
    "CompileError",
    "DoesNotFitError",
    "PackageError",
    "PackageIntegrityError",
    "ManifestError",
    "QuantizationError",
    "DeviceError",
    "TransportError",
    "ProtocolError",
    "ChecksumError",
    "DeviceTimeoutError",
    "DeviceFaultError",
    "PortBusyError",
]


class EdgekitError(Exception):
    """Base of every error edgekit raises on purpose.

    Args:
        message: What went wrong, naming the offending thing (file, key, input).
        hint: What the user should do next. Shown after the message.
        **fields: Structured details kept on the instance for programs.
    """

    #: Process exit code the CLI uses for this error class.
    exit_code = 2

    def __init__(self, message: str, *, hint: str = "", **fields: object) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.fields = dict(fields)

    def __str__(self) -> str:
        if not self.hint:
            return self.message
        return f"{self.message.rstrip('.')}. {self.hint}"


class ConfigError(EdgekitError):
    """A board or target profile, a recipe or an option is invalid."""


class BoardNotFoundError(ConfigError):
    """The named board is not among the loaded profiles."""


class ModelError(EdgekitError):
    """An ONNX model is malformed, unreadable or cannot be made compilable."""


class UnsupportedOpsError(ModelError):
    """The model uses operators the compiler cannot import (lists all of them)."""


class InputError(EdgekitError):
    """Input data is missing, has the wrong shape or the wrong dtype."""


class CompileError(EdgekitError):
    """TVM failed to import, lower or build the model."""


class DoesNotFitError(CompileError):
    """The compiled model needs more RAM or flash than the board has."""


class PackageError(EdgekitError):
    """A .ekpkg package is unreadable, malformed or for another board."""


class PackageIntegrityError(PackageError):
    """A package member does not match the SHA-256 in its manifest."""


class ManifestError(PackageError):
    """A package's ``manifest.json`` is malformed (the ``key`` field names the bad key)."""


class QuantizationError(EdgekitError):
    """Quantization could not be carried out as configured."""


class DeviceError(EdgekitError):
    """Talking to a board (or its simulator) failed."""


class TransportError(DeviceError):
    """The byte link (serial port, pty, socket) failed or went away."""


class ProtocolError(DeviceError):
    """The device answered with something the protocol does not allow."""


class ChecksumError(ProtocolError):
    """A frame or a transferred image failed its CRC or SHA-256 check."""


class DeviceTimeoutError(DeviceError):
    """The device did not answer within the named time limit."""


class DeviceFaultError(DeviceError):
    """The device's core faulted, hung or stopped; fields name ``pc``,
    ``address`` (where known) and the ``command`` it was serving."""


class PortBusyError(TransportError):
    """Another process holds the serial port."""
