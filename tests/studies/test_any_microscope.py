"""The any-microscope benchmark on a tiny hand-made set: synthetic smears (their red cells are the
ruler's) with blue discs as the cells, found by a stand-in detector that only sees cells near
its training size, counted with the automatic scale off and on."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from bmc_detectron.pipeline import CellCounter, Detections
from bmc_detectron.pipeline.scale_plan import ScaleOptions, make_setup
from bmc_detectron.smear import PROFILE_FILE, TrainingProfile
from studies.scale.any_microscope import page_text
from studies.scale.microscope_bench import (
    BenchSet,
    CaseResult,
    Condition,
    conditions,
    fill_base_scale,
    load_results,
    run_benchmark,
    save_results,
)
from studies.scale.microscope_report import aggregate, plot, verdicts
from tests.pipeline.helpers import smear_bgr, write_profile

BLUE = (255, 0, 0)  # BGR (pure green would blind the red-cell ruler)
RADIUS = 12
CENTRES = [(60, 60), (190, 80), (120, 190)]


class BlueDiscDetector:
    """Finds blue blobs whose longer side is within [20, 31] px (trained at 25 px discs)."""

    class_names = ["cell"]

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, image: np.ndarray) -> Detections:
        self.calls += 1
        b, g, r = (image[:, :, i].astype(int) for i in range(3))
        mask = ((b > 200) & (g < 60) & (r < 60)).astype(np.uint8)
        _, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        boxes = [[x, y, x + w, y + h] for x, y, w, h, _ in stats[1:] if 20 <= max(w, h) <= 31]
        n = len(boxes)
        return Detections(np.array(boxes, np.float32).reshape(-1, 4), [0.9] * n, [0] * n)


def blue_field(seed: int):
    image = smear_bgr(seed)
    for cx, cy in CENTRES:
        cv2.circle(image, (cx, cy), RADIUS, BLUE, thickness=-1)
    boxes = [[cx - RADIUS, cy - RADIUS, cx + RADIUS + 1, cy + RADIUS + 1] for cx, cy in CENTRES]
    return image, np.array(boxes, np.float64)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("microscope")
    write_profile(root / "model", n=6)
    profile = TrainingProfile.load(root / "model" / PROFILE_FILE)
    images, truth = [], {}
    for i, seed in enumerate((40, 41, 42, 44)):  # smears the ruler reads within 5 % at 0.7-1.4x
        image, boxes = blue_field(seed)
        path = root / f"field{i}.png"
        cv2.imwrite(str(path), image)
        images.append((i + 1, str(path)))
        truth[i + 1] = boxes
    setups = {
        "auto_off": make_setup(ScaleOptions(), profile),
        "auto_on": make_setup(ScaleOptions(auto=True), profile),
    }
    return root, BenchSet("discs", images, truth, base_scale=1.0), setups


def test_scale_condition_scales_boxes_with_the_rounded_size():
    image = np.zeros((97, 131, 3), np.uint8)
    out, (fx, fy) = Condition("scale", 0.4).apply(image)
    assert out.shape[:2] == (39, 52) and (fx, fy) == (52 / 131, 39 / 97)
    out, factors = Condition("scanner", 4.0).apply(image)
    assert out.shape == image.shape and factors == (1.0, 1.0)
    names = [c.name for c in conditions()]
    assert names[0] == "scale_0p4" and names[3] == "scale_1" and names[-1] == "scanner_4x"


def test_benchmark_counts_resumes_and_judges(bench):
    root, bset, setups = bench
    conds = conditions((0.7, 1.0, 1.4), (2.0,))
    det = BlueDiscDetector()
    results = run_benchmark(
        CellCounter(det, tile_size=0), setups, [bset], conds, root / "work", case_size=2, log=None
    )
    assert det.calls > 0 and len(results) == 4 * 2 * 2
    agg = aggregate(results)
    on = {k[1]: v for k, v in agg.items() if k[2] == "auto_on"}
    off = {k[1]: v for k, v in agg.items() if k[2] == "auto_off"}
    assert off["scale_1"]["recall"] == 1.0 and off["scale_1"]["precision"] == 1.0
    assert off["scanner_2x"]["recall"] == 1.0
    # too small / too large for the stand-in without a scale: nothing found, zero-cell cases
    assert off["scale_0p7"]["recall"] == 0.0 and off["scale_0p7"]["zero"] == 2
    assert off["scale_1p4"]["recall"] == 0.0 and off["scale_1p4"]["zero"] == 2
    # the red cells bring each case back to the training size: everything found again
    for cond in ("scale_0p7", "scale_1", "scale_1p4", "scanner_2x"):
        assert on[cond]["recall"] == 1.0 and on[cond]["precision"] == 1.0, cond
        assert on[cond]["scale_ok"] == 2 and on[cond]["zero"] == 0, cond
    chosen = {r.condition: r.chosen_scale for r in results if r.auto == "auto_on"}
    assert chosen["scale_0p7"] == pytest.approx(1 / 0.7, rel=0.15)
    assert [ok for _, _, ok in verdicts(agg)] == [True, True, True]
    # a second run counts nothing again and gives the same cases
    again = BlueDiscDetector()
    same = run_benchmark(
        CellCounter(again, tile_size=0), setups, [bset], conds, root / "work", case_size=2,
        log=None,
    )  # fmt: skip
    assert again.calls == 0 and same == results
    save_results(results, root / "results.json", {"x": 1})
    assert load_results(root / "results.json") == (results, {"x": 1})
    assert plot(agg, root / "plot.png").stat().st_size > 1000


def case(cond, value, auto, k, pred, gt, matched, chosen, true=1.0, kind="scale"):
    return CaseResult("d", cond, kind, value, auto, k, 5, pred, gt, matched, chosen, "x", true, [])


def test_verdicts_on_hand_built_cases():
    results = [
        case("scale_1", 1.0, "auto_on", 0, 10, 10, 9, 1.0),
        case("scale_1", 1.0, "auto_on", 1, 10, 10, 9, 1.05),
        case("scale_2", 2.0, "auto_on", 0, 10, 10, 8, 0.5, true=0.5),  # 0.8 / 0.9 of 1x
        case("scale_2", 2.0, "auto_on", 1, 0, 10, 0, 0.9, true=0.5),  # zero cells, wrong scale
        case("scale_2", 2.0, "auto_off", 0, 10, 10, 10, 1.0, true=0.5),
    ]
    agg = aggregate(results)
    row = agg[("d", "scale_2", "auto_on")]
    assert (row["recall"], row["precision"], row["zero"], row["scale_ok"]) == (0.4, 0.8, 1, 1)
    (t1, m1, ok1), (t2, m2, ok2), (t3, m3, ok3) = verdicts(agg)
    assert not ok1 and "recall: lowest 0.444 of 1x (at 2x)" in m1
    assert not ok2 and m2.startswith("3/4 cases")
    assert not ok3 and m3.startswith("1 case")
    meta = {
        "seconds": 1.0, "detector": "w.pth", "case_size": 5, "count_threshold": 0.5,
        "datasets": [{"name": "d", "fields": 20, "classes": ["WBC"], "truth": "known"}],
    }  # fmt: skip
    text = page_text(results, "cmd", meta, "fig.png")
    assert "**not met**" in text and "| d | 2x | 10 | 2 |" in text and "scored on WBC" in text


def test_unknown_true_scale_is_the_median_choice_at_1x():
    results = [
        case("scale_1", 1.0, "auto_on", 0, 1, 1, 1, 0.8, true=None),
        case("scale_1", 1.0, "auto_on", 1, 1, 1, 1, 0.9, true=None),
        case("scale_2", 2.0, "auto_off", 0, 1, 1, 1, 1.0, true=None),
        case("scanner_2x", 2.0, "auto_on", 0, 1, 1, 1, 1.0, true=None, kind="scanner"),
    ]
    fill_base_scale(results)
    assert [r.true_scale for r in results] == pytest.approx([0.85, 0.85, 0.425, 0.85])
    assert not math.isnan(results[0].true_scale)
