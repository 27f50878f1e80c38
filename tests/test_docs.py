"""The documentation site: generated pages up to date, every page in the nav, links that resolve.

``make docs`` builds the site with ``mkdocs build --strict``; these tests check what can be checked
without building it (and point at the command that regenerates a stale page).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from detectron2.config import CfgNode as CN

from dev import config_reference, import_graph

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# [text](target) and ![alt](target), the target up to a space or the closing parenthesis
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _md_pages() -> list:
    return sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))


def _nav_pages(node) -> list:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [p for v in node.values() for p in _nav_pages(v)]
    return [p for item in node for p in _nav_pages(item)]


def _relative_links(text: str) -> list:
    """Link targets that are files of the repository (no URL, no bare anchor, no code)."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    targets = [t for t in LINK.findall(text) if not re.match(r"[a-z]+:|#", t)]
    return [t.split("#")[0] for t in targets]


def test_config_reference_is_current():
    page = config_reference.PAGE.read_text()
    assert page == config_reference.generate(), (
        "docs/reference/config.md differs from bmc_detectron/config.py: "
        "run python -m dev.config_reference"
    )


def test_config_reference_lists_every_key_with_its_default():
    from bmc_detectron.config import get_bmc_cfg

    cfg = get_bmc_cfg()
    page = config_reference.PAGE.read_text()
    keys = []
    for root in config_reference.ROOTS:
        node = cfg
        for part in root:
            node = node[part]
        stack = [(root, node)]
        while stack:
            path, node = stack.pop()
            for k, v in node.items():
                if isinstance(v, CN):
                    stack.append((path + (k,), v))
                else:
                    keys.append((".".join(path + (k,)), config_reference.format_default(v)))
    assert len(keys) > 60
    missing = [k for k, d in keys if f"| `{k}` | `{d}` |" not in page]
    assert missing == []
    assert "| `MODEL.BMC.NECK.SE_GATE_BIAS` | `0.0` | Initial bias of the SE gate" in page
    assert "| `MODEL.BMC.ASSIGNER.SIMOTA.OUTSIDE_COST` | `1e5` | Cost added to pairs" in page


FAKE_SOURCE = '''
def _add_model(cfg):
    bmc = cfg.MODEL.BMC = CN()
    # ---- The neck ----
    bmc.NECK = CN()
    # Switch the path on.
    bmc.NECK.PAN = False
    _add_assigner(bmc)


def _shared_node():
    """Keys two assigners share."""
    node = CN()
    # Weight of the cost,
    # over two lines.
    node.WEIGHT = 3.0
    return node


def _add_assigner(bmc):
    ota = bmc.OTA = _shared_node()
    # Only OTA has it.
    ota.ITERS = 50
    bmc.SIMOTA = _shared_node()
    paa = bmc.PAA = CN()
    # PAA's own weight.
    paa.WEIGHT = 1.0


def _add_data(cfg):
    bmc = cfg.BMC = CN()
    # Keep this many.
    bmc.KEEP = 2
'''


def _fake_cfg() -> CN:
    cfg = CN()
    cfg.MODEL = CN()
    cfg.MODEL.BMC = CN()
    cfg.MODEL.BMC.NECK = CN({"PAN": False})
    cfg.MODEL.BMC.OTA = CN({"WEIGHT": 3.0, "ITERS": 50})
    cfg.MODEL.BMC.SIMOTA = CN({"WEIGHT": 3.0})
    cfg.MODEL.BMC.PAA = CN({"WEIGHT": 1.0})
    cfg.BMC = CN({"KEEP": 2, "NAME": "x"})
    return cfg


def test_config_reference_resolves_aliases_and_shared_nodes():
    cfg = _fake_cfg()
    del cfg.BMC["NAME"]
    sections = config_reference.describe(cfg, FAKE_SOURCE)
    found = {key: (default, what) for _, _, rows in sections for key, default, what in rows}
    assert found == {
        "MODEL.BMC.NECK.PAN": ("False", "Switch the path on."),
        "MODEL.BMC.OTA.WEIGHT": ("3.0", "Weight of the cost, over two lines."),
        "MODEL.BMC.OTA.ITERS": ("50", "Only OTA has it."),
        "MODEL.BMC.SIMOTA.WEIGHT": ("3.0", "Weight of the cost, over two lines."),
        "MODEL.BMC.PAA.WEIGHT": ("1.0", "PAA's own weight."),
        "BMC.KEEP": ("2", "Keep this many."),
    }
    texts = {".".join(path): text for path, text, _ in sections}
    assert texts["MODEL.BMC.NECK"] == "The neck"
    assert texts["MODEL.BMC.SIMOTA"] == "Keys two assigners share."
    assert texts["MODEL.BMC.PAA"] == ""


def test_config_reference_refuses_a_key_without_a_comment():
    with pytest.raises(ValueError, match="BMC.NAME"):
        config_reference.describe(_fake_cfg(), FAKE_SOURCE)


def test_config_reference_escapes_markdown_in_comments():
    assert config_reference.escape("a_b * c | d <e>") == r"a\_b \* c \| d \<e>"


def test_import_diagram_is_current():
    page = import_graph.PAGE.read_text()
    block = import_graph.render(import_graph.import_graph())
    assert import_graph.updated_page(page, block) == page, (
        "the import diagram of docs/developer/architecture.md is out of date: "
        "run python -m dev.import_graph"
    )


def test_import_diagram_floors_point_down():
    graph = import_graph.import_graph()
    floor = import_graph.floors(graph)
    assert {"tools", "pipeline", "modeling", "config", "utils"} <= set(graph)
    assert all(floor[dep] < floor[room] for room, deps in graph.items() for dep in deps)
    assert floor["utils"] == 0 and floor["tools"] == max(floor.values())


def test_import_diagram_refuses_a_cycle():
    with pytest.raises(ValueError, match="import cycle: a -> b -> a"):
        import_graph.floors({"a": {"b"}, "b": {"a"}, "c": set()})
    assert import_graph.floors({"a": {"b"}, "b": {"c"}, "c": set()}) == {"a": 2, "b": 1, "c": 0}


def test_every_page_is_in_the_nav_and_every_nav_entry_exists():
    nav = _nav_pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])
    assert sorted(nav) == _md_pages()
    assert len(nav) == len(set(nav))


def test_every_results_page_is_in_its_study_folder():
    pages = [p for p in _md_pages() if p.startswith("results/")]
    assert "results/index.md" in pages
    studies = [p for p in pages if p != "results/index.md"]
    assert len(studies) >= 17
    assert all(re.fullmatch(r"results/[a-z_]+/RESULTS_[a-z_]+\.md", p) for p in studies)


@pytest.mark.parametrize("page", _md_pages())
def test_links_of_a_page_stay_in_docs_and_resolve(page):
    path = DOCS / page
    for target in _relative_links(path.read_text()):
        resolved = (path.parent / target).resolve()
        assert resolved.is_relative_to(DOCS.resolve()), f"{page}: {target} leaves docs/"
        assert resolved.is_file(), f"{page}: {target} not found"


def test_readme_is_short_and_its_links_resolve():
    text = (ROOT / "README.md").read_text()
    lines = text.splitlines()
    assert len(lines) <= 150
    top = "\n".join(lines[:15])
    assert "make demo" in top and "make test" in top
    targets = _relative_links(text)
    assert "docs/results/index.md" in targets
    for target in targets:
        assert (ROOT / target).is_file(), f"README.md: {target} not found"
