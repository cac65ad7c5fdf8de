"""Every script in benchmarks/ still loads, parses its options and imports what exists.

The benchmarks run for minutes to hours, so no test runs them; when modules
move (issue #19), a script breaks silently until someone next measures. This
file costs seconds: per script it

* loads the file as a module and runs ``main(["--help"])`` in-process (the
  module-level imports and the argument parser), and
* checks every import statement in it, function-level ones included: an
  ``edgekit`` module is imported and each imported name looked up on it
  (and each ``mod.name`` where ``mod`` is an edgekit module imported by
  name, e.g. ``from edgekit.compiler.backends.llvm import tuning``); a
  helper module next to the script, or in a folder the script puts on
  ``sys.path`` (``tests/sim``, ``tests/build`` ...), must exist there and
  define the names taken from it (read from its source, so no test module or
  model is loaded).

Scripts without ``main`` (``mcu_layers.py``, ``naive_c.py``) are libraries
of the others: loading them is their check.

Every ``benchmarks/X.py ARGS`` command line that BENCHMARKS.md, the README
and docs/ show (those without placeholders) is also parsed by the script's
own parser, so a renamed or removed option is caught too.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import re
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "benchmarks"
SCRIPTS = sorted(BENCHMARKS.glob("*.py"))

PAGES = [REPO / "README.md", REPO / "BENCHMARKS.md", *sorted((REPO / "docs").glob("*.md"))]

#: Third-party packages a script imports only in an optional mode, from an
#: extra the test environment does not install.
OPTIONAL_PACKAGES = {"nncf": "benchmarks/accuracy.py's NNCF rows, the [nncf] extra"}


def _imports(tree: ast.AST) -> Iterator[tuple[str, tuple[str, ...], int]]:
    """(module, names taken from it, line) of every absolute import, at any depth."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, (), node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module not in (None, "__future__"):
            yield str(node.module), tuple(a.name for a in node.names), node.lineno


def _path_dirs(tree: ast.AST, script: Path) -> list[Path]:
    """The folders the script puts on ``sys.path`` (its own folder first, as ``python script.py`` does)."""
    dirs = [script.parent]
    scope = {"REPO": REPO, "Path": Path, "__file__": str(script), "str": str}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "insert"
                and ast.unparse(node.func.value) == "sys.path"):  # fmt: skip
            source = ast.unparse(node.args[1])
            try:
                dirs.append(Path(eval(source, {"__builtins__": {}}, scope)))  # noqa: S307 - names above only
            except Exception as exc:  # noqa: BLE001 - any failure means the form is not understood
                pytest.fail(f"{script.name}:{node.lineno}: cannot evaluate sys.path entry {source} ({exc}); "
                            "build it from REPO, Path(__file__) and str() as the other scripts do")  # fmt: skip
    return dirs


def _top_level_names(path: Path) -> set[str]:
    """Names a module defines or imports at its top level (inside top-level if/try blocks too)."""
    names: set[str] = set()
    pending = list(ast.parse(path.read_text(encoding="utf-8")).body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.If, ast.Try)):
            pending.extend([*node.body, *node.orelse, *getattr(node, "finalbody", [])])
            pending.extend(s for h in getattr(node, "handlers", []) for s in h.body)
    return names


def _edgekit_problem(module: str, names: tuple[str, ...]) -> str | None:
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        return f"{module}: {exc}"
    is_package = hasattr(mod, "__path__")
    missing = [n for n in names if not hasattr(mod, n)
               and not (is_package and importlib.util.find_spec(f"{module}.{n}") is not None)]  # fmt: skip
    return f"{module} has no {', '.join(missing)}" if missing else None


def _module_attribute_problems(tree: ast.AST) -> list[str]:
    """``mod.name`` where ``mod`` is an edgekit module the script imported by name (``from edgekit.x import mod``)."""
    aliases: dict[str, ModuleType] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases.update({a.asname: importlib.import_module(a.name) for a in node.names
                            if a.asname and a.name.startswith("edgekit.")})  # fmt: skip
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "edgekit":
            package = importlib.import_module(str(node.module))
            for a in node.names:
                # What `from package import name` binds: the attribute, else the submodule.
                bound = getattr(package, a.name, None)
                if bound is None and hasattr(package, "__path__"):
                    bound = importlib.import_module(f"{node.module}.{a.name}")
                if isinstance(bound, ModuleType):
                    aliases[a.asname or a.name] = bound
    return [f"{node.lineno}: {aliases[node.value.id].__name__} has no {node.attr}" for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
            and not hasattr(aliases[node.value.id], node.attr)]  # fmt: skip


