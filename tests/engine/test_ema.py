"""The weight average (BMC.EMA): its arithmetic, the checkpoint convention (``model`` = average,
``model_raw`` = trained weights), resuming, loading and evaluation on the average."""

from __future__ import annotations

from typing import Dict, List

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import HookBase
from detectron2.modeling import build_model
from torch import nn

from bmc_detectron.config import ConfigError, build_cfg
from bmc_detectron.data.classes import marrow_metadata
from bmc_detectron.data.datasets import register_coco_dataset, unregister_dataset
from bmc_detectron.data.synthetic import generate_dataset
from bmc_detectron.deploy.export import load_for_export
from bmc_detectron.engine import BMCTrainer
from bmc_detectron.engine.ema import RAW_WEIGHTS_KEY, TrainingCheckpointer, WeightEMA
from bmc_detectron.engine.loading import load_model
from bmc_detectron.pipeline.detector import Detector
from tests.helpers import CONFIGS

CPU = str(CONFIGS / "cpu" / "retinanet_R_18_FPN_cpu.yaml")
EMA = ["BMC.EMA.ENABLED", True, "BMC.EMA.DECAY", 0.9, "BMC.EMA.WARMUP", 2.0]


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(2))
        self.register_buffer("mean", torch.zeros(2))
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))

    def set(self, value: float) -> None:
        with torch.no_grad():
            self.w.fill_(value)
            self.mean.fill_(-value)
            self.count.fill_(int(value))


def _state(model: nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_average_of_hand_set_weights_is_the_closed_form():
    ema, toy = WeightEMA(0.9, 2.0), Toy()
    toy.set(5.0)
    ema.set_weights(toy.state_dict())
    values = [1.0, 4.0, -2.0, 3.0]
    for v in values:
        toy.set(v)
        ema.update(toy)
    # s_N = w_0 prod d_k + sum_k (1 - d_k) w_k prod_{j>k} d_j, d_k = 0.9 (1 - exp(-k / 2))
    d = [0.9 * (1 - torch.exp(torch.tensor(-k / 2.0)).item()) for k in range(1, 5)]
    expected = 5.0 * d[0] * d[1] * d[2] * d[3]
    for k, v in enumerate(values):
        tail = 1.0
        for dj in d[k + 1 :]:
            tail *= dj
        expected += (1 - d[k]) * v * tail
    assert ema.updates == 4
    assert ema.weights["w"].tolist() == pytest.approx([expected] * 2, rel=1e-6)
    assert ema.weights["mean"].tolist() == pytest.approx([-expected] * 2, rel=1e-6)  # averaged
    assert ema.weights["count"].item() == 3  # integer buffers are copied


def test_decay_warms_up_and_bad_values_are_refused():
    assert WeightEMA(0.99, 0.0).decay_at(1) == 0.99
    ema = WeightEMA(0.9998, 2000.0)
    assert ema.decay_at(1) == pytest.approx(0.9998 * (1 - 2.71828182845**-0.0005))
    assert ema.decay_at(2000) == pytest.approx(0.9998 * (1 - 1 / 2.71828182845))
    with pytest.raises(ValueError, match="decay 1.0"):
        WeightEMA(1.0, 10.0)
    with pytest.raises(ConfigError, match="BMC.EMA: DECAY 1.5"):
        build_cfg(CPU, ["BMC.EMA.DECAY", 1.5])


def test_applied_swaps_the_average_in_and_out():
    ema, toy = WeightEMA(0.5, 0.0), Toy()
    toy.set(2.0)
    ema.update(toy)
    toy.set(4.0)
    ema.update(toy)  # 0.5 * 2 + 0.5 * 4
    with ema.applied(toy):
        assert toy.w.tolist() == [3.0, 3.0]
    assert toy.w.tolist() == [4.0, 4.0]


def test_checkpointer_resume_reads_model_raw_and_weights_only_read_the_average(tmp_path):
    ema, toy = WeightEMA(0.5, 0.0), Toy()
    toy.set(2.0)
    ema.update(toy)
    toy.set(4.0)
    ema.update(toy)
    TrainingCheckpointer(toy, str(tmp_path), ema=ema).save("ckpt")
    saved = torch.load(tmp_path / "ckpt.pth")
    assert saved["model"]["w"].tolist() == [3.0, 3.0]
    assert saved[RAW_WEIGHTS_KEY]["w"].tolist() == [4.0, 4.0]

    resumed, other = Toy(), WeightEMA(0.5, 0.0)
    TrainingCheckpointer(resumed, str(tmp_path), ema=other).load(str(tmp_path / "ckpt.pth"))
    assert resumed.w.tolist() == [4.0, 4.0] and other.weights["w"].tolist() == [3.0, 3.0]
    fresh = Toy()
    TrainingCheckpointer(fresh, str(tmp_path)).load(str(tmp_path / "ckpt.pth"), [])
    assert fresh.w.tolist() == [3.0, 3.0]


class Recorder(HookBase):
    """The trained weights after every step (registered last: after the EMA update)."""

    def __init__(self) -> None:
        self.states: List[Dict[str, torch.Tensor]] = []

    def after_step(self) -> None:
        self.states.append(_state(self.trainer.model))


def _cfg(out, max_iter: int, *opts):
    return build_cfg(
        CPU,
        [
            "DATASETS.TRAIN",
            "('ema_train',)",
            "DATASETS.TEST",
            "()",
            "MODEL.FPN.OUT_CHANNELS",
            32,
            "MODEL.RETINANET.NUM_CONVS",
            1,
            "INPUT.MIN_SIZE_TRAIN",
            "(64,)",
            "INPUT.MAX_SIZE_TRAIN",
            64,
            "SOLVER.IMS_PER_BATCH",
            2,
            "SOLVER.BASE_LR",
            0.02,
            "SOLVER.WARMUP_ITERS",
            1,
            "SOLVER.MAX_ITER",
            max_iter,
            "SOLVER.STEPS",
            "()",
            "SOLVER.CHECKPOINT_PERIOD",
            1000,
            "DATALOADER.NUM_WORKERS",
            0,
            "BMC.DATA.PROFILE_IMAGES",
            0,
            "OUTPUT_DIR",
            str(out),
            *opts,
        ],
    )


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory):
    """3 iterations with the average; the weights each evaluation saw; the trained weights."""
    root = tmp_path_factory.mktemp("ema_data")
    json_file = generate_dataset(root, "train", 3, seed=0, height=64, width=64)
    register_coco_dataset("ema_train", json_file, root / "train", marrow_metadata())
    out = tmp_path_factory.mktemp("ema_out")
    seen: List[Dict[str, torch.Tensor]] = []
    with pytest.MonkeyPatch.context() as mp:
        record = classmethod(lambda cls, cfg, model, evaluators=None: seen.append(_state(model)))
        mp.setattr(BMCTrainer, "test", record)
        trainer = BMCTrainer(_cfg(out, 3, *EMA))
        recorder = Recorder()
        trainer.register_hooks([recorder])
        trainer.resume_or_load(resume=False)
        trainer.train()
    yield trainer, out, seen, recorder
    unregister_dataset("ema_train")


