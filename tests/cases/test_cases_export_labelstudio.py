"""Cases as Label Studio tasks: the exact JSON of a hand-built case (a 200 x 100 field, two known
boxes), percent coordinates back to the same pixels, signed-only filtering, the labelling config,
and ``bmc cases export-labelstudio`` end to end with bad input in one line."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from bmc_detectron.cases.errors import ExportError, NotFoundError
from bmc_detectron.cases.export_labelstudio import (
    box_to_percent,
    export_labelstudio,
    labeling_config,
    percent_to_box,
)
from bmc_detectron.cases.importer import add_case, import_report
from bmc_detectron.cases.queries import get_case
from bmc_detectron.cases.review import reclassify, reopen, sign
from bmc_detectron.cases.users import add_user
from bmc_detectron.pipeline.counter import Cell
from bmc_detectron.pipeline.report import FieldRecord
from bmc_detectron.tools import cases as cases_tool

from .helpers import CLASSES, make_report, new_db

LABELS = [*CLASSES, "Other"]


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 180, 190)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def db(tmp_path: Path):
    """case7: one 200 x 100 field, cells Lym (20, 10, 60, 50) score 0.75 and Red
    (100, 25, 150, 100) score 0.25; the Red one reclassified Myelo by alice, case signed.
    case42 (the helpers' report): imported, not reviewed."""
    db = new_db(tmp_path)
    cells = [
        Cell((20.0, 10.0, 60.0, 50.0), 0.75, "cell", "Lym", 0.9, [0.9, 0.05, 0.05]),
        Cell((100.0, 25.0, 150.0, 100.0), 0.25, "cell", "Red", 0.6, [0.2, 0.6, 0.2]),
    ]
    rec = FieldRecord("w1", "w1.png", "", "fp", 100, 200, 1, 0.1, 0.1, cells)
    sources = {"detector": {"weights": "det.pth"}, "classifier": {"weights": "cls.pth"}}
    summary = {"class_names": CLASSES, "uncertain_below": 0.5, "settings": {"sources": sources}}
    with db.session() as s:
        add_user(s, "alice", "correct horse", "reviewer", "admin0", "default")
        case = add_case(s, db.store, "case7", [rec], [_png(200, 100)], summary, "hand", "alice")
        reclassify(s, case, case.fields[0].cells[1].id, "Myelo", 1, "alice")
        sign(s, case, "alice")
        import_report(s, db.store, make_report(tmp_path), "importer")
    yield db
    db.close()


def test_exact_tasks_of_a_hand_built_case(db) -> None:
    with db.session() as s:
        out = export_labelstudio(s, db.store, ["case7"], image_root="/data/local-files/?d=")
        fld = get_case(s, "case7").fields[0]
        lym, red = (c.id for c in fld.cells)
        rel = f"{fld.image_sha256[:2]}/{fld.image_sha256}.png"

    def region(prefix, cid, x, y, w, h, label, score=None):
        r = {
            "id": f"{prefix}{cid}",
            "type": "rectanglelabels",
            "from_name": "label",
            "to_name": "image",
            "original_width": 200,
            "original_height": 100,
            "image_rotation": 0,
            "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0},
        }
        r["value"]["rectanglelabels"] = [label]
        if score is not None:
            r["score"] = score
        return r

    want = {
        "data": {"image": f"/data/local-files/?d={rel}", "case": "case7", "version": 1},
        "annotations": [
            {
                "result": [
                    region("a", lym, 10.0, 10.0, 20.0, 40.0, "Lym"),
                    region("a", red, 50.0, 25.0, 25.0, 75.0, "Myelo"),
                ]
            }
        ],
        "predictions": [
            {
                "model_version": "cls.pth",
                "score": 0.5,
                "result": [
                    region("p", lym, 10.0, 10.0, 20.0, 40.0, "Lym", 0.75),
                    region("p", red, 50.0, 25.0, 25.0, 75.0, "Red", 0.25),
                ],
            }
        ],
    }
    want["data"]["field"] = "w1"
    assert json.loads(json.dumps(out.tasks)) == [want]
    assert out.labels == LABELS and out.exported == {"case7": 1} and out.left_out == {}
    assert labeling_config(out.labels) == (
        "<View>\n"
        '  <Image name="image" value="$image" zoom="true"/>\n'
        '  <RectangleLabels name="label" toName="image">\n'
        '    <Label value="Lym"/>\n    <Label value="Red"/>\n    <Label value="Myelo"/>\n'
        '    <Label value="Other"/>\n'
        "  </RectangleLabels>\n</View>\n"
    )


def test_percent_coordinates_round_trip_to_pixels(db) -> None:
    for box, w, h in [((20, 10, 60, 50), 200, 100), ((3.3, 7.1, 61.9, 47.0), 64, 48)]:
        back = percent_to_box(box_to_percent(box, w, h), w, h)
        assert back == pytest.approx(list(box), abs=1e-9)
    with db.session() as s:
        out = export_labelstudio(s, db.store, ["case7", "case42"])
        cases = {c: get_case(s, c) for c in ("case7", "case42")}
        want = {
            (c.case_id, f.name): [v for cell in f.cells for v in cell.box]
            for c in cases.values()
            for f in c.fields
        }
    for task in out.tasks:
        results = task["predictions"][0]["result"]
        got = [
            v
            for r in results
            for v in percent_to_box(r["value"], r["original_width"], r["original_height"])
        ]
        assert got == pytest.approx(want[(task["data"]["case"], task["data"]["field"])])
        assert Path(task["data"]["image"]).is_file()


def test_signed_only_filters_and_picks_the_signed_version(db) -> None:
    with db.session() as s:
        reopen(s, get_case(s, "case7"), "alice")  # version 2, in review
    with db.session() as s:
        every = export_labelstudio(s, db.store)
        signed = export_labelstudio(s, db.store, signed_only=True)
        named = export_labelstudio(s, db.store, ["case42", "case7"], signed_only=True)
    assert every.exported == {"case42": 1, "case7": 2}
    assert [t["data"]["field"] for t in every.tasks] == ["f1", "f2", "w1"]
    assert not any("annotations" in t for t in every.tasks)  # nothing signed as exported
    first = every.tasks[0]["predictions"][0]["result"]
    assert [r["value"]["rectanglelabels"] for r in first] == [["Lym"], ["Red"], ["Other"]]
    for out in (signed, named):
        assert out.exported == {"case7": 1}
        assert [t["data"]["version"] for t in out.tasks] == [1]
        assert "annotations" in out.tasks[0]
        assert out.left_out == {"case42": "never signed (latest version 1 is counted)"}


def test_unknown_case_and_nothing_to_export_are_refused(db) -> None:
    with db.session() as s:
        with pytest.raises(NotFoundError, match="case 'nope' is not in the case database"):
            export_labelstudio(s, db.store, ["case7", "nope"])
        with pytest.raises(ExportError, match="no case to export .*case42: never signed"):
            export_labelstudio(s, db.store, ["case42"], signed_only=True)


def test_tool_writes_tasks_and_config(db, tmp_path: Path, capsys) -> None:
    common = ["--db", db.url, "--images", str(db.store.root)]
    out = tmp_path / "ls" / "tasks.json"
    argv = ["export-labelstudio", *common, "--out", str(out), "--signed-only"]
    assert cases_tool.main([*argv, "--image-root", "http://host/img"]) == 0
    printed = capsys.readouterr().out
    assert "1 task(s) from 1 case(s) (1 with the reviewed boxes)" in printed
    assert "left out case42: never signed" in printed
    tasks = json.loads(out.read_text())
    assert tasks[0]["data"]["image"].startswith("http://host/img/")
    assert (tmp_path / "ls" / "labeling.xml").read_text().count("<Label value=") == 4
    assert cases_tool.main(["export-labelstudio", *common, "--out", str(out), "nope"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: case 'nope' is not in the case database"
