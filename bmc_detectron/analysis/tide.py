"""TIDE-style attribution of detection errors to the AP they cost (Bolya et al., "TIDE: A General
Toolbox for Identifying Object Detection Errors", ECCV 2020), in this project's own code.

For every image the predictions are matched to the gts greedily by score, as COCO does at IoU
``pos_thresh`` (0.5): a prediction takes the unmatched gt of its class that it overlaps most. Every
prediction left unmatched gets exactly one error type, tested in this order:

1. ``bkg`` if the image has no gt;
2. ``loc`` (localisation): ``bg_thresh <= IoU <= pos_thresh`` with its best gt of the same class;
3. ``cls`` (classification): IoU >= ``pos_thresh`` with a gt of another class;
4. ``dupe`` (duplicate): IoU >= ``pos_thresh`` with a same-class gt already matched by a
   higher-scored prediction;
5. ``bkg`` (background): IoU <= ``bg_thresh`` (0.1) with every gt;
6. ``both`` (cls+loc): anything else — it overlaps a gt of another class, but not enough.

A gt left unmatched is ``missed`` unless a ``cls`` or ``loc`` error points at it (fixing that
error would match it). The oracle of a type fixes all its errors and recomputes AP50:
``cls`` / ``loc`` errors become true positives (class corrected, box corrected) if their gt is
unmatched and they are its highest-scored such error, and are removed otherwise; ``dupe``,
``bkg`` and ``both`` predictions are removed; ``missed`` gts are removed from the gt count.
dAP = AP(fixed) - AP (clipped at 0, as TIDE). AP is TIDE's: per class, 101-point interpolated
precision over recall (as COCO), averaged over every class that has a gt or a prediction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, NamedTuple, Optional, Sequence

import numpy as np

from bmc_detectron.structures.boxes import as_boxes, box_iou, is_crowded

#: error types in the order of the report
ERROR_TYPES = ("cls", "loc", "both", "dupe", "bkg", "missed")
ERROR_NAMES = {
    "cls": "classification",
    "loc": "localisation",
    "both": "cls+loc",
    "dupe": "duplicate",
    "bkg": "background",
    "missed": "missed",
}
POS_THRESH = 0.5
BG_THRESH = 0.1
MAX_DETS = 100


class ImageDetections(NamedTuple):
    """Ground truth and predictions of one image (boxes XYXY in the same pixel frame).

    Attributes:
        image_id: any id, kept in the outcomes.
        gt_boxes: (G, 4) boxes; gt_classes: (G,) int class indices.
        pred_boxes: (P, 4) boxes; pred_classes: (P,) int; pred_scores: (P,) float.
    """

    image_id: object
    gt_boxes: np.ndarray
    gt_classes: np.ndarray
    pred_boxes: np.ndarray
    pred_classes: np.ndarray
    pred_scores: np.ndarray


def make_image(image_id: object, gts: Sequence, preds: Sequence) -> ImageDetections:
    """An :class:`ImageDetections` from rows ``[x0, y0, x1, y1, cls]`` (gts) and
    ``[x0, y0, x1, y1, cls, score]`` (predictions)."""
    g = np.asarray(gts, np.float64).reshape(-1, 5)
    p = np.asarray(preds, np.float64).reshape(-1, 6)
    return ImageDetections(
        image_id, g[:, :4], g[:, 4].astype(np.int64), p[:, :4], p[:, 4].astype(np.int64), p[:, 5]
    )


@dataclass
class PredOutcome:
    """What became of one prediction. ``kind`` is "tp" or an error type; ``gt`` the gt it
    refers to (matched gt, the gt of a cls/loc/dupe error, else its highest-IoU gt; -1 if it
    overlaps none); ``fixed_cls`` its class as a true positive under its type's oracle (None:
    the oracle removes it)."""

    image: int
    pred: int
    cls: int
    score: float
    kind: str
    gt: int = -1
    iou: float = 0.0
    fixed_cls: Optional[int] = None


@dataclass
class GtOutcome:
    """One gt: matched by a prediction, the target of a fixable cls/loc error, or missed."""

    image: int
    gt: int
    cls: int
    matched: bool = False
    usable: bool = False

    @property
    def missed(self) -> bool:
        return not self.matched and not self.usable


@dataclass
class Attribution:
    """Outcome of every prediction and gt of a set of images, and the AP oracles on them."""

    preds: List[PredOutcome] = field(default_factory=list)
    gts: List[GtOutcome] = field(default_factory=list)

    def errors(self, kind: str) -> List[object]:
        """The prediction outcomes (or, for "missed", the gt outcomes) of one error type."""
        if kind == "missed":
            return [g for g in self.gts if g.missed]
        return [p for p in self.preds if p.kind == kind]

    def counts(self) -> Dict[str, int]:
        """Number of errors of each type."""
        return {k: len(self.errors(k)) for k in ERROR_TYPES}

    def ap(self, fix: Optional[str] = None) -> float:
        """AP50 in percent, with the errors of type ``fix`` fixed (None: as is; "fp": every
        false positive scored below every true positive; "fn": every unmatched gt removed), as
        TIDE's oracles do."""
        points: Dict[int, List[tuple]] = {}
        num_gt: Dict[int, int] = {}
        for g in self.gts:
            drop = (fix == "missed" and g.missed) or (fix == "fn" and not g.matched)
            num_gt[g.cls] = num_gt.get(g.cls, 0) + (0 if drop else 1)
        for p in self.preds:
            if p.kind == "tp":
                points.setdefault(p.cls, []).append((1.0 if fix == "fp" else p.score, True))
            elif fix == p.kind:
                if p.fixed_cls is not None:
                    points.setdefault(p.fixed_cls, []).append((p.score, True))
            else:  # the "fp" oracle ranks every false positive below every true positive
                points.setdefault(p.cls, []).append((0.0 if fix == "fp" else p.score, False))
        classes = sorted(set(num_gt) | set(points))
        aps = [class_ap(points.get(c, []), num_gt.get(c, 0)) for c in classes]
        aps = [a for a, c in zip(aps, classes) if points.get(c) or num_gt.get(c, 0) > 0]
        return float(np.mean(aps)) if aps else 0.0

    def delta_ap(self) -> Dict[str, float]:
        """dAP of each error type's oracle (and of "fp" / "fn"), clipped at 0 as in TIDE."""
        base = self.ap()
        return {k: max(self.ap(k) - base, 0.0) for k in (*ERROR_TYPES, "fp", "fn")}

    def summary(self) -> Dict[str, object]:
        """AP50, numbers of gts, predictions and true positives, error counts and dAPs."""
        return {
            "AP50": self.ap(),
            "num_gt": len(self.gts),
            "num_pred": len(self.preds),
            "num_tp": sum(p.kind == "tp" for p in self.preds),
            "counts": self.counts(),
            "dAP": self.delta_ap(),
        }


