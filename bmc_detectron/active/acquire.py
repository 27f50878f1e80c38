"""Run a detector (and optionally the cell classifier) over a pool of unlabelled images.

For each image :class:`PoolModel` records what every acquisition strategy needs, once:

* the detections, exactly as :class:`~bmc_detectron.pipeline.detector.Detector` (i.e.
  ``DefaultPredictor``) returns them;
* the full class-score vector of every kept box. detectron2's RetinaNet inference keeps only the
  top class of a box, so a forward hook on the head keeps the dense logits, and each kept box is
  traced back to its anchor: the anchor whose sigmoid score of the box's class equals the box's
  score (the kept scores are those very sigmoids). The box's class vector is that anchor's
  K sigmoids. With a cell classifier the classifier's softmax probabilities on the box crops
  replace it (a class-agnostic detector has nothing to say about the class). A detector without a
  dense head (R-CNN) gives a one-hot vector: class uncertainty is then 0.
* a pooled feature: the global average of one backbone level (default: the last level the head
  reads), from a forward hook on the backbone;
* for the consistency strategy only: the detections on the horizontally flipped image and on a
  stain-jittered copy (fixed per-channel gains), mapped back into the image.

Results are cached as ``.npz`` files named by the image's SHA-256 and the model fingerprint
(config, weights, classifier, feature level), so scoring the pool again with another strategy,
aggregate or budget does not run the model.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm import tqdm

from bmc_detectron.pipeline.detector import Detections, Detector
from bmc_detectron.pipeline.run_io import SkippedInput, decode_image
from bmc_detectron.utils.io import atomic_write_bytes, file_sha256

# BGR gains of the stain-jittered view: a little more blue/eosin, less green.
STAIN_GAINS = (1.08, 0.92, 1.05)


def flip_view(image: np.ndarray) -> np.ndarray:
    """The image mirrored left-right."""
    return np.ascontiguousarray(image[:, ::-1])


def unflip_boxes(boxes: np.ndarray, width: int) -> np.ndarray:
    """XYXY boxes of the mirrored image back in the original's pixels."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
    return boxes


