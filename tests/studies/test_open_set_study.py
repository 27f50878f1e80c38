"""The open-set study: the split datasets of the driver and the page from hand-made results."""

from __future__ import annotations

import json

import numpy as np
import pytest
from detectron2.data import DatasetCatalog

from bmc_detectron.data.datasets import unregister_dataset
from bmc_detectron.data.pbc import PBC_MARROW_CLASSES
from bmc_detectron.evaluation.open_set import open_set_metrics
from bmc_detectron.modeling.classifier import classifier_other_index
from studies.open_set import features, neighbours, open_set, report
from tests.helpers import register_synthetic


def test_register_split_keeps_only_the_classes_asked_for(tmp_path):
    register_synthetic(tmp_path, "os_tiny", 3, 64)
    try:
        every = [a["category_id"] for r in DatasetCatalog.get("os_tiny") for a in r["annotations"]]
        first = every[0]
        open_set.register_split("os_tiny", "os_tiny_only", [first])
        only = [
            a["category_id"] for r in DatasetCatalog.get("os_tiny_only") for a in r["annotations"]
        ]
        assert only == [c for c in every if c == first]
        rest = [c for c in set(every) if c != first]
        open_set.register_split("os_tiny", "os_tiny_without", rest)
        without = DatasetCatalog.get("os_tiny_without")
        assert sorted(a["category_id"] for r in without for a in r["annotations"]) == sorted(
            c for c in every if c != first
        )
    finally:
        for name in ("os_tiny", "os_tiny_only", "os_tiny_without"):
            if name in DatasetCatalog.list():
                unregister_dataset(name)


def _scores(kinds, flagged, lost):
    return {
        kind: {"unseen_flagged": flagged, "known_lost": lost, "auroc": 0.9, "unseen": 30}
        for kind in kinds
    }


def _result(t, flagged, lost):
    scores = _scores(("energy", "max_softmax"), flagged, lost)
    return {"left_out": t, "iterations": 10, "known_top1": 0.9, "scores": scores}


def _write_runs(runs, with_features, with_views=False):
    for t, flagged in (("Baso", 0.9), ("Eosl", 0.7)):
        (runs / f"without_{t}").mkdir(parents=True)
        (runs / f"without_{t}" / "result.json").write_text(json.dumps(_result(t, flagged, 0.04)))
        if with_features:  # what features.py writes: every score, knn by k
            scores = _scores(("energy", "max_softmax", "mahalanobis"), flagged / 2, 0.04)
            scores |= _scores(("knn",), flagged - 0.5, 0.045)
            extra = {"knn_k": 10, "train_crops": 4000, "scores": scores}
            extra["knn_by_k"] = {"1": scores["knn"], "10": scores["knn"]}
            (runs / f"without_{t}" / "feature_scores.json").write_text(json.dumps(extra))
            if with_views and t == "Eosl":  # one run measured with the 8 views
                extra["scores"] = _scores(("energy", "mahalanobis", "knn"), 0.6, 0.05)
                views = runs / f"without_{t}" / "feature_scores_flips8.json"
                views.write_text(json.dumps(extra))
    (runs / "full").mkdir()
    full = {"datasets": {"pbc_marrow_val": {"crops": 300, "top1": 0.93, "other": 0.05}}}
    (runs / "full" / "result.json").write_text(json.dumps(full))


def test_page_from_hand_made_results(tmp_path):
    runs = tmp_path / "runs"
    _write_runs(runs, with_features=False)
    page = tmp_path / "RESULTS_open_set.md"
    assert report.main(["--runs", str(runs), "--output", str(page)]) == 0
    text = page.read_text()
    assert "| >= 80 % of unseen-type crops flagged (energy, mean) | 80.0 | met |" in text
    assert "| <= 5 % of known crops lost (energy, mean) | 4.0 | met |" in text
    assert "| full model top-1 >= 90 % on pbc_marrow_val | 93.0 | met |" in text
    assert "on marrow_real_val | - | not measured yet |" in text
    assert "| energy | 70.0 | 90.0 | 80.0 |" in text  # flagged per type (manifest order), mean
    assert "| max_softmax | 0.90 | 0.90 | 0.90 |" in text  # AUROC
    assert "| Baso | 10 | 90.0 | - | 30 | - |" in text
    assert "Not finished yet: Lym, Mono" in text
    (runs / "full_b").mkdir()  # a second full model gets its own target rows
    other = {"datasets": {"marrow_real_val": {"crops": 3047, "top1": 0.85, "other": 0.05}}}
    (runs / "full_b" / "result.json").write_text(json.dumps(other))
    assert report.main(["--runs", str(runs), "--output", str(page)]) == 0
    text = page.read_text()
    assert "| full model top-1 >= 90 % on pbc_marrow_val | 93.0 | met |" in text
    assert "| full model `full_b` top-1 >= 90 % on marrow_real_val | 85.0 | not met |" in text


