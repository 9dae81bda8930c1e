"""The package layering of pclr_jax, read from the source with ``ast``: no import cycle between
modules, and every import across packages runs along an arrow that the importing package's
``__init__`` docstring allows (its ``May import:`` line, the one statement of the rule)."""

from __future__ import annotations

import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LIBRARY = "pclr_jax"
ANY = "any package"
NOTHING = "nothing else of pclr_jax"


def module_files(source_root: pathlib.Path, library: str) -> dict[str, pathlib.Path]:
    """Dotted module name -> file, for every ``.py`` file of ``library`` under ``source_root``."""
    modules = {}
    for path in sorted((source_root / library).rglob("*.py")):
        parts = list(path.relative_to(source_root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def imports_of(path: pathlib.Path, modules: dict[str, pathlib.Path], library: str) -> set[str]:
    """The library modules ``path`` imports anywhere (top level, functions, TYPE_CHECKING):
    ``from a.b import c`` counts as ``a.b.c`` when that is a module, else as ``a.b``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == library)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != library:
                continue
            for alias in node.names:
                if node.module == library and alias.name == "__version__":
                    continue  # the one name read from the top-level package
                full = f"{node.module}.{alias.name}"
                found.add(full if full in modules else node.module)
    return found


def package_of(module: str) -> str:
    """``pclr_jax.data.builders.base`` -> ``data``; the library itself -> ``''``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def allowed_imports(source_root: pathlib.Path, library: str) -> dict[str, set[str] | None]:
    """Package -> the packages its docstring's ``May import:`` line allows (``None``: any)."""
    packages = sorted(p.parent.name for p in (source_root / library).glob("*/__init__.py"))
    allowed: dict[str, set[str] | None] = {}
    for name in packages:
        doc = ast.get_docstring(
            ast.parse((source_root / library / name / "__init__.py").read_text())
        )
        match = re.search(r"^May import: (.+?)\.?$", doc or "", re.M)
        if match is None:
            raise AssertionError(f"{library}/{name}/__init__.py: no 'May import:' line")
        text = match.group(1)
        if text.startswith(ANY):
            allowed[name] = None
        elif text.startswith(NOTHING):
            allowed[name] = set()
        else:
            allowed[name] = {p.strip() for p in re.sub(r"\(.*\)", "", text).split(",")}
    return allowed


def layering_violations(source_root: pathlib.Path, library: str = LIBRARY) -> list[str]:
    """Every import against the stated arrows, and every import cycle, as readable lines."""
    modules = module_files(source_root, library)
    allowed = allowed_imports(source_root, library)
    edges = {m: imports_of(path, modules, library) for m, path in modules.items()}
    problems = []
    for name, targets in allowed.items():
        unknown = (targets or set()) - set(allowed)
        if unknown:
            problems.append(f"{name}: 'May import' names unknown packages {sorted(unknown)}")
    for module, targets in sorted(edges.items()):
        source = package_of(module)
        for target in sorted(targets):
            destination = package_of(target)
            if destination == source:
                continue
            if destination == "":
                problems.append(f"{module} imports {target}: import from the defining module")
            elif source == "":
                continue  # the library's own lazy facade
            elif allowed[source] is not None and destination not in allowed[source]:
                problems.append(f"{module} imports {target}: {source} may not import {destination}")
    problems += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(edges)]
    return problems


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in edges:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_pclr_jax_follows_its_stated_layering():
    assert layering_violations(ROOT) == []


def test_the_stated_arrows_have_no_cycle():
    allowed = allowed_imports(ROOT, LIBRARY)
    everything = set(allowed) - {"commands"}
    graph = {p: (everything - {p} if t is None else t) for p, t in allowed.items()}
    assert cycles(graph) == []


def test_nothing_imports_commands_benchmarks_or_tests():
    modules = module_files(ROOT, LIBRARY)
    for module, path in modules.items():
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not {n for n in names if n.split(".")[0] in {"benchmarks", "tests"}}, module
        if package_of(module) not in {"commands", ""}:
            assert not any(n.startswith(f"{LIBRARY}.commands") for n in names), module


def test_the_architecture_page_shows_the_stated_arrows():
    page = (ROOT / "docs" / "architecture.md").read_text()
    for name, targets in allowed_imports(ROOT, LIBRARY).items():
        shown = re.search(rf"^{name}/\s+->\s+(.*)$", page, re.M)
        assert shown, f"docs/architecture.md does not show {name}/"
        stated = "anything" if targets is None else ", ".join(sorted(targets)) or "-"
        assert shown.group(1).strip() == stated, name


def _write(root: pathlib.Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def toy_library(tmp_path):
    """A library ``toy`` with packages low (may import nothing) and high (may import low)."""
    _write(tmp_path, "toy/__init__.py", "")
    _write(
        tmp_path, "toy/low/__init__.py", '"""Low.\n\nMay import: nothing else of pclr_jax.\n"""\n'
    )
    _write(tmp_path, "toy/high/__init__.py", '"""High.\n\nMay import: low.\n"""\n')
    _write(tmp_path, "toy/low/a.py", "import numpy\n")
    _write(tmp_path, "toy/high/b.py", "from toy.low import a\n")
    return tmp_path


def test_the_checker_accepts_a_clean_library(toy_library):
    assert layering_violations(toy_library, "toy") == []


def test_the_checker_finds_an_upward_import_even_inside_a_function(toy_library):
    _write(toy_library, "toy/low/c.py", "def f():\n    from toy.high import b\n")
    assert layering_violations(toy_library, "toy") == [
        "toy.low.c imports toy.high.b: low may not import high"
    ]


def test_the_checker_finds_a_cycle_within_a_package(toy_library):
    _write(toy_library, "toy/low/a.py", "from toy.low import c\n")
    _write(
        toy_library,
        "toy/low/c.py",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from toy.low.a import x\n",
    )
    assert layering_violations(toy_library, "toy") == ["import cycle: toy.low.a -> toy.low.c"]
