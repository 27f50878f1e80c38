"""Anchors fitted to the gt shapes: detectron2's anchor arithmetic, the training resize on hand
cases, recovery of known shapes, the search, and ``fit_anchors`` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.structures import BoxMode

from bmc_detectron.analysis.anchor_fit import (
    AnchorSet,
    anchor_quality,
    compass_search,
    fit_anchor_set,
    resize_factors,
    shape_iou,
    train_min_sizes,
    train_shapes,
)
from bmc_detectron.analysis_tools import fit_anchors
from bmc_detectron.data.datasets import unregister_dataset
from tests.analysis.helpers import CPU_CONFIG, register_tiny_synth


def _record(boxes, height=480, width=640):
    anns = [{"bbox": b, "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0} for b in boxes]
    return {"file_name": "a.png", "height": height, "width": width, "annotations": anns}


def test_shapes_are_detectron2s_cell_anchors():
    sizes, ratios = ((16.0, 20.16), (32.0, 40.32)), (0.5, 1.0, 2.0)
    gen = DefaultAnchorGenerator(
        sizes=[list(s) for s in sizes], aspect_ratios=[list(ratios)], strides=[8, 16]
    )
    cells = np.concatenate([a.numpy() for a in gen.cell_anchors])
    expected = np.stack([cells[:, 2] - cells[:, 0], cells[:, 3] - cells[:, 1]], axis=1)
    np.testing.assert_allclose(AnchorSet(sizes, ratios).shapes(), expected, rtol=1e-5)


def test_shape_iou_is_the_centred_box_iou():
    iou = shape_iou([[10, 20]], [[10, 20], [20, 10], [20, 40]])
    np.testing.assert_allclose(iou, [[1.0, 100 / 300, 0.25]])


def test_resize_arithmetic_on_a_hand_case():
    # 640 x 480 to short side 320: the long side 426.67 exceeds 426, so both shrink by
    # 426 / 426.67 and round back to 426 x 320 (detectron2's ResizeShortestEdge rounding)
    assert resize_factors(480, 640, 320, 426) == (426 / 640, 320 / 480)
    assert resize_factors(480, 640, 320, 1000) == (427 / 640, 320 / 480)
    wh, w = train_shapes([_record([[10, 20, 100, 50]])], (320,), 426)
    np.testing.assert_allclose(wh, [[round(100 * 426 / 640, 2), round(50 * 320 / 480, 2)]])
    np.testing.assert_allclose(w, [1.0])


def test_resize_sizes_jitter_and_quarter_turns_split_the_weight():
    rec = _record([[0, 0, 100, 50]])
    wh, w = train_shapes([rec], (240, 480), 1000, rot90=True)
    # short sides 240 and 480 of a 640 x 480 image: factors 0.5 and 1, each half the weight
    expected = {(50.0, 25.0): 0.25, (25.0, 50.0): 0.25, (100.0, 50.0): 0.25, (50.0, 100.0): 0.25}
    assert {tuple(s): v for s, v in zip(wh.tolist(), w.tolist())} == expected
    wh, w = train_shapes([rec], (480,), 1000, scale_range=[0.5, 2.0])
    assert len(wh) == 5 and np.isclose(w.sum(), 1.0)
    assert wh[:, 0].min() > 50 and wh[:, 0].max() < 200 and np.isclose(wh[2, 0], 100)
    assert train_min_sizes((300, 340), "range") == [300, 310, 320, 330, 340]


def test_record_without_size_is_named():
    with pytest.raises(ValueError, match="a.png: record without height"):
        train_shapes([{"file_name": "a.png", "annotations": []}], (320,), 426)


def test_two_known_shapes_are_recovered():
    # a 20 x 40 shape (scale 28.3, h / w 2) and an 80 x 80 one, on three levels
    wh = np.array([[20.0, 40.0], [80.0, 80.0]])
    current = AnchorSet(((16.0, 22.0), (32.0, 45.0), (64.0, 90.0)), (0.5, 1.0))
    fit = fit_anchor_set(wh, np.array([3.0, 1.0]), current)
    assert fit.quality_before.mean_iou < 0.95
    assert fit.quality_after.mean_iou > 0.999 and fit.quality_after.recall == 1.0
    assert fit.after.sizes[0] == (16.0, 22.0)  # no gt on P3: its sizes are kept
    assert fit.gts_per_level == (0.0, 3.0, 1.0)
    best = shape_iou(wh, fit.after.shapes()).max(axis=1)
    assert (best > 0.999).all()
    assert sorted(fit.after.ratios)[-1] == pytest.approx(2.0, abs=1e-3)


def test_fit_never_loses_to_the_current_anchors():
    rng = np.random.default_rng(0)
    s, r = np.exp(rng.normal(np.log(60), 0.3, 400)), np.exp(rng.normal(0, 0.25, 400))
    wh = np.stack([s / np.sqrt(r), s * np.sqrt(r)], axis=1)
    current = AnchorSet(
        ((16.0, 20.16, 25.4), (32.0, 40.32, 50.8), (64.0, 80.6, 101.6)), (0.5, 1, 2)
    )
    fit = fit_anchor_set(wh, np.ones(len(wh)), current)
    assert fit.quality_after.mean_iou > fit.quality_before.mean_iou + 0.02
    assert fit.quality_after == anchor_quality(wh, np.ones(len(wh)), fit.after)
    assert [len(lv) for lv in fit.after.sizes] == [3, 3, 3] and len(fit.after.ratios) == 3


def test_compass_search_stays_in_the_box():
    x, fx = compass_search(lambda x: float(((x - [0.3, 5.0]) ** 2).sum()), [0, 0], [-1, -1], [1, 1])
    np.testing.assert_allclose(x, [0.3, 1.0], atol=2e-3)
    assert fx == pytest.approx(16.0, abs=1e-2)


def test_no_gt_is_an_error():
    with pytest.raises(ValueError, match="no gt box"):
        fit_anchor_set(np.zeros((0, 2)), np.zeros(0), AnchorSet(((32.0,),), (1.0,)))


def test_unknown_dataset_is_a_clear_error(capsys):
    assert fit_anchors.main(["--config-file", CPU_CONFIG, "--dataset", "no_such_set"]) == 2
    err = capsys.readouterr().err
    assert "no_such_set" in err and "not registered" in err and "Traceback" not in err


def test_fit_anchors_end_to_end(tmp_path, capsys):
    name, _ = register_tiny_synth(tmp_path / "synth", "fit_anchors_synth")
    try:
        argv = ["--config-file", CPU_CONFIG, "--dataset", name, "--out", str(tmp_path / "o")]
        assert fit_anchors.main([*argv, "--max-evals", "200"]) == 0
    finally:
        unregister_dataset(name)
    printed = capsys.readouterr().out
    assert "mean best IoU" in printed and "ASPECT_RATIOS" in printed
    payload = json.loads((tmp_path / "o" / "anchor_fit.json").read_text())
    assert payload["after"]["mean_best_iou"] >= payload["before"]["mean_best_iou"]
    assert len(payload["after"]["sizes"]) == 5 and payload["dataset"] == name
    assert "SIZES: [[" in (tmp_path / "o" / "anchor_fit.yaml").read_text()
