"""ONNX export and the ONNX Runtime path (bmc_detectron.deploy, tools.export_onnx).

Seeded random models are exported once per module (through the command line) and compared with
detectron2's ``DefaultPredictor`` / the PyTorch classifier: detections as sets (boxes within
0.01 px, scores within 1e-4, same classes), probabilities and logits within 1e-4.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
from pathlib import Path
from typing import Dict, List, Sequence

import cv2
import numpy as np
import pytest
import torch
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model

import bmc_detectron
from bmc_detectron.config import build_cfg
from bmc_detectron.data.synthetic import generate_image
from bmc_detectron.deploy import (
    OnnxCellClassifier,
    OnnxDetector,
    build_onnx_counter,
    compare_detections,
    read_sidecar,
)
from bmc_detectron.deploy.export import _op_types
from bmc_detectron.pipeline import CellClassifier, CellCounter, Detections, Detector
from bmc_detectron.tools import export_onnx as tool
from bmc_detectron.utils.io import file_sha256

onnx = pytest.importorskip("onnx", reason="pip install -e '.[deploy]'")
pytest.importorskip("onnxruntime", reason="pip install -e '.[deploy]'")

REPO = Path(__file__).resolve().parents[2]
DET_CONFIG = str(REPO / "configs/cpu/retinanet_R_18_full_cpu.yaml")
DCN_CONFIG = str(REPO / "configs/cpu/retinanet_R_18_PAN_SE_DCN_cpu.yaml")
GFL_CONFIG = str(REPO / "configs/cpu/retinanet_R_18_full_GFL_cpu.yaml")
CLS_CONFIG = str(REPO / "configs/recognition/cell_classifier_R_18_synth_cpu.yaml")
THRESH = 0.25
# 3 classes, short side 128 (at most 192), a threshold that this random model passes
DET_OPTS = "MODEL.RETINANET.NUM_CLASSES 3 INPUT.MIN_SIZE_TEST 128 INPUT.MAX_SIZE_TEST 192".split()
DET_OPTS += ["MODEL.RETINANET.SCORE_THRESH_TEST", str(THRESH)]
SMALL_NECK = ["MODEL.FPN.OUT_CHANNELS", "32", "MODEL.BMC.NECK.SE_REDUCTION", "4"]
CLS_NAMES = ["A", "B", "C"]
CLS_OPTS = "MODEL.BMC.CLASSIFIER.NUM_CLASSES 3 MODEL.BMC.CLASSIFIER.CROP_SIZE 32".split()
CLS_OPTS += ["MODEL.BMC.CLASSIFIER.CLASS_NAMES", json.dumps(CLS_NAMES)]
# parity is against float32 PyTorch (the CPU classifier configs train in bf16)
CLS_OPTS += ["BMC.PRECISION.CPU_BF16", "False", "BMC.PRECISION.CHANNELS_LAST", "False"]
BOX_TOL, SCORE_TOL = 0.01, 1e-4


def _seeded_detector_weights(config: str, opts: Sequence[str], path: Path) -> Path:
    """Random weights (seed 0) whose scores spread over (0, 1); offsets of DCN convs too."""
    torch.manual_seed(0)
    model = build_model(build_cfg(config, [*opts, "MODEL.DEVICE", "cpu"]))
    with torch.no_grad():
        torch.nn.init.normal_(model.head.cls_score.weight, std=0.3)
        model.head.cls_score.bias.fill_(-3.0)
        for name, module in model.named_modules():
            if name.endswith("offset_conv"):
                torch.nn.init.normal_(module.weight, std=0.02)
    torch.save({"model": model.state_dict()}, path)
    return path


def _export(config: str, weights: Path, output: Path, opts: Sequence[str]) -> str:
    """Export with the command line; returns what it printed (it must exit 0)."""
    printed = io.StringIO()
    argv = ["--config-file", config, "--weights", str(weights), "--output", str(output), *opts]
    with contextlib.redirect_stdout(printed):
        status = tool.main(argv)
    assert status == 0, printed.getvalue()
    return printed.getvalue()


def _training_profile(folder: Path) -> Path:
    """``training_profile.json`` of two synthetic smears in ``folder``."""
    from bmc_detectron.smear import PROFILE_FILE, profile_from_records

    records = []
    for i in range(2):
        path = folder / f"train{i}.png"
        cv2.imwrite(str(path), _smear(128, 128, 40 + i))
        records.append({"file_name": str(path), "height": 128, "width": 128})
    return profile_from_records(records, microns_per_pixel=0.25).save(folder / PROFILE_FILE)


@pytest.fixture(scope="module")
def det(tmp_path_factory) -> Dict[str, object]:
    """The exported detector: paths, the printed line, a DefaultPredictor on the same weights."""
    folder = tmp_path_factory.mktemp("onnx_det")
    weights = _seeded_detector_weights(DET_CONFIG, DET_OPTS, folder / "det.pth")
    _training_profile(folder)  # beside the weights: export copies it into the sidecar
    onnx_path = folder / "det.onnx"
    printed = _export(DET_CONFIG, weights, onnx_path, DET_OPTS)
    cfg = build_cfg(DET_CONFIG, [*DET_OPTS, "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", str(weights)])
    return {
        "weights": weights,
        "onnx": onnx_path,
        "printed": printed,
        "cfg": cfg,
        "torch": DefaultPredictor(cfg),
        "runtime": OnnxDetector(onnx_path, threads=1),
    }


@pytest.fixture(scope="module")
def clf(tmp_path_factory) -> Dict[str, object]:
    """The exported classifier (seed 0, spread logits) and the PyTorch model."""
    folder = tmp_path_factory.mktemp("onnx_cls")
    cfg = build_cfg(CLS_CONFIG, [*CLS_OPTS, "MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    if not hasattr(model, "forward_logits"):
        pytest.skip("BMCCellClassifier has no forward_logits yet")
    with torch.no_grad():
        torch.nn.init.normal_(model.cls_score.weight, std=0.3)
    weights = folder / "cls.pth"
    torch.save({"model": model.state_dict()}, weights)
    onnx_path = folder / "cls.onnx"
    printed = _export(CLS_CONFIG, weights, onnx_path, CLS_OPTS)
    return {"model": model, "weights": weights, "onnx": onnx_path, "printed": printed}


def _torch_detections(predictor: DefaultPredictor, image: np.ndarray) -> Detections:
    """The PyTorch model as the count runs it (detectron2's predictor, but the input padded by
    repeating its edges, as the ONNX runtime pads it)."""
    from bmc_detectron.pipeline.detector import Detector

    cfg = predictor.cfg
    detector = Detector(
        model=predictor.model,
        class_names=[],
        min_size=int(cfg.INPUT.MIN_SIZE_TEST),
        max_size=int(cfg.INPUT.MAX_SIZE_TEST),
        input_format=cfg.INPUT.FORMAT,
    )
    return detector(image)


def _assert_same(det: Dict[str, object], image: np.ndarray, min_count: int = 1) -> None:
    ours = det["runtime"](image)
    theirs = _torch_detections(det["torch"], image)
    result = compare_detections(theirs, ours)
    assert result.count_a >= min_count, "the test model should detect something here"
    assert result.equal(BOX_TOL, SCORE_TOL), result.to_json()
    assert ours.boxes.dtype == np.float32 and ours.boxes.shape == (len(ours), 4)
    h, w = image.shape[:2]
    assert (ours.boxes >= 0).all() and (ours.boxes[:, 0::2] <= w).all()
    assert (ours.boxes[:, 1::2] <= h).all()


def _smear(height: int, width: int, seed: int) -> np.ndarray:
    rgb, _, _ = generate_image(np.random.default_rng(seed), height, width)
    return np.ascontiguousarray(rgb[:, :, ::-1])


def test_export_prints_a_passing_check(det):
    assert "detector exported" in det["printed"] and "check PASSED" in det["printed"]


def test_graph_has_nms_and_dynamic_size(det):
    model = onnx.load(str(det["onnx"]))
    assert "NonMaxSuppression" in _op_types(model.graph)
    (image, thresh) = model.graph.input
    dims = [d.dim_param or d.dim_value for d in image.type.tensor_type.shape.dim]
    assert dims == [3, "height", "width"] and thresh.name == "score_threshold"


def test_synthetic_smears_match_pytorch(det):
    for seed, (h, w) in enumerate([(200, 260), (256, 256)]):
        _assert_same(det, _smear(h, w, seed), min_count=5)


def test_odd_sizes_match_pytorch(det):
    _assert_same(det, _smear(333, 517, 3), min_count=5)
    _assert_same(det, _smear(517, 333, 4), min_count=5)
    _assert_same(det, _smear(61, 97, 5), min_count=0)  # smaller than the test size


def test_bccd_images_match_pytorch(det, shared_root):
    images = sorted((shared_root / "bccd" / "JPEGImages").glob("*.jpg"))[:2]
    assert images, f"no BCCD images in {shared_root / 'bccd'}"
    for path in images:
        _assert_same(det, cv2.imread(str(path)), min_count=1)


def test_unresized_detection_matches_pytorch(det):
    """The scale probe and a fixed-scale count detect with the test resize off: the graph then
    takes the image at its own size (dynamic H and W), as the PyTorch detector does."""
    from bmc_detectron.pipeline.detector import Detector
    from bmc_detectron.pipeline.field_prep import unresized

    torch_det = unresized(Detector.from_config(DET_CONFIG, str(det["weights"]), DET_OPTS))
    onnx_det = unresized(det["runtime"])
    assert onnx_det.min_size == 0 and det["runtime"].min_size > 0
    image = _smear(300, 420, 6)
    tensor, size = onnx_det.preprocess(image)
    assert size == (300, 420)  # not resized to the test size
    div = onnx_det.size_divisibility
    assert div > 1 and tensor.shape[1:] == (-(-300 // div) * div, -(-420 // div) * div)
    result = compare_detections(torch_det(image), onnx_det(image))
    assert result.count_a >= 1 and result.equal(BOX_TOL, SCORE_TOL), result.to_json()


def test_blank_image_gives_no_detections(det):
    blank = np.full((150, 210, 3), 255, dtype=np.uint8)
    runtime = OnnxDetector(det["onnx"], threads=1, score_threshold=0.99)
    cfg = det["cfg"].clone()
    cfg.defrost()
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = 0.99
    assert len(_torch_detections(DefaultPredictor(cfg), blank)) == 0
    empty = runtime(blank)
    assert len(empty) == 0 and empty.boxes.shape == (0, 4) and empty.classes.shape == (0,)


def test_threshold_is_a_graph_input(det):
    image = _smear(200, 260, 7)
    cfg = det["cfg"].clone()
    cfg.defrost()
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = 0.75
    theirs = _torch_detections(DefaultPredictor(cfg), image)
    ours = OnnxDetector(det["onnx"], threads=1, score_threshold=0.75)(image)
    result = compare_detections(theirs, ours)
    assert result.count_a > 0 and ours.scores.min() >= 0.75
    assert len(det["runtime"](image)) > len(ours)  # at the default threshold (0.25)
    assert result.equal(BOX_TOL, SCORE_TOL), result.to_json()


def test_detector_sidecar(det):
    meta = read_sidecar(det["onnx"], "detector")
    cfg = det["cfg"]
    assert len(meta["class_names"]) == 3 and len(meta["class_colors"]) == 3
    assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in meta["class_colors"])
    assert meta["input"]["format"] == "BGR" and meta["input"]["normalized_in_graph"]
    assert meta["input"]["pixel_mean"] == pytest.approx(list(cfg.MODEL.PIXEL_MEAN))
    assert meta["input"]["pixel_std"] == pytest.approx(list(cfg.MODEL.PIXEL_STD))
    resize = meta["resize"]
    assert (resize["min_size"], resize["max_size"]) == (128, 192)
    assert resize["rule"] == "ResizeShortestEdge" and resize["size_divisibility"] > 0
    assert meta["score_threshold"] == pytest.approx(THRESH)
    source = meta["source"]
    assert source["weights_sha256"] == file_sha256(det["weights"])
    assert source["config_file_sha256"] == file_sha256(DET_CONFIG)
    assert source["bmc_detectron_version"] == bmc_detectron.__version__
    assert meta["verification"]["passed"] and meta["deformable"] == []
    assert meta["scale"] == {"microns_per_pixel": None, "rbc_diameter_px": None}
    beside = json.loads((Path(det["weights"]).parent / "training_profile.json").read_text())
    assert meta["training_profile"] == beside and beside["microns_per_pixel"] == 0.25


def test_classifier_matches_pytorch(clf):
    runtime = OnnxCellClassifier(clf["onnx"], threads=1)
    gen = torch.Generator().manual_seed(1)
    for batch in (1, 7):
        crops = torch.randint(0, 256, (batch, 3, 32, 32), generator=gen).to(torch.uint8)
        with torch.no_grad():
            logits = clf["model"].forward_logits(crops.float()).numpy()
        probs = clf["model"].predict_crops(crops).numpy()
        assert np.abs(runtime.predict_logits(crops) - logits).max() <= 1e-4
        assert np.abs(runtime.predict_crops(crops.numpy()) - probs).max() <= 1e-4
        assert runtime.predict_crops(crops).shape == (batch, 3)
    assert runtime.predict_crops(np.zeros((0, 3, 32, 32), np.uint8)).shape == (0, 3)


def _with_option(clf, tmp_path, key: str, value, default, seed: int):
    """The classifier exported with ``MODEL.BMC.CLASSIFIER.<key> value`` (its runtime), random
    crops, and the torch model's logits and features of them with that option set."""
    onnx = tmp_path / f"{key.lower()}.onnx"
    option = [f"MODEL.BMC.CLASSIFIER.{key}", str(value)]
    _export(CLS_CONFIG, clf["weights"], onnx, [*CLS_OPTS, *option])
    model, attr = clf["model"], key.lower()
    crops = torch.randint(0, 256, (3, 3, 32, 32), generator=torch.Generator().manual_seed(seed))
    setattr(model, attr, value)
    try:
        logits, features = model.predict_logits_and_features(crops.to(torch.uint8))
    finally:
        setattr(model, attr, default)
    return OnnxCellClassifier(onnx, threads=1), crops, logits.numpy(), features.numpy()


