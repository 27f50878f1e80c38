"""COCO AP on any multiset of test images, and a paired bootstrap over images.

Seeds measure how much a result moves when the *model* is retrained; a bootstrap over the test
images measures how much it moves when the *test set* is redrawn. The second needs AP on a
resampled image set many times over, which pycocotools' ``COCOeval`` would recompute from
scratch. Here pycocotools matches each image once (``COCOeval.evaluate``: area ``all``, 100
detections per image) and :class:`PerImageMatches` keeps the outcome; AP of a resample is then
pycocotools' ``accumulate`` + ``summarize`` arithmetic with every image counted as often as it
was drawn (a detection of an image drawn twice counts twice, as if the image were in the set
twice). On the identity resample it equals ``COCOeval.stats[0]`` / ``[1]`` exactly.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

RECALL_THRESHOLDS = np.linspace(0.0, 1.00, 101)


@dataclass
class CategoryMatches:
    """One category's detections over all images, sorted as pycocotools sorts them.

    Args:
        image_index: (D,) int, which image (0..N-1) each detection belongs to.
        tp: (T, D) bool, the detection is a true positive at IoU threshold t (not ignored).
        fp: (T, D) bool, the detection is a false positive at threshold t (not ignored).
        gt_per_image: (N,) int, non-ignored ground truths of this category per image.
    """

    image_index: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    gt_per_image: np.ndarray


@dataclass
class PerImageMatches:
    """pycocotools' per-image matching of one prediction file against one ground truth."""

    image_ids: List[int]
    categories: List[CategoryMatches]
    iou_thresholds: np.ndarray


def quiet(fn, *args):
    """Call ``fn(*args)`` with its standard output (pycocotools' chatter) swallowed."""
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args)


def _category(images: Sequence[dict | None], max_det: int, n_thr: int) -> CategoryMatches:
    """One category's pycocotools ``evalImgs`` (one entry per image) as sorted arrays."""
    scores, img, tp, fp = [], [], [], []
    gt = np.zeros(len(images), dtype=np.int64)
    for i, e in enumerate(images):
        if e is None:
            continue
        gt[i] = int(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0))
        s = np.asarray(e["dtScores"][:max_det], dtype=np.float64)
        m = np.asarray(e["dtMatches"]).reshape(n_thr, -1)[:, :max_det]
        ig = np.asarray(e["dtIgnore"]).reshape(n_thr, -1)[:, :max_det].astype(bool)
        scores.append(s)
        img.append(np.full(len(s), i, dtype=np.int64))
        tp.append((m != 0) & ~ig)
        fp.append((m == 0) & ~ig)
    if not scores:
        empty = np.zeros((n_thr, 0), dtype=bool)
        return CategoryMatches(np.zeros(0, np.int64), empty, empty, gt)
    order = np.argsort(-np.concatenate(scores), kind="mergesort")
    return CategoryMatches(
        np.concatenate(img)[order],
        np.concatenate(tp, axis=1)[:, order],
        np.concatenate(fp, axis=1)[:, order],
        gt,
    )


def match_images(coco_gt: COCO, results: Sequence[dict]) -> PerImageMatches:
    """Run pycocotools' per-image matching (bbox, area ``all``, 100 detections per image).

    Args:
        coco_gt: the ground truth.
        results: COCO result dicts (``image_id``, ``category_id``, ``bbox`` xywh, ``score``).
    """
    image_ids = sorted(coco_gt.getImgIds())
    if not image_ids:
        raise ValueError("the ground truth has no images")
    if results:
        coco_dt = quiet(coco_gt.loadRes, list(results))
    else:  # pycocotools' loadRes cannot take an empty list
        coco_dt = COCO()
        coco_dt.dataset = {**coco_gt.dataset, "annotations": []}
        quiet(coco_dt.createIndex)
    ev = COCOeval(coco_gt, coco_dt, "bbox")
    ev.params.imgIds = image_ids
    quiet(ev.evaluate)
    p = ev.params
    n_img, n_area, max_det = len(image_ids), len(p.areaRng), p.maxDets[-1]
    area_all = [tuple(a) for a in p.areaRng].index((0, 1e5**2))
    cats = []
    for k in range(len(p.catIds)):
        first = k * n_area * n_img + area_all * n_img
        images = ev.evalImgs[first : first + n_img]
        cats.append(_category(images, max_det, len(p.iouThrs)))
    return PerImageMatches(image_ids, cats, np.asarray(p.iouThrs))


