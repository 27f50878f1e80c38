"""The batch scaling study: its cases (links to the fields) and its page's arithmetic."""

from __future__ import annotations

import cv2
import numpy as np

from studies.batch.scaling import build_page, make_cases
from studies.batch.slides_part import slides_ceiling


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


def _fields_data():
    run = dict(fields=20, load_before=3.5, load_after=4.0)
    return dict(
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


def test_page_rates_speed_up_and_overhead_against_the_single_process():
    data = _fields_data()
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


def _slide_part():
    run = dict(slides=10, fields=40, load_before=2.0, load_after=2.5)
    return dict(
        count=10,
        size=5000,
        dir="output/batch_scaling/slides",
        detector="output/demo/detector",
        classifier=None,
        facts=dict(
            microns_per_pixel=0.234375,
            level=0,
            level_mpp=0.234375,
            factor=0.5,
            model_mpp=0.46875,
            target_cells=500,
            reached=0,
            cells=1270,
            fields_range=[3, 5],
        ),
        runs=[
            dict(run, engine="single process", workers=1, wall_s=50.0, load_s=1.0),
            dict(run, engine="processes", workers=1, wall_s=55.0, identical=True, case_s=50.0),
            dict(run, engine="processes", workers=2, wall_s=31.25, identical=True, case_s=58.0),
            dict(run, engine="processes", workers=4, wall_s=40.0, identical=False, case_s=70.0),
        ],
    )


def test_page_with_slides_only_has_the_slide_table_and_its_ceiling():
    data = dict(
        command="python -m studies.batch.scaling --no-fields",
        date="2026-12-07",
        cores=2,
        machine_note="nothing else",
        slides=_slide_part(),
    )
    page = build_page(data)
    assert "## A folder of fields" not in page and "## A batch of slides" in page
    assert "10 synthetic smear slides of 5000 x 5000 px" in page
    assert "at level 0 (0.234375 um/px, resized by 0.5 to the model's 0.46875 um/px)" in page
    assert "40 fields and 1270 cells in all (0 of 10 slides reached 500)" in page
    assert "(no classifier: the detector's classes)" in page
    assert "model loading took 1.0 s of its 50.0 s" in page
    assert (
        "| engine | workers | slides | fields counted | wall (s) | slides/s | slides/s per worker "
        "| speed-up | wall vs single | reports identical | load avg before / after |" in page
    )
    row = "| single process | 1 | 10 | 40 | 50.0 | 0.20 | 0.20 | 1.00 | +0 % | reference |"
    assert row + " 2.0 / 2.5 |" in page
    assert "| processes | 2 | 10 | 40 | 31.2 | 0.32 | 0.16 | 1.60 | -38 % | yes |" in page
    assert "| processes | 4 | 10 | 40 | 40.0 | 0.25 | 0.06 | 1.25 | -20 % | NO |" in page
    assert (
        "Measured on the slides (speed-up = the single process's wall time / the run's): "
        "processes: 1 worker(s) 0.91x, 2 worker(s) 1.60x, "
        "4 worker(s) 1.25x the single process; start-up (1 worker: wall - time in cases) 5.0 s. "
        "Best: processes at 2 worker(s), 0.32 slides/s." in page
    )
    assert "4.9 s a slide in the single process. A task" in page  # (50 - 1) s over 10 slides
    assert "start-up at 1 worker (processes: 5.0 s) is paid once per run, against 49.0 s" in page
    assert "With 10 slides of 3 to 5 counted fields each, the split over the workers:" in page
    # 10 slides: 1 worker 10 rounds; 2 workers 5 full rounds; 4 workers 3 rounds, the last of 2
    assert "on 1 worker(s) 10 round(s), 1 slide(s) in the last;" in page
    assert "on 2 worker(s) 5 round(s), 2 slide(s) in the last;" in page
    assert "on 4 worker(s) 3 round(s), 2 slide(s) in the last (a round" in page
    assert "Overhead against the single process, at 1 worker" not in page  # the fields' text
    assert "idle then" not in page  # on 2 cores the last round of 2 slides fills both
    four_cores = " ".join(slides_ceiling(_slide_part(), cores=4))
    assert "on 4 worker(s) 3 round(s), 2 slide(s) in the last (2 core(s) idle then)" in four_cores


def test_page_with_both_parts_has_both_tables_in_order():
    data = dict(_fields_data(), slides=_slide_part())
    page = build_page(data)
    fields, slides = page.index("## A folder of fields"), page.index("## A batch of slides")
    ceiling = page.index("## The ceiling on 2 cores")
    assert fields < slides < ceiling
    assert "4.9 s a slide in the single process (a folder case above: 4.5 s)." in page
    assert page.index("Best: ray at 2 worker(s), 2.50 fields/s.") < page.index(
        "Best: processes at 2 worker(s), 0.32 slides/s."
    )
