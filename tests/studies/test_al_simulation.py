"""The active-learning simulation: subsets, acquisition, shared round 0, resuming, the report
and the command line (fake trainings), and one real run of tiny models."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

from bmc_detectron.data.classes import marrow_metadata
from bmc_detectron.data.datasets import register_coco_dataset, unregister_dataset
from bmc_detectron.data.synthetic import generate_dataset
from studies.active_learning import al_simulate
from studies.active_learning import simulation as sim
from studies.active_learning import simulation_report as report

REPO = Path(__file__).resolve().parents[2]
CFG = str(REPO / "configs" / "cpu" / "retinanet_R_18_FPN_cpu.yaml")
POOL, TEST = "al_sim_test_pool", "al_sim_test_val"
TINY = [
    *("MODEL.FPN.OUT_CHANNELS", "32", "MODEL.RETINANET.NUM_CONVS", "1", "MODEL.DEVICE", "cpu"),
    *("INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64"),
    *("INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64"),
    *("SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0"),
    *("MODEL.RETINANET.SCORE_THRESH_TEST", "0.0"),
]
PNG = b"\x89PNG\r\n\x1a\n"


def hand_pool(n: int = 8) -> sim.Pool:
    """A pool of ``n`` images (ids 1..n) where image i has i annotations; no files."""
    images = [
        {"id": i, "file_name": f"im{i}.png", "width": 64, "height": 64} for i in range(1, n + 1)
    ]
    anns, aid = [], 1
    for i in range(1, n + 1):
        for _ in range(i):
            anns.append({"id": aid, "image_id": i, "category_id": 1, "bbox": [1, 1, 5, 5]})
            anns[-1].update(area=25.0, iscrowd=0)
            aid += 1
    cats = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    coco = {"info": {"v": 1}, "images": images, "annotations": anns, "categories": cats}
    return sim.Pool("hand", coco, Path("/nonexistent/images"), {"thing_classes": ["a", "b"]})


def fake_entry(rng: np.random.Generator) -> Dict[str, np.ndarray]:
    n = int(rng.integers(0, 4))
    return {
        "boxes": rng.random((n, 4)) * 50,
        "scores": rng.uniform(0.1, 1.0, n),
        "classes": np.zeros(n, dtype=int),
        "class_scores": rng.random((n, 2)),
        "feature": rng.random(4),
        "size": np.array([64, 64]),
    }


@pytest.fixture
def fake_model(monkeypatch) -> Dict[str, List]:
    """Trainings and pool analyses replaced by counters (no model is built)."""
    calls: Dict[str, List] = {"train": [], "entries": []}

    def train_round(settings, train, seed, folder):
        ids = [im["id"] for im in json.loads((folder / "train.json").read_text())["images"]]
        calls["train"].append((folder, ids))
        return {"AP": float(len(ids)), "AP50": 2.0 * len(ids), "AP75": None, "per_class": {}}

    def pool_entries(settings, pool, ids, model_dir, rank):
        calls["entries"].append(model_dir)
        rng = np.random.default_rng(len(ids))
        return {i: fake_entry(rng) for i in ids}

    monkeypatch.setattr(sim, "train_round", train_round)
    monkeypatch.setattr(sim, "pool_entries", pool_entries)
    return calls


def test_subset_coco_and_initial_draw() -> None:
    coco = hand_pool().coco
    sub = sim.subset_coco(coco, [2, 5])
    assert [im["id"] for im in sub["images"]] == [2, 5]
    assert sorted({a["image_id"] for a in sub["annotations"]}) == [2, 5]
    assert len(sub["annotations"]) == 2 + 5
    assert sub["categories"] == coco["categories"] and sub["info"] == coco["info"]
    with pytest.raises(sim.SimulationError, match="not in the pool"):
        sim.subset_coco(coco, [2, 99])
    ids = sim.initial_ids(range(1, 9), 3, seed=0)
    assert ids == sim.initial_ids(range(1, 9), 3, seed=0) and len(set(ids)) == 3
    assert set(ids) <= set(range(1, 9))


@pytest.mark.parametrize("strategy", list(sim.STRATEGY_SETTINGS))
def test_acquisition_skips_labelled_images_and_takes_min_budget_left(
    strategy, fake_model, tmp_path
) -> None:
    pool = hand_pool(8)
    settings = sim.SimSettings(CFG, "hand", "hand", 2, str(tmp_path), initial=3, budget=3)
    labelled = [1, 4, 6]
    chosen = sim.acquire(settings, pool, strategy, 0, 1, labelled, tmp_path)
    ids = [c["image_id"] for c in chosen]
    assert len(ids) == 3 == len(set(ids)) and not set(ids) & set(labelled)
    assert [c["pick"] for c in chosen] == [1, 2, 3]
    assert all(c["boxes"] == c["image_id"] for c in chosen)  # image i has i boxes
    chosen = sim.acquire(settings, pool, strategy, 0, 2, [1, 2, 3, 4, 5, 6], tmp_path)
    assert sorted(c["image_id"] for c in chosen) == [7, 8]  # only two left
    assert sim.acquire(settings, pool, strategy, 0, 3, list(range(1, 9)), tmp_path) == []


def test_rounds_share_round_zero_resume_and_refuse_other_settings(fake_model, tmp_path) -> None:
    pool, out = hand_pool(8), tmp_path / "al"
    settings = sim.SimSettings(CFG, "hand", "hand", 2, str(out), initial=3, budget=2, rounds=3)
    settings.seeds = [0, 1]
    sim.check_settings(settings)
    sim.simulate(settings, pool)
    trained = fake_model["train"]
    assert len(trained) == 2 * (1 + 3 * 3)
    r0 = [f for f, _ in trained if f.name == "r0"]
    assert sorted(r0) == [out / "seed0" / "r0", out / "seed1" / "r0"]  # once per seed
    records = report.collect_records(settings)
    assert len(records) == len(trained)
    for seed in (0, 1):
        base = json.loads((out / f"seed{seed}" / "r0" / "labelled.json").read_text())
        for strategy in sim.STRATEGY_SETTINGS:
            before = base["image_ids"]
            for k in (1, 2, 3):
                rec = json.loads((sim.round_dir(out, seed, strategy, k) / "round.json").read_text())
                new = [a["image_id"] for a in rec["acquired"]]
                assert not set(new) & set(before) and len(new) == (2 if k < 3 else 1)
                before = before + new
                assert rec["n_images"] == len(before) == 3 + 2 * min(k, 2) + (k == 3)
                assert rec["n_boxes"] == sum(before)  # image i has i boxes
                assert rec["AP"] == len(before) and rec["strategy"] == strategy
    # entropy rounds were scored with the previous round's model folder
    assert out / "seed0" / "r0" in fake_model["entries"]
    assert out / "seed0" / "entropy" / "r1" in fake_model["entries"]

    trained.clear()
    sim.simulate(settings, pool)  # everything finished: nothing trains
    assert trained == []
    settings.rounds = 4  # the pool is used up after round 3: round 4 is not run
    sim.check_settings(settings)
    sim.simulate(settings, pool)
    assert trained == []
    redo = sim.round_dir(out, 0, "entropy", 2)
    (redo / "round.json").unlink()
    entries = len(fake_model["entries"])
    sim.simulate(settings, pool)
    assert [f for f, _ in trained] == [redo]
    assert len(fake_model["entries"]) == entries  # labelled.json reused, nothing re-acquired

    other = sim.SimSettings(CFG, "hand", "hand", 2, str(out), initial=3, budget=3, rounds=3)
    with pytest.raises(sim.SimulationError, match="budget"):
        sim.check_settings(other)
    other = sim.SimSettings(CFG, "hand", "hand", 2, str(out), initial=3, budget=2, seeds=[5])
    sim.check_settings(other)  # another seed or strategy may be added
    saved = json.loads((out / "simulation.json").read_text())["settings"]
    assert saved["seeds"] == [0, 1, 5] and saved["rounds"] == 4


def _records(deltas: Dict[str, List[float]], rounds: int = 2) -> List[Dict]:
    """round.json-like records: random's AP = 10 + 5 k + seed, others + delta[seed] * k."""
    recs = []
    for seed in (0, 1):
        recs.append({"strategy": "initial", "seed": seed, "round": 0, "n_images": 30})
        recs[-1].update(n_boxes=400, AP=10.0 + seed, AP50=20.0 + seed, train_s=60.0)
        for s in ("random", *deltas):
            for k in range(1, rounds + 1):
                ap = 10.0 + 5 * k + seed + (deltas[s][seed] * k if s in deltas else 0.0)
                rec = {"strategy": s, "seed": seed, "round": k, "n_images": 30 + 25 * k}
                rec.update(n_boxes=400 + 300 * k + (50 if s != "random" else 0), AP=ap)
                recs.append({**rec, "AP50": 2 * ap, "train_s": 61.0})
    return recs