def test_classifier_with_test_flips_matches_pytorch(clf, tmp_path):
    # the averaged views are part of the exported graph
    runtime, crops, logits, features = _with_option(clf, tmp_path, "TEST_FLIPS", 8, 1, seed=2)
    onnx_logits, onnx_features = runtime.predict_logits_and_features(crops.numpy())
    assert np.abs(onnx_logits - logits).max() <= 1e-4
    assert np.abs(onnx_features - features).max() <= 1e-4
    turned = runtime.predict_logits(torch.rot90(crops, 1, (2, 3)).numpy())
    assert np.abs(turned - onnx_logits).max() <= 1e-4


def test_classifier_with_a_cosine_layer_matches_pytorch(clf, tmp_path):
    # the same weights read as a cosine layer: the normalisations are part of the graph
    runtime, crops, logits, _ = _with_option(clf, tmp_path, "COSINE_SCALE", 16.0, 0.0, seed=3)
    onnx_logits = runtime.predict_logits(crops.numpy())
    assert np.abs(onnx_logits - logits).max() <= 1e-4 and np.abs(logits).max() <= 16.0


def test_classifier_sidecar(clf):
    meta = read_sidecar(clf["onnx"], "classifier")
    assert meta["class_names"] == CLS_NAMES and meta["crop_size"] == 32
    assert meta["crop_margin"] == pytest.approx(0.15) and meta["input"]["format"] == "BGR"
    assert meta["verification"]["passed"] and "check PASSED" in clf["printed"]
    runtime = OnnxCellClassifier(clf["onnx"])
    assert (runtime.class_names, runtime.crop_size, runtime.crop_margin) == (CLS_NAMES, 32, 0.15)


