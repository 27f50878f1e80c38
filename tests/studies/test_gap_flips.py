"""The test-time flips page (studies/gap/flips.py) from hand-built evaluation outputs."""

from __future__ import annotations

import json

import pytest

from studies.gap.flips import collect, eval_command, metrics_file, results_rows, write_page


def _write(out, variant, seed, ap, ap50, ap75):
    path = metrics_file(out, variant, seed)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"bbox": {"AP": ap, "AP50": ap50, "AP75": ap75}}))


def test_rows_pair_each_variant_with_the_plain_model_by_seed(tmp_path):
    for seed, ap in enumerate([50.0, 52.0, 54.0]):
        _write(tmp_path, "plain", seed, ap, 80.0, 40.0)
        _write(tmp_path, "h+v+hv", seed, ap + 1.0 + seed, 81.0, 40.0)
    _write(tmp_path, "h", 0, 49.0, 80.0, 40.0)  # one seed only: no interval
    found = collect(tmp_path, [0, 1, 2])
    assert list(found) == ["plain", "h", "h+v+hv"]
    latency = {"ratio": {"plain": 1.0, "h+v+hv": 3.5}}
    rows = {r[0]: r for r in results_rows(found, latency)}
    assert rows["plain"][1:5] == [3, 52.0, 80.0, 40.0]
    assert rows["plain"][5:8] == ["", "", ""]
    # ΔAP = 1, 2, 3: mean 2, t(0.975, 2) = 4.303, s = 1 -> half width 4.303 / sqrt(3) = 2.48
    assert rows["h+v+hv"][5] == "+2.00 [-0.48, +4.48]"
    assert rows["h+v+hv"][6] == "+1.00 [+1.00, +1.00]"
    assert rows["h+v+hv"][-1] == "3.50x"
    assert rows["h"][5] == "-1.00 (n=1)" and rows["h"][-1] == ""
    page = tmp_path / "RESULTS_flips.md"
    write_page(page, found, None, "runs", "out")
    text = page.read_text()
    assert "| h+v+hv | 3 | 54.0 |" in text
    assert "## Per seed" in text


def test_eval_command_sets_the_flip_keys(tmp_path):
    cmd = eval_command("py", tmp_path, tmp_path / "o", "h+v+hv wbf")
    assert cmd[cmd.index("BMC.TEST_FLIPS") + 1] == "['h', 'v', 'hv']"
    assert cmd[cmd.index("BMC.TEST_FLIP_MERGE") + 1] == "wbf"
    assert "--eval-only" in cmd
    with pytest.raises(KeyError):
        eval_command("py", tmp_path, tmp_path, "x")


def test_eval_command_of_an_nms_variant_sets_only_the_threshold(tmp_path):
    cmd = eval_command("py", tmp_path, tmp_path / "o", "nms 0.7")
    assert cmd[cmd.index("MODEL.RETINANET.NMS_THRESH_TEST") + 1] == "0.7"
    assert cmd[cmd.index("BMC.TEST_FLIPS") + 1] == "[]"
    plain = eval_command("py", tmp_path, tmp_path / "o", "plain")
    assert "MODEL.RETINANET.NMS_THRESH_TEST" not in plain
    assert metrics_file(tmp_path, "nms 0.7", 0).parts[-5] == "nms_07"


def test_eval_command_of_a_voting_variant_sets_the_sigma_and_plain_turns_it_off(tmp_path):
    cmd = eval_command("py", tmp_path, tmp_path / "o", "hv vote")
    assert cmd[cmd.index("MODEL.BMC.SCORE_VOTING_SIGMA") + 1] == "0.025"
    assert cmd[cmd.index("BMC.TEST_FLIPS") + 1] == "['hv']"
    plain = eval_command("py", tmp_path, tmp_path / "o", "plain")
    assert plain[plain.index("MODEL.BMC.SCORE_VOTING_SIGMA") + 1] == "0.0"
    assert metrics_file(tmp_path, "hv vote", 0).parts[-5] == "hv_vote"
