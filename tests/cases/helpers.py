"""A hand-made count report folder (two fields, known cells) and a fresh case database."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
from PIL import Image
from sqlalchemy import Connection

from bmc_detectron.cases.db import CaseDB, make_engine, upgrade
from bmc_detectron.cases.integrity import check_integrity
from bmc_detectron.pipeline.counter import Cell
from bmc_detectron.pipeline.report import FieldRecord, build_summary, write_summary
from bmc_detectron.structures.differential import Lineage
from bmc_detectron.utils.io import file_sha256, write_json_atomic

CLASSES = ["Lym", "Red", "Myelo"]
# field name -> its cells (box, det score, label, prob, probs)
CELLS: Dict[str, List[Cell]] = {
    "f1": [
        Cell((2.0, 3.0, 20.0, 22.5), 0.91, "cell", "Lym", 0.8, [0.8, 0.15, 0.05]),
        Cell((30.0, 4.0, 50.0, 26.0), 0.77, "cell", "Red", 0.4, [0.35, 0.4, 0.25]),
        Cell((5.0, 30.0, 25.0, 46.0), 0.66, "cell", "Other", 0.5, [0.5, 0.3, 0.2]),
    ],
    "f2": [Cell((10.0, 10.0, 30.0, 30.0), 0.88, "cell", "Myelo", 0.9, [0.05, 0.05, 0.9])],
}


def field_image(path: Path, value: int) -> Path:
    """A 64 x 48 PNG of one grey value (distinct values: distinct hashes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((48, 64, 3), value, np.uint8)).save(path)
    return path


def make_report(root: Path, name: str = "case42", offset: int = 0) -> Path:
    """A finished count report folder ``root/name`` with fields f1 and f2 (images under
    ``root/inputs-name``); ``offset`` makes the images' bytes differ between reports."""
    out = root / name
    records = []
    for i, (field, cells) in enumerate(CELLS.items()):
        image = field_image(root / f"inputs-{name}" / f"{field}.png", 100 + 10 * i + offset)
        rec = FieldRecord(
            name=field,
            image=str(image),
            image_sha256=file_sha256(image),
            fingerprint="fp",
            height=48,
            width=64,
            tiles=1,
            detect_s=0.1,
            recognise_s=0.1,
            cells=list(cells),
            flags=["stain outside the training range"] if field == "f2" else [],
        )
        write_json_atomic(rec.to_json(), out / "cells" / f"{field}.json")
        records.append(rec)
    settings = {"sources": {"detector": {"weights": "det.pth"}, "classifier": {"weights": "c.pth"}}}
    summary = build_summary(
        records, [], CLASSES, uncertain_below=0.5, lineage=Lineage(), settings=settings
    )
    write_summary(out, summary)
    return out


def new_db(tmp: Path, url: Optional[str] = None) -> CaseDB:
    """The case database at ``url`` (default an SQLite file ``tmp/db/cases.db``), migrated to
    head; its images in ``tmp/db/images`` whatever the database."""
    url = url or f"sqlite:///{tmp / 'db' / 'cases.db'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return CaseDB(url, tmp / "db" / "images")


def integrity_problems(conn: Connection) -> List[str]:
    """What :func:`bmc_detectron.cases.integrity.check_integrity` finds wrong (none: ``[]``); on
    PostgreSQL as a superuser with amcheck's page checks too (the extension made for the check,
    rolled back with the connection's transaction)."""
    superuser = (
        conn.dialect.name == "postgresql"
        and conn.exec_driver_sql(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
        ).scalar()
    )
    return check_integrity(conn, create_amcheck=bool(superuser)).problems
