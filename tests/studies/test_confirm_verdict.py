"""The confirmation's verdict in the results index (studies/confirm/verdict.py)."""

from __future__ import annotations

import json

from studies.confirm import verdict as v


def _run(root, name, seed, ap, ap50, ap75, train_s=900.0):
    folder = root / "runs" / name / f"seed{seed}"
    (folder / "inference" / v.DATASET).mkdir(parents=True)
    bbox = {"AP": ap, "AP50": ap50, "AP75": ap75}
    (folder / "inference" / v.DATASET / "coco_metrics.json").write_text(json.dumps({"bbox": bbox}))
    (folder / "run.json").write_text(json.dumps({"train_s": train_s}))


def _latency(path, chosen_ms, peer_ms):
    models = [{"name": v.CHOSEN, "median_ms": chosen_ms}, {"name": v.PEER, "median_ms": peer_ms}]
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"models": models}))


def test_verdict_ranks_pairs_and_judges_the_targets(tmp_path):
    runs = tmp_path / "runs"
    for seed, (c, p) in enumerate([(57.0, 56.0), (58.0, 58.0), (56.0, 57.5)]):
        _run(runs, v.CHOSEN, seed, c, 90.0, 64.0, train_s=1200.0)
        _run(runs, v.PEER, seed, p, 90.5, 63.0)
    _run(runs, v.PEER, 3, 60.0, 92.0, 66.0)  # no partner: ranks, but is not paired
    _run(runs, v.REFERENCE, 0, 46.0, 85.0, 45.0)
    (runs / "runs" / v.CHOSEN / "seed4").mkdir()  # unfinished: ignored
    _latency(runs / "latency_chosen" / "latency.json", 70.0, 200.0)
    index = tmp_path / "index.md"
    index.write_text(f"# R\n\n{v.START}\nold\n{v.END}\nafter\n")
    assert v.main(["--runs", str(runs), "--index", str(index)]) == 0
    text = index.read_text()
    assert text.startswith(f"# R\n\n{v.START}\n- **BCCD test, 780 iterations**: best")
    assert text.endswith(f"(From [the confirmation page]({v.PAGE}).)\n{v.END}\nafter\n")
    lines = text.splitlines()
    # Faster R-CNN's mean is over its 4 finished seeds (57.875), the chosen model's over 3 (57.0)
    assert f"best `{v.PEER}`; `{v.PEER}` 57.9 (n=4) > `{v.CHOSEN}` 57.0 (n=3)" in lines[3]
    # paired over seeds 0-2: AP +1, 0, -1.5 -> mean -0.17; AP50 -0.5 each
    assert "AP -0.17 [" in lines[4] and "(n=3), AP50 -0.50 [-0.50, -0.50] (n=3)" in lines[4]
    assert lines[5] == (
        "- Target AP >= Faster R-CNN's, mean of paired seeds: **not met** "
        "(on 3 of the 5 planned seeds)."
    )
    assert "0.35x, **met**" in lines[6]
    assert "57.0 / 90.0, 20 min of training on one thread: **not reached**" in lines[7]


def test_an_earlier_choice_is_paired_but_the_targets_judge_the_current_one():
    row = {"AP": 55.0, "AP50": 89.0, "AP75": 60.0, "train_s": 900.0}
    peer = {s: {**row, "AP": 57.0} for s in (0, 1)}
    earlier = {s: {**row, "AP": 56.0} for s in (0, 1)}
    current = {0: {**row, "AP": 58.0}}
    lines = v.verdict({v.EARLIER[0]: earlier, v.CHOSEN: current, v.PEER: peer}, None)
    assert lines[0].startswith(f"- **BCCD test, 780 iterations**: best `{v.CHOSEN}`;")
    assert lines[1].startswith(f"- `{v.EARLIER[0]}` (an earlier choice) - `{v.PEER}`")
    assert "AP -1.00 [-1.00, -1.00] (n=2)" in lines[1]
    assert lines[2].startswith(f"- `{v.CHOSEN}` - `{v.PEER}`, paired by seed: AP +1.00 (n=1)")
    assert lines[3].endswith("**met** (on 1 of the 5 planned seeds).")
    # the current choice without a paired run yet: said, not judged
    lines = v.verdict({v.EARLIER[0]: earlier, v.CHOSEN: {}, v.PEER: peer}, None)
    assert (
        lines[-1] == f"- `{v.CHOSEN}` (the current choice): no test run paired with `{v.PEER}` yet."
    )


def test_missing_block_is_named_and_nothing_written(tmp_path, capsys):
    index = tmp_path / "index.md"
    index.write_text("# R\n")
    assert v.main(["--runs", str(tmp_path / "none"), "--index", str(index)]) == 2
    assert "index.md: no block" in capsys.readouterr().err
    assert index.read_text() == "# R\n"
    assert v.verdict({v.CHOSEN: {}, v.PEER: {}}, None) == ["- no finished run on BCCD test yet"]


def test_moonshot_needs_the_accuracy_within_the_training_time():
    def line(train_s):
        row = {"AP": 58.5, "AP50": 91.5, "AP75": 66.0, "train_s": train_s}
        return v.verdict({v.CHOSEN: {0: row}, v.PEER: {}}, None)[-1]

    assert line(25 * 60).endswith("58.5 / 91.5, 25 min of training on one thread: **reached**.")
    assert line(40 * 60).endswith("40 min of training on one thread: **not reached**.")
    assert line(None).endswith("58.5 / 91.5: **not reached**.")  # time unknown
