"""A model with its weights: the one loader of the package's commands, pipeline and instruments.

Training builds and resumes its model through the trainer's checkpointer
(:func:`bmc_detectron.engine.launch.main`), not here.
"""

from __future__ import annotations

import pickle
from typing import Any, Callable, Optional

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.modeling import build_model
from torch import nn

from bmc_detectron.engine.precision import apply_precision


class WeightsError(ValueError):
    """Weights that cannot be read, or that do not fit the model they are loaded into."""


class FittingCheckpointer:
    """detectron2's checkpointer, except that every key must fit: an unreadable file or
    parameters missing, unexpected or of another shape raise :class:`WeightsError` naming the
    file (detectron2 only logs them and leaves such layers at their initial values)."""

    def __init__(self, model: nn.Module) -> None:
        class _Checkpointer(DetectionCheckpointer):
            incompatible = None

            def _load_model(self, checkpoint):
                self.incompatible = super()._load_model(checkpoint)
                return self.incompatible

            def _log_incompatible_keys(self, incompatible) -> None:
                pass  # reported by load() as one error

        self.checkpointer = _Checkpointer(model)

    def load(self, weights: str) -> None:
        """Load ``weights`` (see the class doc)."""
        try:
            self.checkpointer.load(weights)
        except (RuntimeError, EOFError, pickle.UnpicklingError, KeyError, TypeError) as e:
            raise WeightsError(f"{weights}: not a readable checkpoint ({type(e).__name__})") from e
        bad = self.checkpointer.incompatible
        if bad is None:
            return
        problems = {
            "missing": list(bad.missing_keys),
            "unexpected": list(bad.unexpected_keys),
            "of another shape": [k for k, *_ in bad.incorrect_shapes],
        }
        if any(problems.values()):
            counts = ", ".join(f"{len(v)} {k}" for k, v in problems.items() if v)
            names = [k for v in problems.values() for k in v][:3]
            raise WeightsError(
                f"{weights} does not fit the config: parameters {counts} (e.g. {', '.join(names)})"
            )


def load_model(
    cfg: CfgNode,
    weights: Optional[str] = None,
    *,
    precision: bool = True,
    checkpointer: Callable[[nn.Module], Any] = FittingCheckpointer,
) -> nn.Module:
    """The model of ``cfg`` in eval mode, with ``weights`` (or ``cfg.MODEL.WEIGHTS`` when None)
    loaded; random initial weights when that is empty.

    Built as the trainer builds it (detectron2's ``build_model``, then the ``BMC.PRECISION``
    options) but without printing it; ``precision=False`` leaves the model in float32 whatever the
    config says. ``checkpointer(model).load(path)`` loads the weights
    (:class:`FittingCheckpointer`, detectron2's: .pth or Detectron .pkl; :class:`WeightsError`
    when they do not fit the model, e.g. a run trained on 3 classes loaded with a config of 11)
    from the checkpoint's ``model``, which in a run with ``BMC.EMA.ENABLED`` is the weight
    average (engine/ema.py; the trained weights are ``model_raw``, for resuming only). The model
    gets an attribute ``bmc_weights``: the file loaded, or "" for an untrained model.
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