def test_report_table_figures_and_verdict(tmp_path) -> None:
    page = tmp_path / "docs" / "RESULTS_active.md"
    settings = sim.SimSettings(CFG, "bccd_train", "bccd_val", 3, str(tmp_path / "al"), rounds=2)
    settings.seeds, settings.strategies = [0, 1], ["random", "entropy", "entropy_kcenter"]
    recs = _records({"entropy": [1.0, 2.0], "entropy_kcenter": [-1.0, 0.5]})
    report.write_report(page, settings, recs, "python -m x --seeds 0 1", (205, 2800), ["A", "1"])
    text = page.read_text()
    assert "| strategy | round | images | boxes | AP | AP per seed | AP50 |" in text
    assert "| random | 0 | 30 | 400 | 10.5 | 0: 10.0 / 1: 11.0 | 20.5 |" in text
    assert "| entropy | 2 | 80 | 1050 | 23.5 |" in text  # (20+2 + 21+4) / 2
    assert "| entropy | 0 | +50 | +2.0 | +4.0 |" in text  # seed 0: boxes, ΔAP, ΔAP50
    assert "**entropy** came out ahead: mean AP 23.5" in text
    assert "**Active selection beats random here**: entropy (ΔAP +3.0" in text
    assert "entropy_kcenter (" not in text.split("## Setup")[0]  # mixed seeds: not a win
    for name in ("RESULTS_active_images.png", "RESULTS_active_boxes.png"):
        assert (page.parent / name).read_bytes()[:8] == PNG and f"]({name})" in text
    assert "python -m x --seeds 0 1" in text and "205 images, 2800 boxes" in text

    lines = report.verdict(_records({"entropy": [1.0, -0.5]}), ["random", "entropy"])
    assert "**entropy** came out ahead" in lines[0]
    assert "does not clearly beat random" in lines[1]
    lines = report.verdict(_records({"entropy": [-1.0, -2.0]}), ["random", "entropy"])
    assert "**random** came out ahead" in lines[0]
    assert "**Active selection does not beat random here**" in lines[1]
    assert "No round has finished" in report.verdict([], ["random"])[0]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> str:
    """A 6-image pool and a 2-image test set of 64x64 synthetic smears (11 classes)."""
    root = tmp_path_factory.mktemp("al_data")
    for name, split, n in ((POOL, "pool", 6), (TEST, "val", 2)):
        json_file = generate_dataset(root, split, n, seed=0, height=64, width=64)
        register_coco_dataset(name, json_file, root / split, metadata=marrow_metadata())
    yield root
    unregister_dataset(POOL)
    unregister_dataset(TEST)


