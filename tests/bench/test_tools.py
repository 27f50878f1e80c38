"""The benchmark, ablation and assignment-benchmark command lines on a tiny config."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest
import torch
from detectron2.modeling import build_model

from bmc_detectron.analysis_tools import benchmark
from bmc_detectron.bench.side_by_side import load_configs
from bmc_detectron.config import build_cfg
from bmc_detectron.data.classes import marrow_metadata
from bmc_detectron.data.datasets import register_coco_dataset, unregister_dataset
from bmc_detectron.data.synthetic import generate_dataset
from bmc_detectron.modeling.assigners import ASSIGNER_REGISTRY
from studies.ablation import ablation
from studies.ablation.runs import metrics_path
from studies.assignment import assign_bench

REPO = Path(__file__).resolve().parents[2]
CFG = str(REPO / "configs" / "cpu" / "retinanet_R_18_FPN_cpu.yaml")
D2_CFG = str(REPO / "configs" / "cpu" / "d2_retinanet_R_18_FPN_cpu.yaml")
REFERENCE = "d2_retinanet_R_18_FPN_cpu"
DATASET = "tools_smoke_synth"
TINY = [
    *("MODEL.FPN.OUT_CHANNELS", "32", "MODEL.RETINANET.NUM_CONVS", "1", "MODEL.DEVICE", "cpu"),
    *("INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64"),
    *("INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64"),
    *("SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0"),
    # an untrained model scores below 0.05
    *("MODEL.RETINANET.SCORE_THRESH_TEST", "0.0"),
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    """4 synthetic 96x96 marrow smears (11 classes), registered for the module."""
    root = tmp_path_factory.mktemp("synth")
    json_file = generate_dataset(root, "train", 4, seed=0, height=96, width=96)
    register_coco_dataset(DATASET, json_file, root / "train", metadata=marrow_metadata())
    yield DATASET
    unregister_dataset(DATASET)


@pytest.mark.slow
def test_benchmark_bmc_with_weights_and_the_reference_config(tmp_path, dataset):
    out = tmp_path / "bench"
    weights = tmp_path / "tiny.pth"
    torch.save({"model": build_model(build_cfg(CFG, TINY)).state_dict()}, weights)
    common = ["--input-size", "64", "64", "--num-images", "2", "--warmup", "1"]
    common += ["--threads", "1", "--output", str(out)]
    argv = ["--configs", CFG, *common, "--weights", str(weights), "--dataset", dataset]
    assert benchmark.main(argv + ["--batch-size", "2", "--iters", "1", *TINY]) == 0
    rec = json.loads((out / "benchmark_retinanet_R_18_FPN_cpu.json").read_text())
    assert rec["params_m"] > 1 and rec["flops"]["gflops"] > 0
    assert rec["latency"]["n"] == 2 and rec["latency"]["median_ms"] > 0
    assert rec["latency"]["source"] == dataset and rec["latency"]["memory"]["peak_mb"] > 0
    assert rec["throughput"]["images"] == 2 and rec["throughput"]["images_per_s"] > 0
    assert rec["train"]["n"] == 1 and rec["train"]["batch_size"] == 2
    assert rec["train"]["memory"]["peak_mb"] > 0 and rec["precision"] == "float32"
    assert set(rec["coco"]) >= {"AP", "AP50", "AP75", "AP-Prim", "AP50-Prim", "AP-Eosl"}
    metrics = out / rec["name"] / "inference" / dataset / "coco_metrics.json"
    assert metrics.is_file()

    # detectron2's RetinaNet, from its config file: both necks pad to 32, and the BMC model
    # without PAN/attention has the same parameters and cost.
    argv = ["--configs", D2_CFG, *common, "--batch-size", "0", "--iters", "0", *TINY]
    assert benchmark.main(argv) == 0
    ref = json.loads((out / f"benchmark_{REFERENCE}.json").read_text())
    assert ref["meta_architecture"] == "RetinaNet" and "train" not in ref
    assert ref["flops"]["padded_input"] == rec["flops"]["padded_input"] == [64, 64]
    assert ref["params_m"] == pytest.approx(rec["params_m"])
    assert ref["flops"]["gflops"] == pytest.approx(rec["flops"]["gflops"])
    lines = (out / "benchmark.md").read_text().splitlines()
    assert lines[0].startswith("| run |") and len(lines) == 4  # header, rule, 2 rows
    assert f"| {REFERENCE} |" in lines[3]


def _read_csv(path: Path):
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_ablation_in_process_failure_and_resume(tmp_path, dataset, capsys):
    bad = tmp_path / "bad_soft_labels_focal.yaml"  # loads, but the model refuses to build
    bad.write_text(f'_BASE_: "{CFG}"\nMODEL:\n  BMC:\n    LOSS: {{SOFT_LABELS: True}}\n')
    out, report = tmp_path / "abl", tmp_path / "docs" / "RESULTS.md"
    data = ["--train-dataset", dataset, "--test-dataset", dataset, "--num-classes", "11"]
    argv = ["--configs", CFG, str(bad), "--reference", *data, "--seeds", "0", "--max-iter", "2"]
    argv += ["--latency-images", "2", "--in-process", "--threads", "1", "--output", str(out)]
    argv += ["--report", str(report), *TINY]
    assert ablation.main(argv) == 1  # one run failed
    rows = {(r["config"], r["seed"]): r for r in _read_csv(out / "ablation.csv")}
    ok = rows[("retinanet_R_18_FPN_cpu", "0")]
    assert ok["status"] == "ok" and float(ok["latency_ms"]) > 0 and float(ok["AP50-Red"]) >= 0
    assert rows[(REFERENCE, "0")]["status"] == "ok"
    failed = rows[("bad_soft_labels_focal", "0")]
    assert failed["status"] == "failed" and "SOFT_LABELS" in failed["error"]
    assert rows[("retinanet_R_18_FPN_cpu", "mean")]["AP"] == ok["AP"]
    run_dir = out / "runs" / "retinanet_R_18_FPN_cpu" / "seed0"
    cfg_text = (run_dir / "config.yaml").read_text()
    assert "MAX_ITER: 2" in cfg_text and "WARMUP_ITERS: 0" in cfg_text and "STEPS: []" in cfg_text
    ref_cfg = (out / "runs" / REFERENCE / "seed0" / "config.yaml").read_text()
    assert "META_ARCHITECTURE: RetinaNet" in ref_cfg
    md = (out / "ablation.md").read_text()
    assert "### Per-class AP50" in md and "| config | Prim | Lym |" in md
    assert "Runs without results" in md
    # paired differences also carry a bootstrap interval over the test images
    assert "(bootstrap over the" in md
    assert f"| retinanet_R_18_FPN_cpu | {REFERENCE} (reference) | 1 |" in md
    for png in ("ap_per_config.png", "ap_vs_latency.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = report.read_text()
    # the plots beside the report carry its name, so two reports in one folder keep their own
    assert f"]({report.stem}_ap_per_config.png)" in text and "train_net.py --config-file" in text
    assert (report.parent / f"{report.stem}_ap_vs_latency.png").read_bytes()[
        :8
    ] == b"\x89PNG\r\n\x1a\n"
    assert "torch" in text and "ablation --configs" in text
    assert f"- reference: `{REFERENCE}`" in text

    metrics = metrics_path({"run_dir": str(run_dir), "test_dataset": dataset})
    mtime = metrics.stat().st_mtime_ns
    capsys.readouterr()
    assert ablation.main(argv) == 1
    log = capsys.readouterr().out
    assert "skip retinanet_R_18_FPN_cpu seed 0" in log
    assert f"skip {REFERENCE} seed 0" in log
    assert "run bad_soft_labels_focal seed 0" in log  # failed runs are retried
    assert metrics.stat().st_mtime_ns == mtime
    assert len((out / "commands.txt").read_text().splitlines()) == 2

    # --no-run tabulates what exists and trains nothing; an unseen seed is "not run"; the
    # reference is recognised by its config stem when listed among --configs
    no_run = ["--configs", CFG, D2_CFG, *data, "--seeds", "0", "7", "--max-iter", "2"]
    no_run += ["--output", str(out), "--report", str(report), "--no-run"]
    no_run += ["--full", "retinanet_R_18_FPN_cpu", "--title", "Selection on x", *TINY]
    capsys.readouterr()
    assert ablation.main(no_run) == 0
    log = capsys.readouterr().out
    assert "no result for retinanet_R_18_FPN_cpu seed 7 (--no-run)" in log
    assert not (out / "runs" / "retinanet_R_18_FPN_cpu" / "seed7").exists()
    rows = {(r["config"], r["seed"]): r for r in _read_csv(out / "ablation.csv")}
    assert rows[("retinanet_R_18_FPN_cpu", "7")]["status"] == "not run"
    assert rows[("retinanet_R_18_FPN_cpu", "mean")]["AP"] == ok["AP"]
    text = report.read_text()
    assert text.startswith("# Selection on x\n")
    assert "### Accuracy target" in text and f"vs `{REFERENCE}` over 1 paired seed(s)" in text
    assert "| retinanet_R_18_FPN_cpu | CPU baseline: RetinaNet R-18-FPN" in text
    assert f"| retinanet_R_18_FPN_cpu | {REFERENCE} (reference) | 1 |" in text
    assert "(n=1, no interval)" in text
    # the page names its own command once and lists each training invocation once (the first
    # run and its identical repeat are one line; the --no-run report is not a training one)
    page_cmd, trained = text.split("This page:")[1].split("Invocations that trained")
    assert "--no-run" in page_cmd and "--seeds 0 7" in page_cmd
    trained = trained.split("```")[1].strip().splitlines()
    assert len(trained) == 1 and "--no-run" not in trained[0]


def test_ablation_report_needs_runs_and_its_input_files(tmp_path, dataset, capsys):
    """A report over a folder without a finished run, or naming a missing file, is refused
    with the reason, and the page already there is left as it was."""
    report = tmp_path / "RESULTS.md"
    report.write_text("# the page of an earlier run\n")
    data = ["--train-dataset", dataset, "--test-dataset", dataset, "--num-classes", "11"]
    argv = ["--configs", CFG, *data, "--output", str(tmp_path / "empty"), "--no-run"]
    argv += ["--report", str(report)]
    assert ablation.main(argv) == 2
    assert "no finished run in" in capsys.readouterr().err
    missing = str(tmp_path / "latency.md")
    assert ablation.main(argv + ["--extra", missing]) == 2
    assert f"file not found: {missing}" in capsys.readouterr().err
    assert report.read_text() == "# the page of an earlier run\n"
    assert not list(tmp_path.glob("RESULTS_*.png"))  # no plots copied beside it either


@pytest.mark.slow
def test_ablation_subprocess_run(tmp_path, dataset):
    out = tmp_path / "abl"
    argv = ["--configs", CFG, "--train-dataset", dataset, "--test-dataset", dataset]
    argv += ["--num-classes", "11", "--seeds", "1", "--max-iter", "1", "--latency-images", "1"]
    argv += ["--timeout", "300", "--threads", "1", "--output", str(out), *TINY]
    assert ablation.main(argv) == 0
    run_dir = out / "runs" / "retinanet_R_18_FPN_cpu" / "seed1"
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "ok" and info["train_s"] > 0 and info["latency_ms"] > 0
    assert "ablation --worker" in info["command"] and (run_dir / "log.txt").stat().st_size > 0
    assert (run_dir / "inference" / dataset / "coco_metrics.json").is_file()


@pytest.mark.slow
def test_assign_bench(tmp_path):
    names = ["MaxIoU", "SimOTA"]
    assert all(name in ASSIGNER_REGISTRY for name in names)
    out = tmp_path / "ab"
    argv = ["--config-file", CFG, "--assigners", *names, "--gts", "2", "8", "--repeats", "2"]
    argv += ["--input-size", "64", "64", "--iters", "1", "--threads", "1", "--output", str(out)]
    assert assign_bench.main(argv + TINY) == 0
    rec = json.loads((out / "assign_bench.json").read_text())
    assert rec["num_anchors"] > 0 and list(rec["assigners"]) == names
    for name in names:
        entry = rec["assigners"][name]
        assert set(entry["per_gts"]) == {"2", "8"}
        assert all(v["median_ms"] > 0 and v["peak_mb"] > 0 for v in entry["per_gts"].values())
        assert 0 < entry["share"]["share"] < 1
        assert entry["share"]["assign_ms"] < entry["share"]["iteration_ms"]
        assert entry["scaling"]["g_ref"] == 2 and entry["scaling"]["linear_ratio"] == 4
    md = (out / "assign_bench.md").read_text()
    assert "| assigner | G=2 | G=8 |" in md and "share (%)" in md


def test_assign_bench_rejects_the_stock_retinanet(tmp_path, capsys):
    argv = ["--config-file", D2_CFG, "--assigners", "MaxIoU", "--output", str(tmp_path), *TINY]
    assert assign_bench.main(argv) == 2
    assert "BMCRetinaNet" in capsys.readouterr().err


def test_assign_bench_unknown_assigner(tmp_path):
    argv = ["--config-file", CFG, "--output", str(tmp_path), "--assigners", "MaxIoU", "Nope"]
    assert assign_bench.main(argv) == 2
    assert not (tmp_path / "assign_bench.json").exists()


@pytest.mark.slow
def test_benchmark_several_configs_side_by_side_with_stage_split(tmp_path):
    out = tmp_path / "lat"
    argv = ["--configs", CFG, D2_CFG, "--reference", REFERENCE, "--full", "retinanet_R_18_FPN_cpu"]
    argv += ["--rounds", "2", "--num-images", "2", "--warmup", "1", "--threads", "1"]
    argv += ["--input-size", "64", "64", "--output", str(out), *TINY]
    assert benchmark.main(argv) == 0
    rec = json.loads((out / "latency.json").read_text())
    by_name = {m["name"]: m for m in rec["models"]}
    assert set(by_name) == {"retinanet_R_18_FPN_cpu", REFERENCE} and rec["reference"] == REFERENCE
    ref, bmc = by_name[REFERENCE], by_name["retinanet_R_18_FPN_cpu"]
    assert ref["n"] == bmc["n"] == 4  # 2 rounds x 2 images
    # the ratio is the one of the medians of the recorded calls
    medians = [statistics.median(m["calls_ms"]["total"]) for m in (bmc, ref)]
    assert bmc["ratio_to_reference"] == pytest.approx(medians[0] / medians[1])
    for m in (ref, bmc):
        assert 0 < m["backbone_ms"] < m["median_ms"] and 0 < m["head_ms"] < m["median_ms"]
        assert m["rest_ms"] > 0
    assert bmc["params_m"] == pytest.approx(ref["params_m"])  # same architecture
    md = (out / "latency.md").read_text()
    assert "| retinanet_R_18_FPN_cpu | CPU baseline" in md and "(target ≤ 1.3x) → **" in md


@pytest.mark.slow
def test_benchmark_side_by_side_at_each_models_own_size(tmp_path):
    out, larger = tmp_path / "lat", tmp_path / "larger.yaml"
    larger.write_text(f'_BASE_: "{CFG}"\nINPUT:\n  MIN_SIZE_TEST: 96\n  MAX_SIZE_TEST: 128\n')
    argv = ["--configs", CFG, str(larger), "--own-size", "--rounds", "1", "--num-images", "1"]
    tiny = [x for i, x in enumerate(TINY) if "_TEST" not in TINY[i - i % 2]]  # sizes kept
    argv += ["--warmup", "0", "--threads", "1", "--output", str(out), *tiny]
    assert benchmark.main(argv) == 0
    rec = json.loads((out / "latency.json").read_text())
    assert rec["own_size"] is True
    assert [m["input_size"] for m in rec["models"]] == [[320, 426], [96, 128]]
    assert "own test size (retinanet_R_18_FPN_cpu 320x426, larger 96x128)" in rec["markdown"]
    small, large = rec["models"]
    assert large["gflops"] < small["gflops"]  # counted at each model's own size


def test_benchmark_checks_its_weights_and_size_arguments(tmp_path):
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--configs", CFG, D2_CFG, "--weights", "a.pth"])
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--configs", CFG, "--own-size"])
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--configs", CFG, D2_CFG, "--own-size", "--input-size", "64", "64"])
    args = benchmark.parse_args(["--configs", CFG, D2_CFG, "--weights", "a.pth", "b.pth"])
    assert args.weights == ["a.pth", "b.pth"]


def test_load_configs_sets_each_configs_own_weights(tmp_path):
    weights = [str(tmp_path / "a.pth"), str(tmp_path / "b.pth")]
    for w in weights:
        torch.save({}, w)
    entries = load_configs([CFG, D2_CFG], ["MODEL.DEVICE", "cpu"], weights=weights)
    assert [cfg.MODEL.WEIGHTS for _, _, cfg in entries] == weights
    with pytest.raises(ValueError, match="1 weights for 2 configs"):
        load_configs([CFG, D2_CFG], [], weights=["a.pth"])


def test_benchmark_rejects_a_config_that_does_not_load(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("MODEL:\n  NOT_A_KEY: 1\n")
    assert benchmark.main(["--configs", CFG, str(bad), "--output", str(tmp_path)]) == 2
    assert "bad.yaml" in capsys.readouterr().err
    assert not (tmp_path / "latency.json").exists()
