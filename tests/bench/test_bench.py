"""Unit tests of the measuring library ``bmc_detectron.bench`` (no command line, tiny models)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model
from torch import nn

from bmc_detectron.bench.inputs import latency_inputs
from bmc_detectron.bench.measure import MethodClock, Subject, measure_latency, measure_training
from bmc_detectron.bench.memory import PeakMemory
from bmc_detectron.bench.model_cost import count_gflops
from bmc_detectron.bench.names import run_names
from bmc_detectron.bench.report import add_ratios, describe, latency_markdown
from bmc_detectron.data.datasets import (
    dataset_registration,
    register_coco_dataset,
    register_datasets,
    unregister_dataset,
)
from bmc_detectron.reporting.timing import round_order, summarize_ms
from studies.ablation import ablation
from studies.ablation import report as ablation_report
from tests.helpers import REPO, make_inputs, tiny_cfg

REFERENCE = "d2_retinanet_R_18_FPN_cpu"


# ----------------------------------------------------------------------------- timing
def test_summarize_ms_median_and_p90():
    stats = summarize_ms([i / 1000 for i in range(10, 0, -1)])  # 1..10 ms, unsorted
    assert stats["median_ms"] == pytest.approx(5.5)
    assert stats["p90_ms"] == pytest.approx(9.0)
    assert stats["n"] == 10


def test_round_order_rotates():
    assert [round_order("abc", r) for r in range(4)] == [
        list("abc"),
        list("bca"),
        list("cab"),
        list("abc"),
    ]
    assert round_order([], 3) == []


class _Stage(nn.Module):
    def __init__(self, log: list, tag: str):
        super().__init__()
        self.log, self.tag = log, tag

    def forward(self, x):
        self.log.append(self.tag)
        return x + 1


class _FakeDetector(nn.Module):
    """Logs '<name>' per call and '<name>.backbone' / '<name>.head' per stage."""

    def __init__(self, name: str, log: list):
        super().__init__()
        self.name, self.log = name, log
        self.backbone, self.head = _Stage(log, f"{name}.backbone"), _Stage(log, f"{name}.head")

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def forward(self, batch):
        self.log.append(self.name)
        time.sleep(0.001)  # a "rest" that takes time, so that the split has three parts
        return self.head(self.backbone(batch[0]["image"].float()))


def test_latency_interleaves_models_in_rotating_order_and_splits_stages():
    log: list = []
    cfg = tiny_cfg()
    subjects = [Subject(n, _FakeDetector(n, log), cfg) for n in ("a", "b", "c")]
    inputs = [{"image": torch.zeros(1, 2, 2)}] * 2
    out = measure_latency(subjects, inputs, rounds=3, warmup=1, stages=True)
    calls = [x for x in log if "." not in x]
    assert calls[:3] == ["a", "b", "c"]  # one warm-up call each
    rounds = [calls[3 + 6 * r : 9 + 6 * r] for r in range(3)]
    # each input through every model, the models' order rotating from round to round
    assert rounds == [list("abcabc"), list("bcabca"), list("cabcab")]
    for name in "abc":
        rec = out[name]
        assert rec["n"] == 6 and len(rec["calls_ms"]["total"]) == 6
        per_call = zip(*(rec["calls_ms"][k] for k in ("total", "backbone", "head", "rest")))
        for total, backbone, head, rest in per_call:
            assert backbone >= 0 and head >= 0 and backbone + head <= total
            assert rest == pytest.approx(total - backbone - head)
    assert not subjects[0].model.backbone._forward_hooks  # hooks removed afterwards


class _ShapeLogger(nn.Module):
    """Logs the (H, W) of every image it is called on."""

    def __init__(self, log: list):
        super().__init__()
        self.log = log

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def forward(self, batch):
        self.log.append(tuple(batch[0]["image"].shape[1:]))


def test_latency_gives_each_model_its_own_inputs_when_asked():
    logs = {"small": [], "large": []}
    subjects = [Subject(n, _ShapeLogger(logs[n]), tiny_cfg()) for n in logs]
    inputs = {
        "small": [{"image": torch.zeros(3, 8, 10)}] * 2,
        "large": [{"image": torch.zeros(3, 16, 20)}] * 2,
    }
    out = measure_latency(subjects, inputs, rounds=2, warmup=1)
    assert logs["small"] == [(8, 10)] * 5 and logs["large"] == [(16, 20)] * 5
    assert out["small"]["n"] == out["large"]["n"] == 4
    with pytest.raises(ValueError, match="differ in length"):
        measure_latency(subjects, {**inputs, "large": inputs["large"][:1]})


def test_latency_without_stages_has_no_split():
    subjects = [Subject("a", _FakeDetector("a", []), tiny_cfg())]
    out = measure_latency(subjects, [{"image": torch.zeros(1, 2, 2)}], rounds=2, warmup=0)
    assert out["a"]["n"] == 2 and "backbone_ms" not in out["a"]
    assert set(out["a"]["calls_ms"]) == {"total"}


def test_stage_split_of_a_real_model_sums_to_at_most_the_total():
    cfg = tiny_cfg()
    subject = Subject("tiny", build_model(cfg), cfg)
    inputs = latency_inputs([], 2, (64, 64), cfg.INPUT.FORMAT)
    rec = measure_latency([subject], inputs, warmup=1, stages=True)["tiny"]
    calls = rec["calls_ms"]
    for total, backbone, head in zip(calls["total"], calls["backbone"], calls["head"]):
        assert 0 < backbone and 0 < head and backbone + head <= total
    assert rec["backbone_ms"] > 0 and rec["head_ms"] > 0 and rec["rest_ms"] >= 0


def test_method_clock_times_calls_and_restores_the_method():
    class Thing:
        def work(self, x):
            return x * 2

    thing = Thing()
    with MethodClock(thing, "work", "cpu") as clock:
        assert thing.work(3) == 6 and thing.work(4) == 8
        assert clock.calls == 2 and clock.spent >= 0
        clock.reset()
        assert clock.calls == 0 and clock.spent == 0
    assert "work" not in vars(thing) and thing.work(1) == 2


def test_training_loop_steps_the_optimizer_and_times_label_anchors():
    cfg = tiny_cfg(["SOLVER.BASE_LR", 0.01])
    torch.manual_seed(0)
    model = build_model(cfg)
    before = model.head.cls_score.weight.detach().clone()
    batch = make_inputs(boxes=([[4, 6, 30, 28, 0]], [[10, 10, 40, 40, 1]]))
    with MethodClock(model, "label_anchors", model.device) as clock:
        rec = measure_training(model, cfg, batch, iters=2, clocks={"assign": clock})
    assert rec["n"] == 2 and rec["batch_size"] == 2 and rec["precision"] == "float32"
    assert len(rec["clocks"]["assign"]) == 2
    for assign_s, step_s in zip(rec["clocks"]["assign"], rec["seconds"]):
        assert 0 < assign_s < step_s
    assert not torch.equal(before, model.head.cls_score.weight)  # the optimizer stepped


def test_gflops_scale_with_input_area():
    model = build_model(tiny_cfg())
    small = count_gflops(model, (128, 128))
    large = count_gflops(model, (256, 256))
    assert small["padded_input"] == [128, 128]
    assert large["gflops"] / small["gflops"] == pytest.approx(4.0, rel=0.02)
    assert small["gflops"] == pytest.approx(small["backbone_gflops"] + small["head_gflops"])


@pytest.mark.parametrize("cascade", [[], [0.6, 0.7]])
def test_gflops_add_the_refinement_at_its_most(cascade):
    refine = ["MODEL.BMC.REFINE.ENABLED", True, "MODEL.BMC.REFINE.CLASSIFY", True]
    refine += ["MODEL.BMC.REFINE.FC_DIM", 16, "MODEL.BMC.REFINE.CASCADE_IOUS", cascade]
    refine += ["TEST.DETECTIONS_PER_IMAGE", 10]
    plain = count_gflops(build_model(tiny_cfg()), (128, 128))
    refined = count_gflops(build_model(tiny_cfg(refine)), (128, 128))
    # per box and stage, the box head's two FCs (32 x 7 x 7 -> 16 -> 16) and the predictors
    # (16 -> 4 deltas, 16 -> 3 classes + background); RoIAlign is not a multiply-add
    per_box = 32 * 7 * 7 * 16 + 16 * 16 + 16 * 4 + 16 * 4
    stages = 1 + len(cascade)
    assert refined["refine_gflops"] * 1e9 == pytest.approx(10 * stages * per_box)
    assert refined["gflops"] == pytest.approx(plain["gflops"] + refined["refine_gflops"])
    assert refined["counted"] == "backbone+head+refinement" and plain["refine_gflops"] == 0


def test_assignment_inputs_are_the_models_anchors_and_decoded_predictions():
    model = build_model(tiny_cfg()).eval()
    image = torch.zeros(3, 64, 96, dtype=torch.uint8)
    layout, logits, boxes = model.assignment_inputs([{"image": image}])
    with torch.no_grad():
        feats = model.backbone(model.preprocess_image([{"image": image}]).tensor)
        feats = [feats[f] for f in model.head_in_features]
        anchors = torch.cat([a.tensor for a in model.anchor_generator(feats)])
        cls, deltas = model.head(feats)
    r = anchors.shape[0]
    assert torch.equal(layout.boxes, anchors) and sum(layout.num_per_level) == r
    assert logits.shape == (1, r, model.num_classes) and boxes.shape == (1, r, 4)
    first = deltas[0][0].permute(1, 2, 0).reshape(-1, 4)  # level 0, A = 1: (H W, 4)
    expected = model.box2box_transform.apply_deltas(first, anchors[: len(first)])
    assert torch.allclose(boxes[0, : len(first)], expected, atol=1e-4)
    assert torch.allclose(logits[0, : len(first)], cls[0][0].permute(1, 2, 0).reshape(-1, 3))


# ----------------------------------------------------------------------------- memory
def test_process_peak_memory_sees_an_allocation():
    with PeakMemory("cpu") as mem:
        block = torch.ones(16 * 2**20)  # 64 MiB, touched, alive until the block ends
    assert mem.as_dict()["method"] == "rss" and mem.peak_mb > 0
    assert mem.delta_mb > 32 and float(block[0]) == 1.0


def test_tensor_peak_memory_sees_freed_temporaries():
    def fn():
        a = torch.ones(1024, 1024)  # 4 MiB, freed before returning
        return float(a.sum())

    with PeakMemory(torch.device("cpu"), mode="tensors") as mem:
        fn()
    assert mem.peak_mb == pytest.approx(4.0, abs=0.1) and mem.peak_mb == mem.delta_mb
    with pytest.raises(ValueError, match="mode"):
        PeakMemory("cpu", mode="rss")


# ----------------------------------------------------------------------------- reports
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
    ref = _row(REFERENCE, {0: 37.0, 1: 37.0}, {0: 75.0, 1: 74.0})
    assert ablation_report.paired_delta(full, ref, "AP") == (
        pytest.approx(2.0),
        2,
    )  # seed 2 has no partner
    assert ablation_report.paired_delta(full, ref, "AP50") == (pytest.approx(3.5), 2)
    verdict = ablation_report.target_verdict([full, ref], "full", REFERENCE, 1.5, 2.0)
    assert "over 2 paired seed(s)" in verdict and "ΔAP +2.00" in verdict and "**met**" in verdict
    assert "**not met**" in ablation_report.target_verdict([full, ref], "full", REFERENCE, 2.5, 2.0)
    # two decimals: a mean of +1.99 against a +2.0 target reads as not met, not as "+2.0"
    close = _row("close", {0: 40.0, 1: 38.0}, {0: 76.99, 1: 76.0})
    line = ablation_report.target_verdict([close, ref], "close", REFERENCE, 1.5, 2.0)
    assert "ΔAP50 +1.99 (target ≥ +2.0) → **not met**" in line
    assert "not evaluated" in ablation_report.target_verdict([full], "full", REFERENCE, 1.5, 2.0)
    # an AP-only target (to match a stronger detector): AP50 is reported, not judged
    level = _row("level", {0: 37.0, 1: 37.5}, {0: 70.0, 1: 70.0})
    line = ablation_report.target_verdict([level, ref], "level", REFERENCE, 0.0)
    assert "ΔAP +0.25 (target ≥ +0.0), ΔAP50 -4.50 → **met**" in line
    lonely = _row("lonely", {5: 1.0}, {5: 1.0})
    assert "**not met**" in ablation_report.target_verdict(
        [lonely, ref], "lonely", REFERENCE, -100, -100
    )


def test_effects_table_against_parent_baseline_and_reference():
    base = _row("base", {0: 30.0, 1: 32.0}, {0: 60.0, 1: 62.0})
    child = _row("child", {0: 33.0, 1: 34.0}, {0: 66.0, 1: 65.0})
    ref = _row(REFERENCE, {0: 31.0}, {0: 61.0})
    lines = ablation_report.effects_table(
        [base, child, ref], {"child": "base"}, REFERENCE
    ).splitlines()
    assert lines[0].startswith("| config | what it is | parent |")
    assert lines[3] == (
        "| child | child desc | base | +2.5 / +4.5 (n=2) | +2.5 / +4.5 (n=2) | +2.0 / +5.0 (n=1) |"
    )
    assert lines[2].startswith("| base | base desc |  |  |  | -1.0 / -1.0 (n=1) |")
    # the reference is the row named by the reference config's stem, nothing else
    other = ablation_report.effects_table([base, child, ref], {"child": "base"}, "some_other_stem")
    assert other.splitlines()[3].endswith("| +2.5 / +4.5 (n=2) |  |")


def test_t_quantiles_match_the_tables():
    table = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 9: 2.262, 10: 2.228, 30: 2.042}
    for df, t in table.items():
        assert ablation_report.t_quantile(0.95, df) == pytest.approx(t, abs=1e-3)
    assert ablation_report.t_quantile(0.90, 1) == pytest.approx(6.314, abs=1e-3)
    stats = pytest.importorskip("scipy.stats")
    for df in range(1, 60):
        assert ablation_report.t_quantile(0.95, df) == pytest.approx(
            stats.t.ppf(0.975, df), rel=1e-9
        )


def test_mean_interval_on_known_numbers():
    mean, lo, hi, n = ablation_report.mean_interval([1.0, 2.0, 3.0])  # sd 1, t(0.975, 2) = 4.3027
    half = 4.302652729749464 / math.sqrt(3)
    assert (mean, n) == (2.0, 3) and lo == pytest.approx(2 - half) and hi == pytest.approx(2 + half)
    mean, lo, hi, n = ablation_report.mean_interval([5.0])
    assert (mean, n) == (5.0, 1) and math.isnan(lo) and math.isnan(hi)
    assert ablation_report.mean_interval([])[3] == 0


def test_interval_table_vs_parent_and_reference():
    parent = _row("parent", {0: 30.0, 1: 30.0, 2: 30.0}, {0: 60.0, 1: 60.0, 2: 60.0})
    child = _row("child", {0: 31.0, 1: 32.0, 2: 33.0}, {0: 62.0, 1: 62.0, 2: 62.0})
    ref = _row(REFERENCE, {1: 30.5, 7: 1.0}, {1: 61.0, 7: 1.0})
    lines = ablation_report.interval_table(
        [parent, child, ref], {"child": "parent"}, REFERENCE
    ).splitlines()
    assert lines[0] == "| config | compared with | n | ΔAP [95 % CI] | ΔAP50 [95 % CI] |"
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): line for line in lines[2:]}
    # child - parent = 1, 2, 3: mean 2, half-width 4.303 / sqrt(3) = 2.48; AP50: 2, 2, 2
    assert rows[("child", "parent (parent)")].endswith(
        "| 3 | +2.0 [-0.5, +4.5] | +2.0 [+2.0, +2.0] |"
    )
    assert rows[("child", f"{REFERENCE} (reference)")].endswith(
        "| 1 | +1.5 (n=1, no interval) | +1.0 (n=1, no interval) |"
    )
    assert rows[("parent", f"{REFERENCE} (reference)")].endswith(
        "| 1 | -0.5 (n=1, no interval) | -1.0 (n=1, no interval) |"
    )
    assert not any(key[0] == REFERENCE for key in rows)  # the reference is not compared to itself


def test_reference_is_recognised_by_config_stem(tmp_path):
    assert Path(ablation.default_reference_config()).stem == REFERENCE
    assert ablation.REFERENCE_CONFIG.is_file()
    d2 = str(REPO / "configs" / "cpu" / f"{REFERENCE}.yaml")
    base = str(REPO / "configs" / "cpu" / "retinanet_R_18_FPN_cpu.yaml")
    records = []
    for (name, cfg_file), ap in zip(run_names([base, d2, d2]), (40.0, 37.0)):
        metrics = {"AP": ap, "AP50": ap + 30}
        records.append({"name": name, "config_file": cfg_file, "seed": 0, "status": "ok"})
        records[-1].update(metrics=metrics, run_dir=str(tmp_path))
    summary = ablation_report.summarize(records, [])
    assert [s["config"] for s in summary] == ["retinanet_R_18_FPN_cpu", REFERENCE]
    assert summary[1]["description"].startswith("Reference: detectron2's own RetinaNet")
    verdict = ablation_report.target_verdict(summary, "retinanet_R_18_FPN_cpu", REFERENCE, 1.5, 2.0)
    assert f"vs `{REFERENCE}` over 1 paired seed(s): ΔAP +3.00" in verdict and "**met**" in verdict


def test_run_names_prefix_shared_stems_and_drop_repeats(tmp_path):
    a, b = tmp_path / "x" / "m.yaml", tmp_path / "y" / "m.yaml"
    names = run_names([str(a), str(b), str(a), "c/n.yaml"])
    assert names == [("x_m", str(a)), ("y_m", str(b)), ("n", "c/n.yaml")]


def test_latency_ratio_of_hand_made_records():
    recs = [
        {"name": "ref", "median_ms": 10.0, "p90_ms": 11.0, "params_m": 1.0, "gflops": 2.0},
        {"name": "full", "median_ms": 15.0, "p90_ms": 16.0, "params_m": 1.0, "gflops": 2.0},
    ]
    add_ratios(recs, "ref")
    assert [r["ratio_to_reference"] for r in recs] == [1.0, 1.5]
    assert "1.50x the median latency of `ref` (target ≤ 1.3x) → **not met**" in latency_markdown(
        recs, "ref", "full", 1.3, "header"
    )
    assert "**met**" in latency_markdown(recs, "ref", "full", 1.6, "header")
    add_ratios(recs, "absent")
    assert recs[1]["ratio_to_reference"] is None
    assert "target not evaluated" in latency_markdown(recs, "absent", "full", 1.3, "header")


def test_describe_reads_the_first_sentence_of_the_leading_comment(tmp_path):
    cfg = tmp_path / "x.yaml"
    cfg.write_text("# One line about x.\n# More\n_BASE_: y.yaml\n")
    assert describe(str(cfg)) == "One line about x."
    # A sentence over two lines; "et al. 2018" and "e.g. x" do not end it.
    cfg.write_text("# H&E (Tellez et al. 2018) of\n# the cells, e.g. x.\n# Next one.\nA: 1\n")
    assert describe(str(cfg)) == "H&E (Tellez et al. 2018) of the cells, e.g. x."
    cfg.write_text("# " + "word " * 60 + "\n")
    short = describe(str(cfg), max_chars=30)
    assert short == "word word word word word word…" and len(short) <= 30
    cfg.write_text("_BASE_: y.yaml\n# late comment\n")
    assert describe(str(cfg)) == ""
    assert describe(str(tmp_path / "missing.yaml")) == ""


# ----------------------------------------------------------------------------- datasets
def test_dataset_registration_round_trip(tmp_path):
    name = "bench_registration_test"
    json_file = tmp_path / "a.json"
    meta = {"thing_classes": ["A"], "thing_dataset_id_to_contiguous_id": {1: 0}, "f": len}
    register_coco_dataset(name, json_file, tmp_path, metadata=meta)
    try:
        reg = dataset_registration(name)
        assert json.loads(json.dumps(reg)) == reg  # travels as JSON to a subprocess
        assert reg["metadata"] == {"thing_classes": ["A"]}
        unregister_dataset(name)
        register_datasets({name: reg})
        assert MetadataCatalog.get(name).json_file == str(json_file.resolve())
        assert MetadataCatalog.get(name).thing_classes == ["A"]
        loader = DatasetCatalog[name]
        register_datasets({name: reg})  # same files: kept as it is
        assert DatasetCatalog[name] is loader
        register_datasets({name: {**reg, "json_file": str(tmp_path / "b.json")}})
        assert MetadataCatalog.get(name).json_file == str((tmp_path / "b.json").resolve())
    finally:
        unregister_dataset(name)
