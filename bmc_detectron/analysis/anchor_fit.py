"""Anchor shapes fitted to a dataset's boxes, as the model sees them in training.

The gt boxes are taken to the training resolution with the arithmetic of the training
augmentations (detectron2's ``ResizeShortestEdge`` of ``INPUT.MIN_SIZE_TRAIN`` /
``MAX_SIZE_TRAIN``, then ``BMC.AUG.SCALE_RANGE`` and the quarter turns of ``BMC.AUG.ROT90``);
only the sizes in the records are read, no image. A gt *shape* (w, h) is compared with an anchor
shape by the IoU of the two boxes centred on the same point (:func:`shape_iou`, through the box
IoU of :mod:`bmc_detectron.structures.boxes`); a gt's *best IoU* is its largest over all the
anchor shapes of all levels.

:func:`fit_anchor_set` keeps detectron2's anchor layout (``SIZES``: one list per FPN level, the same
number per level; ``ASPECT_RATIOS`` shared) and maximises the mean best IoU: each gt goes to the
level whose sizes are nearest its scale; the ratios start from a k-means of log(h / w) over all
gts and each level's sizes from a k-means of log sqrt(w h) over its gts (levels without gts keep
their sizes); then a compass search refines the sizes and ratios on the mean best IoU itself,
each level's sizes bounded to its band of scales (so the sizes stay in step with the strides). The
idea of fitting anchors to the data is mmdetection's ``optimize_anchors.py`` (k-means, then
differential evolution); this is written here for detectron2's size x ratio layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
from detectron2.data import transforms as T
from detectron2.structures import BoxMode

from bmc_detectron.structures.boxes import box_iou

#: points of the scale jitter's log-uniform law used for the gt shapes (bin midpoints)
SCALE_POINTS = 5
#: points of a ``range`` MIN_SIZE_TRAIN (evenly spaced from low to high)
RANGE_POINTS = 5


@dataclass(frozen=True)
class AnchorSet:
    """detectron2's ``MODEL.ANCHOR_GENERATOR``: ``sizes`` one tuple per level, ``ratios`` (h / w)
    shared by every level."""

    sizes: Tuple[Tuple[float, ...], ...]
    ratios: Tuple[float, ...]

    def shapes(self) -> np.ndarray:
        """(A, 2) anchor (w, h), level by level, size by size, ratio by ratio, with
        detectron2's ``DefaultAnchorGenerator`` arithmetic (area size^2, h / w = ratio)."""
        out = []
        for level in self.sizes:
            for s in level:
                for r in self.ratios:
                    w = np.sqrt(s * s / r)
                    out.append((w, w * r))
        return np.asarray(out, np.float64).reshape(-1, 2)

    def yaml(self) -> str:
        """The config snippet that sets these anchors."""
        sizes = ", ".join("[" + ", ".join(f"{s:g}" for s in lv) + "]" for lv in self.sizes)
        ratios = ", ".join(f"{r:g}" for r in self.ratios)
        return (
            f"MODEL:\n  ANCHOR_GENERATOR:\n    SIZES: [{sizes}]\n    ASPECT_RATIOS: [[{ratios}]]\n"
        )


def anchor_set_from_cfg(cfg) -> AnchorSet:
    """The anchors of a config; ValueError unless they are one ratio list shared by the levels."""
    node = cfg.MODEL.ANCHOR_GENERATOR
    if len(node.ASPECT_RATIOS) != 1:
        raise ValueError(
            "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS: the fit needs one list shared by all levels, "
            f"got {len(node.ASPECT_RATIOS)}"
        )
    sizes = tuple(tuple(float(s) for s in lv) for lv in node.SIZES)
    if len({len(lv) for lv in sizes}) != 1:
        raise ValueError("MODEL.ANCHOR_GENERATOR.SIZES: the fit needs as many sizes per level")
    return AnchorSet(sizes, tuple(float(r) for r in node.ASPECT_RATIOS[0]))


def centred_boxes(wh: np.ndarray) -> np.ndarray:
    """(N, 4) XYXY boxes of the (N, 2) shapes (w, h), centred on the origin."""
    half = np.asarray(wh, np.float64).reshape(-1, 2) / 2.0
    return np.concatenate([-half, half], axis=1)


def shape_iou(wh1: np.ndarray, wh2: np.ndarray) -> np.ndarray:
    """(N, M) IoU of the shapes (w, h) of ``wh1`` and ``wh2`` placed on the same centre."""
    return box_iou(centred_boxes(wh1), centred_boxes(wh2))