def test_open_set_threshold_travels_with_the_export(clf, tmp_path):
    from bmc_detectron.evaluation.open_set import (
        OpenSetThreshold,
        open_set_score,
        write_threshold,
    )

    weights = tmp_path / "cls.pth"
    weights.write_bytes(Path(clf["weights"]).read_bytes())
    assert CellClassifier.from_config(CLS_CONFIG, str(weights), CLS_OPTS).open_set is None
    gen = torch.Generator().manual_seed(2)
    crops = torch.randint(0, 256, (21, 3, 32, 32), generator=gen).to(torch.uint8)
    scores = np.sort(open_set_score(clf["model"].predict_logits(crops)))
    threshold = float(scores[9] + scores[10]) / 2  # 10 of the 21 crops below it
    write_threshold(weights, OpenSetThreshold(threshold, weights_sha256=file_sha256(weights)))
    onnx_path = tmp_path / "cls.onnx"
    _export(CLS_CONFIG, weights, onnx_path, CLS_OPTS)
    runtime = OnnxCellClassifier(onnx_path, threads=1).as_cell_classifier()
    torch_clf = CellClassifier.from_config(CLS_CONFIG, str(weights), CLS_OPTS)
    assert runtime.open_set == torch_clf.open_set and runtime.open_set.threshold == threshold
    ours = runtime.open_set.flags(runtime.model.predict_logits(crops))
    theirs = torch_clf.open_set.flags(torch_clf.model.predict_logits(crops))
    assert ours.sum() == 10 and (ours == theirs).all()


