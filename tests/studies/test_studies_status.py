"""Study status lines come from the study's manifest and its run folders (studies/status.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from studies.status import load_manifest, planned_runs, run_state, study_status

REPO = Path(__file__).resolve().parents[2]


def _run(root: Path, name: str, seed: int, state: str, dataset: str = "val") -> None:
    run_dir = root / "runs" / name / f"seed{seed}"
    run_dir.mkdir(parents=True)
    if state == "done":
        metrics = run_dir / "inference" / dataset / "coco_metrics.json"
        metrics.parent.mkdir(parents=True)
        metrics.write_text('{"bbox": {"AP": 50.0}}')
    elif state == "failed":
        (run_dir / "run.json").write_text(json.dumps({"status": "failed", "error": "x"}))
    else:  # started: a checkpoint, no metrics yet
        (run_dir / "model_0000099.pth").write_bytes(b"")


def test_study_status_of_a_hand_built_run_folder(tmp_path):
    manifest = tmp_path / "study.yaml"
    manifest.write_text(
        "title: A study\n"
        "pages:\n  - page: docs/results/a/RESULTS_a.md\n    command: bash studies/a/a.sh\n"
        "test_dataset: val\nseeds: [0, 1, 2]\n"
        "configs:\n  - base\n  - {name: pair, seeds: [0, 1, 2, 3, 4]}\n"
        "  - {name: once, seeds: [0]}\n"
    )
    root = tmp_path / "out"
    for seed in (0, 1, 2):
        _run(root, "base", seed, "done")
    _run(root, "pair", 0, "done")
    _run(root, "pair", 1, "failed")
    _run(root, "pair", 2, "started")
    _run(root, "pair", 3, "done", dataset="other")  # metrics on another dataset: not done
    _run(root, "once", 0, "done")
    _run(root, "once", 5, "done")  # a seed the manifest does not plan
    assert study_status(manifest, root) == (
        f"Generated from `{manifest}` and the run folders in `{root}`: 5 of 9 planned runs done"
        " (1 failed, 2 started, 1 queued).\n\n"
        "- `base`: 3 of 3 planned seeds done (0, 1, 2)\n"
        "- `pair`: 1 of 5 planned seeds done (0); failed: 1; started: 2, 3; queued: 4\n"
        "- `once`: 1 of 1 planned seeds done (0); also done: 5\n"
    )
    # a loaded manifest gives the same text; an empty run folder: everything queued
    assert study_status(load_manifest(manifest), root) == study_status(manifest, root)
    empty = study_status(manifest, tmp_path / "nothing")
    assert ": 0 of 9 planned runs done (9 queued)." in empty
    assert "- `base`: 0 of 3 planned seeds done; queued: 0, 1, 2\n" in empty


def test_run_state_without_a_test_dataset_takes_any_metrics(tmp_path):
    _run(tmp_path, "a", 0, "done", dataset="whatever")
    assert run_state(tmp_path / "runs" / "a" / "seed0") == "done"
    assert run_state(tmp_path / "runs" / "a" / "seed0", "val") == "started"
    assert run_state(tmp_path / "runs" / "a" / "seed1") == "queued"


def test_a_study_without_training_runs(tmp_path):
    manifest = {"title": "Pages only", "manifest": "studies/x/study.yaml"}
    assert study_status(manifest, tmp_path) == (
        f"Generated from `studies/x/study.yaml` and the run folders in `{tmp_path}`:"
        " this study plans no training runs.\n"
    )


def test_manifest_needs_a_title(tmp_path):
    bad = tmp_path / "study.yaml"
    bad.write_text("pages: []\n")
    with pytest.raises(ValueError, match="title"):
        load_manifest(bad)


def test_every_study_has_a_manifest_and_every_results_page_a_study():
    """Each study folder has a study.yaml naming its pages (under docs/results/<study>/, each with
    the command that writes it) and its planned runs; every committed results page is named by
    one manifest."""
    studies = sorted(p for p in (REPO / "studies").iterdir() if (p / "__init__.py").is_file())
    assert len(studies) >= 13
    named = set()
    for folder in studies:
        manifest = load_manifest(folder / "study.yaml")
        assert manifest["pages"], folder
        for entry in manifest["pages"]:
            assert entry["page"].startswith("docs/results/"), entry
            assert entry["command"].strip(), entry
            named.add(entry["page"])
        for name, seeds in planned_runs(manifest):
            assert seeds and all(isinstance(s, int) for s in seeds), (folder, name)
            assert any((REPO / "configs").rglob(f"{name}.yaml")), name
    pages = {str(p.relative_to(REPO)) for p in (REPO / "docs/results").glob("*/RESULTS_*.md")}
    assert pages and pages <= named, sorted(pages - named)
