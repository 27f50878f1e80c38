"""The ablation as library calls: the detector comparison plans, trains, times and reports through
studies.ablation.study and bmc_detectron.bench.side_by_side (no tool calls another tool's main),
and the ablation page carries a status section generated from the study's manifest."""

from __future__ import annotations

import json
from pathlib import Path

from studies.ablation.page import write_report
from studies.ablation.runs import RunPlan
from studies.detectors import compare_detectors

ARGV = ["--train-dataset", "tr", "--test-dataset", "te", "--num-classes", "3", "--seeds", "0", "1"]


def _record_calls(monkeypatch, tmp_path):
    calls = []

    def run_ablation(plan, reference_config, page, *, argv, no_run=False, in_process=False):
        calls.append(("ablation", plan, Path(reference_config).stem, page, argv, no_run))
        return 0

    def side_by_side_latency(entries, timing, *, reference, command):
        calls.append(("latency", [e[0] for e in entries], timing, reference, command))
        return {"markdown": "| table |\n", "models": []}

    monkeypatch.setattr(compare_detectors, "run_ablation", run_ablation)
    monkeypatch.setattr(compare_detectors, "side_by_side_latency", side_by_side_latency)
    monkeypatch.setattr(
        compare_detectors,
        "load_configs",
        lambda files, opts: [(Path(f).stem, f, opts) for f in files],
    )
    return calls


def test_compare_detectors_trains_times_and_reports_through_the_libraries(monkeypatch, tmp_path):
    calls = _record_calls(monkeypatch, tmp_path)
    out = str(tmp_path / "cmp")
    argv = [*ARGV, "--output", out, "--report", "page.md", "--manifest", "m.yaml"]
    assert compare_detectors.main([*argv, "SOLVER.CHECKPOINT_PERIOD", "100"]) == 0
    train, latency, report = calls
    # training: the four default configs x seeds 0 1, logged as the ablation command line
    assert train[0] == "ablation" and not train[5] and train[2] == "d2_retinanet_R_18_FPN_cpu"
    plan = train[1]
    assert [Path(c).stem for c in plan.configs] == [
        "d2_retinanet_R_18_FPN_cpu",
        "faster_rcnn_R_18_FPN_cpu",
        "fcos_R_18_FPN_cpu",
        "retinanet_R_18_full_cpu",
    ]
    assert list(plan.seeds) == [0, 1] and plan.threads == 1 and plan.output == out
    assert list(plan.opts) == ["SOLVER.CHECKPOINT_PERIOD", "100"]
    assert train[4][:2] == ["--configs", plan.configs[0]]
    assert train[4][-4:] == ["--threads", "1", "SOLVER.CHECKPOINT_PERIOD", "100"]
    # timing: side by side, logged as the benchmark's command line
    assert latency[1] == [Path(c).stem for c in plan.configs]
    assert latency[2].dataset == "te" and latency[2].num_images == 10 and latency[2].rounds == 6
    assert latency[3] == "d2_retinanet_R_18_FPN_cpu"
    assert latency[4].startswith("python -m bmc_detectron.analysis_tools.benchmark --configs ")
    assert "--threads 2 --output " in latency[4] and latency[4].endswith(
        "MODEL.ROI_HEADS.NUM_CLASSES 3 SOLVER.CHECKPOINT_PERIOD 100"
    )
    assert (tmp_path / "cmp" / "latency" / "latency.md").read_text().endswith("| table |\n")
    assert json.loads((tmp_path / "cmp" / "latency" / "latency.json").read_text())["models"] == []
    # the page: no training, the side-by-side table included, the manifest's status
    _, _, _, page, report_argv, no_run = report
    assert no_run and page.report == "page.md" and page.manifest == "m.yaml"
    assert page.full == "retinanet_R_18_full_cpu" and page.title == compare_detectors.TITLE
    assert page.extra == [str(tmp_path / "cmp" / "latency" / "latency.md")]
    assert page.latency_from == str(tmp_path / "cmp" / "latency" / "latency.json")
    assert "--no-run" in report_argv
    assert report_argv[-2:] == ["SOLVER.CHECKPOINT_PERIOD", "100"]
    assert report_argv[report_argv.index("--manifest") + 1] == "m.yaml"


