"""The study page builders (studies/<study>/page.py, se_gate.py, pbc_count.py) reproduce the
committed pages from the same inputs. The runs are not on every machine, so the inputs are cut
out of the committed page itself (what each command wrote: onnx_bench.md, errors.md, ...) or
rebuilt from its numbers (summary.json, errors.json); the page built from them must be the
committed page, but for the driver that it names (studies/results.sh was split per study)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from studies.assignment import page as assignment_page
from studies.deploy import page as deploy_page
from studies.errors import page as errors_page
from studies.pages import PageText, copy_figure, tail
from studies.recognition import pbc_count
from studies.selection import se_gate

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "docs" / "results"
DATE = "2026-11-30"


def _committed(relpath: str, phase: str, driver: str) -> str:
    """The committed page, naming the per-study driver instead of results.sh's phase."""
    text = (RESULTS / relpath).read_text()
    return text.replace(f"`PHASE={phase} bash studies/results.sh`", f"`{driver}`")


def _between(text: str, start: str, end: str | None) -> str:
    """The text after ``start`` up to (not including) ``end`` (None: to the end)."""
    i = text.index(start) + len(start)
    return text[i:] if end is None else text[i : text.index(end, i)]


def test_page_text_follows_echo_cat_and_tail(tmp_path):
    f = tmp_path / "a.md"
    f.write_text("# title\n\nbody\nlast\n")
    assert tail(f) == "# title\n\nbody\nlast\n" and tail(f, 3) == "body\nlast\n"
    page = PageText().line("# x", "").file(f, 3).line().line("end").raw("| t |\n")
    assert page.text() == "# x\n\nbody\nlast\n\nend\n| t |\n"
    png = tmp_path / "in.png"
    png.write_bytes(b"\x89PNG")
    name = copy_figure(png, tmp_path / "docs" / "RESULTS_x.md", "ref_gallery")
    assert name == "RESULTS_x_ref_gallery.png"
    assert (tmp_path / "docs" / name).read_bytes() == b"\x89PNG"


def test_deploy_page_matches_the_committed_page(tmp_path):
    expected = _committed("deploy/RESULTS_deploy.md", "deploy", deploy_page.DRIVER)
    heads = [ln for ln in expected.splitlines() if ln.startswith("## ")]
    for folder, (start, end) in {"fp32": heads[0:2], "own": heads[1:3]}.items():
        (tmp_path / folder).mkdir()
        md = _between(expected, start + "\n\n", "\n" + end)
        (tmp_path / folder / "onnx_bench.md").write_text(md)
    fields, detected, wall, det_s, rec_s = (
        expected.rstrip().splitlines()[-1].strip("| ").split(" | ")
    )
    case = tmp_path / "case"
    case.mkdir()
    summary = {"fields": [{}] * int(fields), "detected": int(detected)}
    summary["timing"] = {"detect_s": float(det_s), "recognise_s": float(rec_s)}
    (case / "summary.json").write_text(json.dumps(summary))
    built = deploy_page.build_page(tmp_path / "fp32", tmp_path / "own", case, int(wall), DATE)
    assert built == expected


def _solve(a: str, b: str, change: str) -> tuple:
    """Two numbers that print as ``a`` and ``b`` (2 decimals) and whose difference prints as
    ``change`` (the page rounds each from more digits)."""
    steps = [k / 1000 for k in range(-4, 5)]
    for da in steps:
        for db in steps:
            x, y = float(a) + da, float(b) + db
            if (f"{x:.2f}", f"{y:.2f}", f"{y - x:+.2f}") == (a, b, change):
                return x, y
    raise AssertionError((a, b, change))


def test_errors_page_matches_the_committed_page(tmp_path):
    expected = _committed("errors/RESULTS_errors.md", "errors", errors_page.DRIVER)
    names = re.findall(r"^## (ref|full): (\S+)$", expected, re.M)
    reports = {tag: {s: {"dAP": {}} for s in errors_page.SPLITS} for tag, _ in names}
    table = _between(expected, "|---|---|---|---|\n", "\n## ref:")
    for row, (_, key) in zip(table.strip().splitlines(), errors_page.KINDS):
        cells = row.strip("| ").split(" | ")[1:]
        for split, cell in zip(errors_page.SPLITS, cells):
            a, b, change = re.fullmatch(r"(\S+) -> (\S+) \((\S+)\)", cell).groups()
            for tag, value in zip(("ref", "full"), _solve(a, b, change)):
                target = reports[tag][split]
                target["AP50" if key is None else "dAP"] = (
                    value if key is None else {**target["dAP"], key: value}
                )
    models = {}
    for tag, name in names:
        folder = tmp_path / tag
        folder.mkdir()
        (folder / "errors.json").write_text(json.dumps(reports[tag]))
        md = _between(expected, f"## {tag}: {name}\n\n", f"\n![{tag} errors]")
        (folder / "errors.md").write_text("# Error analysis (TIDE-style)\n\na note\n" + md)
        for figure in ("errors.png", "gallery_loc.png"):
            (folder / figure).write_bytes(figure.encode())
        models[tag] = (name, folder)
    page = tmp_path / "docs" / "RESULTS_errors.md"
    assert errors_page.build_page(models, page.stem, DATE) == expected
    errors_page.copy_figures(models, page)
    for link in re.findall(r"\]\((RESULTS_errors_\S+\.png)\)", expected):
        assert (page.parent / link).is_file(), link