def _local_problem(module: str, names: tuple[str, ...], dirs: list[Path]) -> str | None:
    top = module.split(".")[0]
    for d in dirs:
        for candidate in (d / f"{top}.py", d / top / "__init__.py"):
            if candidate.is_file() and "." not in module:
                missing = sorted(set(names) - _top_level_names(candidate))
                return f"{candidate} defines no {', '.join(missing)}" if missing else None
    if top in sys.stdlib_module_names or top in OPTIONAL_PACKAGES:
        return None
    spec = importlib.util.find_spec(top)
    if spec is None:
        where = ", ".join(str(d.relative_to(REPO)) for d in dirs if d.is_relative_to(REPO))
        return f"no module {module} (not installed, not in {where})"
    origin = Path(spec.origin or "").resolve()
    if origin.is_relative_to(REPO) and not origin.is_relative_to(Path(sys.prefix).resolve()):
        return f"{module} is found only through this test run's sys.path ({spec.origin}), not the script's"
    return None


@pytest.fixture
def restored_sys_path() -> Iterator[None]:
    """Scripts put folders on ``sys.path`` and load their siblings as top-level modules: undo both."""
    path, modules = list(sys.path), set(sys.modules)
    yield
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        origin = getattr(sys.modules[name], "__file__", None) or ""
        if Path(origin).resolve().is_relative_to(BENCHMARKS) or Path(origin).resolve().is_relative_to(REPO / "tests"):
            del sys.modules[name]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_loads_and_shows_its_help(script: Path, script_module, restored_sys_path, capsys) -> None:
    with script_module(script, f"_benchmark_{script.stem}") as module:
        if not hasattr(module, "main"):
            return
        with pytest.raises(SystemExit) as exited:
            module.main(["--help"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("usage:")


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_import_in_the_script_resolves(script: Path, restored_sys_path) -> None:
    tree = ast.parse(script.read_text(encoding="utf-8"))
    dirs = _path_dirs(tree, script)
    problems = []
    for module, names, line in _imports(tree):
        if module.split(".")[0] == "edgekit":
            problem = _edgekit_problem(module, names)
        else:
            problem = _local_problem(module, names, dirs)
        if problem:
            problems.append(f"{script.name}:{line}: {problem}")
    if not problems:
        problems = [f"{script.name}:{p}" for p in _module_attribute_problems(tree)]
    assert not problems, "\n".join(problems)


def test_the_checks_catch_a_moved_module(tmp_path: Path) -> None:
    """The import check fails for a module that is gone and a name that moved."""
    assert _edgekit_problem("edgekit.compiler.cpu_pipeline", ()) is not None
    assert _edgekit_problem("edgekit.package", ("no_such_function",)) == "edgekit.package has no no_such_function"
    (tmp_path / "helper.py").write_text("def kept():\n    pass\n", encoding="utf-8")
    assert _local_problem("helper", ("kept",), [tmp_path]) is None
    assert "defines no gone" in str(_local_problem("helper", ("gone",), [tmp_path]))
    assert "no module test_moved_away" in str(_local_problem("test_moved_away", (), [BENCHMARKS]))
    tree = ast.parse("from edgekit.core import errors\nerrors.EdgekitError\nerrors.NoSuchError\n")
    assert _module_attribute_problems(tree) == ["3: edgekit.core.errors has no NoSuchError"]


def _documented_commands() -> list[tuple[str, str, str]]:
    """(page, script, arguments) of each concrete ``benchmarks/X.py ARGS`` the pages show."""
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        blocks = re.findall(r"```[a-z]*\n(.*?)```", text, re.S)
        spans = [s.replace("\n", " ") for s in re.findall(r"`([^`]+)`", re.sub(r"```[a-z]*\n.*?```", "", text, flags=re.S))]
        spans += [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
        for span in spans:
            m = re.search(r"benchmarks/(\w+)\.py((?:[ \t]+[^\s#|;]+)*)", span)
            args = m.group(2).strip() if m else ""
            # Placeholders ([--opt N], ..., MODEL) are for the reader to fill in.
            if args and not re.search(r"\[|\.\.\.|(?<![\w-])[A-Z]{1,8}(?![\w-])", args):
                found.append((page.name, m.group(1), args))
    return sorted(set(found))


class _Parsed(Exception):
    """Raised in place of running the benchmark once its arguments parsed."""


@pytest.mark.parametrize(("page", "script", "args"), _documented_commands(), ids=lambda v: str(v)[:60])
def test_documented_command_lines_parse(page: str, script: str, args: str, script_module, restored_sys_path,
                                        monkeypatch, capsys) -> None:  # fmt: skip
    parse = argparse.ArgumentParser.parse_args

    def parse_then_stop(self: argparse.ArgumentParser, *a: object, **k: object) -> argparse.Namespace:
        raise _Parsed(parse(self, *a, **k))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    with script_module(BENCHMARKS / f"{script}.py", f"_benchmark_{script}") as module:
        try:
            module.main(shlex.split(args))
        except SystemExit:
            pytest.fail(f"{page} shows `benchmarks/{script}.py {args}`, which its parser refuses:\n{capsys.readouterr().err}")
        except _Parsed:
            return
    pytest.fail(f"benchmarks/{script}.py's main() never parsed its arguments")
