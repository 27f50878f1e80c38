"""The one model loader (``bmc_detectron.engine.loading.load_model``): weights, mode, precision."""

from __future__ import annotations

import torch

from bmc_detectron.config import build_cfg
from bmc_detectron.engine.loading import load_model
from tests.analysis.helpers import CPU_CONFIG, tiny_opts


def test_load_model_weights_mode_and_precision(tmp_path):
    cfg = build_cfg(CPU_CONFIG, [*tiny_opts(), "BMC.PRECISION.CPU_BF16", "True"])
    torch.manual_seed(0)
    untrained = load_model(cfg, "")
    assert not untrained.training and untrained.bmc_weights == ""
    assert getattr(untrained.backbone.forward, "bmc_bf16", False)  # the config's precision
    path = tmp_path / "w.pth"
    torch.save({"model": untrained.state_dict()}, path)

    torch.manual_seed(1)
    cfg_with_weights = build_cfg(CPU_CONFIG, [*tiny_opts(), "MODEL.WEIGHTS", str(path)])
    loaded = load_model(cfg_with_weights)  # weights None: the config's MODEL.WEIGHTS
    assert loaded.bmc_weights == str(path) and not loaded.training
    want = untrained.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in loaded.state_dict().items())

    plain = load_model(cfg, str(path), precision=False)
    assert not getattr(plain.backbone.forward, "bmc_bf16", False)  # float32 as built

    calls = []

    class Recorder:
        def __init__(self, model: torch.nn.Module) -> None:
            calls.append(type(model).__name__)

        def load(self, weights: str) -> None:
            calls.append(weights)

    load_model(cfg, str(path), checkpointer=Recorder)
    assert calls == [type(plain).__name__, str(path)]
    calls.clear()
    load_model(cfg, "", checkpointer=Recorder)
    assert calls == []
