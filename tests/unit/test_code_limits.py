"""Files stay small and functions short (issue #19, docs/architecture.md).

No module of ``edgekit/`` over :data:`MAX_MODULE_LINES` lines (every line
counts), and no function over :data:`MAX_FUNCTION_LINES` lines of code: the
lines from ``def`` to the function's last line that hold code, so blank
lines, comment-only lines and docstrings do not count; a nested function's
lines count for the function around it too (it is part of reading it).

:data:`ALLOWED` names what is still over a limit, each with its owner and
why; an entry that is no longer over its limit fails the test, so the list
only shrinks.

Run ``python tests/unit/test_code_limits.py`` to print every module and
function over the limits with its size.
"""

from __future__ import annotations

import ast
import io
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "edgekit"

MAX_MODULE_LINES = 800
MAX_FUNCTION_LINES = 80

#: ``"path/relative/to/edgekit.py"`` (a module) or ``"path.py:qualified.name"``
#: (a function) -> (owner, why it is still over the limit).
ALLOWED: dict[str, tuple[str, str]] = {}

_NOT_CODE = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
             tokenize.ENCODING, tokenize.ENDMARKER}  # fmt: skip


def _docstring_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)):  # fmt: skip
                lines.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    return lines


def code_lines(source: str) -> set[int]:
    """Line numbers that hold code: not blank, not only a comment, not part
    of a docstring (a token spanning several lines marks each of them)."""
    lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in _NOT_CODE:
            lines.update(range(tok.start[0], tok.end[0] + 1))
    return lines - _docstring_lines(ast.parse(source))


def function_sizes(source: str) -> dict[str, int]:
    """Qualified name (``Class.method``, ``outer.inner``) -> lines of code."""
    code = code_lines(source)
    sizes: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    span = range(child.lineno, (child.end_lineno or child.lineno) + 1)
                    sizes[name] = sum(1 for line in span if line in code)
                visit(child, f"{name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return sizes


def over_limits() -> dict[str, int]:
    """Every module and function of ``edgekit/`` over a limit -> its size."""
    found: dict[str, int] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        source = path.read_text(encoding="utf-8")
        lines = len(source.splitlines())
        if lines > MAX_MODULE_LINES:
            found[rel] = lines
        for name, size in function_sizes(source).items():
            if size > MAX_FUNCTION_LINES:
                found[f"{rel}:{name}"] = size
    return found


def test_counts_code_lines_only() -> None:
    source = '''
def f(x):
    """Doc.

    More doc.
    """
    # a comment

    y = (x +
         1)  # trailing comment
    s = """not a
docstring"""

    def g():
        """Inner doc."""
        return y

    return g
'''
    assert function_sizes(source) == {"f": 8, "f.g": 2}


def test_no_module_or_function_over_the_limits() -> None:
    found = over_limits()
    unexpected = {name: size for name, size in found.items() if name not in ALLOWED}
    stale = sorted(name for name in ALLOWED if name not in found)
    message = [f"{name}: {size} lines{' of code' if ':' in name else ''}" for name, size in sorted(unexpected.items())]
    assert not unexpected, (
        f"over the limits (modules {MAX_MODULE_LINES} lines, functions {MAX_FUNCTION_LINES} lines of code); "
        "split by idea (docs/architecture.md):\n  " + "\n  ".join(message)
    )
    assert not stale, f"no longer over the limits: delete from ALLOWED in {Path(__file__).name}: {', '.join(stale)}"


if __name__ == "__main__":
    for item, size in sorted(over_limits().items(), key=lambda kv: -kv[1]):
        print(f"{size:6d}  {item}{'  (allowed: ' + ALLOWED[item][0] + ')' if item in ALLOWED else ''}")
    sys.exit(0)
