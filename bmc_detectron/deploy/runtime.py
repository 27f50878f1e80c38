"""Running exported models on ONNX Runtime alone: detector, cell classifier, count pipeline.

:class:`OnnxDetector` does what detectron2's ``DefaultPredictor`` does around the graph: BGR input
(flipped to RGB for an RGB model), ``ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST)`` with
detectron2's own transform (PIL bilinear), then, as ``detector_postprocess``, the boxes are scaled
back to the original image, clipped to it, and empty boxes dropped. Its result is the pipeline's
:class:`~bmc_detectron.pipeline.detector.Detections` (numpy boxes, scores, classes), with the
semantics of the PyTorch model's ``Instances``.

:class:`OnnxCellClassifier` has the classifier interface the count pipeline expects
(``predict_crops``, class names, crop size and margin, input format); :func:`build_onnx_counter`
wires both into a :class:`~bmc_detectron.pipeline.CellCounter`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from detectron2.data import transforms as T

from bmc_detectron.deploy.sidecar import CLASSIFIER, DETECTOR, read_sidecar
from bmc_detectron.evaluation.open_set import OpenSetError, threshold_from_json
from bmc_detectron.pipeline.detector import Detections, fit_to_image, pad_to_multiple
from bmc_detectron.utils.io import PathLike, file_sha256


def make_session(model_path: PathLike, threads: Optional[int] = None) -> Any:
    """An ONNX Runtime CPU session with all graph optimisations.

    Args:
        model_path: the ``.onnx`` file.
        threads: intra-op threads; None or 0: ONNX Runtime's default (one per physical core).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = int(threads or 0)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


def _identity(model_path: PathLike, meta: Dict[str, Any]) -> Dict[str, str]:
    source = meta.get("source", {})
    return {
        "runtime": "onnxruntime",
        "onnx_sha256": file_sha256(model_path),
        "config_sha256": str(source.get("config_sha256", "")),
        "weights_sha256": str(source.get("weights_sha256", "")),
    }


