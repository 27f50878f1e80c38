"""The batch scaling study: its cases (links to the fields) and its page's arithmetic."""

from __future__ import annotations

import cv2
import numpy as np

from studies.batch.scaling import build_page, make_cases


def test_cases_link_the_first_fields_in_groups(tmp_path):
    fields = tmp_path / "val"
    fields.mkdir()
    for i in range(7):
        cv2.imwrite(str(fields / f"{i:06d}.png"), np.zeros((4, 4, 3), np.uint8))
    root = make_cases(fields, tmp_path / "work", per_case=2, max_fields=5)
    cases = sorted(p.name for p in root.iterdir())
    assert cases == ["case00", "case01", "case02"]
    assert sorted(p.name for p in (root / "case02").iterdir()) == ["000004.png"]
    link = root / "case00" / "000001.png"
    assert link.is_symlink() and link.resolve() == (fields / "000001.png").resolve()


def test_page_rates_speed_up_and_overhead_against_the_single_process():
    run = dict(fields=20, load_before=3.5, load_after=4.0)
    data = dict(
        command="python -m studies.batch.scaling --max-fields 20",
        date="2026-12-06",
        cores=2,
        machine_note="two training runs",
        size_note="20 fields.",
        cases=2,
        fields_per_case=10,
        fields=20,
        field_size="640x480 px",
        fields_dir="datasets/marrow_real/val",
        detector="det",
        classifier="cls",
        threads_note="threads",
        runs=[
            dict(run, engine="single process", workers=1, wall_s=10.0, load_s=1.0),
            dict(run, engine="processes", workers=1, wall_s=12.5, identical=True, case_s=11.0),
            dict(run, engine="ray", workers=2, wall_s=8.0, identical=False, case_s=14.0),
        ],
    )
    page = build_page(data)
    assert "`python -m studies.batch.scaling --max-fields 20` on 2026-12-06" in page
    assert (
        "| single process | 1 | 20 | 10.0 | 2.00 | 2.00 | 1.00 | +0 % | reference | 3.5 / 4.0 |"
        in page
    )
    assert "| processes | 1 | 20 | 12.5 | 1.60 | 1.60 | 0.80 | +25 % | yes |" in page
    assert "| ray | 2 | 20 | 8.0 | 2.50 | 1.25 | 1.25 | -20 % | NO |" in page
    assert "processes: 1 worker(s) 0.80x the single process; start-up (1 worker: wall - " in page
    assert "time in cases) 1.5 s; ray: 2 worker(s) 1.25x the single process." in page
    assert "Best: ray at 2 worker(s), 2.50 fields/s." in page