@dataclass(frozen=True)
class AnchorQuality:
    """How well anchor shapes fit the gts (weighted over the gt shapes).

    Attributes:
        mean_iou: mean best-anchor IoU.
        recall: share of gts with an anchor shape of IoU >= ``threshold``.
    """

    mean_iou: float
    recall: float
    threshold: float


def anchor_quality(
    wh: np.ndarray, weights: np.ndarray, anchors: AnchorSet, threshold: float = 0.5
) -> AnchorQuality:
    """Mean best IoU and recall at ``threshold`` of ``anchors`` on the gt shapes ``wh``."""
    best = shape_iou(wh, anchors.shapes()).max(axis=1)
    w = np.asarray(weights, np.float64) / np.sum(weights)
    return AnchorQuality(float(best @ w), float((best >= threshold) @ w), threshold)


def train_min_sizes(min_sizes: Sequence[int], sampling: str) -> List[int]:
    """The short sides the training resize draws from: each of ``choice``; for ``range`` (low,
    high), :data:`RANGE_POINTS` evenly spaced ones."""
    if sampling == "choice":
        return [int(s) for s in min_sizes]
    if sampling == "range" and len(min_sizes) == 2:
        lo, hi = int(min_sizes[0]), int(min_sizes[1])
        return sorted({int(round(v)) for v in np.linspace(lo, hi, RANGE_POINTS)})
    raise ValueError(f"INPUT.MIN_SIZE_TRAIN_SAMPLING {sampling!r} with {list(min_sizes)}")


def resize_factors(height: int, width: int, min_size: int, max_size: int) -> Tuple[float, float]:
    """(x, y) factors of detectron2's ``ResizeShortestEdge(min_size, max_size)`` on an image of
    ``height`` x ``width`` (new side over old, after its rounding to whole pixels)."""
    nh, nw = T.ResizeShortestEdge.get_output_shape(height, width, min_size, max_size)
    return nw / width, nh / height


def scale_factors(scale_range: Sequence[float]) -> np.ndarray:
    """Factors standing for the log-uniform scale jitter on ``[low, high]`` (``[]``: none)."""
    if len(scale_range) == 0:
        return np.ones(1)
    lo, hi = np.log(float(scale_range[0])), np.log(float(scale_range[1]))
    return np.exp(lo + (np.arange(SCALE_POINTS) + 0.5) / SCALE_POINTS * (hi - lo))