def _check_file(model_path: PathLike) -> Path:
    path = Path(model_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: ONNX model not found")
    return path


class OnnxDetector:
    """An exported detector on ONNX Runtime; ``detector(image_bgr) -> Detections``.

    Args:
        model_path: the detector's ``.onnx`` (its ``.onnx.json`` sidecar must be beside it).
        threads: intra-op threads (None: one per physical core).
        score_threshold: detections scoring below it are dropped (default: the sidecar's, i.e.
            the config's ``SCORE_THRESH_TEST``); it is a graph input, so any value works.
    """

    def __init__(
        self,
        model_path: PathLike,
        *,
        threads: Optional[int] = None,
        score_threshold: Optional[float] = None,
    ) -> None:
        path = _check_file(model_path)
        self.meta = read_sidecar(path, DETECTOR)
        self.session = make_session(path, threads)
        self.class_names: List[str] = list(self.meta["class_names"])
        self.class_colors = [tuple(c) for c in self.meta["class_colors"]]
        self.input_format: str = self.meta["input"]["format"]
        self.min_size = int(self.meta["resize"]["min_size"])
        self.max_size = int(self.meta["resize"]["max_size"])
        self.size_divisibility = int(self.meta["resize"].get("size_divisibility", 0))
        default = float(self.meta["score_threshold"])
        self.score_threshold = default if score_threshold is None else float(score_threshold)
        self.identity = _identity(path, self.meta)

    def preprocess(self, image: np.ndarray) -> Tuple[np.ndarray, Tuple[int, int]]:
        """The graph's (3, H', W') float32 input of an (H, W, 3) uint8 BGR image (resized, then
        edge-padded to the size divisibility as :class:`~bmc_detectron.pipeline.detector.Detector`
        does), and the resized image's (H, W) before that padding."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) BGR image, got shape {image.shape}")
        if self.input_format == "RGB":
            image = image[:, :, ::-1]
        if self.min_size > 0:
            resize = T.ResizeShortestEdge([self.min_size, self.min_size], self.max_size)
            image = resize.get_transform(image).apply_image(image)
        size = image.shape[:2]
        image = pad_to_multiple(image, self.size_divisibility)
        return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32), size

    def run_graph(self, tensor: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes (in ``tensor``'s pixels), scores and classes of one (3, H, W) float32 input."""
        feeds = {"image": tensor, "score_threshold": np.array(self.score_threshold, np.float32)}
        boxes, scores, classes = self.session.run(["boxes", "scores", "classes"], feeds)
        return boxes, scores, classes

    def __call__(self, image: np.ndarray) -> Detections:
        """Detect in an (H, W, 3) uint8 BGR image; boxes in its pixels."""
        tensor, size = self.preprocess(image)
        boxes, scores, classes = self.run_graph(tensor)
        return postprocess(boxes, scores, classes, size, image.shape[:2])


def postprocess(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    input_size: Tuple[int, int],
    output_size: Tuple[int, int],
) -> Detections:
    """detectron2's ``detector_postprocess`` in numpy: scale, clip, drop empty boxes
    (:func:`~bmc_detectron.pipeline.detector.fit_to_image`).

    Args:
        input_size, output_size: (H, W) of the resized image (before its padding) and of the
            original image.
    """
    return fit_to_image(boxes, scores, classes, input_size, output_size)


class OnnxCellClassifier:
    """An exported cell classifier on ONNX Runtime, with its crop settings.

    Args:
        model_path: the classifier's ``.onnx`` (its ``.onnx.json`` sidecar beside it).
        threads: intra-op threads (None: one per physical core).
        batch_size: crops per session call in :meth:`predict_crops`.
    """

    def __init__(
        self, model_path: PathLike, *, threads: Optional[int] = None, batch_size: int = 64
    ) -> None:
        path = _check_file(model_path)
        self.meta = read_sidecar(path, CLASSIFIER)
        self.session = make_session(path, threads)
        self.class_names: List[str] = list(self.meta["class_names"])
        self.crop_size = int(self.meta["crop_size"])
        self.crop_margin = float(self.meta["crop_margin"])
        self.input_format: str = self.meta["input"]["format"]
        self.batch_size = max(1, int(batch_size))
        self.identity = _identity(path, self.meta)
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.open_set = None  # the threshold the export stored (evaluation.open_set)
        if self.meta.get("open_set") is not None:
            source = f"{path}.json open_set"
            self.open_set = threshold_from_json(self.meta["open_set"], source, path.parent)
            if self.open_set.needs_features and "features" not in self.outputs:
                raise OpenSetError(
                    f"{path}: its {self.open_set.score!r} open-set score needs the graph's "
                    "'features' output, which this export lacks; export the model again"
                )

    @property
    def num_classes(self) -> int:
        """K, the number of classes."""
        return len(self.class_names)

    def _run(self, crops: Any, *outputs: str) -> List[np.ndarray]:
        array = crops.detach().cpu().numpy() if hasattr(crops, "detach") else np.asarray(crops)
        s = self.crop_size
        if array.ndim != 4 or array.shape[1:] != (3, s, s):
            raise ValueError(f"expected (N, 3, {s}, {s}) crops, got shape {array.shape}")
        array = array.astype(np.float32, copy=False)
        runs = [
            self.session.run(list(outputs), {"crops": array[i : i + self.batch_size]})
            for i in range(0, len(array), self.batch_size)
        ]
        if not runs:  # shapes of an empty batch: (0, width of the output)
            runs = [self.session.run(list(outputs), {"crops": np.zeros((1, 3, s, s), np.float32)})]
            return [out[:0] for out in runs[0]]
        return [np.concatenate([r[j] for r in runs]) for j in range(len(outputs))]

    def predict_crops(self, crops: Any) -> np.ndarray:
        """(N, K) float32 softmax probabilities of (N, 3, S, S) crops (uint8 or float 0..255, a
        numpy array or a torch tensor) in :attr:`input_format`; N may be 0."""
        return self._run(crops, "probs")[0]

    def predict_logits(self, crops: Any) -> np.ndarray:
        """(N, K) float32 logits of the crops (as :meth:`predict_crops`)."""
        return self._run(crops, "logits")[0]

    def predict_logits_and_features(self, crops: Any) -> Tuple[np.ndarray, np.ndarray]:
        """(N, K) float32 logits and (N, C) pooled features of the crops (as
        :meth:`predict_crops`; graphs exported with a ``features`` output)."""
        if "features" not in self.outputs:
            raise ValueError("this ONNX classifier was exported without its 'features' output")
        logits, features = self._run(crops, "logits", "features")
        return logits, features

    def as_cell_classifier(self) -> Any:
        """This model as the count pipeline's :class:`~bmc_detectron.pipeline.CellClassifier`."""
        from bmc_detectron.pipeline.recognition import CellClassifier

        return CellClassifier(
            model=self,
            class_names=list(self.class_names),
            crop_size=self.crop_size,
            crop_margin=self.crop_margin,
            input_format=self.input_format,
            device="cpu",
            identity=dict(self.identity),
            open_set=self.open_set,
        )


def build_onnx_counter(
    detector_onnx: PathLike,
    classifier_onnx: Optional[PathLike] = None,
    *,
    threads: Optional[int] = None,
    detector_score_threshold: Optional[float] = None,
    **counter_kwargs: Any,
) -> Any:
    """A :class:`~bmc_detectron.pipeline.CellCounter` running on ONNX Runtime alone.

    Args:
        detector_onnx, classifier_onnx: exported models (the classifier is optional: without
            it the detector's classes are counted).
        threads: intra-op threads of each session (None: one per physical core).
        detector_score_threshold: the detector graph's threshold (default: its sidecar's);
            the counter's own ``score_threshold`` applies on top.
        counter_kwargs: the counter's keyword arguments (``score_threshold``, ``tile_size``, ...);
            ``batch_size`` also sets the classifier's crops per session call.
    """
    from bmc_detectron.pipeline.counter import CellCounter

    detector = OnnxDetector(
        detector_onnx, threads=threads, score_threshold=detector_score_threshold
    )
    classifier = None
    if classifier_onnx is not None:
        batch = int(counter_kwargs.get("batch_size", 64))
        model = OnnxCellClassifier(classifier_onnx, threads=threads, batch_size=batch)
        classifier = model.as_cell_classifier()
    return CellCounter(detector, classifier, **counter_kwargs)
