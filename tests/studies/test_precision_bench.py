"""The CPU precision side-by-side tool (``tools/precision_bench``) and its library modules, on
a tiny config with random batches (no wall-clock thresholds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from studies.precision import precision, precision_bench
from studies.precision.profile import REGIONS, STAGES, stage_table
from tests.helpers import REPO

TINY = [
    "MODEL.DEVICE",
    "cpu",
    "MODEL.FPN.OUT_CHANNELS",
    "32",
    "MODEL.RETINANET.NUM_CONVS",
    "1",
    "MODEL.RETINANET.NUM_CLASSES",
    "3",
    "INPUT.MIN_SIZE_TRAIN",
    "(96,)",
    "INPUT.MAX_SIZE_TRAIN",
    "128",
    "INPUT.MIN_SIZE_TEST",
    "96",
    "INPUT.MAX_SIZE_TEST",
    "128",
    "SOLVER.IMS_PER_BATCH",
    "2",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[dict, Path]:
    """One run of the tool: 2 rounds, 1 profiled iteration, random batches."""
    out = tmp_path_factory.mktemp("precision_bench")
    argv = [
        "--config-file",
        str(REPO / "configs/cpu/retinanet_R_18_full_cpu.yaml"),
        "--rounds",
        "2",
        "--num-images",
        "1",
        "--train-gts",
        "3",
        "--profile",
        "--profile-iters",
        "1",
        "--output",
        str(out),
        "--report",
        str(out / "page.md"),
        *TINY,
    ]
    assert precision_bench.main(argv) == 0
    return json.loads((out / "precision_bench.json").read_text()), out


def test_writes_json_and_markdown_with_three_variants(run):
    rec, out = run
    assert set(rec["variants"]) == set(precision.VARIANTS)
    page = (out / "precision_bench.md").read_text()
    assert page == (out / "page.md").read_text()
    for name in precision.VARIANTS:
        assert f"`{name}`" in page
        v = rec["variants"][name]
        assert {"step", "data", "iteration", "latency"} <= set(v)
        assert v["step"]["n"] == 2 and v["latency"]["n"] == 2
        assert v["iteration"]["median_ms"] >= v["step"]["median_ms"] > 0
    assert rec["speedup"]["fp32"]["step"] == pytest.approx(1.0)
    assert "Loss agreement" in page and "Profile of a training iteration" in page


def test_rounds_rotate_the_order(run):
    rec, _ = run
    names = list(precision.VARIANTS)
    assert rec["orders"] == [names, names[1:] + names[:1]]


def test_losses_agree_on_the_same_batch(run):
    check = run[0]["loss_check"]
    assert check["ok"], check["relative_diff"]
    assert check["relative_diff"]["fp32"]["total"] == 0.0
    assert all(r["total"] <= precision.LOSS_RTOL for r in check["relative_diff"].values())


def test_profile_stages_add_up_to_the_iteration(run):
    for name, prof in run[0]["profile"].items():
        stages = prof["stages"]
        assert list(stages) == list(STAGES)
        assert sum(s["pct"] for s in stages.values()) == pytest.approx(100.0, abs=1e-6)
        # the profiler attributes nearly all of the iteration to the named stages
        assert stages["other"]["pct"] < 5.0, (name, stages)
        assert all(prof["regions_ms"][k] > 0 for k in REGIONS), (name, prof["regions_ms"])
        assert len(prof["top_ops"]) == 10
        assert not {op["op"] for op in prof["top_ops"]} & set(REGIONS)


def test_stage_table_is_exclusive():
    regions = {
        "iteration": 100.0,
        "data": 5.0,
        "forward": 50.0,
        "backbone": 30.0,
        "resnet": 20.0,
        "head": 10.0,
        "label assignment": 4.0,
        "loss": 2.0,
        "backward": 35.0,
        "optimizer": 8.0,
    }
    table = stage_table(regions)
    assert table["neck"]["ms"] == 10.0
    assert table["forward other"]["ms"] == 4.0
    assert table["other"]["ms"] == pytest.approx(2.0)
    assert sum(v["ms"] for v in table.values()) == pytest.approx(100.0)


def test_variant_cfg_sets_the_precision_keys():
    from tests.helpers import tiny_cfg

    cfg = tiny_cfg()
    cfg.freeze()
    for name, (bf16, cl) in precision.VARIANTS.items():
        v = precision.variant_cfg(cfg, name)
        assert (v.BMC.PRECISION.CPU_BF16, v.BMC.PRECISION.CHANNELS_LAST) == (bf16, cl)
