"""Cases owned by a lab, in the library: a reviewer reads, lists, edits, signs, re-opens and
exports only their lab's cases (ForbiddenError otherwise); an admin without a lab sees all."""

from __future__ import annotations

from pathlib import Path

import pytest

from bmc_detectron.cases.errors import ForbiddenError
from bmc_detectron.cases.export import export_coco
from bmc_detectron.cases.importer import import_report
from bmc_detectron.cases.labs import lab_scope
from bmc_detectron.cases.queries import find_cases, get_case
from bmc_detectron.cases.review import add_cell, delete_cell, reclassify, reopen, sign
from bmc_detectron.cases.users import add_user, get_user

from .helpers import make_report, new_db


@pytest.fixture
def db(tmp_path: Path, db_url: str):
    """caseA in lab-a, caseB in lab-b; amy reviews lab-a, ben lab-b, root is an admin."""
    db = new_db(tmp_path, db_url)
    with db.session() as s:
        import_report(s, db.store, make_report(tmp_path, "caseA"), "imp", lab="lab-a")
        import_report(s, db.store, make_report(tmp_path, "caseB", offset=3), "imp", lab="lab-b")
        add_user(s, "amy", "correct horse", "reviewer", "root", "lab-a")
        add_user(s, "ben", "correct horse", "reviewer", "root", "lab-b")
        add_user(s, "root", "correct horse", "admin", "root")
    yield db
    db.close()


def _scope(s, name: str):
    user = get_user(s, name)
    return lab_scope(user.role, user.lab)


def test_each_reviewer_lists_and_reads_only_their_lab(db) -> None:
    with db.session() as s:
        assert [c.case_id for c in find_cases(s, lab=_scope(s, "amy"))] == ["caseA"]
        assert [c.case_id for c in find_cases(s, lab=_scope(s, "ben"))] == ["caseB"]
        assert sorted(c.case_id for c in find_cases(s, lab=_scope(s, "root"))) == [
            "caseA",
            "caseB",
        ]
        assert get_case(s, "caseA", lab="lab-a").lab == "lab-a"
        with pytest.raises(ForbiddenError, match="'caseB' belongs to another lab"):
            get_case(s, "caseB", lab="lab-a")
        with pytest.raises(ForbiddenError):
            get_case(s, "caseA", 1, lab="")  # a reviewer without a lab sees nothing


def test_edits_sign_reopen_export_of_another_lab_are_refused(db) -> None:
    with db.session() as s:
        case_b = get_case(s, "caseB")  # loaded without a scope: the edit itself checks
        cell = case_b.fields[0].cells[0].id
        for edit in (
            lambda: reclassify(s, case_b, cell, "Red", 1, "amy"),
            lambda: delete_cell(s, case_b, cell, 1, "amy"),
            lambda: add_cell(s, case_b, "f1", (1, 1, 9, 9), "Red", "amy"),
            lambda: sign(s, case_b, "amy"),
        ):
            with pytest.raises(ForbiddenError):
                edit()
        assert case_b.status == "counted"
        reclassify(s, case_b, cell, "Red", 1, "ben")
        sign(s, case_b, "root")  # an admin signs any lab's case
        with pytest.raises(ForbiddenError):
            reopen(s, case_b, "amy")
        with pytest.raises(ForbiddenError):
            export_coco(s, db.store, ["caseB"], lab="lab-a")
        assert len(export_coco(s, db.store, ["caseB"], lab="lab-b")["images"]) == 2
        again = reopen(s, case_b, "ben")
        assert (again.version, again.lab) == (2, "lab-b")  # a new version stays in its lab


def test_a_listed_lab_is_the_asked_one_for_an_admin_and_ones_own_for_a_reviewer() -> None:
    from bmc_detectron.cases.errors import CaseError
    from bmc_detectron.cases.labs import listed_lab

    assert listed_lab(None, None) is None and listed_lab(None, "") is None  # every lab
    assert listed_lab(None, "lab-b") == "lab-b"
    assert listed_lab("lab-a", None) == "lab-a" and listed_lab("lab-a", "lab-a") == "lab-a"
    with pytest.raises(ForbiddenError, match="lab 'lab-b' is not yours"):
        listed_lab("lab-a", "lab-b")
    with pytest.raises(CaseError, match="lab '../x': use letters"):
        listed_lab(None, "../x")


def test_exports_of_one_lab_by_the_command(db, tmp_path: Path, capsys) -> None:
    import json

    from bmc_detectron.tools import cases as cases_tool

    with db.session() as s:
        sign(s, get_case(s, "caseA"), "root")
        sign(s, get_case(s, "caseB"), "root")
    common = ["--db", db.url, "--images", str(db.store.root)]
    coco, tasks = tmp_path / "out" / "coco.json", tmp_path / "out" / "tasks.json"
    coco_cmd = ["export-coco", *common, "--output", str(coco)]
    assert cases_tool.main([*coco_cmd, "caseA", "--lab", "lab-a"]) == 0
    assert [c["case"] for c in json.loads(coco.read_text())["info"]["bmc_cases"]] == ["caseA"]
    assert cases_tool.main([*coco_cmd, "caseA", "caseB", "--lab", "lab-a"]) == 2
    assert "case 'caseB' belongs to another lab than 'lab-a'" in capsys.readouterr().err
    assert cases_tool.main([*coco_cmd, "caseA", "caseB"]) == 0  # no --lab: every lab
    assert len(json.loads(coco.read_text())["info"]["bmc_cases"]) == 2
    ls_cmd = ["export-labelstudio", *common, "--out", str(tasks)]
    for lab, case in (("lab-a", "caseA"), ("lab-b", "caseB")):  # no case named: the lab's
        assert cases_tool.main([*ls_cmd, "--lab", lab]) == 0
        assert {t["data"]["case"] for t in json.loads(tasks.read_text())} == {case}
    assert cases_tool.main([*ls_cmd, "--signed-only", "--lab", "lab-b", "caseB"]) == 0
    assert {t["data"]["case"] for t in json.loads(tasks.read_text())} == {"caseB"}
    capsys.readouterr()
    assert cases_tool.main([*ls_cmd, "--lab", "lab-b", "caseA"]) == 2
    assert "case 'caseA' belongs to another lab than 'lab-b'" in capsys.readouterr().err
    assert cases_tool.main([*ls_cmd, "--lab", "lab-c"]) == 2
    assert "no case to export (the database has no case of lab 'lab-c')" in capsys.readouterr().err
    assert cases_tool.main([*ls_cmd, "--lab", "a b"]) == 2
    assert "lab 'a b': use letters" in capsys.readouterr().err
    assert cases_tool.main([*ls_cmd]) == 0  # no --lab: every lab
    assert {t["data"]["case"] for t in json.loads(tasks.read_text())} == {"caseA", "caseB"}