def test_errors_page_takes_its_title_models_and_driver(tmp_path):
    models = {}
    for tag, ap in (("ref", 90.0), ("full", 87.5)):
        folder = tmp_path / tag
        folder.mkdir()
        report = {
            s: {"AP50": ap, "dAP": {k: 1.0 for _, k in errors_page.KINDS if k}}
            for s in errors_page.SPLITS
        }
        (folder / "errors.json").write_text(json.dumps(report))
        (folder / "errors.md").write_text("# Error analysis\n\nnote\n| table |\n")
        models[tag] = (f"{tag}_cfg", folder)
    text = errors_page.build_page(
        models, "P", DATE, title="T", about="peer `{ref}`, ours `{full}`.", driver="bash x.sh"
    )
    assert text.startswith(
        "# T\n\nGenerated by `bash x.sh` on 2026-11-30: `tools/analyze_errors`\n"
    )
    assert "peer `ref_cfg`, ours `full_cfg`." in text
    assert "| AP50 | 90.00 -> 87.50 (-2.50) |" in text


def test_assignment_page_matches_the_committed_page(tmp_path):
    expected = _committed("assignment/RESULTS_assignment.md", "assign", assignment_page.DRIVER)
    sets = {}
    for name, title in assignment_page.TITLES.items():
        folder = tmp_path / name
        folder.mkdir()
        md = _between(expected, f"## {title}\n\n", f"\n![statistics](RESULTS_assignment_{name}_")
        (folder / "assignment_stats.md").write_text("# Label assignment\n\n" + md)
        for fig in ("img_b_assign", "img_a_assign", "img_a_atss", "img_a_levels"):
            (folder / f"{fig}.png").write_bytes(fig.encode())
        (folder / "assignment_stats.png").write_bytes(b"stats")
        sets[name] = folder
    (sets["synth"] / "band_cell.png").write_bytes(b"band")
    page = tmp_path / "docs" / "RESULTS_assignment.md"
    assert assignment_page.build_page(sets, page.stem, DATE) == expected
    assignment_page.copy_figures(sets, page)
    for link in re.findall(r"\]\((RESULTS_assignment_\S+\.png)\)", expected):
        assert (page.parent / link).is_file(), link
    # the first image by name is the one shown
    assert (page.parent / "RESULTS_assignment_bccd_atss.png").read_bytes() == b"img_a_atss"


def test_se_gate_page_matches_the_committed_page(tmp_path):
    expected = _committed("selection/RESULTS_se_gate.md", "se", se_gate.DRIVER)
    names = re.findall(r"^## (\S+)$", expected, re.M)
    probes = {}
    for name, following in zip(names, [*names[1:], None]):
        folder = tmp_path / name
        folder.mkdir()
        md = _between(expected, f"## {name}\n", None if following is None else f"\n## {following}")
        (folder / "grad_probe.md").write_text("# Gradient probe\n" + md)
        probes[name] = folder
    assert se_gate.build_page(probes, DATE) == expected


def _number(text: str) -> object:
    try:
        return float(text)
    except ValueError:
        return None if text == "None" else text


def test_pbc_count_page_matches_the_committed_page(tmp_path):
    expected = _committed("recognition/RESULTS_pbc_count.md", "pbc", pbc_count.DRIVER)
    classifier = re.search(r"the PBC cell classifier \(`(\S+)`\)", expected).group(1)
    pattern = (
        r"Scale used: (\S+); fields resized by (\S+); red cells (\S+) px median \((\S+) x the"
        r" training images'\), spread (\S+)"
    )
    scale_lines = re.findall(pattern, expected)
    titles = list(pbc_count.TITLES.values())
    counts = {}
    for (mode, title), values, end in zip(pbc_count.TITLES.items(), scale_lines, [titles[1], None]):
        source, factor, median, relative, spread = map(_number, values)
        red = {"median_px": median, "relative_to_training": relative, "spread": spread}
        folder = tmp_path / mode
        folder.mkdir()
        summary = {"scale": {"source": source, "factor": factor, "red_cells": red}}
        (folder / "summary.json").write_text(json.dumps(summary))
        start = pbc_count.scale_line(summary) + "\n\n"
        assert start in expected
        md = _between(_between(expected, title, None), start, None if end is None else "\n" + end)
        (folder / "count_eval.md").write_text("# Count vs truth\n\n" + md)
        counts[mode] = folder
    assert pbc_count.build_page(counts, classifier, DATE) == expected


@pytest.mark.parametrize(
    "module, argv",
    [
        (deploy_page, ["--fp32", "a", "--own", "b", "--case", "c"]),
        (errors_page, ["--reference", "r", "--reference-dir", "a", "--full", "f"]),
        (assignment_page, ["--bccd", "a"]),
        (se_gate, []),
        (pbc_count, ["--plain", "a", "--auto", "b"]),
    ],
)
def test_page_commands_refuse_missing_inputs(module, argv):
    with pytest.raises(SystemExit) as e:
        module.main(argv)
    assert e.value.code == 2
