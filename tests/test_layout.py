"""The package's import rules, checked on the source (``ast``), never by importing it.

* nothing in ``bmc_detectron`` imports ``studies`` (studies use the package, not the reverse);
* only ``bmc_detectron/batch/`` imports ``ray``;
* nothing in ``bmc_detectron/cases/`` imports a web framework (fastapi, starlette, ...);
* the import graph between the top-level rooms (``data``, ``pipeline``, ``serve``, ``config``,
  ...) has no cycle. Every import counts, those inside functions too.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

PACKAGE = Path(__file__).resolve().parents[1] / "bmc_detectron"
ROOMS_FOR_WHAT_COMES = ("cases", "slides", "batch")
WEB_FRAMEWORKS = ("fastapi", "starlette", "uvicorn", "flask", "django")


def _sources() -> List[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _imports(path: Path) -> Iterator[Tuple[str, int]]:
    """Every absolute module name ``path`` imports (``from a.b import c``: ``a.b`` and
    ``a.b.c``), with its line."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, node.lineno
            for alias in node.names:
                yield f"{node.module}.{alias.name}", node.lineno


def _room(module: str) -> str | None:
    """The top-level room of a ``bmc_detectron`` module (``bmc_detectron.data.x`` -> ``data``)."""
    parts = module.split(".")
    if parts[0] != "bmc_detectron" or len(parts) < 2:
        return None
    name = parts[1]
    if (PACKAGE / name / "__init__.py").is_file() or (PACKAGE / f"{name}.py").is_file():
        return name
    return None


def _where(path: Path, line: int) -> str:
    shown = path.relative_to(PACKAGE.parent) if path.is_relative_to(PACKAGE.parent) else path
    return f"{shown}:{line}"


def _offending(paths: List[Path], top_names: Tuple[str, ...]) -> List[str]:
    return [
        f"{_where(path, line)} imports {name}"
        for path in paths
        for name, line in _imports(path)
        if name.split(".")[0] in top_names
    ]


def import_graph() -> Dict[str, Dict[str, List[str]]]:
    """``room -> {imported room: [file:line, ...]}`` over the package (the package's own
    ``__init__``, which registers the models and datasets, is left out)."""
    graph: Dict[str, Dict[str, List[str]]] = defaultdict(lambda: defaultdict(list))
    for path in _sources():
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        if rel.parts == ("bmc_detectron", "__init__"):
            continue
        source = _room(".".join(rel.parts))
        for name, line in _imports(path):
            target = _room(name)
            if source and target and target != source:
                graph[source][target].append(_where(path, line))
    return graph


def _cycle(graph: Dict[str, Dict[str, List[str]]]) -> List[str]:
    """One cycle of the graph as a list of rooms (first == last), or [] if there is none."""
    state: Dict[str, int] = {}  # 1: on the current path, 2: done
    path: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def test_nothing_in_the_package_imports_studies():
    assert _offending(_sources(), ("studies",)) == []


def test_only_batch_imports_ray():
    outside = [p for p in _sources() if p.relative_to(PACKAGE).parts[0] != "batch"]
    assert _offending(outside, ("ray",)) == []


def test_cases_has_no_web_framework():
    assert _offending(sorted((PACKAGE / "cases").rglob("*.py")), WEB_FRAMEWORKS) == []


def test_no_import_cycle_between_rooms():
    graph = import_graph()
    assert {"data", "pipeline", "serve", "tools"} <= set(graph)  # the graph is read at all
    cycle = _cycle(graph)
    where = [graph[a][b][0] for a, b in zip(cycle, cycle[1:])]
    assert cycle == [], f"import cycle {' -> '.join(cycle)} ({', '.join(where)})"


def test_cycle_finder_and_rules_see_what_they_should(tmp_path):
    graph = {"a": {"b": ["x"]}, "b": {"c": ["y"]}, "c": {"a": ["z"]}, "d": {"a": ["w"]}}
    assert _cycle(graph) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b": ["x"]}, "b": {}}) == []
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    import ray.data\n    from studies.x import y\n")
    assert _offending([bad], ("ray", "studies")) == [
        f"{bad}:2 imports ray.data",
        f"{bad}:3 imports studies.x",
        f"{bad}:3 imports studies.x.y",
    ]


def test_rooms_for_what_comes_are_named_with_their_rules():
    for room in ROOMS_FOR_WHAT_COMES:
        init = PACKAGE / room / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        assert "What goes here" in doc and "Import rules" in doc, room