def test_page_with_the_feature_scores(tmp_path):
    runs = tmp_path / "runs"
    _write_runs(runs, with_features=True)
    page = tmp_path / "RESULTS_open_set.md"
    assert report.main(["--runs", str(runs), "--output", str(page)]) == 0
    text = page.read_text()
    # the manifest's score (knn) is the one the targets read
    assert "| >= 80 % of unseen-type crops flagged (knn, mean) | 30.0 | not met |" in text
    assert "| <= 5 % of known crops lost (knn, mean) | 4.5 | met |" in text
    assert "| mahalanobis | 35.0 | 45.0 | 40.0 |" in text
    assert "| knn | 20.0 | 40.0 | 30.0 |" in text
    assert "| knn | 4.5 | 4.5 | 4.5 |" in text  # known lost
    assert "| 10 | 2 | 30.0 | 4.5 | 0.90 |" in text  # k sensitivity
    assert "| Baso | 10 | 90.0 | - | 30 | 4000 |" in text
    assert "Not measured (`python -m studies.open_set.features --test-flips 8`)." in text


def test_page_with_the_eight_views(tmp_path):
    runs = tmp_path / "runs"
    _write_runs(runs, with_features=True, with_views=True)
    page = tmp_path / "RESULTS_open_set.md"
    assert report.main(["--runs", str(runs), "--output", str(page)]) == 0
    views = page.read_text().split("## Eight views of each crop")[1].split("## The full model")[0]
    assert "over these 1 run: 60.0 % of the left-out crops flagged with the 8 views" in views
    assert "20.0 % with the crop as it is" in views  # Eosl's knn as it is: 0.7 - 0.5
    assert "| score | Eosl | mean |" in views and "| knn | 60.0 | 60.0 |" in views
    assert "| knn | 0.90 | 0.90 |" in views  # AUROC
    targets = page.read_text().split("## Targets")[1].split("## Leaving")[0]
    row = "| >= 80 % of unseen-type crops flagged (knn, 8 views, 1 runs, mean) | 60.0 | not met |"
    assert row in targets


def test_unseen_crops_are_counted_by_the_known_type_they_are_called():
    ids = {t: i for i, t in enumerate(PBC_MARROW_CLASSES)}
    myelo, late, promy, lym = ids["Myelo"], ids["Late"], ids["Promy"], ids["Lym"]
    train_labels = np.array([promy, late, lym, late])
    logits = np.zeros((5, len(ids)), dtype=np.float32)
    logits[:, ids["Prim"]] = 9.0  # never trained: not a known type, never the answer
    logits[:, myelo] = 8.0  # the left-out type's own output: ignored too
    logits[0, late] = logits[1, late] = logits[2, promy] = 1.0
    logits[3, lym] = logits[4, late] = 5.0  # 3, 4: crops of known types, not counted
    labels = np.array([myelo, myelo, myelo, lym, late])
    counts = neighbours.unseen_predicted_as(logits, labels, train_labels, myelo)
    assert counts == {"Late": 2, "Promy": 1} and list(counts) == ["Late", "Promy"]
    assert neighbours.is_neighbour("Myelo", "Late") and neighbours.is_neighbour("Lobu", "Rods")
    assert not neighbours.is_neighbour("Myelo", "Lobu")
    assert not neighbours.is_neighbour("Lym", "Mono")


def test_page_says_where_the_unseen_crops_go(tmp_path):
    runs = tmp_path / "runs"
    taken = {"Myelo": ({"Late": 20, "Promy": 10}, 0.2), "Eosl": ({"Baso": 27, "Lym": 3}, 0.6)}
    for t, (counts, flagged) in taken.items():
        (runs / f"without_{t}").mkdir(parents=True)
        (runs / f"without_{t}" / "result.json").write_text(json.dumps(_result(t, flagged, 0.04)))
        extra = {"knn_k": 10, "train_crops": 4000, "unseen_predicted_as": counts}
        extra["scores"] = _scores(("energy", "knn"), flagged, 0.05)
        for name in ("feature_scores.json", "feature_scores_flips8.json"):
            (runs / f"without_{t}" / name).write_text(json.dumps(extra))
    page = tmp_path / "RESULTS_open_set.md"
    assert report.main(["--runs", str(runs), "--output", str(page)]) == 0
    section = page.read_text().split("## Where the unseen crops go")[1].split("## A longer")[0]
    assert "| Myelo | Late 67 % | Promy 33 % | yes | 20.0 |" in section
    assert "| Eosl | Baso 90 % | Lym 10 % | no | 60.0 |" in section
    line = "1 of 2 left-out types go mostly to a neighbouring stage of the granulocytic line;"
    assert line + " knn flags 20.0 % of their crops, 60.0 % of the other types' crops." in section