def test_the_final_checkpoint_ships_the_average_and_keeps_the_trained_weights(ema_run):
    trainer, out, seen, recorder = ema_run
    ckpt = torch.load(out / "model_final.pth")
    assert {"model", RAW_WEIGHTS_KEY, "trainer", "iteration"} <= set(ckpt)
    assert _same(ckpt["model"], trainer.ema.weights)
    assert _same(ckpt[RAW_WEIGHTS_KEY], recorder.states[-1])  # the last step's
    assert _same(ckpt["model"], _state(trainer.model))  # train() ends with the average in it
    differ = [k for k, v in ckpt["model"].items() if not torch.equal(v, ckpt[RAW_WEIGHTS_KEY][k])]
    assert any(k.startswith("head.") for k in differ), differ
    assert ckpt["trainer"]["hooks"]["EMAHook"] == {"updates": 3}
    assert len(seen) == 1 and _same(seen[0], ckpt["model"])  # the final evaluation's weights


def test_load_model_eval_only_the_count_and_the_export_load_the_average(ema_run, tmp_path):
    trainer, out, _, _ = ema_run
    weights = str(out / "model_final.pth")
    average = torch.load(weights)["model"]
    assert _same(_state(load_model(trainer.cfg, weights)), average)
    model = build_model(trainer.cfg)  # as `bmc train --eval-only` loads it
    DetectionCheckpointer(model).resume_or_load(weights, resume=False)
    assert _same(_state(model), average)
    config = tmp_path / "run.yaml"
    config.write_text(trainer.cfg.dump())
    assert _same(_state(Detector.from_config(str(config), weights).model), average)
    assert _same(_state(load_for_export(str(config), weights)[1]), average)


def test_resume_continues_the_same_average(ema_run):
    _, out, _, _ = ema_run
    saved = torch.load(out / "model_final.pth")
    trainer = BMCTrainer(_cfg(out, 5, *EMA))
    recorder = Recorder()
    trainer.register_hooks([recorder])
    trainer.resume_or_load(resume=True)
    assert trainer.start_iter == 3 and trainer.ema.updates == 3
    assert _same(trainer.ema.weights, saved["model"])
    assert _same(_state(trainer.model), saved[RAW_WEIGHTS_KEY])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(BMCTrainer, "test", classmethod(lambda cls, cfg, model, evaluators=None: {}))
        trainer.train()
    assert trainer.ema.updates == 5 and len(recorder.states) == 2
    d4, d5 = trainer.ema.decay_at(4), trainer.ema.decay_at(5)
    key = "head.cls_score.weight"
    w4, w5 = recorder.states[0][key], recorder.states[1][key]
    expected = d5 * (d4 * saved["model"][key] + (1 - d4) * w4) + (1 - d5) * w5
    torch.testing.assert_close(trainer.ema.weights[key], expected)
    assert torch.load(out / "model_final.pth")["trainer"]["hooks"]["EMAHook"] == {"updates": 5}


def test_disabled_by_default_the_checkpoint_is_detectron2s(ema_run, tmp_path):
    trainer = BMCTrainer(_cfg(tmp_path, 1))
    assert trainer.ema is None
    trainer.resume_or_load(resume=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(BMCTrainer, "test", classmethod(lambda cls, cfg, model, evaluators=None: {}))
        trainer.train()
    ckpt = torch.load(tmp_path / "model_final.pth")
    assert set(ckpt) == {"model", "trainer", "iteration"}
    assert "EMAHook" not in ckpt["trainer"].get("hooks", {})
    assert list(ckpt["model"]) == list(trainer.model.state_dict())
    assert _same(ckpt["model"], _state(trainer.model))
