"""A study's records: the small result files of its runs, kept in the repository."""

from pathlib import Path

import pytest
import yaml

from studies import records
from studies.records import (
    MAX_FILE_BYTES,
    RecordsError,
    record_sets,
    restore_records,
    runs_folders,
    save_records,
)

PATTERNS = ["without_*/result.json", "without_*/feature_scores*.json"]


def _write(path: Path, text: str = "{}") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _runs(root: Path) -> Path:
    _write(root / "without_Lym" / "result.json", '{"a": 1}')
    _write(root / "without_Lym" / "feature_scores_flips8.json", '{"b": 2}')
    _write(root / "without_Lym" / "model_final.pth", "weights")
    _write(root / "without_Red" / "last_checkpoint", "model_0000399.pth")
    _write(root / "crops_pbc_marrow_val.npz", "cache")
    return root


def test_save_copies_only_the_files_the_globs_name(tmp_path):
    runs, kept = _runs(tmp_path / "runs"), tmp_path / "records"
    saved = save_records(runs, kept, PATTERNS)
    expected = [
        Path("without_Lym/feature_scores_flips8.json"),
        Path("without_Lym/result.json"),
    ]
    assert saved == expected
    assert sorted(p.relative_to(kept) for p in kept.rglob("*") if p.is_file()) == expected
    assert (kept / "without_Lym" / "result.json").read_text() == '{"a": 1}'


def test_a_file_too_big_for_a_record_is_refused_by_name_and_nothing_is_copied(tmp_path):
    runs, kept = _runs(tmp_path / "runs"), tmp_path / "records"
    _write(runs / "without_Red" / "result.json", "x" * (MAX_FILE_BYTES + 1))
    with pytest.raises(RecordsError, match=r"without_Red/result\.json: \d+ bytes"):
        save_records(runs, kept, PATTERNS)
    assert not kept.exists()


def test_restore_fills_what_a_new_machine_lacks_and_never_overwrites(tmp_path):
    runs, kept = _runs(tmp_path / "runs"), tmp_path / "records"
    save_records(runs, kept, PATTERNS)
    _write(kept / "without_Mono" / "result.json", '{"from": "another machine"}')
    _write(runs / "without_Lym" / "result.json", '{"a": "newer"}')
    restored = restore_records(kept, runs, PATTERNS)
    assert restored == [Path("without_Mono/result.json")]
    assert (runs / "without_Mono" / "result.json").read_text() == '{"from": "another machine"}'
    assert (runs / "without_Lym" / "result.json").read_text() == '{"a": "newer"}'
    fresh = tmp_path / "fresh"
    assert len(restore_records(kept, fresh, PATTERNS)) == 3


def _study(tmp_path, monkeypatch, manifest: dict) -> str:
    monkeypatch.setattr(records, "STUDIES", tmp_path / "studies")
    _write(tmp_path / "studies" / "demo" / "study.yaml", yaml.safe_dump(manifest))
    return "demo"


def test_record_sets_read_a_list_or_a_mapping_and_name_a_bad_manifest(tmp_path, monkeypatch):
    study = _study(tmp_path, monkeypatch, {"title": "t", "runs": "output/x", "records": ["a/*"]})
    assert record_sets(study) == {"output/x": ["a/*"]}
    both = {"output/x": ["a/*"], "output/x_2400": ["b/*"]}
    study = _study(tmp_path, monkeypatch, {"title": "t", "records": both})
    assert record_sets(study) == both
    study = _study(tmp_path, monkeypatch, {"title": "t", "runs": "output/x"})
    with pytest.raises(RecordsError, match=r"demo/study\.yaml: 'records' must map"):
        record_sets(study)
    clash = {"output/x": ["a/*"], "elsewhere/x": ["b/*"]}
    study = _study(tmp_path, monkeypatch, {"title": "t", "records": clash})
    with pytest.raises(RecordsError, match="share a name"):
        record_sets(study)


def test_a_runs_folder_elsewhere_stands_for_the_manifest_s_of_the_same_name():
    sets = {"output/open_set": [], "output/open_set_2400": []}
    folders = runs_folders(sets, ["/work/runs/open_set_2400"])
    assert folders == {
        "output/open_set": Path("output/open_set"),
        "output/open_set_2400": Path("/work/runs/open_set_2400"),
    }
    with pytest.raises(RecordsError, match="no folder named 'budget'"):
        runs_folders(sets, ["/work/runs/budget"])


def test_the_command_saves_and_restores_a_study(tmp_path, monkeypatch, capsys):
    runs = _runs(tmp_path / "runs" / "open_set")
    study = _study(tmp_path, monkeypatch, {"title": "t", "records": {"output/open_set": PATTERNS}})
    assert records.main(["save", study, "--runs", str(runs)]) == 0
    kept = tmp_path / "studies" / "demo" / "records" / "open_set"
    assert (kept / "without_Lym" / "result.json").is_file()
    fresh = tmp_path / "fresh" / "open_set"
    assert records.main(["restore", study, "--runs", str(fresh)]) == 0
    assert "restored 2 file(s)" in capsys.readouterr().out
    assert records.main(["save", study, "--runs", str(tmp_path / "other")]) == 2
    assert "no folder named 'other'" in capsys.readouterr().err


def test_every_study_s_records_name_results_never_weights():
    for manifest in Path(records.STUDIES).glob("*/study.yaml"):
        data = yaml.safe_load(manifest.read_text())
        if not data.get("records"):
            continue
        for globs in record_sets(manifest.parent.name).values():
            for glob in globs:
                assert glob.endswith((".json", ".yaml")), f"{manifest}: {glob}"