def test_a_knn_threshold_and_its_statistics_travel_with_the_export(clf, tmp_path):
    from bmc_detectron.evaluation.feature_scores import fit_knn, statistics_path
    from bmc_detectron.evaluation.open_set import OpenSetError, OpenSetThreshold, write_threshold

    weights = tmp_path / "cls.pth"
    weights.write_bytes(Path(clf["weights"]).read_bytes())
    gen = torch.Generator().manual_seed(3)
    crops = torch.randint(0, 256, (21, 3, 32, 32), generator=gen).to(torch.uint8)
    stats = fit_knn(clf["model"].predict_features(crops[:11]), k=1)  # 11 crops in the bank
    # those 11 score 0 (their own feature); the 10 others lie further
    threshold = OpenSetThreshold(-1e-3, score="knn", statistics=stats)
    write_threshold(weights, dataclasses.replace(threshold, weights_sha256=file_sha256(weights)))
    onnx_path = tmp_path / "cls.onnx"
    _export(CLS_CONFIG, weights, onnx_path, CLS_OPTS)
    assert statistics_path(onnx_path).is_file()  # cls.open_set.npz beside cls.onnx
    runtime = OnnxCellClassifier(onnx_path, threads=1).as_cell_classifier()
    torch_clf = CellClassifier.from_config(CLS_CONFIG, str(weights), CLS_OPTS)
    assert runtime.open_set.score == torch_clf.open_set.score == "knn"
    ours = runtime.open_set.flags(None, runtime.model.predict_logits_and_features(crops)[1])
    theirs = torch_clf.open_set.flags(None, torch_clf.model.predict_features(crops))
    assert ours.sum() == 10 and (ours == theirs).all() and not ours[:11].any()
    statistics_path(onnx_path).write_bytes(b"broken")  # a damaged copy names itself
    with pytest.raises(OpenSetError, match="cls.open_set.npz"):
        OnnxCellClassifier(onnx_path, threads=1)


