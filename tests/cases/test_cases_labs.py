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
