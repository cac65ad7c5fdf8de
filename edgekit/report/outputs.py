"""Writing the report files of one bench or compress run (HTML, Markdown, JUnit)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from edgekit.report.gates import GateResult
from edgekit.report.html import bench_html, compress_html, write_html
from edgekit.report.junit import write_junit
from edgekit.report.markdown import bench_markdown, compress_markdown

__all__ = ["board_memory", "write_bench_outputs", "write_compress_outputs"]

logger = logging.getLogger(__name__)

_Path = str | os.PathLike[str] | None


def board_memory(board: str, board_dirs: Iterable[str] = ()) -> dict[str, int]:
    """``ram_bytes``/``flash_bytes`` of a board profile; empty when the board is unknown here.

    A report for a board whose profile is not on this machine (e.g. a JSON
    from another checkout) is still worth writing, just without capacities.
    """
    from edgekit.core.errors import ConfigError
    from edgekit.core.profiles import load_profiles

    try:
        b = load_profiles(board_dirs).board(board)
    except ConfigError as exc:
        logger.warning("no capacities for board '%s' in the report: %s", board, exc)
        return {}
    return {"ram_bytes": b.memory.ram_bytes, "flash_bytes": b.memory.flash_bytes}


def write_bench_outputs(
    report: Mapping[str, Any],
    gate: GateResult | None = None,
    *,
    html: _Path = None,
    markdown: _Path = None,
    junit: _Path = None,
    board_dirs: Iterable[str] = (),
) -> list[str]:
    """Writes the requested report files of a bench run; returns their paths.

    Raises:
        ConfigError: ``junit`` without a gate (JUnit needs checks to report).
    """
    from edgekit.core.errors import ConfigError

    written: list[str] = []
    memory = board_memory(str(report.get("board", "")), board_dirs) if (html or markdown) else {}
    if html:
        write_html(html, bench_html(report, gate=gate, board_memory=memory))
        written.append(str(html))
    if markdown:
        Path(markdown).write_text(bench_markdown(report, gate, memory), encoding="utf-8")
        written.append(str(markdown))
    if junit:
        if gate is None:
            raise ConfigError("--junit needs --baseline: JUnit lists the gated checks",
                              hint="Add --baseline BASE.json (a bench --json file of the reference version).")
        write_junit(junit, [gate])
        written.append(str(junit))
    return written


def write_compress_outputs(document: Mapping[str, Any], *, html: _Path = None, markdown: _Path = None) -> list[str]:
    """Writes the HTML / Markdown report of a compress document; returns their paths."""
    written: list[str] = []
    if html:
        write_html(html, compress_html(document))
        written.append(str(html))
    if markdown:
        Path(markdown).write_text(compress_markdown(document), encoding="utf-8")
        written.append(str(markdown))
    return written
