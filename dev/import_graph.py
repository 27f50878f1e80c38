"""Draw the package's import graph (its top-level rooms, by floor) into the architecture page.

    python -m dev.import_graph            # rewrite the diagram in docs/developer/architecture.md
    python -m dev.import_graph --check    # exit 1 when the page's diagram is out of date

A room is a top-level subpackage or module of ``bmc_detectron`` (``pipeline/``, ``config.py``).
Room A imports room B when any file of A imports ``bmc_detectron.B`` (at the top or inside a
function). A room's floor is 0 when it imports no other room, else one more than the highest floor
it imports from, so every arrow points down; an import cycle has no floors and is an error.
``tests/test_docs.py`` fails when the diagram on the page differs from what this draws.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "bmc_detectron"
PAGE = ROOT / "docs" / "developer" / "architecture.md"
START = "<!-- import-graph:start (python -m dev.import_graph) -->"
END = "<!-- import-graph:end -->"


def rooms(package: Path = PACKAGE) -> List[str]:
    """The package's top-level subpackages and modules (``__init__`` aside)."""
    names = [p.name for p in package.iterdir() if (p / "__init__.py").is_file()]
    names += [p.stem for p in package.glob("*.py") if p.stem != "__init__"]
    return sorted(names)


def _imported(tree: ast.AST, package: str) -> Set[str]:
    """Dotted names below ``package`` that a module imports (``from package import x``: x)."""
    found: Set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == package:
                found.update(f"{package}.{a.name}" for a in node.names)
            else:
                found.add(node.module)
    return {name for name in found if name.startswith(package + ".")}


def import_graph(package: Path = PACKAGE) -> Dict[str, Set[str]]:
    """Room -> the other rooms it imports."""
    names = rooms(package)
    graph: Dict[str, Set[str]] = {name: set() for name in names}
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package).parts
        room = rel[0].removesuffix(".py")
        if room not in graph:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for name in _imported(tree, package.name):
            target = name.split(".")[1]
            if target in graph and target != room:
                graph[room].add(target)
    return graph


def floors(graph: Dict[str, Set[str]]) -> Dict[str, int]:
    """Each room's floor; raises ValueError naming the rooms of an import cycle."""
    floor: Dict[str, int] = {}
    visiting: List[str] = []

    def visit(room: str) -> int:
        if room in floor:
            return floor[room]
        if room in visiting:
            cycle = visiting[visiting.index(room) :] + [room]
            raise ValueError(f"import cycle: {' -> '.join(cycle)}")
        visiting.append(room)
        floor[room] = 1 + max((visit(d) for d in graph[room]), default=-1)
        visiting.pop()
        return floor[room]

    for room in sorted(graph):
        visit(room)
    return floor


def _label(room: str, package: Path) -> str:
    return f"{room}/" if (package / room).is_dir() else f"{room}.py"


def render(graph: Dict[str, Set[str]], package: Path = PACKAGE) -> str:
    """The diagram block (between the page's markers), highest floor first."""
    floor = floors(graph)
    width = max(len(_label(r, package)) for r in graph) + 2
    heading = "floor  room" + " " * (width - 4) + "imports (every arrow points down)"
    lines = [START, "", "```text", heading]
    for room in sorted(graph, key=lambda r: (-floor[r], r)):
        deps = ", ".join(sorted(graph[room], key=lambda d: (-floor[d], d)))
        arrow = f"-> {deps}" if deps else ""
        lines.append(f"{floor[room]:>5}  {_label(room, package):<{width}}{arrow}".rstrip())
    lines += ["```", "", END]
    return "\n".join(lines)


def updated_page(page_text: str, block: str) -> str:
    """``page_text`` with the block between the markers replaced by ``block``."""
    if START not in page_text or END not in page_text:
        raise ValueError(f"the page has no {START!r} ... {END!r} markers")
    head, rest = page_text.split(START, 1)
    tail = rest.split(END, 1)[1]
    return head + block + tail


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the diagram is out of date")
    args = parser.parse_args(argv)
    current = PAGE.read_text()
    page = updated_page(current, render(import_graph()))
    if args.check:
        if page != current:
            print(f"{PAGE}: the import diagram is out of date: run python -m dev.import_graph")
            return 1
        return 0
    PAGE.write_text(page)
    print(f"wrote the import diagram into {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