def _record_wh(record: dict) -> np.ndarray:
    boxes = [
        BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
        for a in record.get("annotations", [])
        if not a.get("iscrowd", 0)
    ]
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.stack([b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)


def train_shapes(
    records: Sequence[dict],
    min_sizes: Sequence[int],
    max_size: int,
    sampling: str = "choice",
    scale_range: Sequence[float] = (),
    rot90: bool = False,
) -> Tuple[np.ndarray, np.ndarray]:
    """The gt shapes of ``records`` at training resolution: (K, 2) distinct (w, h) rounded to
    0.01 px and their (K,) weights (gts, each split evenly over the resize sizes, the jitter
    points and, with ``rot90``, the transposed shape half of the time). ValueError names a record
    without ``height`` / ``width``."""
    sides = train_min_sizes(min_sizes, sampling)
    jitter = scale_factors(scale_range)
    shapes = []
    for rec in records:
        if "height" not in rec or "width" not in rec:
            raise ValueError(f"{rec.get('file_name', '?')}: record without height / width")
        wh = _record_wh(rec)
        wh = wh[(wh > 0).all(axis=1)]
        for side in sides:
            fx, fy = resize_factors(int(rec["height"]), int(rec["width"]), side, max_size)
            for s in jitter:
                shapes.append(wh * [fx * s, fy * s])
    wh = np.concatenate(shapes) if shapes else np.zeros((0, 2))
    each = np.full(len(wh), 1.0 / (len(sides) * len(jitter)))
    if rot90:
        wh, each = np.concatenate([wh, wh[:, ::-1]]), np.concatenate([each, each]) / 2.0
    uniq, inverse = np.unique(np.round(wh, 2), axis=0, return_inverse=True)
    return uniq, np.bincount(inverse.ravel(), weights=each, minlength=len(uniq))


def weighted_kmeans_1d(values: np.ndarray, weights: np.ndarray, k: int) -> np.ndarray:
    """(k,) sorted centres of a weighted 1-D k-means (Lloyd, started at weighted quantiles)."""
    order = np.argsort(values)
    v, w = values[order], weights[order]
    cdf = (np.cumsum(w) - w / 2) / w.sum()
    centres = np.interp((np.arange(k) + 0.5) / k, cdf, v)
    for _ in range(100):
        label = np.abs(v[:, None] - centres[None, :]).argmin(axis=1)
        new = centres.copy()
        for j in range(k):
            m = label == j
            if m.any():
                new[j] = np.average(v[m], weights=w[m])
        if np.allclose(new, centres):
            break
        centres = new
    return np.sort(centres)


def level_bands(sizes: Sequence[Sequence[float]]) -> np.ndarray:
    """(L, 2) log-scale bands of the levels: boundaries at the midpoints (in log) between the
    neighbouring levels' mean log sizes; the outer levels reach one octave beyond their mean."""
    centres = np.array([np.mean(np.log(lv)) for lv in sizes])
    mids = (centres[1:] + centres[:-1]) / 2
    lo = np.concatenate([[centres[0] - np.log(2.0)], mids])
    hi = np.concatenate([mids, [centres[-1] + np.log(2.0)]])
    return np.stack([lo, hi], axis=1)


def level_of(wh: np.ndarray, bands: np.ndarray) -> np.ndarray:
    """(N,) level of each shape: the band holding its log sqrt(w h) (clipped to the outer ones)."""
    scale = 0.5 * np.log(wh[:, 0] * wh[:, 1])
    return np.clip(np.searchsorted(bands[:, 1], scale), 0, len(bands) - 1)


def initial_fit(wh: np.ndarray, weights: np.ndarray, current: AnchorSet) -> AnchorSet:
    """The k-means start: shared ratios from log(h / w) over all gts, each level's sizes from
    log sqrt(w h) over its gts (clipped to its band); a level without gts keeps its sizes."""
    bands = level_bands(current.sizes)
    level = level_of(wh, bands)
    log_ratio = np.log(wh[:, 1] / wh[:, 0])
    ratios = np.exp(weighted_kmeans_1d(log_ratio, weights, len(current.ratios)))
    scale = 0.5 * np.log(wh[:, 0] * wh[:, 1])
    sizes = []
    for lv, cur in enumerate(current.sizes):
        m = (level == lv) & (weights > 0)
        if not m.any():
            sizes.append(tuple(cur))
            continue
        c = np.clip(weighted_kmeans_1d(scale[m], weights[m], len(cur)), *bands[lv])
        sizes.append(tuple(float(v) for v in np.exp(c)))
    return AnchorSet(tuple(sizes), tuple(float(r) for r in ratios))


def compass_search(
    loss: Callable[[np.ndarray], float],
    x0: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    step: float = 0.1,
    min_step: float = 1e-3,
    max_evals: int = 4000,
) -> Tuple[np.ndarray, float]:
    """Minimise ``loss`` by a compass (coordinate pattern) search inside the box [lo, hi]: try
    each coordinate +- ``step``, keep any move that lowers the loss, halve the step after a sweep
    without one, stop below ``min_step`` or after ``max_evals`` evaluations. Monotone and
    derivative-free (the mean best IoU is a max of smooth pieces, flat for an anchor that is
    nobody's best). Returns the point and its loss."""
    x = np.clip(np.asarray(x0, np.float64), lo, hi)
    fx, evals = loss(x), 1
    while step >= min_step and evals < max_evals:
        moved = False
        for i in range(len(x)):
            for sign in (1.0, -1.0):
                y = x.copy()
                y[i] = np.clip(y[i] + sign * step, lo[i], hi[i])
                fy, evals = loss(y), evals + 1
                if fy < fx - 1e-12:
                    x, fx, moved = y, fy, True
                    break
        if not moved:
            step /= 2
    return x, fx


def refine_fit(
    wh: np.ndarray,
    weights: np.ndarray,
    start: AnchorSet,
    bands: np.ndarray,
    levels: Sequence[int],
    max_evals: int = 4000,
) -> AnchorSet:
    """:func:`compass_search` of the mean best IoU over the log sizes of ``levels`` and the log
    ratios, from ``start``; sizes bounded to their level's band (``bands``, :func:`level_bands`),
    ratios to [1/8, 8]."""
    n_s = len(start.sizes[0])
    wn = np.asarray(weights, np.float64) / np.sum(weights)
    gt = centred_boxes(wh)
    x0 = np.concatenate([np.log(start.sizes[lv]) for lv in levels] + [np.log(start.ratios)])
    bounds = [tuple(bands[lv]) for lv in levels for _ in range(n_s)]
    bounds += [(-np.log(8.0), np.log(8.0))] * len(start.ratios)
    lo, hi = np.array(bounds).T

    def unpack(x: np.ndarray) -> AnchorSet:
        sizes = [list(lv) for lv in start.sizes]
        for i, lv in enumerate(levels):
            sizes[lv] = np.exp(x[i * n_s : (i + 1) * n_s]).tolist()
        ratios = np.exp(x[len(levels) * n_s :])
        return AnchorSet(tuple(tuple(v) for v in sizes), tuple(ratios.tolist()))

    def loss(x: np.ndarray) -> float:
        return -float(box_iou(gt, centred_boxes(unpack(x).shapes())).max(axis=1) @ wn)

    x, _ = compass_search(loss, x0, lo, hi, max_evals=max_evals)
    return unpack(x)


def rounded(anchors: AnchorSet) -> AnchorSet:
    """Sizes sorted within each level and rounded to 0.01 px, ratios sorted, to 0.001."""
    sizes = tuple(tuple(round(float(s), 2) for s in sorted(lv)) for lv in anchors.sizes)
    return AnchorSet(sizes, tuple(round(float(r), 3) for r in sorted(anchors.ratios)))


@dataclass(frozen=True)
class AnchorFit:
    """The outcome of :func:`fit_anchor_set`: anchors and their quality before and after, the
    gts (weighted) per level of the config's bands, and the number of distinct gt shapes."""

    before: AnchorSet
    after: AnchorSet
    quality_before: AnchorQuality
    quality_after: AnchorQuality
    gts_per_level: Tuple[float, ...]
    shapes: int

    def as_dict(self) -> Dict[str, object]:
        """JSON-ready numbers and the config snippet."""
        out: Dict[str, object] = {}
        for key, a, q in (
            ("before", self.before, self.quality_before),
            ("after", self.after, self.quality_after),
        ):
            out[key] = {
                "sizes": [list(lv) for lv in a.sizes],
                "aspect_ratios": list(a.ratios),
                "mean_best_iou": q.mean_iou,
                f"recall@{q.threshold:g}": q.recall,
            }
        out["gts_per_level"] = list(self.gts_per_level)
        out["distinct_shapes"] = self.shapes
        out["yaml"] = self.after.yaml()
        return out


def fit_anchor_set(
    wh: np.ndarray,
    weights: np.ndarray,
    current: AnchorSet,
    threshold: float = 0.5,
    max_evals: int = 4000,
) -> AnchorFit:
    """Fit ``current``'s layout to the gt shapes ``wh`` (weighted): k-means start, then the
    compass-search refinement (module doc). ValueError when there is no gt."""
    wh, weights = np.asarray(wh, np.float64).reshape(-1, 2), np.asarray(weights, np.float64)
    if len(wh) == 0 or weights.sum() <= 0:
        raise ValueError("no gt box to fit the anchors to")
    bands = level_bands(current.sizes)
    level = level_of(wh, bands)
    per_level = tuple(float(weights[level == lv].sum()) for lv in range(len(current.sizes)))
    start = initial_fit(wh, weights, current)
    levels = [lv for lv, n in enumerate(per_level) if n > 0]
    after = rounded(refine_fit(wh, weights, start, bands, levels, max_evals))
    return AnchorFit(
        current,
        after,
        anchor_quality(wh, weights, current, threshold),
        anchor_quality(wh, weights, after, threshold),
        per_level,
        len(wh),
    )


def fit_config_anchors(
    cfg, records: Sequence[dict], threshold: float = 0.5, max_evals: int = 4000
) -> AnchorFit:
    """Fit the anchors of ``cfg`` to the gts of ``records`` at the config's training resolution
    (``INPUT.MIN_SIZE_TRAIN`` / ``MAX_SIZE_TRAIN`` / ``MIN_SIZE_TRAIN_SAMPLING``,
    ``BMC.AUG.SCALE_RANGE``, ``BMC.AUG.ROT90``)."""
    wh, weights = train_shapes(
        records,
        cfg.INPUT.MIN_SIZE_TRAIN,
        int(cfg.INPUT.MAX_SIZE_TRAIN),
        cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING,
        cfg.BMC.AUG.SCALE_RANGE,
        bool(cfg.BMC.AUG.ROT90),
    )
    return fit_anchor_set(wh, weights, anchor_set_from_cfg(cfg), threshold, max_evals)