def _argv(out: Path, *extra: str) -> List[str]:
    argv = ["--config-file", CFG, "--train-dataset", POOL, "--test-dataset", TEST]
    argv += ["--num-classes", "11", "--initial", "2", "--budget", "2", "--rounds", "1"]
    argv += ["--max-iter", "2", "--seeds", "0", "--output", str(out), "--threads", "1"]
    argv += ["--strategies", "random", "entropy_kcenter"]
    return argv + list(extra)


@pytest.mark.parametrize(
    "change, message",
    [
        (("--train-dataset", "no_such_dataset"), "no_such_dataset"),
        (("--strategies", "random", "oracle"), "unknown strategy 'oracle'"),
        (("--initial", "7"), "pool size 6"),
        (("--budget", "0"), "--budget must be at least 1"),
    ],
)
def test_cli_bad_input(datasets, tmp_path, capsys, change, message) -> None:
    argv = _argv(tmp_path / "al")
    i = argv.index(change[0])
    argv[i + 1 : i + 2] = change[1:]
    assert al_simulate.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "al" / "simulation.json").exists()


def test_cli_end_to_end_tiny_models(datasets, tmp_path, capsys) -> None:
    out, page = tmp_path / "al", tmp_path / "docs" / "RESULTS_active.md"
    argv = _argv(out, "--report", str(page))
    t0 = time.perf_counter()
    assert al_simulate.main(argv + TINY) == 0
    elapsed = time.perf_counter() - t0
    for folder in ("seed0/r0", "seed0/random/r1", "seed0/entropy_kcenter/r1"):
        rec = json.loads((out / folder / "round.json").read_text())
        assert (
            rec["AP"] is not None
            and rec["train_s"] > 0
            and (out / folder / "model_final.pth").is_file()
        )
        assert "MAX_ITER: 2" in (out / folder / "config.yaml").read_text()
    rec = json.loads((out / "seed0/entropy_kcenter/r1/round.json").read_text())
    assert rec["n_images"] == 4 and len(rec["acquired"]) == 2
    assert list((out / "seed0" / "r0" / "acquisition_cache").glob("*.npz"))  # scored by r0
    assert "| entropy_kcenter | 1 | 4 |" in page.read_text()
    assert (page.parent / "RESULTS_active_boxes.png").read_bytes()[:8] == PNG
    capsys.readouterr()
    mtime = (out / "seed0/r0/round.json").stat().st_mtime_ns
    assert al_simulate.main([*argv, "--no-run", *TINY]) == 0
    assert "3 finished round(s)" in capsys.readouterr().out
    assert (out / "seed0/r0/round.json").stat().st_mtime_ns == mtime
    argv[argv.index("--budget") + 1] = "3"
    assert al_simulate.main(argv + TINY) == 2
    assert "budget" in capsys.readouterr().err
    assert elapsed < 120