def class_ap(points: Sequence[tuple], num_gt: int) -> float:
    """AP (percent) of one class from (score, is_true_positive) points: the precision envelope
    sampled at recall 0, 0.01, ..., 1 (COCO's and TIDE's 101 points); 0 without gts."""
    if num_gt <= 0 or not points:
        return 0.0
    scores = np.array([s for s, _ in points], np.float64)
    tp = np.array([t for _, t in points], bool)[np.argsort(-scores, kind="stable")]
    ctp = np.cumsum(tp)
    precision = ctp / np.arange(1, len(tp) + 1)
    recall = ctp / num_gt
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, np.arange(101) / 100, side="left")
    sampled = np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0.0)
    return float(sampled.mean() * 100)


def _match(iou_same: np.ndarray, order: np.ndarray, pos_thresh: float) -> np.ndarray:
    """Greedy matching by score: (P,) index of each prediction's gt, -1 if unmatched."""
    matched = np.full(iou_same.shape[0], -1, np.int64)
    buffer = iou_same.copy()
    for p in order:
        if buffer.shape[1] == 0:
            break
        g = int(np.argmax(buffer[p]))
        if buffer[p, g] >= pos_thresh:
            matched[p] = g
            buffer[:, g] = 0.0
    return matched


def _classify(iou: np.ndarray, same: np.ndarray, used: np.ndarray, p: int, th: tuple) -> tuple:
    """(error type, referenced gt) of unmatched prediction ``p`` (TIDE's order of tests)."""
    pos_thresh, bg_thresh = th
    if iou.shape[1] == 0:
        return "bkg", -1
    cls_iou, noncls_iou = iou[p] * same[p], iou[p] * ~same[p]
    g = int(np.argmax(cls_iou))
    if bg_thresh <= cls_iou[g] <= pos_thresh:
        return "loc", g
    g = int(np.argmax(noncls_iou))
    if noncls_iou[g] >= pos_thresh:
        return "cls", g
    used_iou = cls_iou * used
    g = int(np.argmax(used_iou))
    if used_iou[g] >= pos_thresh:
        return "dupe", g
    g = int(np.argmax(iou[p]))
    ref = g if iou[p, g] > 0 else -1
    return ("bkg" if iou[p, g] <= bg_thresh else "both"), ref


