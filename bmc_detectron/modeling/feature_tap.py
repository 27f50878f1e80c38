"""A backbone's named maps kept for a stage that reads levels the dense head does not.

detectron2's dense detectors pass on only the head's levels (``MODEL.RETINANET.IN_FEATURES``) to
``forward_training`` / ``forward_inference``. A second stage that pools RoIs from another set of
levels (Faster R-CNN's P2 for small boxes) takes them from here: a forward hook on the backbone
keeps its last output, for every caller of the backbone alike (training, inference, test-time
flips, the ONNX trace).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

from torch import Tensor, nn

__all__ = ["FeatureTap"]


class FeatureTap:
    """Keeps the named maps of a backbone's last forward pass until :meth:`take` hands them on."""

    def __init__(self, backbone: nn.Module, names: Sequence[str]):
        """
        Args:
            backbone: a module whose forward returns a dict of named (N, C, Hi, Wi) maps.
            names: the maps kept, in the order :meth:`take` returns them.
        """
        self.names = list(names)
        self._kept: Optional[Dict[str, Tensor]] = None
        backbone.register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, inputs: object, output: Dict[str, Tensor]) -> None:
        self._kept = {n: output[n] for n in self.names}

    def take(self) -> List[Tensor]:
        """The kept maps of the last pass, in ``names`` order; forgotten once taken."""
        if self._kept is None:
            raise RuntimeError("FeatureTap.take: the backbone has not run since the last take")
        kept, self._kept = self._kept, None
        return [kept[n] for n in self.names]
