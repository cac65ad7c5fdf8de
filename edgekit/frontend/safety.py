"""Checks that make loading an ONNX file from a stranger safe (issue 10).

An ONNX file is a protobuf that may point at *external data* files and declare
tensor shapes of any size. A hostile file can therefore try to make the loader
read ``../../home/user/.ssh/id_rsa`` or ``/etc/shadow`` (path traversal, also
through a symlink planted next to the model), allocate petabytes (a dim of
2^62, a negative dim that wraps), or claim more elements than its bytes hold.
:func:`read_model_safely` refuses all of that with a :class:`ModelError` *before*
any file other than the model itself is opened:

1. the model file must be a regular file no larger than
   :attr:`SafetyLimits.max_file_bytes` (protobuf cannot hold more than 2 GiB);
2. it is parsed **without** external data;
3. every tensor (initializers, ``Constant`` attributes, subgraphs, functions)
   and every declared shape is checked: dims in ``[0, max_dim]``, element
   counts and byte sizes below the limits, ``raw_data`` / typed data exactly
   the size the dims and dtype imply;
4. every external-data location must be a relative POSIX path with no ``..``,
   no absolute or drive prefix, no symlink in any component, resolving inside
   the model's folder to a regular file that holds ``offset + length`` bytes of
   exactly the tensor's size; only then are those bytes read (with
   ``O_NOFOLLOW``) into the tensor.

:func:`check_in_subprocess` additionally runs the parser, the ONNX checker and
shape inference (C++ code) in a child process under ``resource.setrlimit``
limits, so a crash or a runaway allocation in them becomes a typed error
instead of taking the host process down.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import onnx

from edgekit.core.errors import ModelError

__all__ = ["SafetyLimits", "DEFAULT_LIMITS", "read_model_safely", "check_model", "check_in_subprocess"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SafetyLimits:
    """Bounds a model must stay within.

    Attributes:
        max_file_bytes: Size of the ``.onnx`` file (protobuf's own limit is 2 GiB).
        max_dim: Largest single dimension.
        max_rank: Most dimensions of one tensor.
        max_tensor_bytes: Largest single tensor (inline or external).
        max_total_bytes: All tensors together.
        max_subgraph_depth: Nesting of If/Loop/Scan bodies.
    """

    max_file_bytes: int = 2**31
    max_dim: int = 2**31 - 1
    max_rank: int = 16
    max_tensor_bytes: int = 2**32
    max_total_bytes: int = 2**35
    max_subgraph_depth: int = 32


DEFAULT_LIMITS = SafetyLimits()

_T = onnx.TensorProto
#: Bits per element of each tensor type; STRING (and unknown types) are not sized.
_BITS = {
    _T.FLOAT: 32, _T.UINT8: 8, _T.INT8: 8, _T.UINT16: 16, _T.INT16: 16, _T.INT32: 32, _T.INT64: 64,
    _T.BOOL: 8, _T.FLOAT16: 16, _T.DOUBLE: 64, _T.UINT32: 32, _T.UINT64: 64, _T.COMPLEX64: 64,
    _T.COMPLEX128: 128, _T.BFLOAT16: 16,
}
for _name, _bits in (("FLOAT8E4M3FN", 8), ("FLOAT8E4M3FNUZ", 8), ("FLOAT8E5M2", 8), ("FLOAT8E5M2FNUZ", 8),
                     ("FLOAT8E8M0", 8), ("UINT4", 4), ("INT4", 4), ("FLOAT4E2M1", 4), ("UINT2", 2), ("INT2", 2)):
    if hasattr(_T, _name):
        _BITS[getattr(_T, _name)] = _bits
#: Which typed repeated field holds the values, and how many entries per element.
_TYPED_FIELD = {
    _T.FLOAT: ("float_data", 1), _T.COMPLEX64: ("float_data", 2), _T.DOUBLE: ("double_data", 1),
    _T.COMPLEX128: ("double_data", 2), _T.INT64: ("int64_data", 1), _T.UINT32: ("uint64_data", 1),
    _T.UINT64: ("uint64_data", 1), _T.STRING: ("string_data", 1),
}


def _refuse(path: str, what: str, hint: str = "Do not load this model; re-export it from its source.") -> ModelError:
    return ModelError(f"model '{path}' refused: {what}", hint=hint, path=path)


def read_model_safely(path: str | os.PathLike[str], limits: SafetyLimits = DEFAULT_LIMITS) -> onnx.ModelProto:
    """Parses an ONNX file and loads its external data, checked (see module doc).

    Raises:
        ModelError: for every problem, naming the file and the tensor.
    """
    p = Path(path)
    try:
        st = os.stat(p)
    except OSError as exc:
        raise ModelError(f"cannot read model file '{p}': {exc.strerror}", hint="Check the path.", path=str(p)) from None
    if not stat.S_ISREG(st.st_mode):
        raise ModelError(f"'{p}' is not a file", hint="Pass the path of an .onnx file.", path=str(p))
    if st.st_size > limits.max_file_bytes:
        raise _refuse(str(p), f"the file is {st.st_size} bytes, more than the limit of {limits.max_file_bytes}")
    try:
        with open(p, "rb") as fh:
            data = fh.read(limits.max_file_bytes + 1)
        model = onnx.ModelProto()
        model.ParseFromString(data)
    except Exception as exc:  # protobuf DecodeError, RecursionError, OSError, ...
        raise ModelError(
            f"'{p}' is not a readable ONNX model ({type(exc).__name__}: {str(exc)[:200]})",
            hint="Check that the file is complete and really ONNX (re-export it if needed).",
            path=str(p),
        ) from None
    external = check_model(model, p.parent, limits, where=str(p))
    if external:
        _load_external(external, p.parent, str(p), limits)
    return model


def check_model(
    model: onnx.ModelProto,
    base_dir: str | os.PathLike[str],
    limits: SafetyLimits = DEFAULT_LIMITS,
    *,
    where: str = "(in memory)",
) -> list[onnx.TensorProto]:
    """Checks shapes, tensor sizes and external-data paths of a parsed model.

    Opens nothing; external-data files are only ``lstat``-ed.

    Returns:
        The tensors whose data is external (checked, not yet loaded).

    Raises:
        ModelError: the first problem found.
    """
    total = 0
    external: list[onnx.TensorProto] = []
    base = Path(base_dir).resolve()
    for owner, tensor in _tensors(model, limits, where):
        nbytes = _check_tensor(tensor, owner, limits, where)
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            _check_external(tensor, owner, base, nbytes, where)
            external.append(tensor)
        total += nbytes
        if total > limits.max_total_bytes:
            raise _refuse(where, f"its tensors add up to more than {limits.max_total_bytes} bytes")
    for graph, _ in _graphs(model, limits, where):
        for vi in (*graph.input, *graph.output, *graph.value_info):
            if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
                dims = vi.type.tensor_type.shape.dim
                label = f"value '{vi.name}'"
                # A declared -1 is an old exporters' way of saying "dynamic"
                # (PaddlePaddle writes it); the loader treats it as symbolic.
                # Only tensors that hold data must have non-negative dims.
                known = [d.dim_value for d in dims if d.HasField("dim_value") and d.dim_value >= 0]
                count = _check_dims(known, label, limits, where)
                nbytes = count * _BITS.get(vi.type.tensor_type.elem_type, 8) // 8
                if nbytes > limits.max_tensor_bytes:
                    raise _refuse(where, f"{label} is declared with {nbytes} bytes, more than {limits.max_tensor_bytes}")
    return external


# -- walking ---------------------------------------------------------------- #


def _graphs(model: onnx.ModelProto, limits: SafetyLimits, where: str) -> Iterator[tuple[onnx.GraphProto, int]]:
    stack: list[tuple[onnx.GraphProto, int]] = [(model.graph, 0)]
    while stack:
        graph, depth = stack.pop()
        if depth > limits.max_subgraph_depth:
            raise _refuse(where, f"subgraphs are nested more than {limits.max_subgraph_depth} deep")
        yield graph, depth
        for node in graph.node:
            for attr in node.attribute:
                if attr.HasField("g"):
                    stack.append((attr.g, depth + 1))
                stack.extend((g, depth + 1) for g in attr.graphs)


def _tensors(model: onnx.ModelProto, limits: SafetyLimits, where: str) -> Iterator[tuple[str, onnx.TensorProto]]:
    nodes = []
    for graph, _ in _graphs(model, limits, where):
        for t in graph.initializer:
            yield f"initializer '{t.name}'", t
        for s in graph.sparse_initializer:
            yield f"sparse initializer '{s.values.name}' values", s.values
            yield f"sparse initializer '{s.values.name}' indices", s.indices
        nodes.extend(graph.node)
    for fn in model.functions:
        nodes.extend(fn.node)
    for node in nodes:
        for attr in node.attribute:
            label = f"attribute '{attr.name}' of node '{node.name or node.op_type}'"
            if attr.HasField("t"):
                yield label, attr.t
            for t in attr.tensors:
                yield label, t
            if attr.HasField("sparse_tensor"):
                yield label + " values", attr.sparse_tensor.values
                yield label + " indices", attr.sparse_tensor.indices


# -- per-tensor checks -------------------------------------------------------- #


def _check_dims(dims: list[int], label: str, limits: SafetyLimits, where: str) -> int:
    if len(dims) > limits.max_rank:
        raise _refuse(where, f"{label} has {len(dims)} dimensions, more than {limits.max_rank}")
    count = 1
    for d in dims:
        if d < 0:
            raise _refuse(where, f"{label} has a negative dimension ({d})")
        if d > limits.max_dim:
            raise _refuse(where, f"{label} has a dimension of {d}, more than the limit of {limits.max_dim}")
        count *= d
    return count


def _check_tensor(t: onnx.TensorProto, label: str, limits: SafetyLimits, where: str) -> int:
    """Returns the tensor's byte size after checking its dims and inline data."""
    count = _check_dims(list(t.dims), label, limits, where)
    bits = _BITS.get(t.data_type)
    if t.data_type == _T.UNDEFINED or (bits is None and t.data_type != _T.STRING and t.data_type not in _T.DataType.values()):
        raise _refuse(where, f"{label} has an unknown data type ({t.data_type})")
    nbytes = (count * bits + 7) // 8 if bits else 0
    if nbytes > limits.max_tensor_bytes:
        raise _refuse(where, f"{label} would take {nbytes} bytes, more than the limit of {limits.max_tensor_bytes}")
    if t.data_location == onnx.TensorProto.EXTERNAL:
        if t.HasField("raw_data"):
            raise _refuse(where, f"{label} has both inline and external data")
        return nbytes
    if t.HasField("raw_data"):
        if bits is None:
            raise _refuse(where, f"{label} of type {t.data_type} cannot use raw_data")
        if len(t.raw_data) != nbytes:
            raise _refuse(
                where, f"{label} has {len(t.raw_data)} bytes of raw_data, its dims {list(t.dims)} need {nbytes}"
            )
        return nbytes
    name, per = _TYPED_FIELD.get(t.data_type, ("int32_data", 1))
    have = len(getattr(t, name))
    if bits is not None and bits < 8 and name == "int32_data":
        want = (count * bits + 7) // 8  # sub-byte types pack into int32_data one byte per entry
    else:
        want = count * per
    if have != want and not (have == 0 and count == 0):
        raise _refuse(where, f"{label} holds {have} values in {name}, its dims {list(t.dims)} need {want}")
    return nbytes


def _external_info(t: onnx.TensorProto, label: str, where: str) -> tuple[str, int, int | None]:
    info = {e.key: e.value for e in t.external_data}
    location = info.get("location", "")
    try:
        offset = int(info.get("offset", "0"))
        length = int(info["length"]) if "length" in info else None
    except ValueError:
        raise _refuse(where, f"{label} has a non-numeric external-data offset or length") from None
    if offset < 0 or (length is not None and length < 0):
        raise _refuse(where, f"{label} has a negative external-data offset or length")
    return location, offset, length


def _check_external(t: onnx.TensorProto, label: str, base: Path, nbytes: int, where: str) -> None:
    location, offset, length = _external_info(t, label, where)
    hint = "External data must be a file inside the model's folder, named by a relative path; do not load this model."
    if not location:
        raise _refuse(where, f"{label} has external data without a location", hint)
    if "\x00" in location or "\\" in location or location.startswith("/") or (len(location) > 1 and location[1] == ":"):
        raise _refuse(where, f"{label}: external data location {location!r} is not a relative path", hint)
    parts = location.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise _refuse(where, f"{label}: external data location {location!r} leaves or re-enters folders", hint)
    # lstat each component: a symlink anywhere could point outside the folder.
    current = base
    for part in parts:
        current = current / part
        try:
            st = os.lstat(current)
        except OSError:
            raise _refuse(where, f"{label}: external data file '{location}' does not exist next to the model",
                          "Copy the model's data files into its folder, keeping their names.") from None
        if stat.S_ISLNK(st.st_mode):
            raise _refuse(where, f"{label}: external data path '{location}' goes through a symlink", hint)
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(where, f"{label}: external data '{location}' is not a regular file", hint)
    if not current.resolve().is_relative_to(base):
        raise _refuse(where, f"{label}: external data '{location}' lies outside the model's folder", hint)
    want = nbytes if length is None else length
    if length is not None and length != nbytes:
        raise _refuse(where, f"{label}: external data length {length} does not match the {nbytes} bytes its dims need")
    if offset + want > st.st_size:
        raise _refuse(where, f"{label}: external data '{location}' has {st.st_size} bytes, needs {offset + want}")


def _load_external(tensors: list[onnx.TensorProto], base_dir: Path, where: str, limits: SafetyLimits) -> None:
    """Reads checked external data into the tensors (no symlink followed)."""
    base = base_dir.resolve()
    for t in tensors:
        location, offset, length = _external_info(t, t.name, where)
        want = _check_tensor(t, t.name, limits, where) if length is None else length
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(base / location, flags)
        except OSError as exc:
            raise _refuse(where, f"external data '{location}' cannot be opened ({exc.strerror})") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise _refuse(where, f"external data '{location}' is not a regular file")
            data = os.pread(fd, want, offset)
        finally:
            os.close(fd)
        if len(data) != want:
            raise _refuse(where, f"external data '{location}' ended early ({len(data)} of {want} bytes)")
        t.raw_data = data
        del t.external_data[:]
        t.data_location = onnx.TensorProto.DEFAULT


# -- subprocess isolation ------------------------------------------------------ #


def check_in_subprocess(
    path: str | os.PathLike[str],
    *,
    memory_bytes: int = 4 * 2**30,
    cpu_seconds: int = 120,
    timeout_s: float = 300.0,
) -> None:
    """Parses, checks and shape-infers an untrusted model in a child process.

    The child runs under ``RLIMIT_AS = memory_bytes``, ``RLIMIT_CPU =
    cpu_seconds`` and ``RLIMIT_FSIZE = 0`` (it may not write files), so a
    crash, a hang or a memory blow-up in the ONNX C++ code ends as a typed
    error here.

    Raises:
        ModelError: the model failed a check, or the child crashed, ran out of
            memory or time.
    """
    import resource

    def limit() -> None:  # runs in the child between fork and exec
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))

    cmd = [sys.executable, "-m", "edgekit.frontend.safety", str(path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, preexec_fn=limit)
    except subprocess.TimeoutExpired:
        raise ModelError(
            f"checking model '{path}' took longer than {timeout_s:g} s", hint="Do not load this model.", path=str(path)
        ) from None
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines and json.loads(lines[-1]).get("ok"):
        return
    if lines:
        try:
            answer = json.loads(lines[-1])
        except ValueError:
            answer = {}
        if "message" in answer:
            raise ModelError(answer["message"], hint=answer.get("hint", ""), path=str(path))
    how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit status {proc.returncode}"
    raise ModelError(
        f"checking model '{path}' crashed the checker process ({how}; memory limit {memory_bytes} bytes)",
        hint="The model is malformed or too large for these limits; do not load it.",
        path=str(path),
        stderr=proc.stderr[-2000:],
    )


def _child_main(argv: list[str]) -> int:
    """Entry point of :func:`check_in_subprocess`'s child: prints one JSON line."""
    from edgekit.core.errors import EdgekitError

    try:
        model = read_model_safely(argv[0])
        try:
            onnx.checker.check_model(model)
            onnx.shape_inference.infer_shapes(model, strict_mode=False)
        except Exception as exc:
            raise ModelError(
                f"model '{argv[0]}' failed the ONNX checker: {str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__}",
                hint="Fix or re-export the model; edgekit only compiles valid ONNX.",
            ) from None
    except EdgekitError as exc:
        sys.stdout.write(json.dumps({"ok": False, "message": exc.message, "hint": exc.hint}) + "\n")
        return 1
    except MemoryError:
        sys.stdout.write(json.dumps({"ok": False, "message": f"model '{argv[0]}' needs more memory than allowed",
                                     "hint": "Do not load this model, or raise the memory limit."}) + "\n")
        return 1
    sys.stdout.write(json.dumps({"ok": True}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