def test_features_measure_every_score_on_a_hand_made_cache():
    rng = np.random.default_rng(0)
    known = rng.normal(0, 1, (200, 4)) + np.repeat([[6, 0, 0, 0], [0, 6, 0, 0]], 100, axis=0)
    labels = np.repeat([0, 1], 100)
    val = np.concatenate([known[::4] + 0.01, rng.normal(0, 1, (10, 4)) + [0, 0, 6, 0]])
    val_labels = np.concatenate([labels[::4], np.full(10, 2)])
    cache = {
        "train_features": known,
        "train_labels": labels,
        "val_features": val,
        "val_labels": val_labels,
        "val_logits": np.zeros((len(val), 3)),  # the logits know nothing: chance
        "left_out": np.asarray(2),
    }
    results = features.measure(cache, 0.05, knn_k=5)
    assert list(results) == ["energy", "max_softmax", "mahalanobis", "knn"]
    assert results["energy"]["auroc"] == 0.5 and results["energy"]["unseen_flagged"] == 0.0
    for kind in ("mahalanobis", "knn"):  # the third cluster is far from both known ones
        assert results[kind]["auroc"] == 1.0 and results[kind]["unseen_flagged"] == 1.0
        assert results[kind]["known_lost"] <= 0.05


def test_a_crop_called_other_is_flagged_whatever_its_score():
    """A model with an Other class: the crops it calls Other are flagged at the chosen threshold,
    known and unseen alike; more known crops called Other than the share allowed is refused."""
    known = np.arange(20, dtype=float)  # 20 known crops, the highest-scoring one called Other
    unseen = np.array([30.0, 31.0, 0.5])  # the first called Other
    k_logits, u_logits = np.zeros((20, 3)), np.zeros((3, 3))
    k_logits[19, 2] = u_logits[0, 2] = 1.0
    k_logits[:19, 0] = u_logits[1:, 1] = 1.0
    k, u = open_set.called_other_flagged(known, unseen, k_logits, u_logits, 2, 0.05)
    result = open_set_metrics(k, u, 0.05)
    assert result["known_lost"] == 0.05  # the one called Other: the threshold flags no other
    assert result["unseen_flagged"] == pytest.approx(
        1 / 3
    )  # 30.0 called Other; 0.5 is above the threshold (0)
    same = open_set.called_other_flagged(known, unseen, k_logits, u_logits, None, 0.05)
    assert same[0] is known and same[1] is unseen  # no Other class: unchanged
    k_logits[18] = [0.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="2 of 20 known crops are called Other"):
        open_set.called_other_flagged(known, unseen, k_logits, u_logits, 2, 0.05)


def test_the_other_candidate_keeps_its_class_and_its_non_cell_boxes():
    cfg = open_set.leave_out_cfg("configs/recognition/cell_classifier_R_18_pbc_other_cpu.yaml", [])
    assert list(cfg.MODEL.BMC.CLASSIFIER.CLASS_NAMES) == [*PBC_MARROW_CLASSES, "Other"]
    assert classifier_other_index(cfg) == 12
    assert "marrow_non_cells_train" in cfg.DATASETS.TRAIN
    plain = open_set.leave_out_cfg("configs/recognition/cell_classifier_R_18_pbc_cpu.yaml", [])
    assert classifier_other_index(plain) is None


def test_driver_refuses_an_unknown_type(tmp_path, capsys):
    assert open_set.main(["--output", str(tmp_path), "--types", "Megakaryocyte"]) == 2
    assert "unknown type" in capsys.readouterr().out


