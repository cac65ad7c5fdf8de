"""Shared pytest fixtures and options for edgekit's test suite."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    for tier, what in (("unit", "pure: no build, no simulator"), ("build", "compiles (TVM, a C compiler, synthesis, tuning)"),
                       ("sim", "runs on a simulated board or emulator")):
        config.addinivalue_line("markers", f"{tier}: tests/{tier}/, {what} (added from the folder; docs/testing.md)")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--hil", action="store_true", help="run hardware-in-the-loop tests on real boards")
    parser.addoption("--port", default=None, help="serial port of the board for --hil tests")


TIERS = ("unit", "build", "sim", "hil")  # the folders under tests/, cheapest first (docs/testing.md)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Each test carries its tier folder as a marker, so `-m` selects tiers as paths do.
    for item in items:
        tier = item.path.relative_to(REPO / "tests").parts[0] if item.path.is_relative_to(REPO / "tests") else ""
        if tier in TIERS:
            item.add_marker(tier)
    if config.getoption("--hil"):
        return
    skip = pytest.mark.skip(reason="needs real hardware: run with --hil --port PORT")
    for item in items:
        if "hil" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def light_models_dir() -> Path:
    """Folder of the ONNX backend 'light' models shipped inside the onnx wheel."""
    import onnx

    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


@pytest.fixture(scope="session")
def ppocr_cls_path() -> Path:
    """The PP-OCR text-angle classifier shipped inside the rapidocr wheel."""
    rapidocr = pytest.importorskip("rapidocr")
    path = Path(rapidocr.__file__).parent / "models" / "ch_ppocr_mobile_v2.0_cls_mobile.onnx"
    if not path.exists():
        pytest.skip(f"rapidocr wheel has no {path.name}")
    return path


@contextlib.contextmanager
def _script_module(path: Path, name: str) -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the file executes.
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


@pytest.fixture(scope="session")
def script_module() -> Callable[[Path, str], contextlib.AbstractContextManager[ModuleType]]:
    """``with script_module(path, name) as m``: a script of ``benchmarks/`` imported as module ``name``."""
    return _script_module


@pytest.fixture
def device_port(request: pytest.FixtureRequest) -> str:
    """The serial port of the board a test talks to: real in a ``hil`` test, simulated otherwise.

    In a test marked ``hil`` (every test under tests/hil) it is ``--port``;
    anywhere else it is the test module's ``sim_port`` fixture, the pty of the
    simulator that stands in for the board. One test body thus serves the sim
    tier and, called from tests/hil, the real board.
    """
    if request.node.get_closest_marker("hil") is None:
        return request.getfixturevalue("sim_port")
    port = request.config.getoption("--port")
    if not port:
        pytest.fail("--hil tests talk to a real board: pass --port PORT (e.g. /dev/ttyUSB0)")
    return port


@pytest.fixture
def boards_dir(tmp_path: Path) -> Path:
    """An empty folder for user board profiles."""
    d = tmp_path / "boards"
    d.mkdir()
    return d


@pytest.fixture(autouse=True)
def _isolate_profile_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's own EDGEKIT_BOARDS must not change test results.
    monkeypatch.delenv("EDGEKIT_BOARDS", raising=False)
    monkeypatch.delenv("EDGEKIT_TARGETS", raising=False)


def _pristine_metaschedule_logger() -> None:
    logger = logging.getLogger("tvm.s_tir.meta_schedule")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        if handler.get_name():  # MetaSchedule's own console and file handlers
            handler.close()
    logger.setLevel(logging.NOTSET)
    logger.propagate = True


@pytest.fixture(autouse=True)
def _fresh_metaschedule_logging():
    """Makes each test's MetaSchedule runs start like the first of a process.

    * MetaSchedule's first run makes its logger non-propagating; pytest's
      logging plugin then attaches its unnamed capture handlers to it at the
      start of each later test, and MetaSchedule's next run lists that
      logger's handlers by name in a ``dictConfig``: ``AttributeError:
      'NoneType' object has no attribute 'format'`` (any two tests that tune).
    * That first run also sets the logger to DEBUG (``tuning.tune`` now
      resets the level on every run; the fixture keeps tests independent).
    """
    _pristine_metaschedule_logger()
    yield
    _pristine_metaschedule_logger()
