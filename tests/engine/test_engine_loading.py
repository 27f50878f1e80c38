"""The one model loader (``bmc_detectron.engine.loading.load_model``): weights, mode, precision."""

from __future__ import annotations

import pytest
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


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path):
    # a run trained on 3 classes loaded with a config of 5: the class layer would stay random
    # and the model detect nothing, so the loader names the file and the layer instead
    from bmc_detectron.engine.loading import WeightsError

    cfg = build_cfg(CPU_CONFIG, [*tiny_opts(), "MODEL.RETINANET.NUM_CLASSES", "3"])
    path = tmp_path / "three.pth"
    torch.save({"model": load_model(cfg, "").state_dict()}, path)
    other = build_cfg(CPU_CONFIG, [*tiny_opts(), "MODEL.RETINANET.NUM_CLASSES", "5"])
    with pytest.raises(WeightsError, match=r"three\.pth does not fit the config: parameters"):
        load_model(other, str(path))
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match=r"bad\.pth: not a readable checkpoint"):
        load_model(cfg, str(tmp_path / "bad.pth"))
    assert load_model(cfg, str(path)).bmc_weights == str(path)  # the run's own config fits
