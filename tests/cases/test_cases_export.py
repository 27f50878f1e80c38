"""Back to training: a signed case's reviewed cells as COCO that ``bmc merge-labels`` takes as it
is; the unreviewed cases ranked; and ``bmc cases`` end to end, bad input in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bmc_detectron.cases.errors import ExportError
from bmc_detectron.cases.export import export_coco, rank_unreviewed
from bmc_detectron.cases.importer import import_report
from bmc_detectron.cases.queries import get_case
from bmc_detectron.cases.review import add_cell, delete_cell, reclassify, sign
from bmc_detectron.cases.users import add_user
from bmc_detectron.tools import cases as cases_tool
from bmc_detectron.tools import merge_labels

from .helpers import CLASSES, make_report, new_db


@pytest.fixture
def signed(tmp_path: Path, db_url: str):
    """case42 reviewed (Red -> Myelo, Other deleted, a Red cell added) and signed by alice;
    case43 imported, not reviewed."""
    db = new_db(tmp_path, db_url)
    with db.session() as s:
        import_report(s, db.store, make_report(tmp_path), "importer")
        import_report(s, db.store, make_report(tmp_path, "case43", offset=5), "importer")
        add_user(s, "alice", "correct horse", "reviewer", "admin0", "default")
        case = get_case(s, "case42")
        _, red, other = (c.id for c in case.fields[0].cells)
        reclassify(s, case, red, "Myelo", 1, "alice")
        delete_cell(s, case, other, 1, "alice")
        add_cell(s, case, "f2", (40, 20, 60, 40), "Red", "alice")
        sign(s, case, "alice")
    yield db
    db.close()


def test_export_equals_the_reviewed_cells_and_merges(signed, tmp_path: Path, capsys) -> None:
    with signed.session() as s:
        coco = export_coco(s, signed.store, ["case42"])
        case = get_case(s, "case42")
        want = [
            (f"{f.image_sha256}.png", [c.x0, c.y0, c.x1 - c.x0, c.y1 - c.y0], c.final_class)
            for f in case.fields
            for c in f.cells
            if not c.deleted
        ]
    names = {c["id"]: c["name"] for c in coco["categories"]}
    files = {im["id"]: im["file_name"] for im in coco["images"]}
    got = [(files[a["image_id"]], a["bbox"], names[a["category_id"]]) for a in coco["annotations"]]
    assert got == want
    assert [w[2] for w in want] == ["Lym", "Myelo", "Myelo", "Red"]
    assert list(names.values()) == CLASSES
    assert coco["images"][1]["bmc_case"] == {
        "case": "case42",
        "version": 1,
        "field": "f2",
        "reviewer": "alice",
        "signed_at": coco["info"]["bmc_cases"][0]["signed_at"],
    }
    assert coco["info"]["bmc_cases"][0]["reviewer"] == "alice"
    exported = tmp_path / "reviewed.json"
    exported.write_text(json.dumps(coco))
    base = tmp_path / "base.json"
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)]
    base.write_text(json.dumps({"images": [], "annotations": [], "categories": categories}))
    argv = ["--base", str(base), "--images-root", str(signed.store.root), "--round", "1"]
    argv += ["--annotator", "alice", str(exported), "--output", str(tmp_path / "merged.json")]
    assert merge_labels.main(argv) == 0, capsys.readouterr().err
    merged = json.loads((tmp_path / "merged.json").read_text())
    files = {im["id"]: Path(im["file_name"]).name for im in merged["images"]}
    names = {c["id"]: c["name"] for c in merged["categories"]}
    kept = [
        (files[a["image_id"]], a["bbox"], names[a["category_id"]]) for a in merged["annotations"]
    ]
    assert sorted(kept) == sorted(want)


def test_export_refuses_unsigned_and_copies_images(signed, tmp_path: Path) -> None:
    with signed.session() as s:
        with pytest.raises(ExportError, match="case 'case43' has no signed version"):
            export_coco(s, signed.store, ["case42", "case43"])
        coco = export_coco(s, signed.store, ["case42"], images_dir=tmp_path / "copied")
    copied = sorted(p.name for p in (tmp_path / "copied").iterdir())
    assert copied == sorted(im["file_name"] for im in coco["images"])


def test_unreviewed_cases_ranked_by_uncertainty(signed, tmp_path: Path) -> None:
    with signed.session() as s:
        import_report(s, signed.store, make_report(tmp_path, "case44", offset=7), "importer")
        ranked = rank_unreviewed(s, "least_confidence", "max")
    # both unreviewed cases hold the same cells: max least confidence 1 - 0.4 = 0.6
    assert [(r[0], round(r[1], 6), r[2]) for r in ranked] == [
        ("case43", 0.6, 4),
        ("case44", 0.6, 4),
    ]


def _bmc(tmp_path: Path, *argv: str) -> int:
    return cases_tool.main([*argv, "--db", f"sqlite:///{tmp_path / 'cli' / 'cases.db'}"])


def test_the_command_end_to_end(tmp_path: Path, capsys, monkeypatch) -> None:
    report = make_report(tmp_path)
    assert _bmc(tmp_path, "list") == 2
    assert "run `bmc cases init`" in capsys.readouterr().err
    assert _bmc(tmp_path, "init") == 0
    assert "created the case database" in capsys.readouterr().out
    assert _bmc(tmp_path, "upgrade") == 0
    assert "revision 0004 -> 0004" in capsys.readouterr().out
    assert _bmc(tmp_path, "import", str(report), "--case-id", "C42") == 0
    assert "as case C42 of lab default: 2 field(s), 4 cell(s)" in capsys.readouterr().out
    assert _bmc(tmp_path, "list", "--search", "c4", "--status", "counted") == 0
    out = capsys.readouterr().out
    assert "| C42 | 1 | default | counted |" in out and "1 case(s)" in out
    other = make_report(tmp_path, "case43", offset=5)
    assert _bmc(tmp_path, "import", str(other), "--case-id", "C43", "--lab", "hema") == 0
    assert "as case C43 of lab hema" in capsys.readouterr().out
    assert _bmc(tmp_path, "list", "--lab", "hema") == 0
    out = capsys.readouterr().out
    assert "| C43 | 1 | hema | counted |" in out and "C42" not in out and "1 case(s)" in out
    assert _bmc(tmp_path, "import", str(other), "--case-id", "C44", "--lab", "a/b") == 2
    assert "lab 'a/b': use letters" in capsys.readouterr().err
    assert _bmc(tmp_path, "show", "C42") == 0
    assert "| Lym | 1 | 1 |" in capsys.readouterr().out
    assert _bmc(tmp_path, "show", "C42", "--json") == 0
    assert json.loads(capsys.readouterr().out)["fields"][0]["name"] == "f1"
    monkeypatch.setenv(cases_tool.PASSWORD_ENV, "correct horse")
    assert _bmc(tmp_path, "add-user", "alice", "--role", "admin") == 0
    assert "added admin alice (lab none: every lab)" in capsys.readouterr().out
    assert _bmc(tmp_path, "add-user", "rex") == 2
    assert "reviewer 'rex' needs a lab (--lab LAB)" in capsys.readouterr().err
    assert _bmc(tmp_path, "add-user", "rex", "--lab", "hema") == 0
    assert "added reviewer rex (lab hema)" in capsys.readouterr().out
    assert _bmc(tmp_path, "next", "--budget", "1") == 0
    assert "| 1 | C4" in capsys.readouterr().out
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "summary.json").write_text("[1, 2")
    for argv, why in [
        (["import", str(tmp_path / "missing")], "missing: no such report folder"),
        (["import", str(bad)], "bad/summary.json: corrupt summary.json"),
        (["show", "nope"], "case 'nope' is not in the case database"),
        (["export-coco", "C42", "--output", str(tmp_path / "x.json")], "no signed version"),
        (["add-user", "alice", "--lab", "hema"], "user 'alice' exists already"),
    ]:
        assert _bmc(tmp_path, *argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and why in err and err.count("\n") == 1, err
    assert not (tmp_path / "x.json").exists()
