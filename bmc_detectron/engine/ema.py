"""Weight EMA: an exponential moving average of the detector's weights while it trains.

After training step ``n`` (1, 2, ...) the average moves towards the trained weights ``w``::

    ema <- d(n) * ema + (1 - d(n)) * w,    d(n) = DECAY * (1 - exp(-n / WARMUP))

An average of the iterates (Polyak & Juditsky 1992), in its exponential form with the warm-up of
YOLOv5's ``ModelEMA`` (updates / tau) and mmdetection's ``ExpMomentumEMA`` (momentum 0.0002,
gamma 2000, the defaults of ``BMC.EMA``): early on ``d`` is small, so the average follows the
weights instead of remembering the random start. Every floating-point entry of the state dict is
averaged, the parameters and the floating buffers alike (BatchNorm running statistics, as YOLOv5
and timm do; FrozenBN's fixed statistics stay what they are); integer buffers
(``num_batches_tracked``) are copied.

The checkpoint convention of a run with ``BMC.EMA.ENABLED`` (:class:`TrainingCheckpointer`):
every checkpoint's ``model`` holds the average, the weights that ship, so everything that loads
``model`` (``engine.loading.load_model``: the count, the ONNX export, the instruments; ``bmc train
--eval-only``; a new run's ``MODEL.WEIGHTS``) gets the average; ``model_raw`` holds the
optimiser's weights, which only ``--resume`` reads back (and the average's step count is in the
trainer state, ``trainer/hooks/EMAHook``). Evaluation during and after training
(``TEST.EVAL_PERIOD`` and the final one) runs on the average too, and after ``train()`` the
trainer's model holds it (so a driver that evaluates ``trainer.model`` measures what ships).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Dict, Iterator, Mapping, Optional

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.engine import HookBase
from torch import nn

#: checkpoint key of the optimiser's weights in a run with an average (``model`` is the average)
RAW_WEIGHTS_KEY = "model_raw"


class WeightEMA:
    """The exponential moving average of a model's state dict (see the module's docstring)."""

    def __init__(self, decay: float, warmup: float) -> None:
        if not 0.0 <= decay < 1.0 or warmup < 0:
            raise ValueError(f"EMA decay {decay!r} must be in [0, 1) and warmup {warmup!r} >= 0")
        self.decay = float(decay)
        self.warmup = float(warmup)
        #: number of updates so far (the ``n`` of the last one)
        self.updates = 0
        #: the average, state-dict key -> tensor; empty until set or first updated
        self.weights: Dict[str, torch.Tensor] = {}

    def decay_at(self, updates: int) -> float:
        """``d(n)``: the weight the average keeps at update ``n``."""
        if self.warmup <= 0:
            return self.decay
        return self.decay * (1.0 - math.exp(-updates / self.warmup))

    @torch.no_grad()
    def set_weights(self, state: Mapping[str, torch.Tensor], like: Optional[nn.Module] = None):
        """The average becomes a copy of ``state``; with ``like``, of ``like``'s state dict with
        the entries of ``state`` that fit it (same key and shape) put in, in its layout."""
        if like is None:
            self.weights = {k: v.detach().clone() for k, v in state.items()}
            return
        weights = {k: v.detach().clone() for k, v in like.state_dict().items()}
        for key, value in state.items():
            if key in weights and weights[key].shape == value.shape:
                weights[key].copy_(value)
        self.weights = weights

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One step of the average towards ``model``'s weights (the first one starts it)."""
        state = model.state_dict()
        if not self.weights:
            self.set_weights(state)
        self.updates += 1
        d = self.decay_at(self.updates)
        for key, value in state.items():
            average = self.weights[key]
            if average.is_floating_point():
                average.mul_(d).add_(value.detach().to(average.dtype), alpha=1.0 - d)
            else:
                average.copy_(value)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Put the average into ``model`` for good (nothing before the first update)."""
        if self.weights:
            model.load_state_dict(self.weights)

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """Within the block ``model`` carries the average; afterwards its own weights again."""
        if not self.weights:
            yield model
            return
        own = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.weights)
        try:
            yield model
        finally:
            model.load_state_dict(own)

    def state_dict(self) -> Dict[str, Any]:
        """The step count (the weights travel as the checkpoint's ``model``)."""
        return {"updates": self.updates}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.updates = int(state["updates"])


def build_weight_ema(cfg: CfgNode) -> Optional[WeightEMA]:
    """The average of ``cfg.BMC.EMA``; None when it is not enabled."""
    if not cfg.BMC.EMA.ENABLED:
        return None
    return WeightEMA(cfg.BMC.EMA.DECAY, cfg.BMC.EMA.WARMUP)


class EMAHook(HookBase):
    """Updates the average after every training step; its step count is trainer state, so a
    resumed run continues the same average. Place it before the checkpointer and evaluation."""

    def __init__(self, ema: WeightEMA, model: nn.Module) -> None:
        self.ema = ema
        self.model = model  # the trained model, unwrapped from DDP

    def before_train(self) -> None:
        if not self.ema.weights:  # not restored from a checkpoint: start at the weights
            self.ema.set_weights(self.model.state_dict())

    def after_step(self) -> None:
        self.ema.update(self.model)

    def state_dict(self) -> Dict[str, Any]:
        return self.ema.state_dict()

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self.ema.load_state_dict(state_dict)


class TrainingCheckpointer(DetectionCheckpointer):
    """The trainer's checkpointer: detectron2's, plus the average of ``ema`` (if any) as each
    checkpoint's ``model`` and the trained weights as ``model_raw``.

    Loading everything (``checkpointables`` None: ``--resume``) puts ``model_raw`` back into the
    model and ``model`` into the average; loading weights only (a new run's ``MODEL.WEIGHTS``)
    reads ``model``, the average. Without ``ema`` it saves exactly what detectron2's does.
    """

    def __init__(self, model: nn.Module, save_dir: str = "", *, ema=None, **checkpointables):
        super().__init__(model, save_dir, **checkpointables)
        self.ema: Optional[WeightEMA] = ema
        self._resuming = False

    def save(self, name: str, **kwargs: Any) -> None:
        if self.ema is not None and self.ema.weights:
            kwargs = {"model": self.ema.weights, RAW_WEIGHTS_KEY: self.model.state_dict(), **kwargs}
        super().save(name, **kwargs)

    def load(self, path: str, checkpointables=None) -> Dict[str, Any]:
        self._resuming = checkpointables is None
        try:
            return super().load(path, checkpointables)
        finally:
            self._resuming = False

    def _load_model(self, checkpoint: Dict[str, Any]):
        raw = checkpoint.pop(RAW_WEIGHTS_KEY, None)
        if raw is None or not self._resuming:
            return super()._load_model(checkpoint)
        average = checkpoint["model"]
        checkpoint["model"] = raw
        incompatible = super()._load_model(checkpoint)
        if self.ema is not None:
            self.ema.set_weights(average, like=self.model)
        return incompatible