def test_compare_detectors_tasks_train_only_those_runs(monkeypatch, tmp_path):
    calls = _record_calls(monkeypatch, tmp_path)
    argv = [*ARGV, "--output", str(tmp_path), "--tasks", "fcos_R_18_FPN_cpu:1"]
    assert compare_detectors.main(argv) == 0
    assert len(calls) == 1
    plan = calls[0][1]
    assert [Path(c).stem for c in plan.configs] == ["fcos_R_18_FPN_cpu"] and plan.seeds == [1]


def test_ablation_page_has_the_status_of_the_study(tmp_path):
    out = tmp_path / "abl"
    run_dir = out / "runs" / "a" / "seed0"
    (run_dir / "inference" / "te").mkdir(parents=True)
    (run_dir / "inference" / "te" / "coco_metrics.json").write_text("{}")
    (out / "commands.txt").write_text("python -m studies.ablation.ablation --configs a.yaml\n")
    manifest = tmp_path / "study.yaml"
    manifest.write_text("title: t\npages: []\ntest_dataset: te\nseeds: [0, 1]\nconfigs: [a]\n")
    record = {"name": "a", "seed": 0, "status": "ok", "config_file": "a.yaml", "run_dir": "x"}
    plan = RunPlan(configs=["a.yaml"], train_dataset="tr", test_dataset="te", num_classes=3)
    page = tmp_path / "RESULTS_x.md"
    write_report(
        page,
        out,
        "TABLES\n",
        [record],
        plan,
        title="A title",
        argv=["--configs", "a.yaml"],
        wall_s=60.0,
        sched=["SOLVER.MAX_ITER", "2"],
        manifest=str(manifest),
    )
    text = page.read_text()
    assert text.startswith("# A title\n")
    status = text.split("## Status\n")[1].split("## Results")[0]
    assert "1 of 2 planned runs done (1 queued)." in status
    assert "- `a`: 1 of 2 planned seeds done (0); queued: 1\n" in status
    assert "python -m studies.ablation.ablation --configs a.yaml\n" in text


def test_ablation_page_names_runs_trained_with_their_own_schedule(tmp_path):
    out = tmp_path / "abl"
    out.mkdir()
    (out / "commands.txt").write_text("")
    sched = ["SOLVER.MAX_ITER", "780", "SOLVER.BASE_LR", "0.01"]
    command = "python train_net.py --config-file {} SOLVER.MAX_ITER 780 SOLVER.BASE_LR {} SEED 0"
    records = [
        {"name": "a", "seed": 0, "status": "ok", "config_file": "a.yaml",
         "train_net_command": command.format("a.yaml", "0.01")},
        {"name": "b", "seed": 0, "status": "ok", "config_file": "b.yaml",
         "train_net_command": command.format("b.yaml", "0.02")},
        {"name": "b", "seed": 1, "status": "failed", "config_file": "b.yaml",
         "train_net_command": command.format("b.yaml", "0.02")},
    ]  # fmt: skip
    plan = RunPlan(
        configs=["a.yaml", "b.yaml"], train_dataset="tr", test_dataset="te", num_classes=3
    )
    page = tmp_path / "RESULTS_x.md"
    write_report(page, out, "T\n", records, plan, title="t", argv=[], wall_s=1.0, sched=sched)
    setup = page.read_text().split("## Setup\n")[1].split("## ")[0]
    assert "- `b` trained with its own schedule: `SOLVER.BASE_LR 0.02`\n" in setup
    assert "`a` trained" not in setup


def test_side_by_side_timing_gives_every_seed_its_latency_and_gflops(tmp_path):
    from studies.ablation.study import use_side_by_side_costs

    timed = [{"name": "a", "median_ms": 70.0, "gflops": 8.4}, {"name": "b", "median_ms": 200.0}]
    path = tmp_path / "latency.json"
    path.write_text(json.dumps({"models": timed}))
    records = [
        {"name": "a", "seed": 0, "latency_ms": 90.0, "gflops": 7.9},
        {"name": "a", "seed": 1, "latency_ms": 95.0, "gflops": 7.9},
        {"name": "b", "seed": 0, "latency_ms": 210.0, "gflops": 16.4},  # timed, not counted
        {"name": "c", "seed": 0, "latency_ms": 50.0, "gflops": 5.0},  # not in the timing
    ]
    use_side_by_side_costs(records, str(path))
    got = [(r["latency_ms"], r["gflops"]) for r in records]
    assert got == [(70.0, 8.4), (70.0, 8.4), (200.0, 16.4), (50.0, 5.0)]
