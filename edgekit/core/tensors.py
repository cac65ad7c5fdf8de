"""Tensor descriptions shared by the front end, the compiler and the runtime."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from edgekit.core.errors import InputError

__all__ = ["TensorSpec", "parse_shape", "parse_input_shapes", "check_inputs", "shape_mismatch_hint"]


@dataclass(frozen=True)
class TensorSpec:
    """Name, static shape and numpy dtype name of a model input or output."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int:
        """Bytes one tensor of this spec occupies."""
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    def to_json(self) -> dict[str, Any]:
        """JSON form used in manifests and ``--json`` output."""
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "TensorSpec":
        """Inverse of :meth:`to_json`."""
        return cls(str(data["name"]), tuple(int(d) for d in data["shape"]), str(data["dtype"]))


def parse_shape(text: str) -> tuple[int, ...]:
    """Parses ``1x3x224x224`` (or ``1,3,224,224``) into a tuple of ints.

    Raises:
        InputError: if a dimension is not a positive integer.
    """
    parts = text.replace(",", "x").lower().split("x")
    try:
        # int('') fails: an empty part ('1x3x', '1xx3') is a typo, not a separator.
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise InputError(
            f"cannot read shape '{text}'", hint="Write it as dimensions joined by 'x', e.g. 1x3x224x224."
        ) from None
    if not dims or any(d <= 0 for d in dims):
        raise InputError(f"shape '{text}' must have positive dimensions", hint="E.g. 1x3x224x224.")
    return dims


def parse_input_shapes(items: list[str] | None) -> dict[str, tuple[int, ...]]:
    """Parses repeated ``NAME=1x3x224x224`` options into a dict."""
    shapes: dict[str, tuple[int, ...]] = {}
    for item in items or []:
        name, sep, shape = item.rpartition("=")
        if not sep or not name:
            raise InputError(
                f"cannot read --input-shape '{item}'", hint="Write NAME=1x3x224x224 (the input's name, '=', the shape)."
            )
        shapes[name] = parse_shape(shape)
    return shapes


def shape_mismatch_hint(spec: TensorSpec, data_shape: tuple[int, ...]) -> str:
    """What to do when data of ``data_shape`` does not fit ``spec``.

    The ``--input-shape`` it suggests always has the model's rank: a data
    file's first axis holds samples, so data of one more dimension holds
    stacked samples, data of the model's rank holds samples along a batch-1
    axis, and data of one dimension less is one sample without its batch axis.
    """
    rank = len(spec.shape)
    if len(data_shape) == rank + 1:
        per_sample = data_shape[1:]
    elif len(data_shape) == rank:
        per_sample = (1, *data_shape[1:]) if spec.shape[:1] == (1,) else data_shape
    elif len(data_shape) == rank - 1 and rank > 0:
        per_sample = (1, *data_shape)
        if per_sample == spec.shape:
            return (f"The data has no batch axis: save it with shape {'x'.join(map(str, spec.shape))} "
                    f"(e.g. array[None]), or N samples as Nx{'x'.join(map(str, spec.shape[1:]))}.")
    else:
        return (f"The data has {len(data_shape)} dimensions; the model's input has {rank} "
                f"({'x'.join(map(str, spec.shape))}), plus an optional leading sample axis.")
    text = "x".join(map(str, per_sample))
    if len(data_shape) == rank - 1:
        return (f"The data has no batch axis: add one (e.g. array[None]) and recompile with "
                f"--input-shape {spec.name}={text}.")
    return f"Reshape the data, or recompile with --input-shape {spec.name}={text}."


def check_inputs(specs: list[TensorSpec], feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Checks that ``feeds`` has every input with the right shape; casts dtypes
    that convert without loss of meaning (e.g. float64 data for a float32 input).

    Returns:
        The feeds in the model's input order, as contiguous arrays.

    Raises:
        InputError: naming every missing or extra input, or the first bad shape.
    """
    names = [s.name for s in specs]
    missing = [n for n in names if n not in feeds]
    if missing:
        raise InputError(
            f"missing input(s): {', '.join(missing)}",
            hint=f"The model takes: {', '.join(f'{s.name} {list(s.shape)} {s.dtype}' for s in specs)}.",
            missing=missing,
        )
    extra = [n for n in feeds if n not in names]
    if extra:
        raise InputError(
            f"unknown input(s): {', '.join(extra)}",
            hint=f"The model takes: {', '.join(names)}.",
            extra=extra,
        )
    out: dict[str, np.ndarray] = {}
    for spec in specs:
        arr = np.asarray(feeds[spec.name])
        if tuple(arr.shape) != spec.shape:
            raise InputError(
                f"input '{spec.name}' has shape {list(arr.shape)}, the model expects {list(spec.shape)}",
                hint=shape_mismatch_hint(spec, tuple(arr.shape)),
                input=spec.name,
                got=list(arr.shape),
                expected=list(spec.shape),
            )
        want = np.dtype(spec.dtype)
        if arr.dtype != want:
            same_kind = (arr.dtype.kind in "fc") == (want.kind in "fc")
            if not same_kind:
                raise InputError(
                    f"input '{spec.name}' has dtype {arr.dtype}, the model expects {want}",
                    hint=f"Convert the data to {want}.",
                )
            arr = arr.astype(want)
        # ascontiguousarray would turn a 0-d (scalar) input into shape (1,).
        out[spec.name] = np.require(arr, requirements='C')
    return out
