"""Reports and CI gates: HTML and Markdown reports of bench and compress
results, regression gates against a baseline, and JUnit XML.

The public API::

    from edgekit.report import bench_with_gate, bench_html, write_junit
    from edgekit.runtime.runner import bench_package
    report, gate = bench_with_gate("m.ekpkg", "baseline.json", max_regression=0.05, bench=bench_package, runs=20)
    write_junit("junit.xml", [gate])
"""

from __future__ import annotations

from edgekit.report.bench_gate import bench_with_gate, load_report
from edgekit.report.gates import METRICS, Check, GateResult, compare, parse_regression
from edgekit.report.html import bench_html, compress_html, write_html
from edgekit.report.junit import junit_xml, write_junit
from edgekit.report.markdown import (
    bench_markdown,
    compress_markdown,
    gate_rows,
    gate_text_table,
)
from edgekit.report.variants import Variant, variants_of

__all__ = [
    "METRICS",
    "Check",
    "GateResult",
    "Variant",
    "bench_html",
    "bench_markdown",
    "bench_with_gate",
    "compare",
    "compress_html",
    "compress_markdown",
    "gate_rows",
    "gate_text_table",
    "junit_xml",
    "load_report",
    "parse_regression",
    "variants_of",
    "write_html",
    "write_junit",
]