def _cells_as_detections(cells: List, names: Sequence[str]) -> Detections:
    return Detections(
        [c.box for c in cells], [c.prob for c in cells], [list(names).index(c.label) for c in cells]
    )


def test_onnx_counter_matches_pytorch_counter(det, clf):
    torch_counter = CellCounter(
        Detector.from_config(DET_CONFIG, str(det["weights"]), [*DET_OPTS, "MODEL.DEVICE", "cpu"]),
        CellClassifier.from_config(CLS_CONFIG, str(clf["weights"]), CLS_OPTS),
        score_threshold=0.3,
    )
    onnx_counter = build_onnx_counter(det["onnx"], clf["onnx"], threads=1, score_threshold=0.3)
    image = _smear(240, 300, 11)
    ours, theirs = onnx_counter.count_image(image), torch_counter.count_image(image)
    assert len(theirs) > 0 and onnx_counter.class_names == CLS_NAMES
    result = compare_detections(
        _cells_as_detections(theirs, CLS_NAMES), _cells_as_detections(ours, CLS_NAMES)
    )
    # crops are cut at boxes equal to ~1e-5 px: the same pixels, the same probabilities
    assert result.equal(BOX_TOL, 1e-4), result.to_json()


def test_deformable_config_exports(tmp_path):
    opts = [*DET_OPTS, *SMALL_NECK, "MODEL.RETINANET.SCORE_THRESH_TEST", "0.05"]
    opts += ["MODEL.RESNETS.DEFORM_ON_PER_STAGE", "[False,False,False,True]"]
    weights = _seeded_detector_weights(DCN_CONFIG, opts, tmp_path / "dcn.pth")
    printed = _export(DCN_CONFIG, weights, tmp_path / "dcn.onnx", opts)
    assert "GridSample" in _op_types(onnx.load(str(tmp_path / "dcn.onnx")).graph)
    meta = read_sidecar(tmp_path / "dcn.onnx", "detector")
    assert meta["deformable"] and meta["verification"]["passed"], printed
    cfg = build_cfg(DCN_CONFIG, [*opts, "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", str(weights)])
    image = _smear(333, 517, 2)
    theirs = _torch_detections(DefaultPredictor(cfg), image)
    result = compare_detections(theirs, OnnxDetector(tmp_path / "dcn.onnx", threads=1)(image))
    assert result.count_a > 0 and result.equal(BOX_TOL, SCORE_TOL), result.to_json()


