"""Shared pytest fixtures and options for edgekit's test suite."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--hil", action="store_true", help="run hardware-in-the-loop tests on real boards")
    parser.addoption("--port", default=None, help="serial port of the board for --hil tests")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
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
