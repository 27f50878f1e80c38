"""The select command end to end with a tiny random-weight detector, and its cache."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

import numpy as np
import pytest
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from PIL import Image

from bmc_detectron.config import build_cfg
from bmc_detectron.pipeline.detector import Detector
from bmc_detectron.tools import select

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "cpu" / "retinanet_R_18_FPN_cpu.yaml"
OPTS = [
    "MODEL.RETINANET.NUM_CLASSES",
    "3",
    "INPUT.MIN_SIZE_TEST",
    "64",
    "INPUT.MAX_SIZE_TEST",
    "96",
    "MODEL.RETINANET.SCORE_THRESH_TEST",
    "0.0",
    "MODEL.DEVICE",
    "cpu",
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Path:
    """Random weights, three small fields and a corrupt file."""
    tmp = tmp_path_factory.mktemp("select")
    cfg = build_cfg(str(CONFIG), OPTS)
    DetectionCheckpointer(build_model(cfg), save_dir=str(tmp)).save("random")
    rng = np.random.default_rng(0)
    pool = tmp / "pool"
    pool.mkdir()
    for i in range(3):
        pixels = rng.integers(0, 255, (60 + 8 * i, 80, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(pool / f"field{i}.png")
    (pool / "broken.png").write_bytes(b"\x89PNG not really")
    return tmp


def _run(tmp: Path, out: str, *extra: str) -> int:
    argv = ["--config-file", str(CONFIG), "--weights", str(tmp / "random.pth")]
    argv += ["--pool", str(tmp / "pool" / "*.png"), "--output", str(tmp / out)]
    argv += ["--cache-dir", str(tmp / "cache"), "--score-threshold", "0.0", "--no-progress"]
    return select.main([*argv, *extra, "--opts", *OPTS])


def _count_calls(monkeypatch) -> List[int]:
    calls: List[int] = []
    original = Detector.__call__

    def counted(self, image):
        calls.append(1)
        return original(self, image)

    monkeypatch.setattr(Detector, "__call__", counted)
    return calls


def test_select_end_to_end_and_cache(setup: Path, monkeypatch, capsys) -> None:
    calls = _count_calls(monkeypatch)
    args = ["--budget", "2", "--strategy", "entropy", "--diversity", "kcenter"]
    assert _run(setup, "r1", *args) == 1  # one image skipped
    assert len(calls) == 3
    captured = capsys.readouterr()
    assert "broken.png" in captured.err
    ranking = json.loads((setup / "r1" / "ranking.json").read_text())
    rows = ranking["ranking"]
    assert len(rows) == 3 and sum(r["selected"] for r in rows) == 2
    assert ranking["settings"]["skipped"][0]["image"].endswith("broken.png")
    assert (setup / "r1" / "ranking.csv").read_text().startswith("image,score,rank")
    tasks = json.loads((setup / "r1" / "label_studio_tasks.json").read_text())
    assert len(tasks) == 2
    region = tasks[0]["predictions"][0]["result"][0]
    assert region["value"]["rectanglelabels"][0] in ("class0", "class1", "class2")
    for key in ("x", "y", "width", "height"):
        assert 0.0 <= region["value"][key] <= 100.0
    labelme = sorted((setup / "r1" / "labelme").glob("*.json"))
    assert len(labelme) == 2
    doc = json.loads(labelme[0].read_text())
    assert doc["shapes"][0]["shape_type"] == "rectangle" and doc["imageWidth"] == 80
    assert (labelme[0].parent / doc["imagePath"]).resolve().is_file()
    # another strategy and budget: served from the cache, the model is not run again
    args = ["--budget", "1", "--strategy", "margin", "--aggregate", "sum"]
    assert _run(setup, "r2", *args, "--diversity", "class_balance") == 1
    assert len(calls) == 3


def test_select_budget_larger_than_pool_and_consistency(setup: Path, monkeypatch, capsys) -> None:
    calls = _count_calls(monkeypatch)
    assert _run(setup, "r3", "--budget", "10", "--strategy", "consistency") == 1
    assert "all chosen" in capsys.readouterr().out
    rows = json.loads((setup / "r3" / "ranking.json").read_text())["ranking"]
    assert all(r["selected"] for r in rows) and len(rows) == 3
    assert all(0.0 <= r["score"] <= 1.0 for r in rows)
    assert len(calls) in (6, 9)  # 2 views per image, + the plain run if not cached yet
    assert _run(setup, "r4", "--budget", "10", "--strategy", "random") == 1
    assert len(calls) in (6, 9)


def test_class_vectors_come_from_the_kept_anchors(setup: Path) -> None:
    from bmc_detectron.active.acquire import PoolModel

    model = PoolModel(Detector.from_config(str(CONFIG), str(setup / "random.pth"), OPTS))
    image = np.asarray(Image.open(setup / "pool" / "field0.png"))[:, :, ::-1].copy()
    entry = model.analyse(image)
    n = len(entry["scores"])
    assert n > 0 and entry["class_scores"].shape == (n, 3)
    kept_class = entry["class_scores"][np.arange(n), entry["classes"]]
    np.testing.assert_allclose(kept_class, entry["scores"], rtol=1e-5, atol=1e-6)
    assert entry["feature"].ndim == 1 and entry["feature"].size > 1