def test_gfl_config_exports(tmp_path):
    """GFL's box distributions (MODEL.BMC.HEAD.REG_MAX 16): the softmax and integral are in the
    graph, whose detections match PyTorch's."""
    opts = [*DET_OPTS, *SMALL_NECK, "MODEL.RETINANET.SCORE_THRESH_TEST", "0.05"]
    weights = _seeded_detector_weights(GFL_CONFIG, opts, tmp_path / "gfl.pth")
    state = torch.load(weights)
    torch.nn.init.normal_(state["model"]["head.bbox_pred.weight"], std=0.3)  # uneven bins
    torch.save(state, weights)
    printed = _export(GFL_CONFIG, weights, tmp_path / "gfl.onnx", opts)
    assert "Softmax" in _op_types(onnx.load(str(tmp_path / "gfl.onnx")).graph)
    meta = read_sidecar(tmp_path / "gfl.onnx", "detector")
    assert meta["verification"]["passed"], printed
    cfg = build_cfg(GFL_CONFIG, [*opts, "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", str(weights)])
    image = _smear(333, 517, 2)
    theirs = _torch_detections(DefaultPredictor(cfg), image)
    result = compare_detections(theirs, OnnxDetector(tmp_path / "gfl.onnx", threads=1)(image))
    assert result.count_a > 0 and result.equal(BOX_TOL, SCORE_TOL), result.to_json()