def stain_view(image: np.ndarray, gains: Sequence[float] = STAIN_GAINS) -> np.ndarray:
    """The image with each BGR channel scaled by ``gains`` (clipped to 0..255)."""
    out = image.astype(np.float32) * np.asarray(gains, dtype=np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def anchor_class_scores(dense: torch.Tensor, dets: Detections) -> np.ndarray:
    """(N, K) class vectors of the kept boxes, from the (R, K) sigmoid scores of all anchors."""
    dense = dense.float()
    if len(dets) == 0:
        return np.zeros((0, dense.shape[1]), dtype=np.float32)
    classes = torch.as_tensor(np.asarray(dets.classes), dtype=torch.long)
    scores = torch.as_tensor(np.asarray(dets.scores), dtype=torch.float32)
    # (R, N): each kept box's class column against its score; the anchor that produced it
    anchors = (dense[:, classes] - scores[None]).abs().argmin(dim=0)
    return dense[anchors].numpy()


@dataclass
class PoolModel:
    """A detector, an optional classifier and the backbone level pooled into features."""

    detector: Detector
    classifier: Optional[object] = None
    feature_level: Optional[str] = None

    def __post_init__(self) -> None:
        model = self.detector.model
        levels = list(getattr(model, "head_in_features", []) or [])
        if self.feature_level is None and levels:
            self.feature_level = levels[-1]

    @property
    def class_names(self) -> List[str]:
        """Names of the classes of the class-score vectors."""
        if self.classifier is not None:
            return list(self.classifier.class_names)
        return list(self.detector.class_names)

    def fingerprint(self) -> str:
        """SHA-256 of what decides the cached results."""
        parts = {"detector": self.detector.identity, "feature_level": self.feature_level}
        if self.classifier is not None:
            parts["classifier"] = self.classifier.identity
        parts["stain_gains"] = list(STAIN_GAINS)
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def _hooked_detect(self, image: np.ndarray) -> Tuple[Detections, Dict[str, object]]:
        """Detections plus the head's dense outputs and the backbone's features."""
        model, seen = self.detector.model, {}
        handles = []
        if hasattr(model, "head") and hasattr(model, "_transpose_dense_predictions"):
            handles.append(model.head.register_forward_hook(lambda m, i, o: seen.update(head=o)))
        if hasattr(model, "backbone"):
            hook = model.backbone.register_forward_hook(lambda m, i, o: seen.update(feats=o))
            handles.append(hook)
        try:
            dets = self.detector(image)
        finally:
            for h in handles:
                h.remove()
        return dets, seen

    def _class_scores(self, image: np.ndarray, dets: Detections, seen: Dict) -> np.ndarray:
        if self.classifier is not None:
            return self.classifier.classify(image, dets.boxes)
        if "head" in seen:
            model = self.detector.model
            logits = model._transpose_dense_predictions(seen["head"], [model.num_classes, 4])[0]
            dense = torch.cat([lv[0].float() for lv in logits]).sigmoid()
            return anchor_class_scores(dense, dets)
        onehot = np.zeros((len(dets), len(self.detector.class_names)), dtype=np.float32)
        onehot[np.arange(len(dets)), dets.classes] = 1.0
        return onehot

    def _feature(self, seen: Dict) -> np.ndarray:
        feats = seen.get("feats")
        if not isinstance(feats, dict) or self.feature_level not in feats:
            return np.zeros(1, dtype=np.float32)
        level = feats[self.feature_level].float()
        return level[0].mean(dim=(1, 2)).numpy().astype(np.float32)

    def analyse(self, image: np.ndarray) -> Dict[str, np.ndarray]:
        """Detections, class vectors, pooled feature and size of a BGR image."""
        dets, seen = self._hooked_detect(image)
        return {
            "boxes": dets.boxes,
            "scores": dets.scores,
            "classes": dets.classes,
            "class_scores": np.asarray(self._class_scores(image, dets, seen), dtype=np.float32),
            "feature": self._feature(seen),
            "size": np.asarray(image.shape[:2], dtype=np.int64),
        }

    def views(self, image: np.ndarray) -> Dict[str, np.ndarray]:
        """Detections on the flipped and the stain-jittered copies, in the image's pixels."""
        width = image.shape[1]
        flipped = self.detector(flip_view(image))
        stained = self.detector(stain_view(image))
        return {
            "flip_boxes": unflip_boxes(flipped.boxes, width),
            "flip_scores": flipped.scores,
            "stain_boxes": stained.boxes,
            "stain_scores": stained.scores,
        }


def _load_npz(path: Path) -> Optional[Dict[str, np.ndarray]]:
    if not path.is_file():
        return None
    try:
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError):  # a damaged cache entry is recomputed
        return None


def _save_npz(path: Path, arrays: Dict[str, np.ndarray]) -> None:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def analyse_image(
    model: PoolModel, path: Path, cache_dir: Optional[Path], with_views: bool, fingerprint: str
) -> Dict[str, np.ndarray]:
    """The (cached) analysis of one image; raises :class:`SkippedInput` for a bad image."""
    try:
        key = f"{file_sha256(path)}_{fingerprint[:16]}"
    except OSError as e:
        raise SkippedInput(f"unreadable file: {e}") from None
    base_file = cache_dir / f"{key}.npz" if cache_dir else None
    view_file = cache_dir / f"{key}_views.npz" if cache_dir else None
    base = _load_npz(base_file) if base_file else None
    views = _load_npz(view_file) if view_file and with_views else None
    if base is None or (with_views and views is None):
        image = decode_image(path.read_bytes(), path)
        if base is None:
            base = model.analyse(image)
            if base_file:
                _save_npz(base_file, base)
        if with_views and views is None:
            views = model.views(image)
            if view_file:
                _save_npz(view_file, views)
    return {**base, **(views or {})}


def analyse_pool(
    model: PoolModel,
    paths: Sequence[Path],
    cache_dir: Optional[Path] = None,
    with_views: bool = False,
    progress: bool = True,
) -> Tuple[Dict[Path, Dict[str, np.ndarray]], List[Tuple[Path, str]]]:
    """Analyse every image of the pool; returns (results by path, [(skipped path, reason)])."""
    fingerprint = model.fingerprint()
    results: Dict[Path, Dict[str, np.ndarray]] = {}
    skipped: List[Tuple[Path, str]] = []
    for path in tqdm(paths, desc="scoring pool", unit="image", disable=not progress):
        try:
            results[path] = analyse_image(model, path, cache_dir, with_views, fingerprint)
        except SkippedInput as e:
            skipped.append((path, str(e)))
    return results, skipped
