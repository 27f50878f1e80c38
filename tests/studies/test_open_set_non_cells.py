"""The open-set study's crops that are not cells: boxes, measurement and the page's section."""

from __future__ import annotations

import json

import numpy as np

from studies.open_set import non_cell_table, non_cells, report


def _cache():
    rng = np.random.default_rng(0)
    centres = np.repeat([[6.0, 0, 0, 0], [0, 6.0, 0, 0]], 100, axis=0)
    train = rng.normal(0, 1, (200, 4)) + centres
    labels = np.repeat([0, 1], 100)
    return {
        "train_features": train,
        "train_labels": labels,
        "val_features": train[::4] + 0.01,
        "val_labels": labels[::4],
        "val_logits": np.tile([[5.0, 0.0, 0.0]], (50, 1)),
        "left_out": np.asarray(2),
    }


def test_far_crops_are_flagged_and_known_like_ones_are_not():
    rng = np.random.default_rng(1)
    n = len(non_cells.KINDS)
    far = rng.normal(0, 1, (n * 4, 4)) + [0, 0, 30.0, 0]  # red cells ... far from both types
    features = far.copy()
    features[-4:] = rng.normal(0, 1, (4, 4)) + [6.0, 0, 0, 0]  # blurred cells: like type 0
    kinds = np.repeat(np.asarray(non_cells.KINDS), 4)
    logits = np.tile([[0.0, 5.0, 0.0]], (n * 4, 1))  # confident: the logits cannot tell
    result = non_cells.measure_run(_cache(), logits, features, kinds, 0.05, knn_k=5)
    red = result["kinds"]["red cell (BCCD)"]
    assert red["crops"] == 4 and red["predicted_as"] == {"Lym": 4}  # class 1 of the PBC list
    assert red["flagged"]["knn"] == 1.0 and red["flagged"]["mahalanobis"] == 1.0
    assert red["flagged"]["energy"] == 0.0  # logits as confident as the known crops'
    blurred = result["kinds"]["blurred cell"]["flagged"]
    assert blurred["knn"] == 0.0 and blurred["mahalanobis"] == 0.0
    assert result["left_out"] == "Mono"  # class 2 of the PBC list


def _write(runs, t, flips, knn, maha):
    kinds = {
        k: {"crops": 10, "flagged": {"knn": knn, "mahalanobis": maha}, "predicted_as": {"Red": 3}}
        for k in non_cells.KINDS
    }
    path = runs / f"without_{t}" / non_cells.result_name(flips)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"left_out": t, "kinds": kinds}))


def test_section_averages_the_models_and_names_the_better_score(tmp_path):
    runs, other = tmp_path / "runs", tmp_path / "other"
    _write(runs, "Lym", 8, 0.5, 1.0)
    _write(runs, "Mono", 8, 0.7, 0.9)
    _write(runs, "Lym", 1, 0.2, 0.4)
    _write(other, "Lym", 8, 0.1, 0.3)
    lines = non_cell_table.non_cells_section(runs, ["Lym", "Mono"], {"cosine": other})
    text = "\n".join(lines)
    assert "Mahalanobis flags 95-95 % of each kind" in text and "kNN 60-60 %" in text
    assert "| red cell (BCCD) | 10 | - | - | 95.0 | 60.0 | Red (100 %) |" in text  # 8 views
    assert "| blurred cell | 10 | - | - | 40.0 | 20.0 | Red (100 %) |" in text  # one view
    assert "| cell fragment | 60.0 | 95.0 | 10.0 | 30.0 |" in text  # folders, 8 views
    assert "Runs measured: page's runs: 2, cosine: 1." in text
    assert "Not measured yet (`python -m studies.open_set.non_cells --full-run RUN`)." in text


def test_page_shows_the_full_model_on_non_cells(tmp_path):
    runs = tmp_path / "runs"
    _write(runs, "Lym", 8, 0.5, 1.0)
    (runs / "full").mkdir()
    kinds = {"background (PBC)": {"crops": 5, "flagged": {"mahalanobis": 0.8}}}
    full = {"score": "mahalanobis", "test_flips": 8, "kinds": kinds}
    (runs / "full" / non_cells.RESULT).write_text(json.dumps(full))
    page = tmp_path / "page.md"
    assert report.main(["--runs", str(runs), "--output", str(page)]) == 0
    text = page.read_text().split("## Crops that are not cells")[1]
    assert "| full | mahalanobis | 8 | background (PBC) | 80.0 | - | 80.0 |" in text
    assert "| full | mahalanobis | 8 | red cell (BCCD) | - | - | - |" in text
    (runs / "full_other").mkdir()  # a classifier with an Other class: the count's is either
    flagged = {"knn": 0.25, "Other class": 0.5, "Other": 0.625}
    kinds = {"cell fragment": {"crops": 8, "flagged": flagged}}
    full = {"score": "knn", "test_flips": 1, "kinds": kinds}
    (runs / "full_other" / non_cells.RESULT).write_text(json.dumps(full))
    assert report.main(["--runs", str(runs), "--output", str(page)]) == 0
    text = page.read_text().split("## Crops that are not cells")[1]
    assert "| full_other | knn | 1 | cell fragment | 25.0 | 50.0 | 62.5 |" in text


def test_real_non_cell_crops_are_cut_once(pbc_datasets, tmp_path):
    crops, kinds = non_cells.non_cell_crops(tmp_path, 16, 0.15, "BGR", per_kind=20)
    assert crops.shape[1:] == (3, 16, 16) and crops.dtype == np.uint8
    counts = {k: int((kinds == k).sum()) for k in non_cells.KINDS}
    assert counts == {k: 20 for k in non_cells.KINDS}  # every kind has 20 or more
    again, _ = non_cells.non_cell_crops(tmp_path, 16, 0.15, "BGR", per_kind=5)
    assert np.array_equal(again, crops)  # read from the cache, not cut again
    blurred, whole = crops[kinds == "blurred cell"], crops[kinds == "cell fragment"]
    assert blurred.std(axis=(2, 3)).mean() < whole.std(axis=(2, 3)).mean()


def test_the_count_calls_other_what_the_score_flags_or_the_other_class_wins():
    flagged = np.array([True, False, False])
    logits = np.array([[2.0, 0.0], [0.0, 3.0], [1.0, 0.0]])
    out = non_cells.other_outcomes(flagged, logits, ["Lym", "Other"], "knn")
    assert out["knn"].tolist() == [True, False, False]
    assert out["Other class"].tolist() == [False, True, False]
    assert out["Other"].tolist() == [True, True, False]
    assert list(non_cells.other_outcomes(flagged, logits, ["Lym", "Mono"], "knn")) == ["knn"]