def test_score_voting_exports(tmp_path):
    """PAA's score voting (MODEL.BMC.SCORE_VOTING_SIGMA) is traced into the graph: its
    detections match PyTorch's, whose voted boxes differ from the plain model's."""
    opts = [*DET_OPTS, *SMALL_NECK, "MODEL.RETINANET.SCORE_THRESH_TEST", "0.05"]
    weights = _seeded_detector_weights(DET_CONFIG, opts, tmp_path / "det.pth")
    voting = [*opts, "MODEL.BMC.SCORE_VOTING_SIGMA", "0.025"]
    printed = _export(DET_CONFIG, weights, tmp_path / "vote.onnx", voting)
    meta = read_sidecar(tmp_path / "vote.onnx", "detector")
    assert meta["verification"]["passed"] and meta["score_voting_sigma"] == 0.025, printed
    image = _smear(333, 517, 2)

    def torch_dets(extra):
        cfg = build_cfg(DET_CONFIG, [*extra, "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", str(weights)])
        return _torch_detections(DefaultPredictor(cfg), image)

    voted, plain = torch_dets(voting), torch_dets(opts)
    result = compare_detections(voted, OnnxDetector(tmp_path / "vote.onnx", threads=1)(image))
    assert result.count_a > 0 and result.equal(BOX_TOL, SCORE_TOL), result.to_json()
    assert not compare_detections(voted, plain).equal(BOX_TOL, SCORE_TOL)


#: the refinement pooling from a P2 level the dense head does not read (a FeatureTap)
P2_TAP = ["MODEL.RESNETS.OUT_FEATURES", '["res2", "res3", "res4", "res5"]']
P2_TAP += ["MODEL.FPN.IN_FEATURES", '["res2", "res3", "res4", "res5"]']
P2_TAP += ["MODEL.BMC.REFINE.IN_FEATURES", '["p2", "p3", "p4", "p5"]']


@pytest.mark.parametrize(
    "second_nms, cascade, levels",
    [(True, "[]", []), (False, "[]", []), (False, "[0.6]", []), (False, "[]", P2_TAP)],
)
def test_box_refinement_exports(second_nms, cascade, levels, tmp_path):
    """The RoI refinement stage (MODEL.BMC.REFINE, with its IoU score and classifier; one stage
    or a cascade of two; on the head's levels or on P2-P5) is traced: RoIAlign over the levels,
    the box head, both rescorings and the second NMS (or the sort by the new scores without it)
    match PyTorch."""
    config = str(REPO / "configs/cpu/retinanet_R_18_full_REFINE_IOU_CLS_cpu.yaml")
    opts = [*DET_OPTS, *SMALL_NECK, "MODEL.RETINANET.SCORE_THRESH_TEST", "0.05"]
    opts += ["MODEL.BMC.REFINE.SECOND_NMS", str(second_nms)]
    opts += ["MODEL.BMC.REFINE.CASCADE_IOUS", cascade, *levels]
    weights = _seeded_detector_weights(config, opts, tmp_path / "det.pth")
    state = torch.load(weights)
    moving = [k for k in state["model"] if k.startswith("refinement.") and "deltas.weight" in k]
    assert len(moving) == (1 if cascade == "[]" else 2), moving
    for key in moving:  # boxes move at every stage
        state["model"][key] = torch.randn_like(state["model"][key]) * 0.05
    torch.save(state, weights)
    printed = _export(config, weights, tmp_path / "refine.onnx", opts)
    assert read_sidecar(tmp_path / "refine.onnx", "detector")["verification"]["passed"], printed
    image = _smear(333, 517, 2)
    run = ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", str(weights)]

    def torch_dets(thresh: float, *extra: str) -> Detections:
        opts_t = [*opts, *run, "MODEL.RETINANET.SCORE_THRESH_TEST", str(thresh), *extra]
        return _torch_detections(DefaultPredictor(build_cfg(config, opts_t)), image)

    # the graph is traced with every candidate kept; at the median dense score about half of
    # them reach the stage, fewer than the trace saw: the per-image slicing of the refined
    # boxes must survive that
    dense = torch_dets(0.05, "MODEL.BMC.REFINE.ENABLED", "False")
    counts = []
    for thresh in (0.05, float(np.median(dense.scores))):
        onnx = OnnxDetector(tmp_path / "refine.onnx", threads=1, score_threshold=thresh)
        result = compare_detections(torch_dets(thresh), onnx(image))
        assert result.count_a > 0 and result.equal(BOX_TOL, SCORE_TOL), result.to_json()
        counts.append(result.count_a)
    assert counts[1] < counts[0], counts


