"""The shape of the code, checked: no import cycle among the project's modules, a core that
imports no Kafka or Faust client, and modules short enough to read in one sitting unless
they say why they are long.

The import graph is built from the source with `ast`: module-level imports only, since an
import inside a function runs when it is called (the usual way to break a cycle or defer a
heavy dependency) and one under `if TYPE_CHECKING:` never runs."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"anonstream": ROOT / "streams" / "anonstream", "anonstream_load": ROOT / "load"}
KAFKA_CLIENTS = {"aiokafka", "faust", "kafka", "confluent_kafka", "quixstreams", "mode"}
MAX_LINES = 500
LONG_HEADER = "Why this module is long:"
# Long today, each to be split by job (issue 15); an entry that goes stale fails the test.
KNOWN_LONG = {
    "anonstream/cli.py": "every command's options and help, one typer app",
    "anonstream/core/release.py": "the release rules, roll-up and suppression together",
    "anonstream/core/scrub.py": "every identifier pattern of the scrubber",
}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg, root in PACKAGES.items():
        for path in root.rglob("*.py"):
            parts = [pkg, *path.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _module_level_imports(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Imports that run when the module is imported: top level, and inside top-level
    if/try blocks (but not under TYPE_CHECKING); never inside a function or class."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node):
                yield from _module_level_imports(node.body)
            yield from _module_level_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                yield from _module_level_imports(block)
            for handler in node.handlers:
                yield from _module_level_imports(handler.body)


def _imported_names(module: str, path: Path) -> set[str]:
    """Dotted names a module imports at module level, relative imports resolved; for
    `from a import b` both `a` and `a.b` (b may be a module)."""
    names: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in _module_level_imports(tree.body):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join([*package, base] if base else package)
        names.add(base)
        names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _with_parents(name: str) -> Iterator[str]:
    """Importing a.b.c runs a, a.b and a.b.c."""
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        yield ".".join(parts[:i])


def import_graph(modules: dict[str, Path]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(edges between project modules, top-level external packages each module imports)."""
    edges: dict[str, set[str]] = {}
    external: dict[str, set[str]] = {}
    for module, path in modules.items():
        names = _imported_names(module, path)
        own_parents = set(_with_parents(module))
        edges[module] = {
            n
            for name in names
            for n in _with_parents(name)
            if n in modules and n not in own_parents
        }
        external[module] = {n.split(".")[0] for n in names} - set(PACKAGES) - {""}
    return edges, external


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_import_cycle() -> None:
    edges, _ = import_graph(_modules())
    assert find_cycle(edges) is None


def test_the_cycle_finder_finds_a_cycle_made_by_hand(tmp_path: Path) -> None:
    """Attack the test: a two-module cycle through a relative import is found, one inside a
    function or under TYPE_CHECKING is not."""
    (tmp_path / "a.py").write_text("from . import b\n", encoding="utf-8")
    (tmp_path / "b.py").write_text("from .a import x\n", encoding="utf-8")
    (tmp_path / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from p import d\n",
        encoding="utf-8",
    )
    (tmp_path / "d.py").write_text("def f():\n    from p import c\n", encoding="utf-8")
    mods = {f"p.{n}": tmp_path / f"{n}.py" for n in "abcd"}
    edges, _ = import_graph(mods)
    assert find_cycle(edges) in (["p.a", "p.b", "p.a"], ["p.b", "p.a", "p.b"])
    assert edges["p.c"] == edges["p.d"] == set()


def test_the_core_imports_no_kafka_or_faust_client() -> None:
    """Transitively, at module level, from the source."""
    modules = _modules()
    edges, external = import_graph(modules)
    for module in sorted(m for m in modules if m.startswith("anonstream.core")):
        seen, todo = {module}, [module]
        while todo:
            for nxt in edges[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        clients = {(m, e) for m in seen for e in external[m] & KAFKA_CLIENTS}
        assert not clients, f"{module} imports a Kafka client through {sorted(clients)}"


def test_importing_the_core_loads_no_kafka_or_faust_client() -> None:
    """The same, as Python sees it: import every core module in a fresh interpreter."""
    core = sorted(m for m in _modules() if m.startswith("anonstream.core"))
    code = (
        "import importlib, sys\n"
        f"for m in {core!r}: importlib.import_module(m)\n"
        f"clients = set({sorted(KAFKA_CLIENTS)!r})\n"
        "print(sorted(clients & {m.split('.')[0] for m in sys.modules}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert out.strip() == "[]"


def _every_import(tree: ast.AST) -> set[str]:
    """Absolute dotted names imported anywhere in a module, inside functions too."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module)
    return names


def _imports_the_load_tools(path: Path) -> bool:
    names = _every_import(ast.parse(path.read_text(encoding="utf-8")))
    return any(n.split(".")[0] == "anonstream_load" for n in names)


def test_the_product_never_imports_the_load_tools() -> None:
    """The product runs without its benchmarks: `anonstream` never imports `anonstream_load`,
    not even inside a function (the load tools import the product, not the other way)."""
    product = [p for m, p in _modules().items() if m.split(".")[0] == "anonstream"]
    assert product
    assert [str(p.relative_to(ROOT)) for p in product if _imports_the_load_tools(p)] == []


def test_the_load_import_check_finds_a_deferred_import(tmp_path: Path) -> None:
    """Attack the test: an import of the load tools inside a function is found."""
    (tmp_path / "a.py").write_text(
        "def f():\n    from anonstream_load.bench import main\n", encoding="utf-8"
    )
    (tmp_path / "b.py").write_text("import anonstream_load\n", encoding="utf-8")
    (tmp_path / "c.py").write_text("from anonstream.synthetic import x\n", encoding="utf-8")
    assert [_imports_the_load_tools(tmp_path / f"{n}.py") for n in "abc"] == [True, True, False]


def test_the_soak_run_does_not_import_the_benchmark() -> None:
    """`bench --soak` hands over to the soak run; what both need lives in the harness, so
    the soak run never imports the benchmark back, not even inside a function."""
    tree = ast.parse((PACKAGES["anonstream_load"] / "soak.py").read_text(encoding="utf-8"))
    relative = {
        f"anonstream_load.{n.module}"
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom) and n.level == 1 and n.module
    }
    assert "anonstream_load.bench" not in _every_import(tree) | relative


def _line_count(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


@pytest.mark.parametrize(
    "path", sorted((ROOT / "streams").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT))
)
def test_a_long_module_says_why(path: Path) -> None:
    rel = str(path.relative_to(ROOT / "streams"))
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    if _line_count(path) <= MAX_LINES:
        assert rel not in KNOWN_LONG, f"{rel} is short now: drop it from KNOWN_LONG"
    else:
        assert LONG_HEADER in doc or rel in KNOWN_LONG, (
            f"{rel} has {_line_count(path)} lines (> {MAX_LINES}): split it, or say in its "
            f"header docstring '{LONG_HEADER} ...'"
        )


def test_every_package_data_pattern_names_files_that_exist() -> None:
    """A pattern that matches nothing ships nothing, silently: it is drift."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    tool = config["tool"]["setuptools"]
    dirs = {pkg: ROOT / path for pkg, path in tool["package-dir"].items() if pkg}
    for pkg, patterns in tool["package-data"].items():
        base = dirs.get(pkg, ROOT / tool["package-dir"][""] / pkg)
        for pattern in patterns:
            assert any(p.is_file() for p in base.glob(pattern)), f"{pkg}: {pattern}"