def _analyse_image(
    index: int, im: ImageDetections, th: tuple, max_dets: int
) -> tuple[List[PredOutcome], List[GtOutcome]]:
    """Outcomes of the predictions (the ``max_dets`` best) and gts of one image."""
    gt_cls = np.asarray(im.gt_classes, np.int64)
    pred_cls = np.asarray(im.pred_classes, np.int64)
    scores = np.asarray(im.pred_scores, np.float64)
    order = np.argsort(-scores, kind="stable")[:max_dets]
    iou = box_iou(as_boxes(im.pred_boxes), as_boxes(im.gt_boxes))  # (P, G)
    same = pred_cls[:, None] == gt_cls[None, :]
    matched = _match(iou * same, order, th[0])
    gts = [GtOutcome(index, g, int(c)) for g, c in enumerate(gt_cls)]
    used = np.zeros(len(gts), bool)
    used[matched[matched >= 0]] = True
    best: Dict[int, PredOutcome] = {}  # gt -> its highest-scored fixable cls/loc error
    preds = []
    for p in order:
        out = PredOutcome(index, int(p), int(pred_cls[p]), float(scores[p]), "tp")
        if matched[p] >= 0:
            out.gt, gts[matched[p]].matched = int(matched[p]), True
        else:
            out.kind, out.gt = _classify(iou, same, used, int(p), th)
            if out.kind in ("cls", "loc") and not used[out.gt]:
                gts[out.gt].usable = True
                if out.gt not in best or best[out.gt].score < out.score:
                    best[out.gt] = out
        out.iou = float(iou[p, out.gt]) if out.gt >= 0 else 0.0
        preds.append(out)
    for g, out in best.items():
        out.fixed_cls = int(gt_cls[g]) if out.kind == "cls" else out.cls
    return preds, gts


def attribute_errors(
    images: Sequence[ImageDetections],
    pos_thresh: float = POS_THRESH,
    bg_thresh: float = BG_THRESH,
    max_dets: int = MAX_DETS,
) -> Attribution:
    """Match, classify every error and prepare the oracles for a set of images."""
    result = Attribution()
    for i, im in enumerate(images):
        preds, gts = _analyse_image(i, im, (pos_thresh, bg_thresh), max_dets)
        result.preds += preds
        result.gts += gts
    return result


def crowding_groups(
    images: Sequence[ImageDetections], attribution: Attribution
) -> tuple[List[np.ndarray], List[np.ndarray]]:
    """Per image, (G,) bool "crowded" of each gt and (P,) bool "crowded" of each prediction.

    A gt is crowded if its box overlaps (positive area) another gt's box. A prediction belongs to
    the group of the gt it refers to (:class:`PredOutcome`: its match, the gt of its cls / loc /
    dupe error, else the gt it overlaps most); a prediction that overlaps no gt — a false
    positive on empty background — has nothing crowding it and counts as isolated. Predictions
    beyond ``max_dets`` are isolated (they are not evaluated anyway).
    """
    gt_groups = [is_crowded(as_boxes(im.gt_boxes)) for im in images]
    pred_groups = [np.zeros(len(im.pred_scores), bool) for im in images]
    for p in attribution.preds:
        if p.gt >= 0:
            pred_groups[p.image][p.pred] = gt_groups[p.image][p.gt]
    return gt_groups, pred_groups


def subset(
    images: Sequence[ImageDetections],
    gt_keep: Sequence[np.ndarray],
    pred_keep: Sequence[np.ndarray],
) -> List[ImageDetections]:
    """The images with only the kept gts and predictions (per-image bool masks)."""
    out = []
    for im, g, p in zip(images, gt_keep, pred_keep):
        out.append(
            ImageDetections(
                im.image_id,
                as_boxes(im.gt_boxes)[g],
                np.asarray(im.gt_classes)[g],
                as_boxes(im.pred_boxes)[p],
                np.asarray(im.pred_classes)[p],
                np.asarray(im.pred_scores)[p],
            )
        )
    return out


def analyse(
    images: Sequence[ImageDetections],
    pos_thresh: float = POS_THRESH,
    bg_thresh: float = BG_THRESH,
    max_dets: int = MAX_DETS,
) -> Dict[str, object]:
    """The whole report: ``overall``, ``crowded`` and ``isolated`` summaries (AP50, counts, dAP)
    and the overall :class:`Attribution` (key ``attribution``, not JSON-serialisable).

    The split re-runs the attribution on each subset of gts and predictions
    (:func:`crowding_groups`); matching inside a subset is the same as in the whole set.
    """
    kw = {"pos_thresh": pos_thresh, "bg_thresh": bg_thresh, "max_dets": max_dets}
    overall = attribute_errors(images, **kw)
    gt_groups, pred_groups = crowding_groups(images, overall)
    report: Dict[str, object] = {"overall": overall.summary(), "attribution": overall}
    for name, want in (("crowded", True), ("isolated", False)):
        gk = [g == want for g in gt_groups]
        pk = [p == want for p in pred_groups]
        report[name] = attribute_errors(subset(images, gk, pk), **kw).summary()
    report["thresholds"] = {"pos": pos_thresh, "bg": bg_thresh, "max_dets": max_dets}
    return report