def _category_precision(c: CategoryMatches, counts: np.ndarray) -> np.ndarray | None:
    """(T, R) interpolated precision at the 101 recall thresholds, or None without ground truth."""
    n_gt = float(np.dot(c.gt_per_image, counts))
    if n_gt == 0:
        return None
    w = counts[c.image_index].astype(np.float64)
    keep = w > 0
    tp = np.cumsum(c.tp[:, keep] * w[keep], axis=1)
    fp = np.cumsum(c.fp[:, keep] * w[keep], axis=1)
    out = np.zeros((tp.shape[0], len(RECALL_THRESHOLDS)))
    if tp.shape[1] == 0:
        return out
    rc = tp / n_gt
    pr = tp / (fp + tp + np.spacing(1))
    pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
    for t in range(tp.shape[0]):
        idx = np.searchsorted(rc[t], RECALL_THRESHOLDS, side="left")
        ok = idx < rc.shape[1]
        out[t, ok] = pr[t, idx[ok]]
    return out


def average_precision(m: PerImageMatches, counts: np.ndarray | None = None) -> Dict[str, float]:
    """COCO AP and AP50 (in %) with image i counted ``counts[i]`` times (default: once each)."""
    counts = np.ones(len(m.image_ids), np.int64) if counts is None else np.asarray(counts)
    per_cat = [q for q in (_category_precision(c, counts) for c in m.categories) if q is not None]
    if not per_cat:
        return {"AP": float("nan"), "AP50": float("nan")}
    q = np.stack(per_cat)  # (K, T, R)
    t50 = int(np.argmin(np.abs(m.iou_thresholds - 0.5)))
    return {"AP": 100.0 * float(q.mean()), "AP50": 100.0 * float(q[:, t50].mean())}


def paired_bootstrap(
    pairs: Sequence[Tuple[PerImageMatches, PerImageMatches]],
    samples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Dict[str, Tuple[float, float, float]]:
    """Percentile interval of the mean over ``pairs`` of AP(a) - AP(b) under image resampling.

    Every pair must be matched on the same images (one test set, several seeds); each bootstrap
    sample redraws the images once and applies the same draw to every pair. Returns, per metric
    ("AP", "AP50"), (difference on the full set, lower, upper).
    """
    if not pairs:
        raise ValueError("no pairs to bootstrap")
    n = len(pairs[0][0].image_ids)
    for a, b in pairs:
        if a.image_ids != pairs[0][0].image_ids or b.image_ids != a.image_ids:
            raise ValueError("every run of a paired bootstrap must be evaluated on the same images")

    def diff(counts: np.ndarray | None) -> Dict[str, float]:
        d = []
        for a, b in pairs:
            ap_a, ap_b = average_precision(a, counts), average_precision(b, counts)
            d.append({k: ap_a[k] - ap_b[k] for k in ("AP", "AP50")})
        return {k: float(np.mean([x[k] for x in d])) for k in ("AP", "AP50")}

    rng = np.random.default_rng(seed)
    draws = [diff(np.bincount(rng.integers(0, n, n), minlength=n)) for _ in range(samples)]
    full = diff(None)
    lo_q, hi_q = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    out = {}
    for k in ("AP", "AP50"):
        values = np.array([d[k] for d in draws])
        out[k] = (full[k], float(np.percentile(values, lo_q)), float(np.percentile(values, hi_q)))
    return out
