"""The layers of the code (docs/architecture.md): no import circle, no private name imported across modules, and the
torch-free core (``saccader.TORCH_FREE``) that the workflow and the analysis import loads no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import saccader
from saccader.pipeline.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("saccader", "baselines", "analysis")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


MODULES = _modules()


def _owner(name: str) -> str | None:
    """The project module that ``name`` (a module, or a module's attribute) lives in."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str) -> list[tuple[str, str | None]]:
    """(project module, imported name or None) of every import statement in ``module``, at any depth."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(_owner(a.name), None) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.append((sub, None) if sub in MODULES else (_owner(base), a.name))
    return [(m, n) for m, n in out if m and m != module]


def _graph() -> dict[str, set[str]]:
    graph = {m: {d for d, _ in _imports(m)} for m in MODULES}
    graph["saccader.pipeline.cli"] |= set(COMMANDS.values())  # loaded by name when their subcommand runs
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle():
    assert _cycles(_graph()) == []


def test_the_circle_check_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_private_name_is_imported_from_another_module():
    found = [(m, f"{d}.{n}") for m in MODULES for d, n in _imports(m)
             if n and n.startswith("_") and not n.startswith("__")]
    for path in sorted((ROOT / "bench").glob("*.py")):  # the benchmarks use the library's public names too
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":  # the project's or another script's
                found += [(path.name, f"{node.module}.{a.name}") for a in node.names if a.name.startswith("_")]
    assert found == []


def test_the_method_and_the_machinery_import_analysis_nowhere():
    """Data flows one way, pipeline -> parquet -> analysis: what the targets read is declared in the catalog."""
    found = [(m, d) for m in MODULES if m.split(".")[0] in ("saccader", "baselines")
             for d, _ in _imports(m) if d.split(".")[0] == "analysis"]
    assert found == []


def test_the_analysis_check_sees_an_import_inside_a_function(tmp_path, monkeypatch):
    path = tmp_path / "probe.py"
    path.write_text("def f():\n    import analysis\n    from analysis.claims import claims\n")
    monkeypatch.setitem(MODULES, "saccader.probe", path)
    assert [d for d, _ in _imports("saccader.probe")] == ["analysis", "analysis.claims"]


@pytest.mark.parametrize("module", saccader.TORCH_FREE)
def test_the_torch_free_core_imports_no_torch(module):
    code = (f"import sys, {module}; torch = sorted(m for m in sys.modules if m.split('.')[0] == 'torch'); "
            "assert not torch, torch")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_a_subcommand_whose_module_is_missing_is_an_error(monkeypatch):
    from saccader.pipeline import cli

    monkeypatch.setitem(cli.COMMANDS, "gone", "saccader.pipeline.gone")
    with pytest.raises(ModuleNotFoundError):
        cli.build_parser("gone")