def test_page_with_a_longer_schedule(tmp_path):
    runs, longer = tmp_path / "runs", tmp_path / "longer"
    _write_runs(runs, with_features=True, with_views=True)
    run = longer / "without_Eosl"
    run.mkdir(parents=True)
    result = _result("Eosl", 0.8, 0.04) | {"iterations": 40, "known_top1": 0.95}
    (run / "result.json").write_text(json.dumps(result))
    scores = _scores(("mahalanobis",), 0.7, 0.05) | _scores(("knn",), 0.8, 0.05)
    scores["knn"]["auroc"] = 0.95
    extra = {"knn_k": 10, "train_crops": 4000, "scores": scores}
    (run / "feature_scores_flips8.json").write_text(json.dumps(extra))
    page = tmp_path / "RESULTS_open_set.md"
    args = ["--runs", str(runs), "--output", str(page)]
    assert report.main(args) == 0
    assert "Not measured (`python -m studies.open_set.open_set --iterations" in page.read_text()
    assert report.main([*args, "--longer-runs", str(longer)]) == 0
    section = page.read_text().split("## A longer schedule")[1].split("## The full model")[0]
    # Eosl with 8 views at 10 iterations (hand-made: knn and Mahalanobis 60 %, AUROC 0.90)
    assert "| Eosl | 10 -> 40 | 90.0 -> 95.0 | 60.0 -> 80.0 | 60.0 -> 70.0 | 0.90 -> 0.95 |" in (
        section
    )
    assert "Baso" not in section and "| mean |" not in section  # Baso not run again
    run = longer / "without_Baso"  # a second type: a mean row
    run.mkdir()
    (run / "result.json").write_text(json.dumps(_result("Baso", 0.8, 0.04)))
    (run / "feature_scores_flips8.json").write_text(json.dumps(extra))
    (runs / "without_Baso" / "feature_scores_flips8.json").write_text(
        (runs / "without_Eosl" / "feature_scores_flips8.json").read_text()
    )
    assert report.main([*args, "--longer-runs", str(longer)]) == 0
    section = page.read_text().split("## A longer schedule")[1].split("## The full model")[0]
    assert (
        "| Baso | 10 -> 10 | 90.0 -> 90.0 | 60.0 -> 80.0 | 60.0 -> 70.0 | 0.90 -> 0.95 |" in section
    )
    row = (
        "| mean | 10 -> 10 / 10 -> 40 | 90.0 -> 92.5 | 60.0 -> 80.0 | 60.0 -> 70.0 | 0.90 -> 0.95 |"
    )
    assert row in section
    # the targets again for the types run longer (8 views; their mean, the types named)
    targets = page.read_text().split("## Targets")[1].split("## Leaving one type out")[0]
    tag = "knn, 8 views, 2 runs of 10/40 iterations: Eosl, Baso, mean"
    assert f"| >= 80 % of unseen-type crops flagged ({tag}) | 80.0 | met |" in targets


def test_page_with_candidate_classifiers(tmp_path):
    runs, cosine = tmp_path / "runs", tmp_path / "cosine"
    _write_runs(runs, with_features=True, with_views=True)  # Eosl with 8 views: every score 60 %
    run = cosine / "without_Eosl"
    run.mkdir(parents=True)
    config = "configs/recognition/cell_classifier_R_18_pbc_cosine_cpu.yaml"
    (run / "result.json").write_text(json.dumps(_result("Eosl", 0.8, 0.04) | {"config": config}))
    scores = _scores(("mahalanobis", "energy"), 0.5, 0.05) | _scores(("knn",), 0.7, 0.05)
    extra = {"knn_k": 10, "train_crops": 4000, "scores": scores}
    (run / "feature_scores_flips8.json").write_text(json.dumps(extra))
    (tmp_path / "empty").mkdir()
    page = tmp_path / "RESULTS_open_set.md"
    args = ["--runs", str(runs), "--output", str(page), "--candidates"]
    assert report.main([*args, f"cos={cosine}", f"ln={tmp_path / 'empty'}"]) == 0
    section = page.read_text().split("## Candidate classifiers")[1].split("## The full model")[0]
    row = "| cos | 1 | 90.0 -> 90.0 | 60.0 -> 70.0 | 60.0 -> 50.0 | 60.0 -> 50.0 | 0.90 -> 0.90 |"
    assert row in section
    assert "| ln | 0 | not measured yet |" in section
    # the runs' own config is named beside their folder
    assert (
        f"`cos` = `{cosine}` (`cell_classifier_R_18_pbc_cosine_cpu.yaml`); `ln`" in page.read_text()
    )
    assert "- `cos`: kNN flags more of the unseen crops than the page's runs for 1 of 1 types" in (
        section
    )
    (runs / "without_Baso" / "feature_scores_flips8.json").write_text(
        (runs / "without_Eosl" / "feature_scores_flips8.json").read_text()
    )  # base Baso as Eosl: kNN 60 %; the candidate's Baso 50 %: paired -10, +10 points
    run = cosine / "without_Baso"
    run.mkdir()
    (run / "result.json").write_text(json.dumps(_result("Baso", 0.8, 0.04)))
    extra["scores"] = _scores(("mahalanobis", "energy", "knn"), 0.5, 0.05)
    (run / "feature_scores_flips8.json").write_text(json.dumps(extra))
    assert report.main([*args, f"cos={cosine}"]) == 0
    line = "for 1 of 2 types (Eosl); paired by type: +0.0 points [-127.1, +127.1]."
    assert line in page.read_text()
    with pytest.raises(SystemExit):
        report.main([*args, "cosine"])


def test_a_full_run_is_evaluated_with_the_config_it_was_trained_with(tmp_path):
    # a 96 px run read with the 64 px manifest config had scored 55 % instead of 86 %
    manifest_config = open_set.load_manifest(open_set.MANIFEST)["full_config"]
    assert open_set.full_config(tmp_path) == manifest_config
    (tmp_path / "config.yaml").write_text("MODEL: {}\n")
    assert open_set.full_config(tmp_path) == str(tmp_path / "config.yaml")
