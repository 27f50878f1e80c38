"""Smoke tests of the benchmark, ablation and assignment-benchmark commands on a tiny config."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from detectron2.modeling import build_model

from bmc_detectron.config import build_cfg
from bmc_detectron.data.classes import marrow_metadata
from bmc_detectron.data.datasets import register_coco_dataset, unregister_dataset
from bmc_detectron.data.synthetic import generate_dataset
from bmc_detectron.tools import _ablation_report as R
from bmc_detectron.tools import ablation, assign_bench, benchmark, latency
from bmc_detectron.tools._bench_utils import registered_assigners, summarize_ms

REPO = Path(__file__).resolve().parents[1]
CFG = str(REPO / "configs" / "cpu" / "retinanet_R_18_FPN_cpu.yaml")
DATASET = "tools_smoke_synth"
TINY = [
    "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.RETINANET.NUM_CONVS", "1", "MODEL.DEVICE", "cpu",
    "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64", "INPUT.MIN_SIZE_TEST", "64",
    "INPUT.MAX_SIZE_TEST", "64", "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0",
    "MODEL.RETINANET.SCORE_THRESH_TEST", "0.0",  # an untrained model scores below 0.05
]  # fmt: skip


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    """4 synthetic 96x96 marrow smears (11 classes), registered for the module."""
    root = tmp_path_factory.mktemp("synth")
    json_file = generate_dataset(root, "train", 4, seed=0, height=96, width=96)
    register_coco_dataset(DATASET, json_file, root / "train", metadata=marrow_metadata())
    yield DATASET
    unregister_dataset(DATASET)


def test_summarize_ms_median_and_p90():
    stats = summarize_ms([i / 1000 for i in range(10, 0, -1)])  # 1..10 ms, unsorted
    assert stats["median_ms"] == pytest.approx(5.5)
    assert stats["p90_ms"] == pytest.approx(9.0)
    assert stats["n"] == 10


def test_gflops_scale_with_input_area():
    model = build_model(build_cfg(CFG, TINY))
    small = benchmark.count_gflops(model, (128, 128))
    large = benchmark.count_gflops(model, (256, 256))
    assert small["padded_input"] == [128, 128]
    assert large["gflops"] / small["gflops"] == pytest.approx(4.0, rel=0.02)
    assert small["gflops"] == pytest.approx(small["backbone_gflops"] + small["head_gflops"])


def test_benchmark_bmc_with_weights_and_stock_retinanet(tmp_path, dataset):
    out = tmp_path / "bench"
    weights = tmp_path / "tiny.pth"
    torch.save({"model": build_model(build_cfg(CFG, TINY)).state_dict()}, weights)
    common = ["--config-file", CFG, "--input-size", "64", "64", "--num-images", "2",
              "--warmup", "1", "--threads", "1", "--output", str(out)]  # fmt: skip
    rc = benchmark.main(common + ["--weights", str(weights), "--dataset", dataset,
                                  "--batch-size", "2", "--iters", "1", *TINY])  # fmt: skip
    assert rc == 0
    rec = json.loads((out / "benchmark_retinanet_R_18_FPN_cpu.json").read_text())
    assert rec["params_m"] > 1 and rec["flops"]["gflops"] > 0
    assert rec["latency"]["n"] == 2 and rec["latency"]["median_ms"] > 0
    assert rec["latency"]["source"] == dataset and rec["latency"]["memory"]["peak_mb"] > 0
    assert rec["throughput"]["images"] == 2 and rec["throughput"]["images_per_s"] > 0
    assert rec["train"]["n"] == 1 and rec["train"]["batch_size"] == 2
    assert set(rec["coco"]) >= {"AP", "AP50", "AP75", "AP-Prim", "AP50-Prim", "AP-Eosl"}
    metrics = out / rec["name"] / "inference" / dataset / "coco_metrics.json"
    assert metrics.is_file()

    # detectron2's RetinaNet: both necks pad to 32, and the BMC model without PAN/attention
    # has the same parameters and cost.
    rc = benchmark.main(
        common + ["--batch-size", "0", "--iters", "0", *ablation.REFERENCE_OPTS, *TINY]
    )
    assert rc == 0
    ref = json.loads((out / "benchmark_retinanet_R_18_FPN_cpu-RetinaNet.json").read_text())
    assert ref["meta_architecture"] == "RetinaNet" and "train" not in ref
    assert ref["flops"]["padded_input"] == rec["flops"]["padded_input"] == [64, 64]
    assert ref["params_m"] == pytest.approx(rec["params_m"])
    assert ref["flops"]["gflops"] == pytest.approx(rec["flops"]["gflops"])
    lines = (out / "benchmark.md").read_text().splitlines()
    assert lines[0].startswith("| run |") and len(lines) == 4  # header, rule, 2 rows
    assert "| retinanet_R_18_FPN_cpu-RetinaNet |" in lines[3]


def _read_csv(path: Path):
    with path.open() as f:
        return list(csv.DictReader(f))


def test_ablation_in_process_failure_and_resume(tmp_path, dataset, capsys):
    bad = tmp_path / "bad_soft_labels_focal.yaml"  # loads, but the model refuses to build
    bad.write_text(f'_BASE_: "{CFG}"\nMODEL:\n  BMC:\n    LOSS: {{SOFT_LABELS: True}}\n')
    out, report = tmp_path / "abl", tmp_path / "docs" / "RESULTS.md"
    argv = ["--configs", CFG, str(bad), "--reference", "--train-dataset", dataset,
            "--test-dataset", dataset, "--num-classes", "11", "--seeds", "0", "--max-iter", "2",
            "--latency-images", "2", "--in-process", "--threads", "1", "--output", str(out),
            "--report", str(report), *TINY]  # fmt: skip
    assert ablation.main(argv) == 1  # one run failed
    rows = {(r["config"], r["seed"]): r for r in _read_csv(out / "ablation.csv")}
    ok = rows[("retinanet_R_18_FPN_cpu", "0")]
    assert ok["status"] == "ok" and float(ok["latency_ms"]) > 0 and float(ok["AP50-Red"]) >= 0
    assert rows[(ablation.REFERENCE_NAME, "0")]["status"] == "ok"
    failed = rows[("bad_soft_labels_focal", "0")]
    assert failed["status"] == "failed" and "SOFT_LABELS" in failed["error"]
    assert rows[("retinanet_R_18_FPN_cpu", "mean")]["AP"] == ok["AP"]
    run_dir = out / "runs" / "retinanet_R_18_FPN_cpu" / "seed0"
    cfg_text = (run_dir / "config.yaml").read_text()
    assert "MAX_ITER: 2" in cfg_text and "WARMUP_ITERS: 0" in cfg_text and "STEPS: []" in cfg_text
    ref_cfg = (out / "runs" / ablation.REFERENCE_NAME / "seed0" / "config.yaml").read_text()
    assert "META_ARCHITECTURE: RetinaNet" in ref_cfg
    md = (out / "ablation.md").read_text()
    assert (
        "### Per-class AP50" in md
        and "| config | Prim | Lym |" in md
        and "Runs without results" in md
    )
    for png in ("ap_per_config.png", "ap_vs_latency.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = report.read_text()
    assert "](ap_per_config.png)" in text and "train_net.py --config-file" in text
    assert (report.parent / "ap_vs_latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "torch" in text and "ablation --configs" in text

    metrics = ablation.metrics_path({"run_dir": str(run_dir), "test_dataset": dataset})
    mtime = metrics.stat().st_mtime_ns
    capsys.readouterr()
    assert ablation.main(argv) == 1
    log = capsys.readouterr().out
    assert "skip retinanet_R_18_FPN_cpu seed 0" in log
    assert f"skip {ablation.REFERENCE_NAME} seed 0" in log
    assert "run bad_soft_labels_focal seed 0" in log  # failed runs are retried
    assert metrics.stat().st_mtime_ns == mtime
    assert len((out / "commands.txt").read_text().splitlines()) == 2

    # --no-run tabulates what exists and trains nothing; an unseen seed is "not run"
    no_run = ["--configs", CFG, "--reference", "--train-dataset", dataset, "--test-dataset",
              dataset, "--num-classes", "11", "--seeds", "0", "7", "--max-iter", "2",
              "--output", str(out), "--report", str(report), "--no-run",
              "--full", "retinanet_R_18_FPN_cpu", *TINY]  # fmt: skip
    capsys.readouterr()
    assert ablation.main(no_run) == 0
    log = capsys.readouterr().out
    assert "no result for retinanet_R_18_FPN_cpu seed 7 (--no-run)" in log
    assert not (out / "runs" / "retinanet_R_18_FPN_cpu" / "seed7").exists()
    rows = {(r["config"], r["seed"]): r for r in _read_csv(out / "ablation.csv")}
    assert rows[("retinanet_R_18_FPN_cpu", "7")]["status"] == "not run"
    assert rows[("retinanet_R_18_FPN_cpu", "mean")]["AP"] == ok["AP"]
    text = report.read_text()
    assert "### Accuracy target" in text and "over 1 paired seed(s)" in text
    assert "| retinanet_R_18_FPN_cpu | CPU baseline: RetinaNet R-18-FPN" in text


def test_ablation_subprocess_run(tmp_path, dataset):
    out = tmp_path / "abl"
    argv = ["--configs", CFG, "--train-dataset", dataset, "--test-dataset", dataset,
            "--num-classes", "11", "--seeds", "1", "--max-iter", "1", "--latency-images", "1",
            "--timeout", "300", "--threads", "1", "--output", str(out), *TINY]  # fmt: skip
    assert ablation.main(argv) == 0
    run_dir = out / "runs" / "retinanet_R_18_FPN_cpu" / "seed1"
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "ok" and info["train_s"] > 0 and info["latency_ms"] > 0
    assert "ablation --worker" in info["command"] and (run_dir / "log.txt").stat().st_size > 0
    assert (run_dir / "inference" / dataset / "coco_metrics.json").is_file()


def test_peak_tensor_memory_sees_freed_temporaries():
    def fn():
        a = torch.ones(1024, 1024)  # 4 MiB, freed before returning
        return float(a.sum())

    assert assign_bench.peak_tensor_mb(fn, torch.device("cpu")) == pytest.approx(4.0, abs=0.1)


def test_assign_bench(tmp_path):
    names = ["MaxIoU", "SimOTA"]
    assert set(names) <= set(registered_assigners())
    out = tmp_path / "ab"
    argv = ["--config-file", CFG, "--assigners", *names, "--gts", "2", "8", "--repeats", "2",
            "--input-size", "64", "64", "--iters", "1", "--threads", "1", "--output", str(out),
            *TINY]  # fmt: skip
    assert assign_bench.main(argv) == 0
    rec = json.loads((out / "assign_bench.json").read_text())
    assert rec["num_anchors"] > 0 and list(rec["assigners"]) == names
    for name in names:
        entry = rec["assigners"][name]
        assert set(entry["per_gts"]) == {"2", "8"}
        assert all(v["median_ms"] > 0 and v["peak_mb"] > 0 for v in entry["per_gts"].values())
        assert 0 < entry["share"]["share"] < 1
        assert entry["scaling"]["g_ref"] == 2 and entry["scaling"]["linear_ratio"] == 4
    md = (out / "assign_bench.md").read_text()
    assert "| assigner | G=2 | G=8 |" in md and "share (%)" in md


def test_assign_bench_unknown_assigner(tmp_path):
    argv = ["--config-file", CFG, "--output", str(tmp_path), "--assigners", "MaxIoU", "Nope"]
    assert assign_bench.main(argv) == 2
    assert not (tmp_path / "assign_bench.json").exists()


def _row(name: str, seeds_ap: dict, seeds_ap50: dict) -> dict:
    return {
        "config": name,
        "ok_seeds": list(seeds_ap),
        "AP/seeds": list(seeds_ap.values()),
        "AP50/seeds": [seeds_ap50[s] for s in seeds_ap],
        "description": f"{name} desc",
    }


def test_paired_delta_uses_only_common_seeds():
    full = _row("full", {0: 40.0, 1: 38.0, 2: 50.0}, {0: 80.0, 1: 76.0, 2: 90.0})
    ref = _row(R.REFERENCE_NAME, {0: 37.0, 1: 37.0}, {0: 75.0, 1: 74.0})
    assert R.paired_delta(full, ref, "AP") == (pytest.approx(2.0), 2)  # seed 2 has no partner
    assert R.paired_delta(full, ref, "AP50") == (pytest.approx(3.5), 2)
    verdict = R.target_verdict([full, ref], "full", 1.5, 2.0)
    assert "over 2 paired seed(s)" in verdict and "ΔAP +2.0" in verdict and "**met**" in verdict
    assert "**not met**" in R.target_verdict([full, ref], "full", 2.5, 2.0)
    assert "not evaluated" in R.target_verdict([full], "full", 1.5, 2.0)
    lonely = _row("lonely", {5: 1.0}, {5: 1.0})
    assert "**not met**" in R.target_verdict([lonely, ref], "lonely", -100, -100)  # n = 0


def test_effects_table_against_parent_baseline_and_reference():
    base = _row("base", {0: 30.0, 1: 32.0}, {0: 60.0, 1: 62.0})
    child = _row("child", {0: 33.0, 1: 34.0}, {0: 66.0, 1: 65.0})
    ref = _row(R.REFERENCE_NAME, {0: 31.0}, {0: 61.0})
    lines = R.effects_table([base, child, ref], {"child": "base"}).splitlines()
    assert lines[0].startswith("| config | what it is | parent |")
    assert lines[3] == (
        "| child | child desc | base | +2.5 / +4.5 (n=2) | +2.5 / +4.5 (n=2) | +2.0 / +5.0 (n=1) |"
    )
    assert lines[2].startswith("| base | base desc |  |  |  | -1.0 / -1.0 (n=1) |")


def test_describe_reads_the_first_comment_line(tmp_path):
    cfg = tmp_path / "x.yaml"
    cfg.write_text("# One line about x.\n# more\n_BASE_: y.yaml\n")
    assert R.describe(str(cfg)) == "One line about x."
    cfg.write_text("_BASE_: y.yaml\n# late comment\n")
    assert R.describe(str(cfg)) == ""
    assert R.describe(str(tmp_path / "missing.yaml")) == ""


def test_latency_side_by_side_with_stage_split(tmp_path):
    out = tmp_path / "lat"
    argv = ["--configs", CFG, "--reference", "--full", "retinanet_R_18_FPN_cpu", "--rounds", "2",
            "--num-images", "2", "--warmup", "1", "--threads", "1", "--input-size", "64", "64",
            "--output", str(out), *TINY]  # fmt: skip
    assert latency.main(argv) == 0
    rec = json.loads((out / "latency.json").read_text())
    by_name = {m["name"]: m for m in rec["models"]}
    assert set(by_name) == {"retinanet_R_18_FPN_cpu", ablation.REFERENCE_NAME}
    ref, bmc = by_name[ablation.REFERENCE_NAME], by_name["retinanet_R_18_FPN_cpu"]
    assert ref["ratio_to_reference"] == 1.0 and ref["n"] == bmc["n"] == 4  # 2 rounds x 2 images
    for m in (ref, bmc):
        assert 0 < m["backbone_ms"] < m["median_ms"] and 0 < m["head_ms"] < m["median_ms"]
        assert m["rest_ms"] > 0
    assert bmc["params_m"] == pytest.approx(ref["params_m"])  # same architecture
    md = (out / "latency.md").read_text()
    assert "| retinanet_R_18_FPN_cpu | CPU baseline" in md and "(target ≤ 1.3x) → **" in md


def test_latency_rejects_a_config_that_does_not_load(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("MODEL:\n  NOT_A_KEY: 1\n")
    assert latency.main(["--configs", str(bad), "--output", str(tmp_path)]) == 2
    assert "bad.yaml" in capsys.readouterr().err
