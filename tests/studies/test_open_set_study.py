"""The open-set study: the split datasets of the driver and the page from hand-made results."""

from __future__ import annotations

import json

from detectron2.data import DatasetCatalog

from bmc_detectron.data.datasets import unregister_dataset
from studies.open_set import open_set, report
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


def _result(t, flagged, lost):
    scores = {
        kind: {"unseen_flagged": flagged, "known_lost": lost, "auroc": 0.9, "unseen": 30}
        for kind in ("energy", "max_softmax")
    }
    return {"left_out": t, "iterations": 10, "known_top1": 0.9, "scores": scores}


def test_page_from_hand_made_results(tmp_path):
    runs = tmp_path / "runs"
    for t, flagged in (("Baso", 0.9), ("Eosl", 0.7)):
        (runs / f"without_{t}").mkdir(parents=True)
        (runs / f"without_{t}" / "result.json").write_text(json.dumps(_result(t, flagged, 0.04)))
    (runs / "full").mkdir()
    full = {"datasets": {"pbc_marrow_val": {"crops": 300, "top1": 0.93, "other": 0.05}}}
    (runs / "full" / "result.json").write_text(json.dumps(full))
    page = tmp_path / "RESULTS_open_set.md"
    assert report.main(["--runs", str(runs), "--output", str(page)]) == 0
    text = page.read_text()
    assert "| >= 80 % of unseen-type crops flagged (energy, mean) | 80.0 | met |" in text
    assert "| <= 5 % of known crops lost (energy, mean) | 4.0 | met |" in text
    assert "| full model top-1 >= 90 % on pbc_marrow_val | 93.0 | met |" in text
    assert "on marrow_real_val | - | not measured yet |" in text
    assert "| Baso | 10 | 90.0 | 90.0 | 4.0 | 0.9 |" in text
    assert "Not finished yet: Lym, Mono" in text


def test_driver_refuses_an_unknown_type(tmp_path, capsys):
    assert open_set.main(["--output", str(tmp_path), "--types", "Megakaryocyte"]) == 2
    assert "unknown type" in capsys.readouterr().out