@pytest.mark.parametrize(
    "case", ["missing weights", "unknown config", "weights of another model", "odd overrides"]
)
def test_bad_input_is_one_line_error(case, det, clf, tmp_path, capsys):
    config, weights, opts = DET_CONFIG, str(det["weights"]), list(DET_OPTS)
    if case == "missing weights":
        weights = str(tmp_path / "nope.pth")
    elif case == "unknown config":
        config = str(tmp_path / "nope.yaml")
    elif case == "weights of another model":
        weights = str(clf["weights"])
    else:
        opts = opts[:-1]
    argv = ["--config-file", config, "--weights", weights, "--output", str(tmp_path / "m.onnx")]
    assert tool.main([*argv, *opts]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, errors
    assert not (tmp_path / "m.onnx").exists()


def test_benchmark_interleaves_and_writes_tables(tmp_path):
    from bmc_detectron.deploy.bench import benchmark_result, run_benchmark, write_result

    calls: List[str] = []

    def stand_in(name: str):
        return lambda image: calls.append(name) or Detections.empty()

    images = [np.zeros((8, 12, 3), np.uint8)] * 2
    run = run_benchmark(
        stand_in("pytorch"), stand_in("onnxruntime"), images, rounds=2, warmup=1, threads=1
    )
    # the warm-up round in one order, the first measured round in the other
    assert calls[:6] == ["pytorch", "onnxruntime"] * 2 + ["onnxruntime", "pytorch"]
    (row,) = run["stages"]
    assert row["backends"]["pytorch"]["n"] == 4 and row["ratio_median"] > 0
    paths = write_result(benchmark_result([run], images, 2, 1), tmp_path)
    table = paths["markdown"].read_text()
    assert "| detector | 1 |" in table and "8x12" in table
    assert json.loads(paths["json"].read_text())["runs"][0]["threads"] == 1


def test_count_command_runs_on_onnx_runtime_alone(det, clf, tmp_path):
    import cv2

    from bmc_detectron.tools import count

    fields = tmp_path / "case"
    fields.mkdir()
    for i in range(2):
        cv2.imwrite(str(fields / f"f{i}.png"), _smear(200, 260, 20 + i))
    out = tmp_path / "report"
    args = ["--detector-onnx", str(det["onnx"]), "--classifier-onnx", str(clf["onnx"])]
    args += ["--input", str(fields), "--output", str(out), "--score-threshold", "0.3"]
    assert count.main([*args, "--no-progress", "--no-auto-scale"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["fields"]) == 2 and summary["detected"] > 0
    assert set(summary["class_names"]) == set(CLS_NAMES)
    assert summary["scale"]["profile"].endswith("(ONNX sidecar)")
    assert summary["scale"]["ood_checked"] and summary["scale"]["source"] == "none"
    # the automatic scale (the default): the same scale finder, the probe run on ONNX Runtime
    auto = [*args, "--no-progress", "--overwrite"]
    assert count.main(auto) == 0
    scale = json.loads((out / "summary.json").read_text())["scale"]
    assert scale["evidence"]["probe"] is not None and len(scale["evidence"]["probe"]["evidence"])
    assert scale["source"] in ("probe", "ruler", "none") and "settled" in scale
    # neither a config nor ONNX for the detector: a one-line error
    assert count.main(["--input", str(fields), "--output", str(tmp_path / "x")]) == 2
