"""What the page and ``GET /api/v1/model`` tell about the models: :func:`describe_counter`,
:func:`model_payload`.

Works for any :class:`~bmc_detectron.pipeline.CellCounter`: PyTorch models (config and weights
paths, their SHA-256) and ONNX Runtime models (the sidecar: version, source, thresholds).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from bmc_detectron.data.classes import OTHER
from bmc_detectron.pipeline.counter import CellCounter
from bmc_detectron.pipeline.drawing import class_info
from bmc_detectron.pipeline.run_io import run_fingerprint
from bmc_detectron.serve.core.config import ServeSettings
from bmc_detectron.structures.differential import Lineage


def _hex(rgb: Sequence[int]) -> str:
    return "#" + "".join(f"{max(0, min(255, int(v))):02x}" for v in rgb[:3])


def _sidecar(model: Any) -> Optional[Dict[str, Any]]:
    """The ONNX sidecar of a model (or of the model a CellClassifier wraps), if any."""
    for obj in (model, getattr(model, "model", None)):
        meta = getattr(obj, "meta", None)
        if isinstance(meta, dict):
            return meta
    return None


def class_table(counter: CellCounter, lineage: Lineage) -> List[Dict[str, Any]]:
    """One entry per counted class: name, full name, display colour, lineage."""
    names = counter.class_names
    source = counter.classifier if counter.classifier is not None else counter.detector
    meta = _sidecar(source) or {}
    colors = meta.get("class_colors") if meta.get("class_names") == names else None
    info = class_info(names)
    return [
        {
            "name": name,
            "full_name": info[name][0],
            "color": _hex(colors[i] if colors else info[name][1]),
            "lineage": lineage.of(name),
        }
        for i, name in enumerate(names)
    ]


def other_class() -> Dict[str, Any]:
    """The Other outcome as a class entry (a cell of no known type: open-set)."""
    return {"name": OTHER.abbr, "full_name": OTHER.name, "color": _hex(OTHER.color), "lineage": ""}


def _open_set(counter: CellCounter) -> Optional[Dict[str, Any]]:
    open_set = getattr(counter.classifier, "open_set", None)
    if open_set is None:
        return None
    return {"score": open_set.score, "threshold": open_set.threshold}


def _model_entry(model: Any, kind: str) -> Dict[str, Any]:
    meta = _sidecar(model)
    entry: Dict[str, Any] = {
        "kind": kind,
        "runtime": "onnxruntime" if meta else "torch",
        "class_names": list(model.class_names),
        "identity": dict(getattr(model, "identity", {}) or {}),
        "source": dict(getattr(model, "source", {}) or {}),
    }
    for key in ("min_size", "max_size", "input_format", "crop_size", "crop_margin"):
        if getattr(model, key, None) is not None:
            entry[key] = getattr(model, key)
    if meta:
        source = meta.get("source", {})
        entry["source"] = {k: v for k, v in source.items() if k != "opts"}
        entry["onnx"] = {"format_version": meta.get("format_version"), "opset": meta.get("opset")}
    return entry


def describe_counter(counter: CellCounter, **extra: Any) -> Dict[str, Any]:
    """The models behind ``counter``: runtime, classes, sources, thresholds, fingerprint.

    ``extra`` keys (e.g. ``backend``, ``files``) are added as they are.
    """
    from bmc_detectron import __version__

    detector = _model_entry(counter.detector, "detector")
    classifier = None
    if counter.classifier is not None:
        classifier = _model_entry(counter.classifier, "classifier")
    backend = classifier["runtime"] if classifier else detector["runtime"]
    return {
        "backend": backend,
        "package_version": __version__,
        "detector": detector,
        "classifier": classifier,
        "counter": {
            "min_score": counter.score_threshold,
            "tile_size": counter.tile_size,
            "tile_overlap": counter.tile_overlap,
            "nms_threshold": counter.nms_threshold,
        },
        "fingerprint": run_fingerprint(counter.settings()),
        **extra,
    }


def lineage_notes(class_names: Sequence[str], lineage: Lineage) -> Dict[str, Any]:
    """The lineage map, whether the M:E ratio applies, and the warning the pipeline would give."""
    warnings = []
    missing = lineage.unknown_classes(class_names)
    if missing and lineage != Lineage():
        warnings.append(f"lineage class(es) not among the model's classes: {', '.join(missing)}")
    applies = any(lineage.of(c) == "erythroid" for c in class_names) and any(
        lineage.of(c) == "myeloid" for c in class_names
    )
    return {"map": lineage.to_json(), "me_applies": applies, "warnings": warnings}


def model_payload(
    counter: CellCounter, model_info: Dict[str, Any], settings: ServeSettings
) -> Dict[str, Any]:
    """What ``GET /api/v1/model`` answers: ``model_info``, the classes, lineage and settings."""
    names = counter.class_names
    return {
        **model_info,
        "class_names": names,
        "classes": class_table(counter, settings.lineage),
        "other_class": other_class(),
        "lineage": lineage_notes(names, settings.lineage),
        "settings": {
            "default_threshold": settings.default_threshold,
            "min_score": counter.score_threshold,
            "uncertain_below": settings.uncertain_below,
            "open_set": _open_set(counter),
            **settings.limits(),
        },
    }
