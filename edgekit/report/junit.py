"""JUnit XML for gate results, so CI systems show regressions as failed tests.

The layout is the common denominator that Jenkins, GitLab, GitHub test
reporters and ``junitparser`` read: ``<testsuites>`` holding one
``<testsuite>`` per gated bench run, one ``<testcase>`` per gated quantity
(``classname`` = ``edgekit.<board>``, ``name`` = the metric), with a
``<failure>`` (message + the whole regression table) or ``<skipped>``.
"""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path

from edgekit.report.gates import GateResult
from edgekit.report.markdown import format_value, gate_text_table

__all__ = ["junit_element", "junit_xml", "write_junit"]

logger = logging.getLogger(__name__)


def junit_element(results: Iterable[GateResult], suite_prefix: str = "edgekit bench") -> ET.Element:
    """The ``<testsuites>`` element for ``results``."""
    root = ET.Element("testsuites", name="edgekit")
    total = failures = skipped = 0
    for result in results:
        table = gate_text_table(result)
        suite = ET.SubElement(root, "testsuite", name=f"{suite_prefix} {result.model} on {result.board}")
        n_fail = n_skip = 0
        for check in result.checks:
            case = ET.SubElement(suite, "testcase", classname=f"edgekit.{result.board}",
                                 name=f"{check.metric} ({check.quantity})", time="0")
            if check.status == "fail":
                n_fail += 1
                change = "" if check.change is None else f" ({check.change * 100:+.2f}%)"
                msg = (f"{check.metric} regressed on {result.board}: {format_value(check.baseline, check.unit)} -> "
                       f"{format_value(check.current, check.unit)}{change}, limit +{check.limit * 100:g}%")
                failure = ET.SubElement(case, "failure", message=msg, type="regression")
                failure.text = table
            elif check.status == "skipped":
                n_skip += 1
                ET.SubElement(case, "skipped", message=check.note or "not measured")
            else:
                out = ET.SubElement(case, "system-out")
                out.text = (f"{check.status}: {format_value(check.baseline, check.unit)} -> "
                            f"{format_value(check.current, check.unit)} ({check.rule})")
        suite.set("tests", str(len(result.checks)))
        suite.set("failures", str(n_fail))
        suite.set("errors", "0")
        suite.set("skipped", str(n_skip))
        if result.notes:
            ET.SubElement(suite, "system-err").text = "\n".join(result.notes)
        total += len(result.checks)
        failures += n_fail
        skipped += n_skip
    root.set("tests", str(total))
    root.set("failures", str(failures))
    root.set("errors", "0")
    root.set("skipped", str(skipped))
    return root


def junit_xml(results: Iterable[GateResult]) -> str:
    """JUnit XML text (with an XML declaration) for ``results``."""
    root = junit_element(results)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(path: str | os.PathLike[str], results: Iterable[GateResult]) -> None:
    """Writes :func:`junit_xml` to ``path``."""
    Path(path).write_text(junit_xml(results), encoding="utf-8")
