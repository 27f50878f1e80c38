"""A model with its weights: the one loader of the package's commands, pipeline and instruments.

Training builds and resumes its model through the trainer's checkpointer
(:func:`bmc_detectron.engine.launch.main`), not here.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.modeling import build_model
from torch import nn

from bmc_detectron.engine.precision import apply_precision


def load_model(
    cfg: CfgNode,
    weights: Optional[str] = None,
    *,
    precision: bool = True,
    checkpointer: Callable[[nn.Module], Any] = DetectionCheckpointer,
) -> nn.Module:
    """The model of ``cfg`` in eval mode, with ``weights`` (or ``cfg.MODEL.WEIGHTS`` when None)
    loaded; random initial weights when that is empty.

    Built as the trainer builds it (detectron2's ``build_model``, then the ``BMC.PRECISION``
    options) but without printing it; ``precision=False`` leaves the model in float32 whatever the
    config says. ``checkpointer(model).load(path)`` loads the weights (detectron2's
    ``DetectionCheckpointer``: .pth or Detectron .pkl) from the checkpoint's ``model``, which
    in a run with ``BMC.EMA.ENABLED`` is the weight average (engine/ema.py; the trained weights
    are ``model_raw``, for resuming only). The model gets an attribute
    ``bmc_weights``: the file loaded, or "" for an untrained model.
    """
    model = build_model(cfg)
    if precision:
        model = apply_precision(model, cfg)
    path = weights if weights is not None else cfg.MODEL.WEIGHTS
    if path:
        checkpointer(model).load(path)
    model.eval()
    model.bmc_weights = path or ""
    return model
