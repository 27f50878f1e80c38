"""The box refinement page (studies/gap/refine.py) from hand-built evaluation outputs."""

from __future__ import annotations

import json

from studies.gap.refine import (
    CANDIDATES,
    FULL,
    collect,
    eval_command,
    metrics_file,
    results_rows,
    variants_of,
    write_page,
)

REFINE, DETACH, IOU, CLS, IOU_CLS, CASCADE, P2 = CANDIDATES


def _write(runs, out, config, variant, seed, ap, ap75):
    path = metrics_file(runs, out, config, variant, seed)
    path.parent.mkdir(parents=True)
    bbox = {"AP": ap, "AP50": 80.0, "AP75": ap75, "AP-Platelets": 30.0}
    path.write_text(json.dumps({"bbox": bbox}))


def test_variants_and_their_commands(tmp_path):
    assert "no rescoring" in variants_of(IOU) and "no rescoring" in variants_of(CLS)
    assert "no rescoring" not in variants_of(REFINE) and "no rescoring" in variants_of(IOU_CLS)
    assert "no rescoring" in variants_of(CASCADE)
    cmd = eval_command("py", tmp_path / "run", tmp_path / "o", "no rescoring")
    assert cmd[cmd.index("MODEL.BMC.REFINE.CLASSIFY") + 1] == "False"
    assert variants_of(REFINE)[0] == "as trained"
    cmd = eval_command("py", tmp_path / "run", tmp_path / "o", "no second NMS")
    assert cmd[cmd.index("MODEL.BMC.REFINE.SECOND_NMS") + 1] == "False"
    assert cmd[cmd.index("MODEL.WEIGHTS") + 1] == str(tmp_path / "run" / "model_final.pth")
    # the run's own evaluation is "as trained"; a variant's lives under --out
    runs, out = tmp_path / "runs", tmp_path / "out"
    assert metrics_file(runs, out, REFINE, "as trained", 1).parts[-4] == "seed1"
    assert metrics_file(runs, out, REFINE, "as trained", 1).is_relative_to(runs / REFINE)
    own = metrics_file(runs, out, IOU, "no rescoring, no second NMS", 0)
    assert own.is_relative_to(out / IOU / "no_rescoring_no_second_NMS")


def test_rows_pair_every_variant_with_the_full_model_by_seed(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    for seed, ap in enumerate([50.0, 52.0, 54.0]):
        _write(runs, out, FULL, "as trained", seed, ap, 40.0)
        _write(runs, out, REFINE, "as trained", seed, ap + 1.0 + seed, 42.0)
    _write(runs, out, REFINE, "no second NMS", 0, 52.0, 43.0)  # one seed only: no interval
    found = collect(runs, out, [0, 1, 2])
    assert list(found) == [(FULL, "as trained"), (REFINE, "as trained"), (REFINE, "no second NMS")]
    rows = {(r[0], r[1]): r for r in results_rows(found)}
    full = rows[("full model", "as trained")]
    assert full[2:5] == [3, 52.0, 80.0] and full[7:] == ["", "", ""]
    # ΔAP = 1, 2, 3: mean 2, t(0.975, 2) = 4.303, s = 1 -> half width 4.303 / sqrt(3) = 2.48
    refine = rows[("REFINE", "as trained")]
    assert refine[7] == "+2.00 [-0.48, +4.48]" and refine[9] == "+2.00 [+2.00, +2.00]"
    assert rows[("REFINE", "no second NMS")][7] == "+2.00 (n=1)"
    page = tmp_path / "RESULTS_gap_refine.md"
    latency = {"seed": 0, "images": 20, "rounds": 3, "ratio": {FULL: 1.0, REFINE: 1.12},
               "median_ms": {FULL: 100.0, REFINE: 112.0}}  # fmt: skip
    write_page(page, found, latency, "runs", "out")
    text = page.read_text()
    assert "| REFINE | no second NMS | 1 | 52.0 |" in text
    assert "REFINE 112 ms (**1.12x**)" in text and "## Per seed" in text
