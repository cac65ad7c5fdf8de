"""Hostile ONNX files (issue 10): a generated corpus of >= 1,000 malformed models.

Every file must end in a typed :class:`EdgekitError` (or, for random byte
mutations that happen to leave a valid model, a successful load) within a time
bound; nothing may crash or hang, and no file outside the model's folder may be
opened — checked with a ``sys.addaudithook`` hook on "open" events.
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.core.errors import EdgekitError, ModelError
from edgekit.frontend.loader import load_model, read_onnx
from edgekit.frontend.safety import SafetyLimits, check_in_subprocess, read_model_safely

#: Longest any single hostile file may take to be refused (or loaded).
PER_FILE_BOUND_S = 2.0

_opened: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    # Audit hooks cannot be removed; this one records only while a list is set.
    if _opened is not None and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        _opened.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)


def _opens_during(fn: Callable[[], object]) -> tuple[list[str], object]:
    global _opened
    _opened = []
    try:
        try:
            result: object = fn()
        except EdgekitError as exc:
            result = exc
        return list(_opened), result
    finally:
        _opened = None


def _model(external: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _set_external(model: onnx.ModelProto, location: str, offset: int = 0, length: int | None = 128) -> None:
    w = model.graph.initializer[0]
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    del w.external_data[:]
    for key, value in (("location", location), ("offset", str(offset)), ("length", None if length is None else str(length))):
        if value is not None:
            entry = w.external_data.add()
            entry.key, entry.value = key, value


def _targeted(root: Path, outside: Path) -> Iterator[tuple[str, Callable[[Path], None]]]:
    """(label, writer) pairs: each writer creates one hostile model folder."""
    good = _model().SerializeToString()

    def write(model: onnx.ModelProto | bytes) -> Callable[[Path], None]:
        data = model if isinstance(model, bytes) else model.SerializeToString()
        return lambda d: (d / "model.onnx").write_bytes(data)

    for cut in sorted(set(np.linspace(1, len(good) - 1, 200).astype(int))):
        yield f"truncated@{cut}", write(good[:cut])
    for delta in [*range(-64, 0), *range(1, 65)]:
        m = _model()
        m.graph.initializer[0].raw_data = m.graph.initializer[0].raw_data[: max(0, 128 + delta)] + bytes(max(0, delta))
        yield f"raw_data{delta:+d}", write(m)
    for dims in ([2**62, 4], [2**31, 2**31], [2**40], [2**31 - 1] * 4, [8, 4, 2**33], [1] * 40):
        m = _model()
        del m.graph.initializer[0].dims[:]
        m.graph.initializer[0].dims.extend(dims)
        yield f"huge-dims{dims[:2]}", write(m)
        if max(dims) > 2**20:
            m = _model()
            m.graph.input[0].type.tensor_type.shape.dim[1].dim_value = max(dims)
            yield f"huge-input-dim{max(dims)}", write(m)
    for neg in (-1, -2, -8, -(2**31), -(2**62)):
        m = _model()
        m.graph.initializer[0].dims[0] = neg
        yield f"neg-dim{neg}", write(m)
        m = _model()
        m.graph.input[0].type.tensor_type.shape.dim[1].dim_value = neg
        yield f"neg-input-dim{neg}", write(m)
    secret = outside / "secret.bin"
    for loc in ("../secret.bin", "../outside/secret.bin", "a/../../secret.bin", "./../secret.bin", "sub/../../outside/secret.bin",
                "..", "../", "sub/..", "..\\secret.bin", "C:secret.bin", "C:/secret.bin", "w.bin/../../secret.bin"):
        m = _model()
        _set_external(m, loc)
        yield f"traversal {loc}", write(m)
    for loc in (str(secret), "/etc/passwd", "/dev/zero", "/proc/self/environ", "//etc/passwd", "/"):
        m = _model()
        _set_external(m, loc)
        yield f"absolute {loc}", write(m)

    def symlinked_file(d: Path) -> None:
        os.symlink(secret, d / "w.bin")
        m = _model()
        _set_external(m, "w.bin")
        (d / "model.onnx").write_bytes(m.SerializeToString())

    def symlinked_dir(d: Path) -> None:
        os.symlink(outside, d / "data")
        m = _model()
        _set_external(m, "data/secret.bin")
        (d / "model.onnx").write_bytes(m.SerializeToString())

    def relative_symlink(d: Path) -> None:
        os.symlink("../outside/secret.bin", d / "w.bin")
        m = _model()
        _set_external(m, "w.bin")
        (d / "model.onnx").write_bytes(m.SerializeToString())

    def fifo(d: Path) -> None:
        os.mkfifo(d / "w.bin")  # opening a FIFO would block forever
        m = _model()
        _set_external(m, "w.bin")
        (d / "model.onnx").write_bytes(m.SerializeToString())

    for i in range(4):
        yield f"symlinked external file {i}", symlinked_file
        yield f"symlinked external folder {i}", symlinked_dir
        yield f"relative symlink {i}", relative_symlink
    yield "fifo as external data", fifo

    def external_with(location: str, content: bytes, offset: int = 0, length: int | None = 128) -> Callable[[Path], None]:
        def writer(d: Path) -> None:
            (d / "w.bin").write_bytes(content)
            m = _model()
            _set_external(m, location, offset, length)
            (d / "model.onnx").write_bytes(m.SerializeToString())

        return writer

    yield "external missing file", external_with("nope.bin", bytes(128))
    yield "external short file", external_with("w.bin", bytes(100))
    yield "external offset beyond end", external_with("w.bin", bytes(128), offset=64)
    yield "external wrong length", external_with("w.bin", bytes(256), length=256)
    yield "external negative offset", external_with("w.bin", bytes(128), offset=-1)
    yield "external folder", lambda d: ((d / "dir").mkdir(), external_with("dir", b"")(d))


def _mutations(count: int, seed: int) -> Iterator[tuple[str, bytes]]:
    good = _model().SerializeToString()
    rng = random.Random(seed)
    for i in range(count):
        data = bytearray(good)
        for _ in range(rng.randint(1, 8)):
            op = rng.randrange(4)
            pos = rng.randrange(len(data))
            if op == 0:
                data[pos] ^= 1 << rng.randrange(8)
            elif op == 1:
                data[pos] = rng.randrange(256)
            elif op == 2:
                del data[pos : pos + rng.randint(1, 16)]
            else:
                data[pos:pos] = rng.randbytes(rng.randint(1, 16))
        yield f"mutation {i}", bytes(data)


@pytest.fixture
def arena(tmp_path: Path) -> tuple[Path, Path]:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.bin").write_bytes(b"S" * 4096)
    models = tmp_path / "models"
    models.mkdir()
    return models, outside


def _inside(path: str, folder: Path) -> bool:
    return Path(os.path.abspath(path)).is_relative_to(folder)


def test_valid_model_with_external_data_loads(tmp_path: Path) -> None:
    d = tmp_path / "ok"
    d.mkdir()
    m = _model()
    want = numpy_helper.to_array(m.graph.initializer[0])
    (d / "w.bin").write_bytes(b"pad!" + want.tobytes())
    _set_external(m, "w.bin", offset=4, length=128)
    (d / "model.onnx").write_bytes(m.SerializeToString())
    opened, loaded = _opens_during(lambda: read_onnx(d / "model.onnx"))
    assert isinstance(loaded, onnx.ModelProto)
    np.testing.assert_array_equal(numpy_helper.to_array(loaded.graph.initializer[0]), want)
    assert sorted(Path(p).name for p in opened) == ["model.onnx", "w.bin"]
    assert load_model(d / "model.onnx").inputs[0].shape == (1, 8)


def test_corpus_of_hostile_models(arena: tuple[Path, Path]) -> None:
    models, outside = arena
    read_onnx  # warm imports so the audit log only holds what the loader opens
    _opens_during(lambda: load_model(_write(models / "warm", _model().SerializeToString()), simplify=False))
    results: dict[str, int] = {"typed": 0, "loaded": 0}
    slow: list[str] = []
    strays: list[str] = []
    count = 0
    cases: list[tuple[str, Callable[[Path], None] | bytes]] = [*_targeted(models, outside), *_mutations(900, 10)]
    for i, (label, make) in enumerate(cases):
        folder = models / f"m{i}"
        folder.mkdir()
        if isinstance(make, bytes):
            (folder / "model.onnx").write_bytes(make)
        else:
            make(folder)
        start = time.monotonic()
        opened, outcome = _opens_during(lambda: load_model(folder / "model.onnx", simplify=False))
        took = time.monotonic() - start
        count += 1
        if took > PER_FILE_BOUND_S:
            slow.append(f"{label}: {took:.2f} s")
        strays += [f"{label}: {p}" for p in opened if not _inside(p, folder)]
        if isinstance(outcome, EdgekitError):
            results["typed"] += 1
        else:
            # Only a random mutation may leave a valid model behind.
            assert label.startswith("mutation"), f"{label} was accepted"
            results["loaded"] += 1
    assert count >= 1000
    assert not strays, strays[:5]
    assert not slow, slow[:5]
    assert results["typed"] >= len(list(_targeted(models, outside)))
    assert not (outside / "secret.bin").read_bytes().strip(b"S")  # untouched


def _write(folder: Path, data: bytes) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "model.onnx").write_bytes(data)
    return folder / "model.onnx"


@pytest.mark.parametrize(
    "location, match",
    [
        ("../secret.bin", "leaves or re-enters"),
        ("/etc/passwd", "not a relative path"),
        ("w.bin", "symlink"),
    ],
)
def test_messages_name_the_problem(arena: tuple[Path, Path], location: str, match: str) -> None:
    models, outside = arena
    os.symlink(outside / "secret.bin", models / "w.bin")
    m = _model()
    _set_external(m, location)
    with pytest.raises(ModelError, match=match) as err:
        read_onnx(_write(models, m.SerializeToString()))
    assert "initializer 'w'" in err.value.message and err.value.hint


def test_wrong_size_raw_data_and_dims_messages(tmp_path: Path) -> None:
    m = _model()
    m.graph.initializer[1].raw_data = bytes(12)
    with pytest.raises(ModelError, match=r"initializer 'b' has 12 bytes of raw_data, its dims \[4\] need 16"):
        read_onnx(_write(tmp_path / "a", m.SerializeToString()))
    m = _model()
    m.graph.initializer[0].dims[0] = 2**40
    with pytest.raises(ModelError, match="dimension of 1099511627776, more than the limit"):
        read_onnx(_write(tmp_path / "b", m.SerializeToString()))


def test_file_size_limit(tmp_path: Path) -> None:
    path = _write(tmp_path / "big", _model().SerializeToString())
    with pytest.raises(ModelError, match="more than the limit of 100"):
        read_model_safely(path, SafetyLimits(max_file_bytes=100))


def test_subprocess_check_with_resource_limits(tmp_path: Path) -> None:
    good = _write(tmp_path / "good", _model().SerializeToString())
    check_in_subprocess(good, memory_bytes=4 * 2**30, cpu_seconds=60)
    bad = _model()
    bad.graph.node[0].op_type = "NoSuchOp"
    with pytest.raises(ModelError, match="failed the ONNX checker"):
        check_in_subprocess(_write(tmp_path / "bad", bad.SerializeToString()), memory_bytes=4 * 2**30)
    # A memory limit too small for the interpreter itself: the child dies, we get a typed error.
    with pytest.raises(ModelError, match="crashed the checker process|more memory"):
        check_in_subprocess(good, memory_bytes=32 * 2**20)
