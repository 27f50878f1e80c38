"""The real-marrow count page: targets and verdicts from a count evaluation."""

from __future__ import annotations

from bmc_detectron.data.classes import KNOWN_ABBRS
from studies.real_marrow import count


def _result(recall, precision, worst):
    return {
        "matching": {"recall": recall, "precision": precision},
        "cases": {"fields_per_case": 10, "mae_max": worst, "mae_mean": worst / 2, "cases": 10},
        "crowding": {"pairs": {"pairs": 40, "both_found": 38, "share": 0.95}},
    }


def test_targets_and_verdicts():
    summary = {"other": 7, "uncertain": {"total": 12, "per_class": {}}}
    rows = count.target_rows(_result(0.95, 0.89, 2.5), summary)
    assert rows[0] == ["recall >= 90 % (IoU 0.5)", "95.0", "met"]
    assert rows[1] == ["precision >= 90 %", "89.0", "not met"]
    assert rows[2][1:] == ["2.50 (mean 1.25)", "met"]
    assert rows[3][1] == "95.0 % of 40 pairs"
    assert rows[4] == ["uncertain / other cells listed", "12 / 7", "reported"]
    assert count.target_rows(_result(0.95, 0.95, 3.5), summary)[2][2] == "not met"


def test_the_page_says_how_the_classifier_sees_a_cell(tmp_path):
    (tmp_path / "config.yaml").write_text(
        "MODEL:\n  BMC:\n    CLASSIFIER:\n      CROP_SIZE: 96\n      TEST_FLIPS: 8\n"
        "SOLVER:\n  MAX_ITER: 2800\n"
    )
    expected = "11 classes, 96 px crops, 8 views averaged, 2800 iterations"
    assert count.classifier_views(tmp_path) == expected
    names = '["' + '", "'.join(KNOWN_ABBRS) + '"]'
    (tmp_path / "config.yaml").write_text(
        f"MODEL:\n  BMC:\n    CLASSIFIER:\n      NUM_CLASSES: 13\n      CLASS_NAMES: {names}\n"
    )
    expected = "13 classes with an Other class, 64 px crops, 1 view, 40000 iterations"
    assert count.classifier_views(tmp_path) == expected


def test_a_changed_model_is_counted_again_not_read_from_the_old_report(tmp_path, monkeypatch):
    import cv2
    import torch

    from bmc_detectron.pipeline.recognition import CellClassifier
    from tests.helpers import CONFIGS
    from tests.pipeline.helpers import channel_classifier, disc_field, save_random_detector

    monkeypatch.setattr(
        CellClassifier, "from_config", classmethod(lambda cls, c, w, o=(): channel_classifier())
    )
    fields = tmp_path / "fields"
    fields.mkdir()
    for i in range(2):
        image, _ = disc_field(64, 64, [(20 + 8 * i, 30, 9, "A")])
        cv2.imwrite(str(fields / f"f{i}.png"), image)
    classifier = tmp_path / "cls"
    classifier.mkdir()
    (classifier / "config.yaml").write_text("# stand-in\n")
    (classifier / "model_final.pth").write_bytes(b"stand-in")
    detectors = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        config = (CONFIGS / "cpu" / "retinanet_R_18_FPN_cpu.yaml").read_text()
        (folder / "config.yaml").write_text(config.replace('_BASE_: "', f'_BASE_: "{CONFIGS}/cpu/'))
        weights = save_random_detector(folder / "model_final.pth")
        if name == "b":  # other weights: one bias moved
            state = torch.load(weights)
            key = next(k for k in state["model"] if k.endswith("bias"))
            state["model"][key] += 0.5
            torch.save(state, weights)
        detectors.append(folder)
    work = tmp_path / "work"
    first = count.count_fields(detectors[0], classifier, fields, work)
    again = count.count_fields(detectors[0], classifier, fields, work)
    assert [f["reused"] for f in again["fields"]] == [True, True]
    assert again["settings"] == first["settings"]
    other = count.count_fields(detectors[1], classifier, fields, work)
    assert [f["reused"] for f in other["fields"]] == [False, False]  # not the old report
    assert other["settings"]["detector"] != first["settings"]["detector"]
