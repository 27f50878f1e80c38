"""Test-time flips for the one-stage detectors (``BMC.TEST_FLIPS``, ``BMC.TEST_FLIP_MERGE``).

Cells have no up or left, so a smear read flipped is as valid as the smear itself: the detector
runs on the image and on its flips, each flipped pass's boxes are mapped back into the image's
frame, and the union is merged, either by class-wise NMS at the model's own test NMS threshold
(``"nms"``) or by weighted box fusion (``"wbf"``: Solovyev, Wang & Gabruseva, "Weighted boxes
fusion: ensembling boxes from different object detection models", Image and Vision Computing
2021), whose fused box is the score-weighted mean of a cluster and whose score is the cluster's
mean score scaled by the share of the passes that found it.

Idea from detectron2's ``GeneralizedRCNNWithTTA`` (R-CNN only); written here for the dense
detectors (BMCRetinaNet, detectron2's RetinaNet and FCOS: any model with ``test_nms_thresh`` and
``max_detections_per_image``). Training is untouched: the wrapper only serves inference.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np
import torch
from detectron2.config import CfgNode, configurable
from detectron2.structures import Boxes, Instances
from torch import Tensor, nn
from torchvision.ops import batched_nms

from bmc_detectron.config_checks import TEST_FLIPS, ConfigError, check_test_flips
from bmc_detectron.structures.boxes import box_iou


def flip_image(image: Tensor, flip: str) -> Tensor:
    """A (C, H, W) image mirrored as ``flip`` says ("" = unchanged)."""
    dims = [d for axis, d in (("h", 2), ("v", 1)) if axis in flip]
    return torch.flip(image, dims=dims) if dims else image


def unflip_boxes(boxes: Tensor, flip: str, height: float, width: float) -> Tensor:
    """(N, 4) XYXY boxes found on the image mirrored by ``flip``, in the unflipped image's frame
    (an image of ``height`` x ``width``)."""
    out = boxes.clone()
    if "h" in flip:
        out[:, 0], out[:, 2] = width - boxes[:, 2], width - boxes[:, 0]
    if "v" in flip:
        out[:, 1], out[:, 3] = height - boxes[:, 3], height - boxes[:, 1]
    return out


def nms_merge(parts: Sequence[Instances], nms_thresh: float, max_dets: int) -> Instances:
    """The union of the passes' detections (same image frame), class-wise NMS at ``nms_thresh``,
    the ``max_dets`` best kept."""
    merged = Instances.cat(list(parts))
    keep = batched_nms(
        merged.pred_boxes.tensor, merged.scores, merged.pred_classes, float(nms_thresh)
    )
    return merged[keep[:max_dets]]


def _fuse_class(boxes: np.ndarray, scores: np.ndarray, iou_thresh: float, passes: int):
    """WBF of one class's boxes: (fused boxes, fused scores)."""
    clusters: List[List[int]] = []
    fused = np.zeros((0, 4))
    for i in np.argsort(-scores, kind="stable"):
        iou = box_iou(boxes[i : i + 1], fused)[0]
        j = int(iou.argmax()) if len(iou) else -1
        if j < 0 or iou[j] <= iou_thresh:
            clusters.append([int(i)])
            fused = np.vstack([fused, boxes[i]])
            continue
        clusters[j].append(int(i))
        w = scores[clusters[j]]
        fused[j] = (w[:, None] * boxes[clusters[j]]).sum(0) / w.sum()
    fused_scores = np.array(
        [scores[c].mean() * min(len(c), passes) / passes for c in clusters], dtype=np.float64
    )
    return fused, fused_scores


def wbf_merge(
    parts: Sequence[Instances], iou_thresh: float, max_dets: int, passes: int
) -> Instances:
    """Weighted box fusion of the passes' detections, class by class: a box joins the fused box
    it overlaps most when IoU > ``iou_thresh`` (else starts one); the ``max_dets`` best kept."""
    merged = Instances.cat(list(parts))
    boxes = merged.pred_boxes.tensor.detach().double().numpy()
    scores = merged.scores.detach().double().numpy()
    classes = merged.pred_classes.numpy()
    out_b, out_s, out_c = [np.zeros((0, 4))], [np.zeros(0)], [np.zeros(0, dtype=np.int64)]
    for k in np.unique(classes):
        sel = classes == k
        b, s = _fuse_class(boxes[sel], scores[sel], iou_thresh, passes)
        out_b.append(b)
        out_s.append(s)
        out_c.append(np.full(len(s), k, dtype=np.int64))
    s = np.concatenate(out_s)
    order = np.argsort(-s, kind="stable")[:max_dets]
    result = Instances(merged.image_size)
    dtype = merged.pred_boxes.tensor.dtype
    result.pred_boxes = Boxes(torch.from_numpy(np.concatenate(out_b)[order]).to(dtype))
    result.scores = torch.from_numpy(s[order]).to(merged.scores.dtype)
    result.pred_classes = torch.from_numpy(np.concatenate(out_c)[order])
    return result


class BMCRetinaNetWithTTA(nn.Module):
    """A dense detector read on the image and its flips; detections mapped back and merged.

    ``forward`` takes and returns what the model's inference does (a list of dicts with
    ``"image"`` and optional ``"height"``/``"width"``; a list of ``{"instances": ...}``), so
    detectron2's ``inference_on_dataset`` and the evaluators use it unchanged.
    """

    @configurable
    def __init__(self, model: nn.Module, *, flips: Sequence[str] = TEST_FLIPS, merge: str = "nms"):
        """
        Args:
            model: a dense detector (``test_nms_thresh``, ``max_detections_per_image``).
            flips: the extra passes, entries of ``config_checks.TEST_FLIPS``; the image itself
                always runs.
            merge: "nms" or "wbf"; both use the model's test NMS threshold.
        """
        super().__init__()
        for attr in ("test_nms_thresh", "max_detections_per_image"):
            if not hasattr(model, attr):
                raise ConfigError(
                    f"BMC.TEST_FLIPS: {type(model).__name__} has no {attr}; test-time flips "
                    "serve the dense detectors (BMCRetinaNet, RetinaNet, FCOS)"
                )
        self.model = model
        self.flips = check_test_flips(flips, merge)
        self.merge = merge

    @classmethod
    def from_config(cls, cfg: CfgNode, model: nn.Module) -> Dict[str, object]:
        return {"model": model, "flips": cfg.BMC.TEST_FLIPS, "merge": cfg.BMC.TEST_FLIP_MERGE}

    def _pass(self, batched_inputs: List[dict], flip: str) -> List[Instances]:
        inputs = [{**d, "image": flip_image(d["image"], flip)} for d in batched_inputs]
        outputs = self.model(inputs)
        found = []
        for out in outputs:
            inst = out["instances"]
            if flip:
                h, w = inst.image_size
                inst.pred_boxes = Boxes(unflip_boxes(inst.pred_boxes.tensor, flip, h, w))
            found.append(inst)
        return found

    def merge_passes(self, parts: Sequence[Instances]) -> Instances:
        """The detections of one image's passes (in its frame) merged as ``self.merge`` says."""
        nms, top = self.model.test_nms_thresh, self.model.max_detections_per_image
        if self.merge == "wbf":
            return wbf_merge(parts, nms, top, passes=len(parts))
        return nms_merge(parts, nms, top)

    @torch.no_grad()
    def forward(self, batched_inputs: List[dict]) -> List[Dict[str, Instances]]:
        per_pass = [self._pass(batched_inputs, flip) for flip in ["", *self.flips]]
        return [{"instances": self.merge_passes(parts)} for parts in zip(*per_pass)]
