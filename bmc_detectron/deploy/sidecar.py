"""The JSON written beside every exported model: what a runtime needs besides the graph.

``model.onnx`` gets ``model.onnx.json`` (:func:`sidecar_path`). It holds the class names and
display colours, the input's channel order, layout and value range, the normalisation (done
inside the graph), the resize rule of the detector (detectron2's ``ResizeShortestEdge``), the
score threshold, the crop size and margin of the classifier, and where the model came from
(package version, config file, weights and their SHA-256), so that a runtime reads nothing else.
A detector's sidecar also holds the config's scale (``BMC.DATA.MICRONS_PER_PIXEL`` /
``RBC_DIAMETER_PX``, null when unknown) and, when ``training_profile.json`` lies beside the
weights, a copy of it (``training_profile``: the count command's scale and colour reference).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog

from bmc_detectron.data.classes import KNOWN_ABBRS, KNOWN_COLORS
from bmc_detectron.utils.io import PathLike, file_sha256, write_json_atomic

#: ``format`` of every sidecar; ``format_version`` changes when a runtime must read it differently.
SIDECAR_FORMAT = "bmc-detectron-onnx"
SIDECAR_VERSION = 1
DETECTOR = "detector"
CLASSIFIER = "classifier"


def sidecar_path(model_path: PathLike) -> Path:
    """``model.onnx`` -> ``model.onnx.json``."""
    return Path(f"{model_path}.json")


def _palette(count: int) -> List[Tuple[int, int, int]]:
    """``count`` distinct RGB colours from detectron2's fixed colormap (cycled)."""
    from detectron2.utils.colormap import colormap

    table = colormap(rgb=True, maximum=255).astype(int).tolist()
    return [tuple(table[i % len(table)]) for i in range(count)]


def class_colors(names: Sequence[str], datasets: Sequence[str] = ()) -> List[Tuple[int, int, int]]:
    """RGB display colour of each class.

    The ``thing_colors`` of the first of ``datasets`` whose ``thing_classes`` are ``names``; else
    the colours of :mod:`bmc_detectron.data.classes` for the abbreviations it knows; else
    detectron2's colormap.
    """
    for name in datasets:
        if name not in MetadataCatalog.list():
            continue
        meta = MetadataCatalog.get(name)
        colors = meta.get("thing_colors")
        if list(meta.get("thing_classes") or []) == list(names) and colors:
            return [tuple(int(v) for v in c) for c in colors]
    fallback = _palette(len(names))
    known = dict(zip(KNOWN_ABBRS, KNOWN_COLORS))
    return [tuple(known.get(n, c)) for n, c in zip(names, fallback)]


def provenance(config_file: str, weights: str, opts: Sequence[str], cfg: CfgNode) -> Dict[str, Any]:
    """Where the model came from: package version, config (file and merged), weights."""
    from bmc_detectron import __version__

    return {
        "bmc_detectron_version": __version__,
        "meta_architecture": cfg.MODEL.META_ARCHITECTURE,
        "config_file": str(config_file),
        "config_file_sha256": file_sha256(config_file),
        "config_sha256": hashlib.sha256(cfg.dump().encode()).hexdigest(),
        "opts": [str(o) for o in opts],
        "weights": str(weights),
        "weights_sha256": file_sha256(weights),
    }


def _input_spec(cfg: CfgNode, layout: str, name: str) -> Dict[str, Any]:
    return {
        "name": name,
        "format": cfg.INPUT.FORMAT,
        "layout": layout,
        "dtype": "float32",
        "value_range": [0, 255],
        "normalized_in_graph": True,
        "pixel_mean": [float(v) for v in cfg.MODEL.PIXEL_MEAN],
        "pixel_std": [float(v) for v in cfg.MODEL.PIXEL_STD],
    }


