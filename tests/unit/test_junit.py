"""JUnit XML of gate results reads back with a JUnit parser."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from edgekit.report.gates import compare
from edgekit.report.junit import write_junit


def _report(cycles: float, arena: int, memory: bool = True) -> dict:
    stats = {"min": cycles, "p50": cycles, "p90": cycles, "p99": cycles, "mean": cycles, "std": 0.0}
    r = {"board": "stm32h7", "model": "digits", "simulated": True, "runs": 1, "latency_ms": stats, "cycles": stats}
    if memory:
        r["memory"] = {"arena_bytes": arena, "weight_bytes": 10, "code_bytes": 10}
    return r


def test_junit_lists_every_check_with_failures_and_skips(tmp_path: Path) -> None:
    failing = compare(_report(2e6, 100), _report(1e6, 100), 0.05)
    skipping = compare(_report(1e6, 100), _report(1e6, 100, memory=False), 0.05)
    path = tmp_path / "j.xml"
    write_junit(path, [failing, skipping])

    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("skipped")) == ("6", "1", "2")
    suites = root.findall("testsuite")
    assert [s.get("failures") for s in suites] == ["1", "0"]
    case = suites[0].find("testcase")
    assert case.get("classname") == "edgekit.stm32h7" and case.get("name").startswith("latency")
    failure = case.find("failure")
    assert failure.get("type") == "regression"
    assert "1,000,000 -> 2,000,000 (+100.00%)" in failure.get("message")
    assert "REGRESSED" in failure.text and "metric" in failure.text.splitlines()[0]
    assert len(suites[1].findall("testcase/skipped")) == 2
