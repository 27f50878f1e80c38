"""ONNX export of the detector (``BMCRetinaNet`` / ``RetinaNet``) and of the cell classifier.

Both go through detectron2's :class:`~detectron2.export.TracingAdapter` and PyTorch's legacy
(TorchScript-tracing) exporter, ``torch.onnx.export(..., dynamo=False)``.

Detector graph (:func:`export_detector`):

- inputs ``image``: (3, H, W) float32 raw pixels (0..255) in ``INPUT.FORMAT`` channel order,
  already resized by ``ResizeShortestEdge`` (H and W are dynamic), and ``score_threshold``: a
  float32 scalar (the config's ``SCORE_THRESH_TEST`` is the sidecar's default);
- inside: normalisation, padding to the backbone's size divisibility, backbone, head, anchors
  for the input's size, per-level score threshold and top-k, box decoding and per-class NMS
  (torchvision's ``batched_nms`` traces its coordinate-offset form, whose ``torchvision::nms``
  becomes ONNX ``NonMaxSuppression``), then the best ``DETECTIONS_PER_IMAGE``;
- outputs ``boxes`` (N, 4) XYXY in the input image's pixels, ``scores`` (N,), ``classes`` (N,).

The score threshold is a graph input because tracing records one path through the code: the
trace runs with threshold 0 so that every candidate branch (top-k, NMS) is recorded, whatever
the model's scores on the tracing image. Scaling the boxes to the original image (detectron2's
``detector_postprocess``) is left to the runtime (:mod:`.runtime`).

Classifier graph (:func:`export_classifier`): ``crops`` (N, 3, S, S) float32 raw pixels, N
dynamic -> ``probs`` (N, K) softmax, ``logits`` (N, K) and ``features`` (N, C), the pooled
features the feature open-set scores read (their statistics are copied beside the ``.onnx``).

Deformable convolutions (``MODEL.RESNETS.DEFORM_ON_PER_STAGE``, ``MODEL.BMC.HEAD.DEFORM_LAST``)
export through their CPU form (bilinear sampling, ONNX ``GridSample``, + a matrix product).
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import torch
from detectron2.config import CfgNode
from detectron2.export import TracingAdapter
from detectron2.modeling.meta_arch.dense_detector import DenseDetector
from torch import Tensor, nn

from bmc_detectron.config import CLASSIFIER_ARCH, build_cfg
from bmc_detectron.deploy import sidecar as sc
from bmc_detectron.engine.loading import WeightsError, load_model
from bmc_detectron.evaluation.feature_scores import statistics_path, write_statistics
from bmc_detectron.evaluation.open_set import read_threshold
from bmc_detectron.utils.io import atomic_write_bytes

logger = logging.getLogger(__name__)

#: ONNX opset of the exported graphs (GridSample of the deformable convs needs 16).
OPSET = 17


class ExportError(ValueError):
    """A model that cannot be exported as asked (the message names the reason)."""


def deformable_parts(cfg: CfgNode) -> List[str]:
    """The config keys that make a model use deformable convolution (empty: none)."""
    parts = []
    stages = [bool(v) for v in cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE]
    if any(stages):
        parts.append(f"MODEL.RESNETS.DEFORM_ON_PER_STAGE {stages}")
    if cfg.MODEL.BMC.HEAD.DEFORM_LAST:
        parts.append("MODEL.BMC.HEAD.DEFORM_LAST True")
    return parts


def load_for_export(
    config_file: str, weights: str, opts: Sequence[str] = ()
) -> Tuple[CfgNode, nn.Module]:
    """The config (on CPU) and the model with ``weights`` loaded, in eval mode.

    Raises :class:`~bmc_detectron.config.ConfigError` for a bad config, FileNotFoundError for
    missing weights and :class:`ExportError` for weights that do not fit the model.
    """
    if not Path(weights).is_file():
        raise FileNotFoundError(f"{weights}: weights not found")
    cfg = build_cfg(config_file, [*opts, "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    # BMC.PRECISION (bf16 autocast, channels-last hooks) is left out: the graph is float32
    try:
        return cfg, load_model(cfg, weights, precision=False)
    except WeightsError as e:
        raise ExportError(str(e)) from e


def _serialise(adapter: TracingAdapter, names: Dict[str, Any]) -> bytes:
    """The ONNX bytes of a traced adapter (legacy exporter, :data:`OPSET`)."""
    adapter.eval()  # the exporter restores the adapter's mode on the model afterwards
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # shape checks and asserts of detectron2 / this package become constants: expected
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*meshgrid.*")
        # the legacy exporter is chosen on purpose (the dynamo one fails on detectron2's boxes)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit.script.*")
        torch.onnx.export(
            adapter,
            adapter.flattened_inputs,
            buf,
            dynamo=False,
            opset_version=OPSET,
            do_constant_folding=True,
            **names,
        )
    return buf.getvalue()


def _op_types(graph: Any) -> set:
    """Op types of an ONNX graph and of its subgraphs (the branches of ``If`` / ``Loop``)."""
    ops = set()
    for node in graph.node:
        ops.add(node.op_type)
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                ops |= _op_types(sub)
    return ops


def _check_graph(data: bytes, required_ops: Sequence[str] = ()) -> None:
    """Validate the ONNX model and that the graph contains ``required_ops``."""
    import onnx

    model = onnx.load_from_string(data)
    onnx.checker.check_model(model)
    ops = _op_types(model.graph)
    missing = [op for op in required_ops if op not in ops]
    if missing:
        raise ExportError(f"the exported graph lacks {missing} (ops: {sorted(ops)})")


def detector_graph_outputs(
    model: DenseDetector, image: Tensor, score_threshold: Tensor
) -> Tuple[Tensor, Tensor, Tensor]:
    """What the detector graph computes: boxes, scores, classes of one resized image.

    Runs detectron2's own pre-processing, backbone, head and ``forward_inference`` with
    ``score_threshold`` (a 0-dim tensor) in place of the config's threshold.
    """
    saved = model.test_score_thresh
    model.test_score_thresh = score_threshold
    try:
        images = model.preprocess_image([{"image": image}])
        features = model.backbone(images.tensor)
        features = [features[f] for f in model.head_in_features]
        predictions = model.head(features)
        instances = model.forward_inference(images, features, predictions)[0]
    finally:
        model.test_score_thresh = saved
    return instances.pred_boxes.tensor, instances.scores, instances.pred_classes


def tracing_image(cfg: CfgNode, seed: int = 0) -> Tensor:
    """A (3, H, W) random image at the test size (landscape 4:3), for tracing and checks."""
    short = int(cfg.INPUT.MIN_SIZE_TEST) or 320
    long = min(int(round(short * 4 / 3)), int(cfg.INPUT.MAX_SIZE_TEST) or short * 2)
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(3, short, max(short, long), generator=gen) * 255


def export_detector(model: DenseDetector, output: Path, image: Tensor | None = None) -> Path:
    """Trace ``model`` (eval, CPU) and write its detector graph to ``output`` atomically.

    ``image`` is the (3, H, W) tracing input (default: a random 320 x 427 image); its content
    does not matter as the trace runs with score threshold 0.
    """
    if not isinstance(model, DenseDetector):
        raise ExportError(
            f"{type(model).__name__} is not a dense (RetinaNet-style) detector; the ONNX export "
            f"supports BMCRetinaNet / RetinaNet detectors and {CLASSIFIER_ARCH}"
        )
    if image is None:
        image = torch.rand(3, 320, 427, generator=torch.Generator().manual_seed(0)) * 255
    inputs = (image, torch.tensor(0.0))
    adapter = TracingAdapter(model, inputs, inference_func=detector_graph_outputs)
    names = {
        "input_names": ["image", "score_threshold"],
        "output_names": ["boxes", "scores", "classes"],
        "dynamic_axes": {
            "image": {1: "height", 2: "width"},
            "boxes": {0: "detections"},
            "scores": {0: "detections"},
            "classes": {0: "detections"},
        },
    }
    data = _serialise(adapter, names)
    _check_graph(data, required_ops=["NonMaxSuppression"])
    return atomic_write_bytes(output, data)


def _classifier_outputs(model: nn.Module, crops: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    features = model.forward_features(crops)
    logits = model.logits_of_features(features)
    return logits.softmax(dim=1), logits, features


def export_classifier(model: nn.Module, crop_size: int, output: Path) -> Path:
    """Trace a classifier's ``forward_features`` + last layer (outputs ``probs``, ``logits``
    and ``features``, the pooled features a feature open-set score reads) and write the graph to
    ``output``."""
    if not (hasattr(model, "forward_features") and hasattr(model, "logits_of_features")):
        raise ExportError(
            f"{type(model).__name__} has no forward_features(x) and logits_of_features(f) to export"
        )
    crops = torch.rand(2, 3, crop_size, crop_size, generator=torch.Generator().manual_seed(0))
    adapter = TracingAdapter(model, crops * 255, inference_func=_classifier_outputs)
    names = {
        "input_names": ["crops"],
        "output_names": ["probs", "logits", "features"],
        "dynamic_axes": {name: {0: "batch"} for name in ("crops", "probs", "logits", "features")},
    }
    data = _serialise(adapter, names)
    _check_graph(data)
    return atomic_write_bytes(output, data)


def _classifier_names(cfg: CfgNode) -> List[str]:
    """The classifier's class names; without any in its config, the 11 marrow classes or
    ``class0, class1, ...`` (with a warning)."""
    from bmc_detectron.data.classes import MARROW_ABBRS
    from bmc_detectron.modeling.classifier import classifier_class_names

    try:
        return list(classifier_class_names(cfg))
    except ValueError:
        n = int(cfg.MODEL.BMC.CLASSIFIER.NUM_CLASSES)
        names = list(MARROW_ABBRS) if n == len(MARROW_ABBRS) else [f"class{i}" for i in range(n)]
        logger.warning("the classifier's config names no classes: using %s", names)
        return names


def export_onnx(
    config_file: str,
    weights: str,
    output: str | Path,
    opts: Sequence[str] = (),
    *,
    verify: bool = True,
) -> Dict[str, Any]:
    """Export the model of ``config_file`` + ``weights`` to ``output`` and write its sidecar.

    Detectors (dense, RetinaNet-style) and ``BMCCellClassifier`` are supported. With ``verify``
    the ONNX Runtime model is compared with the PyTorch model (:mod:`.verify`) and the result is
    stored in the sidecar under ``"verification"``. Returns the sidecar's content. Raises
    ConfigError / FileNotFoundError / :class:`ExportError` (ValueError or OSError) with a
    one-line message for bad input.
    """
    from bmc_detectron.deploy import verify as checks

    output = Path(output)
    cfg, model = load_for_export(config_file, weights, opts)
    source = sc.provenance(config_file, weights, opts, cfg)
    if cfg.MODEL.META_ARCHITECTURE == CLASSIFIER_ARCH:
        crop = int(cfg.MODEL.BMC.CLASSIFIER.CROP_SIZE)
        export_classifier(model, crop, output)
        meta = sc.classifier_sidecar(cfg, _classifier_names(cfg), source, OPSET)
        open_set = read_threshold(weights, source.get("weights_sha256"))
        if open_set is not None:  # the count on ONNX Runtime flags Other cells as on torch
            if open_set.needs_features:  # the statistics travel beside the .onnx
                stats = write_statistics(statistics_path(output), open_set.statistics)
                open_set = replace(open_set, statistics_file=stats.name)
            meta["open_set"] = open_set.to_json()
    else:
        meta = _export_detector_with_sidecar(cfg, model, output, source)
        profile = sc.training_profile_beside(weights)
        if profile is not None:
            meta["training_profile"] = profile
    sc.write_sidecar(output, meta)  # the runtime of the check reads it
    if verify:
        if meta["kind"] == sc.CLASSIFIER:
            meta["verification"] = checks.verify_classifier(model, output, meta["crop_size"])
        else:
            meta["verification"] = checks.verify_detector(cfg, model, output)
        sc.write_sidecar(output, meta)
    return meta


def _export_detector_with_sidecar(
    cfg: CfgNode, model: nn.Module, output: Path, source: Dict[str, Any]
) -> Dict[str, Any]:
    from bmc_detectron.pipeline.detector import detector_class_names

    parts = deformable_parts(cfg)
    if parts:
        logger.info("deformable convolution (%s) exported as GridSample", "; ".join(parts))
    export_detector(model, output, tracing_image(cfg))
    padding = {
        "size_divisibility": int(model.backbone.size_divisibility),
        **dict(model.backbone.padding_constraints),
    }
    meta = sc.detector_sidecar(cfg, detector_class_names(cfg), padding, source, OPSET)
    meta["deformable"] = parts
    return meta