def detector_sidecar(
    cfg: CfgNode,
    class_names: Sequence[str],
    padding: Dict[str, int],
    source: Dict[str, Any],
    opset: int,
) -> Dict[str, Any]:
    """The sidecar of an exported dense detector; ``padding``: the backbone's constraints."""
    retina = cfg.MODEL.RETINANET
    datasets = [*cfg.DATASETS.TEST, *cfg.DATASETS.TRAIN]
    return {
        "format": SIDECAR_FORMAT,
        "format_version": SIDECAR_VERSION,
        "kind": DETECTOR,
        "opset": opset,
        "class_names": list(class_names),
        "class_colors": [list(c) for c in class_colors(class_names, datasets)],
        "input": {
            **_input_spec(cfg, "CHW", "image"),
            "note": "one image (3, H, W) after the resize below; the graph normalises and pads",
        },
        "resize": {
            "rule": "ResizeShortestEdge",
            "min_size": int(cfg.INPUT.MIN_SIZE_TEST),
            "max_size": int(cfg.INPUT.MAX_SIZE_TEST),
            "interpolation": "bilinear (PIL)",
            "size_divisibility": int(padding.get("size_divisibility", 0)),
            "square_size": int(padding.get("square_size", 0)),
            "padded_in_graph": True,
            "pad_value": 0.0,
        },
        "scale": {
            "microns_per_pixel": float(cfg.BMC.DATA.MICRONS_PER_PIXEL) or None,
            "rbc_diameter_px": float(cfg.BMC.DATA.RBC_DIAMETER_PX) or None,
        },
        "score_threshold": float(retina.SCORE_THRESH_TEST),
        "score_threshold_input": "score_threshold",
        "nms_threshold": float(retina.NMS_THRESH_TEST),
        "nms": "per class, inside the graph (ONNX NonMaxSuppression)",
        "score_voting_sigma": float(cfg.MODEL.BMC.SCORE_VOTING_SIGMA),
        "topk_candidates": int(retina.TOPK_CANDIDATES_TEST),
        "detections_per_image": int(cfg.TEST.DETECTIONS_PER_IMAGE),
        "outputs": {
            "boxes": "(N, 4) float32 XYXY in the pixels of the graph's input image",
            "scores": "(N,) float32",
            "classes": "(N,) int64 class index",
            "postprocess": "scale boxes to the original size, clip to it, drop empty boxes",
        },
        "source": source,
    }


def classifier_sidecar(
    cfg: CfgNode, class_names: Sequence[str], source: Dict[str, Any], opset: int
) -> Dict[str, Any]:
    """The sidecar of an exported cell classifier."""
    clf = cfg.MODEL.BMC.CLASSIFIER
    return {
        "format": SIDECAR_FORMAT,
        "format_version": SIDECAR_VERSION,
        "kind": CLASSIFIER,
        "opset": opset,
        "class_names": list(class_names),
        "class_colors": [list(c) for c in class_colors(class_names, list(cfg.DATASETS.TRAIN))],
        "input": {
            **_input_spec(cfg, "NCHW", "crops"),
            "note": "a batch of square crops (N, 3, S, S) cut by data.crops.crop_boxes",
        },
        "crop_size": int(clf.CROP_SIZE),
        "crop_margin": float(clf.CROP_MARGIN),
        "outputs": {"probs": "(N, K) float32 softmax", "logits": "(N, K) float32"},
        "source": source,
    }


def training_profile_beside(weights: PathLike) -> Optional[Dict[str, Any]]:
    """The content of ``training_profile.json`` beside ``weights`` (checked), or None."""
    from bmc_detectron.smear.profile import PROFILE_FILE, TrainingProfile

    path = Path(weights).parent / PROFILE_FILE
    if not path.is_file():
        return None
    return TrainingProfile.load(path).to_dict()


def write_sidecar(model_path: PathLike, data: Dict[str, Any]) -> Path:
    """Write ``data`` (atomically) beside ``model_path``; returns the sidecar's path."""
    return write_json_atomic(data, sidecar_path(model_path), indent=2)


def read_sidecar(model_path: PathLike, kind: Optional[str] = None) -> Dict[str, Any]:
    """The sidecar of ``model_path``; checks its format and, if given, its ``kind``.

    Raises FileNotFoundError when it is missing and ValueError when it is not one of ours.
    """
    path = sidecar_path(model_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: sidecar of {model_path} not found (export writes it)")
    data = json.loads(path.read_text())
    if data.get("format") != SIDECAR_FORMAT or data.get("format_version") != SIDECAR_VERSION:
        raise ValueError(
            f"{path}: not a {SIDECAR_FORMAT} v{SIDECAR_VERSION} sidecar "
            f"(format {data.get('format')!r} v{data.get('format_version')!r})"
        )
    if kind is not None and data.get("kind") != kind:
        raise ValueError(f"{path}: a {data.get('kind')} model, expected a {kind}")
    return data
