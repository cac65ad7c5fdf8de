"""pytest plugin: test your own model on edgekit's (simulated) boards.

Enable it with ``-p edgekit.testing`` or ``pytest_plugins = ["edgekit.testing"]``
in a ``conftest.py`` (installed edgekit also registers it as a ``pytest11``
entry point). Then::

    import numpy as np
    import pytest

    @pytest.mark.edgekit_boards("rv32-mcu-sim", "stm32h7")
    def test_model(edgekit_board):
        x = np.load("sample.npz")["input"][:1]
        result = edgekit_board.run("model.onnx", {"input": x})
        assert result.outputs["logits"].argmax() == 3
        assert result.cycles < 3_000_000

``edgekit_board`` is parametrized over board names taken, in this order,
from the test's ``@pytest.mark.edgekit_boards(...)`` marker, the
``--edgekit-boards a,b`` command-line option, the ``edgekit_boards`` ini
value, or ``rv32-mcu-sim``. Compiled packages are cached for the session, so
several tests of one model on one board compile it once.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

__all__ = ["DEFAULT_BOARDS", "BoardHarness", "RunResult", "boards_for"]

logger = logging.getLogger(__name__)

#: Boards used when neither marker, option nor ini names any.
DEFAULT_BOARDS = ("rv32-mcu-sim",)

_CACHE_KEY = pytest.StashKey[dict]()


@dataclass
class RunResult:
    """What one inference on a board produced.

    Attributes:
        outputs: Output arrays by name.
        cycles: Cycle count of one timed run, where the board (or simulator)
            counts cycles; ``None`` otherwise (e.g. ``host``).
        instructions: Executed instructions of that run, where counted.
        latency_ms: Latency of that run (simulated boards: cycles / clock).
        simulated: Whether a simulator ran it.
        package: The compiled ``.ekpkg`` that ran.
    """

    outputs: dict[str, np.ndarray]
    cycles: int | None
    instructions: int | None
    latency_ms: float
    simulated: bool
    package: Path


@dataclass
class BoardHarness:
    """The ``edgekit_board`` fixture's value: one board, with compile-and-run helpers.

    Attributes:
        name: The board profile name.
        workdir: Where compiled packages are written (shared by the session).
        board_dirs: Extra folders of board/target profiles.
    """

    name: str
    workdir: Path
    board_dirs: tuple[str, ...] = ()
    _cache: dict[tuple[str, str], Path] = field(default_factory=dict, repr=False)

    def compile(self, model: str | os.PathLike[str], input_shapes: Mapping[str, Iterable[int]] | None = None) -> Path:
        """Compiles ``model`` for this board (once per session) and returns the package path."""
        from edgekit.api.compile import compile_model  # the api's refusal advises int8 too

        data = Path(model).read_bytes()
        shapes = {k: tuple(int(d) for d in v) for k, v in (input_shapes or {}).items()}
        key = (hashlib.sha256(data + repr(sorted(shapes.items())).encode()).hexdigest()[:16], self.name)
        if key not in self._cache:
            out = self.workdir / f"{Path(model).stem}-{key[0]}-{self.name}.ekpkg"
            compile_model(str(model), self.name, str(out), input_shapes=shapes or None, board_dirs=self.board_dirs)
            self._cache[key] = out
        return self._cache[key]

    def run(self, model: str | os.PathLike[str], inputs: Mapping[str, np.ndarray],
            input_shapes: Mapping[str, Iterable[int]] | None = None) -> RunResult:
        """Compiles ``model`` (an ``.onnx``; an ``.ekpkg`` is used as is), runs one
        inference on this board and times one more.

        Args:
            model: The model or package.
            inputs: One array per model input, shaped as the model expects.
            input_shapes: Static shapes for inputs with dynamic dimensions.
        """
        from edgekit.package import open_package
        from edgekit.runtime.runner import open_runner, resolve_board

        pkg_path = Path(model) if str(model).endswith(".ekpkg") else self.compile(model, input_shapes)
        package = open_package(pkg_path, board=self.name)
        runner = open_runner(package, resolve_board(package, self.name, self.board_dirs))
        try:
            outputs = runner.run(inputs)
            timing = runner.time_runs(inputs, runs=1, warmup=0)
            simulated = bool(runner.simulated)
        finally:
            runner.close()
        return RunResult(
            outputs={k: np.asarray(v) for k, v in outputs.items()},
            cycles=int(timing.cycles[0]) if timing.cycles else None,
            instructions=int(timing.instructions[0]) if timing.instructions else None,
            latency_ms=float(timing.latency_ms[0]),
            simulated=simulated,
            package=pkg_path,
        )


def boards_for(config: pytest.Config, marker: Any | None) -> list[str]:
    """Board names for one test: marker, then option, then ini, then :data:`DEFAULT_BOARDS`."""
    if marker is not None and marker.args:
        names: Iterable[str] = marker.args
    else:
        spec = config.getoption("edgekit_boards") or config.getini("edgekit_boards")
        names = [n.strip() for n in str(spec).split(",") if n.strip()] if spec else DEFAULT_BOARDS
    return list(dict.fromkeys(names))


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("edgekit")
    group.addoption("--edgekit-boards", dest="edgekit_boards", default=None, metavar="B1,B2",
                    help="boards the edgekit_board fixture runs on (comma-separated)")
    group.addoption("--edgekit-boards-dir", dest="edgekit_boards_dir", action="append", default=[], metavar="DIR",
                    help="extra folder of edgekit board/target profiles")
    parser.addini("edgekit_boards", "default boards of the edgekit_board fixture (comma-separated)", default="")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "edgekit_boards(*names): boards the edgekit_board fixture is parametrized over")
    config.stash[_CACHE_KEY] = {}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "edgekit_board" in metafunc.fixturenames:
        names = boards_for(metafunc.config, metafunc.definition.get_closest_marker("edgekit_boards"))
        metafunc.parametrize("edgekit_board", names, indirect=True, ids=names)


@pytest.fixture
def edgekit_board(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> BoardHarness:
    """A :class:`BoardHarness` for one board (the test is parametrized over boards)."""
    name = getattr(request, "param", None) or DEFAULT_BOARDS[0]
    cache: dict[str, Any] = request.config.stash[_CACHE_KEY]
    if "workdir" not in cache:
        cache["workdir"] = tmp_path_factory.mktemp("edgekit-packages")
    # One package cache per board, shared by every test of the session.
    packages = cache.setdefault(("packages", name), {})
    dirs = tuple(request.config.getoption("edgekit_boards_dir") or ())
    return BoardHarness(name=name, workdir=cache["workdir"], board_dirs=dirs, _cache=packages)
